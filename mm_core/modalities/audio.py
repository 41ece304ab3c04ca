"""Audio modality: soundfile decoding, mono 16 kHz preprocessing, HF speech encoders.

Preprocessing fixes the seed's audio path (defect 8): each clip is resampled
from its OWN rate, mixed to mono, truncated at 30 s, and a batch is padded only
to its longest clip with lengths / an attention mask, never to 30 s.
"""

from __future__ import annotations

import io
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import torch

from mm_core.encoders.base import ModalityEncoder
from mm_core.errors import DecodeError
from mm_core.quality.scorers import score_audio
from mm_core.registry import ModalitySpec, register

EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3")
TARGET_RATE = 16_000
MAX_SECONDS = 30.0
#: longer files are rejected at decode: they would need GBs of RAM and an encoder sees 30 s anyway
MAX_DECODE_SECONDS = 3600.0
_SHORT_DATA = re.compile(r"^data\s*:\s*(\d+)\s*\(should be (\d+)\)", re.MULTILINE)


@dataclass(frozen=True, eq=False)
class DecodedAudio:
    """Decoded audio: ``samples`` float32 ``[channels, frames]`` in [-1, 1] at ``sample_rate``."""

    samples: np.ndarray
    sample_rate: int

    @property
    def duration(self) -> float:
        """Length in seconds."""
        return self.samples.shape[-1] / float(self.sample_rate)

    @property
    def num_channels(self) -> int:
        return int(self.samples.shape[0])


def _open_source(item: Any) -> tuple[Any, str]:
    if isinstance(item, bytes | bytearray | memoryview):
        if len(item) == 0:
            raise DecodeError("empty audio data")
        return io.BytesIO(bytes(item)), f"{len(item)} bytes"
    if isinstance(item, str | os.PathLike):
        path = Path(item)
        if not path.is_file():
            raise DecodeError(f"audio file not found: {path}")
        if path.stat().st_size == 0:
            raise DecodeError(f"empty audio file: {path}")
        return str(path), str(path)
    raise DecodeError(f"cannot decode audio from {type(item).__name__}; pass a path or bytes")


def _wav_truncated(extra_info: str) -> bool:
    """libsndfile notes 'data : N (should be M)' when a WAV's data chunk is cut short.

    Streamed WAVs written without final sizes declare 0 or 0xFFFFFFFF; those are not truncation.
    """
    m = _SHORT_DATA.search(extra_info)
    if not m:
        return False
    declared, actual = int(m.group(1)), int(m.group(2))
    return actual < declared and declared not in (0, 0xFFFFFFFF, 0x7FFFFFFF)


def decode(item: str | os.PathLike[str] | bytes) -> DecodedAudio:
    """Path or bytes (WAV, FLAC, OGG, MP3) -> :class:`DecodedAudio`, all channels kept."""
    source, name = _open_source(item)
    try:
        with sf.SoundFile(source) as f:
            if f.samplerate <= 0 or f.channels <= 0:
                raise DecodeError(f"audio {name} has no channels or no sample rate")
            if f.frames > MAX_DECODE_SECONDS * f.samplerate:
                raise DecodeError(f"audio {name} is longer than {MAX_DECODE_SECONDS:.0f} s; split it first")
            declared, rate, info = f.frames, int(f.samplerate), f.extra_info
            data = f.read(dtype="float32", always_2d=True)
    except DecodeError:
        raise
    except Exception as exc:  # libsndfile errors: unknown format, lost sync, malformed
        raise DecodeError(f"cannot decode audio {name}: {exc}") from exc
    if data.shape[0] == 0:
        raise DecodeError(f"audio {name} has no samples (empty or truncated)")
    if data.shape[0] < 0.99 * declared or _wav_truncated(info):
        raise DecodeError(f"audio {name} is truncated ({data.shape[0]} of {declared} frames readable)")
    samples = np.clip(np.nan_to_num(data.T, nan=0.0, posinf=1.0, neginf=-1.0), -1.0, 1.0)
    return DecodedAudio(np.ascontiguousarray(samples, dtype=np.float32), rate)


@lru_cache(maxsize=32)
def get_resampler(orig_rate: int, new_rate: int) -> torch.nn.Module:
    """torchaudio's windowed-sinc resampler for one rate pair, kernel built once and cached."""
    import torchaudio

    return torchaudio.transforms.Resample(orig_freq=orig_rate, new_freq=new_rate)


def to_mono(samples: np.ndarray) -> np.ndarray:
    """``[C, N]`` (or ``[N]``) -> ``[N]`` by averaging channels."""
    x = np.asarray(samples, dtype=np.float32)
    return x if x.ndim == 1 else x.mean(axis=0)


def resample(wave: np.ndarray, orig_rate: int, new_rate: int = TARGET_RATE) -> np.ndarray:
    """Resample a mono float32 waveform from its own rate to ``new_rate``."""
    if orig_rate == new_rate:
        return np.asarray(wave, dtype=np.float32)
    with torch.inference_mode():
        out = get_resampler(int(orig_rate), int(new_rate))(torch.from_numpy(np.ascontiguousarray(wave)))
    return out.numpy()


def prepare_waveform(
    audio: DecodedAudio, sample_rate: int = TARGET_RATE, max_seconds: float | None = MAX_SECONDS
) -> np.ndarray:
    """Decoded audio -> mono float32 ``[N]`` at ``sample_rate``, at most ``max_seconds`` long."""
    if not isinstance(audio, DecodedAudio):
        raise TypeError(f"expected DecodedAudio (from the audio decoder), got {type(audio).__name__}")
    mono = to_mono(audio.samples)
    if max_seconds is not None:  # cut before resampling so long files cost no extra work
        mono = mono[: int(np.ceil(max_seconds * audio.sample_rate)) + 1]
    wave = resample(mono, audio.sample_rate, sample_rate)
    if max_seconds is not None:
        wave = wave[: round(max_seconds * sample_rate)]
    return wave


def pad_waveforms(waves: Sequence[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad mono waveforms to the batch's longest: ``(values [B, N_max], mask [B, N_max])``."""
    lengths = [len(w) for w in waves]
    n = max(lengths, default=0)
    values = torch.zeros(len(waves), n)
    for i, w in enumerate(waves):
        values[i, : len(w)] = torch.from_numpy(np.asarray(w, dtype=np.float32))
    mask = torch.arange(n)[None, :] < torch.tensor(lengths)[:, None]
    return values, mask


def create_encoder(**options: Any) -> ModalityEncoder:
    """Factory for the registry (imports transformers only when an encoder is built).

    ``model: logmel_cnn_gru`` / ``logmel_cnn_lstm``, or a checkpoint file saved by
    ``LogMelEncoder``, give the trainable log-mel encoder; anything else a transformers model.
    """
    from mm_core.encoders.mel_net import MODEL_NAMES, is_logmel_checkpoint

    model, weights = options.get("model"), options.get("weights")
    if model in MODEL_NAMES or any(p is not None and is_logmel_checkpoint(p) for p in (model, weights)):
        from mm_core.encoders.mel_net import LogMelEncoder

        if weights is not None and model not in MODEL_NAMES and not is_logmel_checkpoint(model or ""):
            options = {k: v for k, v in options.items() if k != "model"}  # the registry's default name
        return LogMelEncoder(**options)
    from mm_core.encoders.hf_audio import HFAudioEncoder

    return HFAudioEncoder(**options)


SPEC = register(
    ModalitySpec(
        name="audio",
        decode=decode,
        score=score_audio,
        encoder_factory=create_encoder,
        default_encoder={"model": "facebook/wav2vec2-base", "pretrained": "auto"},
        extensions=EXTENSIONS,
        description="Speech/sound (WAV, FLAC, OGG, MP3) encoded by a transformers speech model at 16 kHz",
    )
)
