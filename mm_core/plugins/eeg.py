"""EEG modality plugin (SPEC M2), written the way a third-party package would write it.

It uses only mm_core's public API (``ModalitySpec``, ``ModalityEncoder``,
``DecodeError``) and is found through the ``mm_fusion.modalities`` entry point
(``eeg = "mm_core.plugins.eeg:SPEC"``); no core module names it. Projection,
fusion, storage and assets pick it up from the registry.

Signals are float32 ``[T, C]`` in microvolts, ``DEFAULT_SAMPLE_RATE`` Hz unless
the scorer is told otherwise. EDF is not read: it would need a new dependency.
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from mm_core.encoders.base import ModalityEncoder
from mm_core.errors import DecodeError
from mm_core.registry import ModalitySpec

DEFAULT_SAMPLE_RATE = 250.0
EXTENSIONS = (".npy", ".csv")
#: CSV columns that carry no signal, dropped by (case-insensitive) header name.
NON_SIGNAL_COLUMNS = frozenset({"time", "timestamp", "t", "index", "sample", "label", "marker"})


# ----------------------------------------------------------------------------- decode
def _orient(arr: np.ndarray, channels_first: bool | None, name: str) -> np.ndarray:
    """-> float32 ``[T, C]``; ``channels_first=None`` guesses: recordings have more samples than channels."""
    if arr.dtype.kind not in "biuf":
        raise DecodeError(f"EEG {name}: dtype {arr.dtype} is not numeric")
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2 or 0 in arr.shape:
        raise DecodeError(f"EEG {name}: expected a non-empty [T, C] or [C, T] array, got shape {arr.shape}")
    if channels_first is None:
        channels_first = arr.shape[0] < arr.shape[1]
    return np.ascontiguousarray(arr.T if channels_first else arr, dtype=np.float32)


def _is_number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


def _parse_csv(text: str, name: str) -> np.ndarray:
    """CSV text (optional header, time/label columns dropped) -> float ``[rows, columns]``."""
    text = text.lstrip("\ufeff")
    first = [c.strip().strip('"').lower() for c in text.split("\n", 1)[0].split(",")]
    if not any(first):
        raise DecodeError(f"EEG {name}: empty CSV")
    header = not all(_is_number(c) for c in first)
    usecols = [j for j, c in enumerate(first) if c not in NON_SIGNAL_COLUMNS] if header else None
    if usecols == []:
        raise DecodeError(f"EEG {name}: no signal columns in {first}")
    try:
        return np.loadtxt(io.StringIO(text), delimiter=",", skiprows=int(header), usecols=usecols,
                          dtype=np.float32, ndmin=2)  # fmt: skip
    except ValueError as exc:  # ragged rows, text cells, empty cells
        raise DecodeError(f"EEG {name}: malformed CSV ({exc})") from exc


def decode_eeg(item: Any, *, channels_first: bool | None = None) -> np.ndarray:
    """A ``.npy``/``.csv`` path, ``.npy`` bytes or an array -> float32 ``[T, C]``.

    ``channels_first`` says the stored layout is ``[C, T]`` (True) or ``[T, C]``
    (False); None guesses from the shape. Bad input raises ``DecodeError``.
    """
    if isinstance(item, np.ndarray):
        return _orient(item, channels_first, "array")
    if isinstance(item, bytes | bytearray):
        source, name, suffix = io.BytesIO(bytes(item)), f"({len(item)} bytes)", ".npy"
    elif isinstance(item, str | os.PathLike):
        path = Path(item)
        if not path.is_file() or path.stat().st_size == 0:
            raise DecodeError(f"EEG file missing or empty: {path}")
        source, name, suffix = path, str(path), path.suffix.lower()
    else:
        raise DecodeError(f"cannot decode EEG from {type(item).__name__}; pass a path, bytes or an array")
    if suffix == ".npy":
        try:
            arr = np.load(source, allow_pickle=False)  # never unpickle (SPEC R3)
        except Exception as exc:
            raise DecodeError(f"EEG {name}: unreadable .npy ({exc})") from exc
    elif suffix == ".csv":
        try:
            text = Path(source).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise DecodeError(f"EEG {name}: cannot read CSV ({exc})") from exc
        arr = _parse_csv(text, name)
    else:
        raise DecodeError(f"EEG {name}: unsupported file type {suffix!r}; use one of {EXTENSIONS}")
    return _orient(np.asarray(arr), channels_first, name)


# ----------------------------------------------------------------------------- quality
def score_eeg(
    signal: np.ndarray,
    *,
    sample_rate: float = DEFAULT_SAMPLE_RATE,
    flat_window_s: float = 1.0,
    flat_uv: float = 0.5,
) -> dict[str, float]:
    """Quality scores of one ``[T, C]`` recording in microvolts.

    ``nonfinite_fraction`` (NaN/inf), ``flatline_fraction`` (channel-windows of
    ``flat_window_s`` whose peak-to-peak is under ``flat_uv``, e.g. a detached
    electrode), ``saturation_fraction`` (samples stuck at a channel's extreme,
    i.e. amplifier clipping), ``amplitude_range_uv`` (largest channel
    peak-to-peak), ``max_abs_uv``, ``duration_s`` and ``num_channels``.
    """
    x = np.asarray(signal, dtype=np.float32)
    if x.ndim == 1:
        x = x[:, None]
    t, c = x.shape
    finite = np.isfinite(x)
    n_finite = int(finite.sum())
    hi = np.where(finite, x, -np.inf).max(axis=0)
    lo = np.where(finite, x, np.inf).min(axis=0)
    ptp = hi - lo  # -inf for a channel with no finite sample
    win = max(1, min(t, round(flat_window_s * sample_rate)))
    n_win = max(1, t // win)
    w = x[: n_win * win].reshape(n_win, win, c)
    wf = finite[: n_win * win].reshape(n_win, win, c)
    w_ptp = np.where(wf, w, -np.inf).max(axis=1) - np.where(wf, w, np.inf).min(axis=1)
    moving = ptp > 0  # a constant channel is flat, not clipped
    at_hi = ((x == hi) & finite).sum(axis=0) - 1
    at_lo = ((x == lo) & finite).sum(axis=0) - 1
    stuck = np.where(moving, np.clip(at_hi, 0, None) + np.clip(at_lo, 0, None), 0).sum()
    good_ptp = ptp[np.isfinite(ptp)]
    return {
        "nonfinite_fraction": 1.0 - n_finite / x.size,
        "flatline_fraction": float(np.mean(w_ptp < flat_uv)),
        "saturation_fraction": float(stuck / n_finite) if n_finite else 0.0,
        "amplitude_range_uv": float(good_ptp.max()) if good_ptp.size else 0.0,
        "max_abs_uv": float(np.abs(x[finite]).max()) if n_finite else 0.0,
        "duration_s": t / sample_rate,
        "num_channels": float(c),
    }


# ----------------------------------------------------------------------------- encoder
def _sinusoid(length: int, dim: int, device: torch.device) -> torch.Tensor:
    """Fixed sinusoidal positions ``[length, dim]`` (no maximum length to outgrow)."""
    pos = torch.arange(length, device=device, dtype=torch.float32)[:, None]
    freq = torch.exp(torch.arange(0, dim, 2, device=device, dtype=torch.float32) * (-math.log(10000.0) / dim))
    out = torch.zeros(length, dim, device=device)
    out[:, 0::2] = torch.sin(pos * freq)
    out[:, 1::2] = torch.cos(pos * freq[: dim // 2])
    return out


class EEGEncoder(ModalityEncoder):
    """Conv1d stem (4x downsampling) + Transformer encoder over time, padding respected.

    Unlike the seed's EEGEncoder, the padding mask reaches every attention
    layer, padded steps are zeroed after each convolution (so a recording's
    features do not depend on what it is batched with), and there is no
    BatchNorm whose statistics padding would skew. Trainable (``pretrained`` is
    False); ``weights`` loads a trained safetensors state dict.
    """

    modality_name = "eeg"
    pretrained = False

    def __init__(
        self,
        num_channels: int = 8,
        hidden_dim: int = 128,
        num_layers: int = 2,
        num_heads: int = 4,
        max_samples: int = 16384,
        dropout: float = 0.1,
        weights: str | os.PathLike[str] | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.num_channels, self.max_samples, self._dim = num_channels, max_samples, hidden_dim
        with torch.random.fork_rng(devices=[]):  # reproducible init without touching the caller's RNG
            torch.manual_seed(seed)
            self.stem = nn.ModuleList(
                [
                    nn.Conv1d(num_channels, hidden_dim, kernel_size=7, stride=2, padding=3),
                    nn.Conv1d(hidden_dim, hidden_dim, kernel_size=5, stride=2, padding=2),
                ]
            )
            self.act = nn.GELU()
            self.norm_in = nn.LayerNorm(hidden_dim)
            self.layers = nn.ModuleList(
                nn.TransformerEncoderLayer(
                    hidden_dim, num_heads, 4 * hidden_dim, dropout, "gelu", batch_first=True, norm_first=True
                )
                for _ in range(num_layers)
            )
            self.norm_out = nn.LayerNorm(hidden_dim)
        if weights is not None:
            from safetensors.torch import load_file

            self.load_state_dict(load_file(str(weights)))

    @property
    def output_dim(self) -> int:
        return self._dim

    def item_length(self, item: np.ndarray) -> int:
        return min(int(item.shape[0]), self.max_samples)

    def preprocess(self, items: Sequence[np.ndarray]) -> dict[str, torch.Tensor]:
        """Per-recording, per-channel z-score (NaN/inf -> 0, clipped at 10 sd); pad to the batch's longest."""
        lengths = [self.item_length(x) for x in items]
        batch = torch.zeros(len(items), self.num_channels, max(lengths))
        for i, (x, n) in enumerate(zip(items, lengths, strict=True)):
            if x.ndim != 2 or x.shape[1] != self.num_channels:
                raise ValueError(
                    f"EEG item has shape {x.shape}; this encoder expects [T, {self.num_channels}] "
                    "(set the encoder option num_channels)"
                )
            sig = np.nan_to_num(x[:n].astype(np.float32), nan=0.0, posinf=0.0, neginf=0.0)
            sig = (sig - sig.mean(0)) / (sig.std(0) + 1e-6)
            batch[i, :, :n] = torch.from_numpy(np.clip(sig, -10.0, 10.0).T)
        return {"signal": batch, "lengths": torch.tensor(lengths, dtype=torch.long)}

    def forward(self, signal: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``signal [B, C, T]``, ``lengths [B]`` -> ``(features [B, S, D], mask [B, S])``, S = ceil(T / 4)."""
        x = signal
        for conv in self.stem:
            x = self.act(conv(x))
            k, s, p = conv.kernel_size[0], conv.stride[0], conv.padding[0]
            lengths = torch.div(lengths + 2 * p - k, s, rounding_mode="floor") + 1
            mask = torch.arange(x.shape[-1], device=x.device)[None, :] < lengths[:, None]
            x = x * mask[:, None, :].to(x.dtype)  # padded steps stay zero, as conv padding would be
        x = x.transpose(1, 2)
        x = self.norm_in(x) + _sinusoid(x.shape[1], x.shape[2], x.device).to(x.dtype)
        for layer in self.layers:
            x = layer(x, src_key_padding_mask=~mask)
        x = self.norm_out(x) * mask[..., None].to(x.dtype)
        return x, mask


def create_encoder(**options: Any) -> EEGEncoder:
    """Factory for the registry: options are :class:`EEGEncoder` arguments."""
    return EEGEncoder(**options)


SPEC = ModalitySpec(
    name="eeg",
    decode=decode_eeg,
    score=score_eeg,
    encoder_factory=create_encoder,
    default_encoder={"num_channels": 8},
    extensions=EXTENSIONS,
    description="EEG [T, C] in microvolts (.npy, .csv) encoded by a trainable Conv1d + Transformer",
)
