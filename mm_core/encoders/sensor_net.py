"""Trainable CNN-LSTM encoder for sensor / tactile / IMU series.

Series are calibrated (per-channel offset), normalised with stored
:class:`~mm_core.normalization.ChannelStats` (kept as buffers, so they travel
with the checkpoint and enter ``weights_id``), cut into fixed-length windows
with a mask, and NaN/inf are zeroed just before the network. Padding never
changes the features of real samples: padded steps are zeroed after every
conv block and the recurrent layer runs on packed sequences.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from mm_core.encoders.base import ModalityEncoder
from mm_core.encoders.weights import (
    load_into,
    load_state_dict_file,
    read_safetensors_metadata,
    save_state_dict,
    seeded,
)
from mm_core.errors import ConfigError, WeightsError
from mm_core.modalities.sensor import LongSeries, calibrate, segment
from mm_core.normalization import ChannelStats

ARCH_DEFAULTS: dict[str, Any] = {
    "in_channels": 6,
    "hidden_dim": 128,
    "output_dim": 128,
    "rnn": "lstm",
    "conv_layers": 2,
    "kernel_size": 5,
    "dropout": 0.1,
}
_MODEL_NAMES = {"cnn_lstm": "lstm", "cnn_gru": "gru"}


def _arch_from(weights: str | os.PathLike[str] | None, given: dict[str, Any]) -> dict[str, Any]:
    """Architecture: explicit options, else the checkpoint's stored config, else defaults."""
    stored: dict[str, Any] = {}
    if weights is not None:
        meta = read_safetensors_metadata(weights)
        if "config" in meta:
            stored = json.loads(meta["config"])
    arch = {k: given[k] if given.get(k) is not None else stored.get(k, v) for k, v in ARCH_DEFAULTS.items()}
    if arch["rnn"] not in ("lstm", "gru"):
        raise ConfigError(f"rnn must be 'lstm' or 'gru', got {arch['rnn']!r}")
    if arch["kernel_size"] % 2 != 1:
        raise ConfigError("kernel_size must be odd (same-padding keeps the mask arithmetic exact)")
    return arch


class SensorEncoder(ModalityEncoder):
    """``[T, C]`` series -> ``[B, S, D]`` tokens (S = windows x target_length / 2**conv_layers)."""

    modality_name = "sensor"

    def __init__(
        self,
        in_channels: int | None = None,
        hidden_dim: int | None = None,
        output_dim: int | None = None,
        *,
        model: str | None = None,
        weights: str | os.PathLike[str] | None = None,
        pretrained: bool | str | None = None,
        rnn: str | None = None,
        conv_layers: int | None = None,
        kernel_size: int | None = None,
        dropout: float | None = None,
        target_length: int = 256,
        long_series: LongSeries = "windows",
        max_windows: int = 8,
        calibration_offset: Sequence[float] | None = None,
        stats: ChannelStats | str | os.PathLike[str] | None = None,
        seed: int | None = 0,
    ) -> None:
        super().__init__()
        if model is not None and Path(model).is_file() and weights is None:
            weights, model = model, None
        if model is not None and model not in _MODEL_NAMES:
            raise ConfigError(f"sensor model must be one of {sorted(_MODEL_NAMES)} or a checkpoint file")
        rnn = rnn or (_MODEL_NAMES[model] if model else None)
        given = {
            "in_channels": in_channels,
            "hidden_dim": hidden_dim,
            "output_dim": output_dim,
            "rnn": rnn,
            "conv_layers": conv_layers,
            "kernel_size": kernel_size,
            "dropout": dropout,
        }
        self.arch = _arch_from(weights, given)
        self.target_length = int(target_length)
        self.long_series: LongSeries = long_series
        self.max_windows = int(max_windows)
        c, h, k = self.arch["in_channels"], self.arch["hidden_dim"], self.arch["kernel_size"]
        with seeded(seed):
            self.convs = nn.ModuleList(
                nn.Conv1d(c if i == 0 else h, h, k, stride=2, padding=k // 2) for i in range(self.arch["conv_layers"])
            )
            self.norms = nn.ModuleList(nn.LayerNorm(h) for _ in range(self.arch["conv_layers"]))
            self.dropout = nn.Dropout(self.arch["dropout"])
            rnn_cls = nn.LSTM if self.arch["rnn"] == "lstm" else nn.GRU
            self.rnn = rnn_cls(h, h // 2, batch_first=True, bidirectional=True)
            self.proj = nn.Linear(2 * (h // 2), self.arch["output_dim"])
        self.register_buffer("calibration", torch.zeros(c))
        self.register_buffer("norm_shift", torch.zeros(c))
        self.register_buffer("norm_scale", torch.ones(c))
        loaded = False
        if weights is not None:
            load_into(self, load_state_dict_file(weights), source=str(weights))
            loaded = True
        if pretrained is True and not loaded:
            raise WeightsError("SensorEncoder(pretrained=True) needs weights=/path/to/checkpoint.safetensors")
        #: frozen during fusion training only when real trained weights were loaded
        self.pretrained = loaded if pretrained in (None, "auto") else bool(pretrained)
        self.source = str(weights) if weights is not None else "random:sensor-cnn"
        if calibration_offset is not None:
            self.set_calibration(calibration_offset)
        if stats is not None:
            self.set_stats(stats)

    @property
    def output_dim(self) -> int:
        return int(self.arch["output_dim"])

    @property
    def in_channels(self) -> int:
        return int(self.arch["in_channels"])

    def set_calibration(self, offset: Sequence[float]) -> None:
        """Per-channel offset subtracted before normalisation (one value broadcasts to all)."""
        off = torch.as_tensor(np.asarray(offset, dtype=np.float32).reshape(-1))
        if off.numel() not in (1, self.in_channels):
            raise ConfigError(f"calibration_offset has {off.numel()} values for {self.in_channels} channels")
        self.calibration.copy_(off.expand(self.in_channels))

    def set_stats(self, stats: ChannelStats | str | os.PathLike[str]) -> ChannelStats:
        """Use stored statistics (object or JSON path) for normalisation from now on."""
        if not isinstance(stats, ChannelStats):
            stats = ChannelStats.load(stats)
        if stats.num_channels != self.in_channels:
            raise ConfigError(f"statistics have {stats.num_channels} channels, encoder {self.in_channels}")
        shift, scale = stats.affine()
        self.norm_shift.copy_(torch.from_numpy(shift))
        self.norm_scale.copy_(torch.from_numpy(scale))
        return stats

    def fit_stats(
        self,
        series: Iterable[np.ndarray],
        method: str = "zscore",
        path: str | os.PathLike[str] | None = None,
    ) -> ChannelStats:
        """Fit statistics on (calibrated) training series, store them at ``path``, and use them."""
        offset = self.calibration.cpu().numpy()
        stats = ChannelStats.fit((calibrate(s, offset) for s in series), method=method)  # type: ignore[arg-type]
        if path is not None:
            stats.save(path)
        self.set_stats(stats)
        return stats

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Safetensors checkpoint whose metadata holds the architecture (reload with weights=path)."""
        return save_state_dict(self.state_dict(), path, config=self.arch)

    def item_length(self, item: np.ndarray) -> int:
        return int(np.asarray(item).shape[0])

    def preprocess(self, items: Sequence[np.ndarray]) -> dict[str, torch.Tensor]:
        windows, lengths, owner, position = [], [], [], []
        for i, item in enumerate(items):
            x = np.asarray(item, dtype=np.float32)
            x = x[:, None] if x.ndim == 1 else x
            if x.ndim != 2 or x.shape[1] != self.in_channels:
                raise ConfigError(
                    f"sensor item {i} has shape {x.shape}; this encoder takes [T, {self.in_channels}] "
                    "(set in_channels to the data's channel count)"
                )
            segs = segment(x, self.target_length, long_series=self.long_series, max_windows=self.max_windows)
            for w, (window, length) in enumerate(segs):
                windows.append(window)
                lengths.append(length)
                owner.append(i)
                position.append(w)
        return {
            "windows": torch.from_numpy(np.stack(windows)),
            "lengths": torch.tensor(lengths, dtype=torch.long),
            "item_index": torch.tensor(owner, dtype=torch.long),
            "window_pos": torch.tensor(position, dtype=torch.long),
        }

    def _encode_windows(self, windows: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        steps = torch.arange(windows.shape[1], device=windows.device)
        x = (windows.float() - self.calibration - self.norm_shift) / self.norm_scale
        x = torch.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0) * (steps[None, :] < lengths[:, None])[..., None]
        h, lens = x.transpose(1, 2), lengths
        for conv, norm in zip(self.convs, self.norms, strict=True):
            h = conv(h)
            lens = (lens + 1) // 2  # same-padding, stride 2: ceil(L / 2)
            valid = torch.arange(h.shape[-1], device=h.device)[None, :] < lens[:, None]
            h = nn.functional.gelu(norm(h.transpose(1, 2))).transpose(1, 2) * valid[:, None, :]
        h = self.dropout(h.transpose(1, 2))
        s = h.shape[1]
        with torch.autocast(device_type=h.device.type, enabled=False):  # RNNs stay in fp32
            packed = pack_padded_sequence(h.float(), lens.clamp(min=1).cpu(), batch_first=True, enforce_sorted=False)
            out, _ = self.rnn(packed)
            out, _ = pad_packed_sequence(out, batch_first=True, total_length=s)
        mask = torch.arange(s, device=h.device)[None, :] < lens[:, None]
        return self.proj(out) * mask[..., None], mask

    def forward(
        self,
        windows: torch.Tensor,
        lengths: torch.Tensor,
        item_index: torch.Tensor,
        window_pos: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        feats, mask = self._encode_windows(windows, lengths)
        n_items, n_windows = int(item_index.max()) + 1, int(window_pos.max()) + 1
        s, d = feats.shape[1], feats.shape[2]
        full = feats.new_zeros(n_items, n_windows, s, d)
        full_mask = torch.zeros(n_items, n_windows, s, dtype=torch.bool, device=feats.device)
        full[item_index, window_pos] = feats
        full_mask[item_index, window_pos] = mask
        return full.reshape(n_items, n_windows * s, d), full_mask.reshape(n_items, n_windows * s)
