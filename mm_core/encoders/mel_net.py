"""Trainable log-mel audio encoder: the sensor CNN-RNN trunk on log-mel frames.

Offline there are no pretrained speech weights, and a random frozen Wav2Vec2
gives weak features. This encoder is small enough to train with the fusion
model: each clip becomes mono 16 kHz, then a log-mel spectrogram (25 ms
window, 10 ms hop), optionally minus its own per-bin mean (cepstral-mean
style: removes the speaker/channel colouring), and those ``[T, n_mels]``
frames go through :class:`~mm_core.encoders.sensor_net.SensorEncoder`'s
windowing, per-bin normalisation (fitted on the training split) and trunk. So
the training cache holds cheap log-mel windows, and ``fit_stats`` fits on
frames. The front end's options travel in the checkpoint metadata, so a
``weights=`` reload rebuilds the same features.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from mm_core.encoders.sensor_net import SensorEncoder
from mm_core.encoders.weights import read_safetensors_metadata, save_state_dict
from mm_core.errors import ConfigError
from mm_core.modalities.audio import TARGET_RATE, DecodedAudio, prepare_waveform
from mm_core.normalization import ChannelStats

FRONT_END = "logmel"
WIN_LENGTH = 400  # 25 ms at 16 kHz
HOP_LENGTH = 160  # 10 ms at 16 kHz
LOG_FLOOR = 1e-6
#: registry names (``audio: {model: ...}``) -> recurrent layer
MODEL_NAMES = {"logmel_cnn_gru": "gru", "logmel_cnn_lstm": "lstm"}
MEL_DEFAULTS: dict[str, Any] = {"n_mels": 40, "utterance_norm": True}
#: 30 s clips are 3001 frames: 12 windows of 256 frames hold them whole
DEFAULT_MAX_WINDOWS = 12


@lru_cache(maxsize=8)
def mel_transform(n_mels: int) -> nn.Module:
    """torchaudio's mel spectrogram at 16 kHz (25 ms / 10 ms), filterbank built once and cached."""
    import torchaudio

    return torchaudio.transforms.MelSpectrogram(
        sample_rate=TARGET_RATE,
        n_fft=WIN_LENGTH,
        win_length=WIN_LENGTH,
        hop_length=HOP_LENGTH,
        n_mels=n_mels,
        pad_mode="constant",  # reflect padding fails on clips shorter than half a window
    ).eval()


def stored_config(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The architecture and front-end options a checkpoint file was saved with ({} if none)."""
    meta = read_safetensors_metadata(path)
    return json.loads(meta["config"]) if "config" in meta else {}


def is_logmel_checkpoint(path: str | os.PathLike[str]) -> bool:
    """True for a safetensors file written by :meth:`LogMelEncoder.save` (routes the registry)."""
    p = Path(path)
    return p.is_file() and stored_config(p).get("front_end") == FRONT_END


class LogMelEncoder(SensorEncoder):
    """Decoded audio -> log-mel frames -> ``[B, S, D]`` tokens (S = frames / 2**conv_layers)."""

    modality_name = "audio"

    def __init__(
        self,
        n_mels: int | None = None,
        hidden_dim: int | None = None,
        output_dim: int | None = None,
        *,
        model: str | None = None,
        weights: str | os.PathLike[str] | None = None,
        pretrained: bool | str | None = None,
        utterance_norm: bool | None = None,
        rnn: str | None = None,
        conv_layers: int | None = None,
        kernel_size: int | None = None,
        dropout: float | None = None,
        target_length: int = 256,
        max_windows: int = DEFAULT_MAX_WINDOWS,
        augment: bool = False,
        freq_mask: int | None = None,
        time_mask: int = 20,
        num_masks: int = 2,
        stats: ChannelStats | str | os.PathLike[str] | None = None,
        seed: int | None = 0,
    ) -> None:
        if model is not None and Path(model).is_file() and weights is None:
            weights, model = model, None
        if model is not None and model not in MODEL_NAMES:
            raise ConfigError(f"log-mel audio model must be one of {sorted(MODEL_NAMES)} or a checkpoint file")
        stored = stored_config(weights) if weights is not None else {}
        if stored and stored.get("front_end") != FRONT_END:
            raise ConfigError(f"{weights} was not saved by LogMelEncoder (no log-mel front end in its metadata)")
        given = {"n_mels": n_mels, "utterance_norm": utterance_norm}
        self.mel = {k: given[k] if given[k] is not None else stored.get(k, v) for k, v in MEL_DEFAULTS.items()}
        self.mel["n_mels"] = int(self.mel["n_mels"])
        self.mel["utterance_norm"] = bool(self.mel["utterance_norm"])
        super().__init__(
            in_channels=self.mel["n_mels"],
            hidden_dim=hidden_dim,
            output_dim=output_dim,
            weights=weights,
            pretrained=pretrained,
            rnn=rnn or (MODEL_NAMES[model] if model else None),
            conv_layers=conv_layers,
            kernel_size=kernel_size,
            dropout=dropout,
            target_length=target_length,
            long_series="windows",
            max_windows=max_windows,
            stats=stats,
            seed=seed,
        )
        if weights is None:
            self.source = "random:logmel-cnn"
        self.augment = bool(augment)
        self.freq_mask = int(freq_mask if freq_mask is not None else self.mel["n_mels"] // 8)
        self.time_mask = int(time_mask)
        self.num_masks = int(num_masks)

    @property
    def front_end(self) -> dict[str, Any]:
        """What turns a clip into frames (saved with the weights; part of ``weights_id``)."""
        return {"front_end": FRONT_END, "sample_rate": TARGET_RATE, "win_length": WIN_LENGTH,
                "hop_length": HOP_LENGTH, **self.mel}  # fmt: skip

    def weights_id(self) -> str:
        h = hashlib.sha256((super().weights_id() + json.dumps(self.front_end, sort_keys=True)).encode())
        return h.hexdigest()[:16]

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Safetensors checkpoint whose metadata holds the architecture and the front end."""
        return save_state_dict(self.state_dict(), path, config={**self.arch, **self.front_end})

    def log_mel(self, audio: DecodedAudio) -> np.ndarray:
        """One clip -> ``[T, n_mels]`` float32 log-mel frames (T = 1 + samples_16k // 160)."""
        wave = torch.from_numpy(np.ascontiguousarray(prepare_waveform(audio)))
        with torch.no_grad():
            frames = torch.log(mel_transform(self.mel["n_mels"])(wave) + LOG_FLOOR).T
        if self.mel["utterance_norm"]:
            frames = frames - frames.mean(0, keepdim=True)
        return frames.numpy().astype(np.float32, copy=False)

    def item_length(self, item: DecodedAudio) -> int:
        return int(item.samples.shape[-1] * TARGET_RATE / item.sample_rate)

    def preprocess(self, items: Sequence[DecodedAudio]) -> dict[str, torch.Tensor]:
        return super().preprocess([self.log_mel(item) for item in items])

    def _spec_augment(self, windows: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """SpecAugment-style masks; masked cells get the fitted mean, i.e. 0 after normalisation."""
        n, t, c = windows.shape
        dev = windows.device
        steps, bins = torch.arange(t, device=dev), torch.arange(c, device=dev)
        hide = torch.zeros(n, t, c, dtype=torch.bool, device=dev)
        for _ in range(self.num_masks):
            fw = torch.randint(0, self.freq_mask + 1, (n,), device=dev)
            f0 = (torch.rand(n, device=dev) * (c - fw + 1)).long()
            hide |= ((bins[None] >= f0[:, None]) & (bins[None] < (f0 + fw)[:, None]))[:, None, :]
            tw = torch.minimum(torch.randint(0, self.time_mask + 1, (n,), device=dev), lengths)
            t0 = (torch.rand(n, device=dev) * (lengths - tw + 1)).long()
            hide |= ((steps[None] >= t0[:, None]) & (steps[None] < (t0 + tw)[:, None]))[:, :, None]
        fill = (self.calibration + self.norm_shift).to(windows.dtype)
        return torch.where(hide, fill, windows)

    def _encode_windows(self, windows: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.training and self.augment:  # training only: inference stays deterministic
            windows = self._spec_augment(windows, lengths)
        return super()._encode_windows(windows, lengths)
