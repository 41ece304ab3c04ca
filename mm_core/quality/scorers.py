"""Per-modality quality scores on decoded values: raw metrics plus one normalised quality.

Each ``score_*`` function takes what its modality's ``decode`` returns and gives
``{metric: float}``. Raw metrics keep their natural units (so thresholds read
like the physics); the extra key ``"quality"`` is a normalised score in [0, 1]
(1 = no sign of a problem), so modalities that measure different things on
different scales (dB, variance, ratios) can be compared and combined into one
'overall' rule (SPEC defect 10). A plugin scorer may return ``"quality"`` too.

Normalised quality = geometric mean of components, each a clipped linear ramp
``ramp(x, lo, hi)`` (0 at ``lo``, 1 at ``hi``, linear between; on a log10
axis where noted). The geometric mean makes any single unusable aspect (a
black frame, a digital-silence clip, all-NaN series) pull quality to 0.

vision (``PIL.Image.Image``, RGB). Blur and exposure are measured on the
grayscale image downscaled so its shorter side is at most ``NORM_SIDE`` = 256 px,
which makes large photos comparable whatever their resolution (smaller images are
measured as they are: upscaling would add blur). Noise is a per-pixel property,
measured at native resolution (on a centre crop of at most 1024 x 1024 px).
  width, height, min_side   px of the original image
  blur                      variance of the 4-neighbour Laplacian, (grey levels 0-255)^2;
                            low = blurry (sharp photos: hundreds to thousands)
  noise                     robust noise sigma (MAD of Immerkaer's high-pass residual), grey levels
  brightness                mean luminance, 0-1
  contrast                  std of luminance, 0-1
  dark_clip / bright_clip   fraction of pixels <= 2 / >= 253 grey levels, 0-1
  quality = gmean(ramp(blur, 5, 100, log), 1 - ramp(noise, 8, 30),
                  1 - ramp(|brightness - 0.5|, 0.3, 0.48), 1 - ramp(dark_clip + bright_clip, 0.2, 0.9),
                  ramp(min_side, 16, 128))

audio (``DecodedAudio``: samples float32 [C, N] in [-1, 1], sample_rate). Frame
metrics use non-overlapping 20 ms frames of the channel mean.
  duration_s, sample_rate (Hz), channels
  rms_dbfs, peak_dbfs       level in dB relative to full scale (floor -100)
  snr_db                    max of two blind estimates, dB, in [0, 100]:
    snr_temporal_db         10*log10(P95 / P10) of frame power (loud frames vs the pauses
                            between them; reads ~0 dB for sound without pauses)
    snr_spectral_db         per ~32 ms STFT frame, power above a running median over 31
                            frequency bins (tones, chirps, harmonics; first 60 s)
                            White noise reads near 0 dB on both; low-frequency (pink/brown)
                            noise fluctuates per frame and can read 5-20 dB on the temporal
                            one, a known limit of blind estimates.
  clipping_ratio            fraction of samples with |x| >= 0.999, 0-1
  silence_ratio             fraction of frames below max(-60 dBFS, loudest frame - 40 dB), 0-1
  quality = gmean(ramp(snr_db, 3, 20), 1 - ramp(clipping_ratio, 0.001, 0.05),
                  1 - ramp(silence_ratio, 0.6, 1.0))

text (``str``)
  chars, words, lines       counts
  alpha_ratio, digit_ratio, space_ratio, punct_ratio   fraction of characters, 0-1
  control_ratio             control/format/unassigned characters except tab/newline/CR, 0-1
  replacement_ratio         fraction of U+FFFD (lossy decoding upstream), 0-1
  repetition                fraction of word 3-grams that repeat an earlier one, 0-1
  compression_ratio         zlib-compressed / UTF-8 size (low = repetitive; > 1 for short text)
  script_mix                fraction of letters outside the dominant Unicode script, 0-1
  quality = gmean(ramp(chars, 0, 1), ramp(alpha_ratio + digit_ratio + space_ratio, 0.3, 0.6),
                  1 - ramp(control_ratio + replacement_ratio, 0, 0.05), 1 - ramp(repetition, 0.3, 0.9),
                  1 - ramp(script_mix, 0.3, 0.5))

sensor (``numpy.ndarray`` float32 [T, C], NaN/inf kept by the decoder)
  length (T), channels (C)
  nan_fraction, inf_fraction   fraction of values, 0-1
  flat_channel_fraction     channels whose finite values have zero range, 0-1
  flat_run_fraction         time steps where no channel changed from the previous step, 0-1
  saturation_fraction       values stuck on a non-flat channel's min/max rail beyond the one
                            extreme each rail always has, 0-1
  quality = gmean(1 - ramp(nan_fraction + inf_fraction, 0, 0.1), 1 - flat_channel_fraction,
                  1 - ramp(saturation_fraction, 0.02, 0.3), 1 - ramp(flat_run_fraction, 0.3, 1.0))
"""

from __future__ import annotations

import math
import unicodedata
import zlib
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

import numpy as np
from PIL import Image
from scipy import ndimage, signal

NORM_SIDE = 256
NOISE_CROP = 1024
FRAME_S = 0.02
SPECTRAL_MAX_S = 60.0
SPECTRAL_WINDOW = 31
SPECTRAL_FRAMES = 64
_IMMERKAER = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], dtype=np.float32)


def ramp(x: float, lo: float, hi: float, *, log: bool = False) -> float:
    """0 at ``lo``, 1 at ``hi``, clipped linear between (optionally on a log10 axis)."""
    if not math.isfinite(x):
        return 0.0
    if log:
        x, lo, hi = (math.log10(max(v, 1e-12)) for v in (x, lo, hi))
    return float(min(1.0, max(0.0, (x - lo) / (hi - lo))))


def gmean(parts: Sequence[float]) -> float:
    """Geometric mean; any zero component gives 0."""
    if any(p <= 0.0 for p in parts):
        return 0.0
    return float(math.exp(sum(math.log(p) for p in parts) / len(parts)))


# --------------------------------------------------------------------------- vision


def _noise_sigma(g: np.ndarray) -> float:
    """Robust noise sigma: median absolute response of Immerkaer's Laplacian-difference kernel.

    The kernel cancels smooth content; for white noise of std s its response has
    std 6 s (kernel L2 norm 6), and the median (MAD / 0.6745) ignores the sparse
    edges and textures that inflate the plain mean of Immerkaer (1996).
    """
    if min(g.shape) < 3:
        return 0.0
    residual = ndimage.convolve(g, _IMMERKAER, mode="reflect")[1:-1, 1:-1]
    return float(np.median(np.abs(residual)) / (0.6745 * 6.0))


def score_vision(image: Image.Image) -> dict[str, float]:
    """Blur, noise, exposure and resolution of one image (see module docstring)."""
    width, height = image.size
    min_side = min(width, height)
    gray = image.convert("L")
    # Noise at native resolution (resampling would smooth it away), on a bounded centre crop.
    left, top = max(0, (width - NOISE_CROP) // 2), max(0, (height - NOISE_CROP) // 2)
    native = np.asarray(gray.crop((left, top, left + min(width, NOISE_CROP), top + min(height, NOISE_CROP))))
    noise = _noise_sigma(native.astype(np.float32))
    if min_side > NORM_SIDE:  # downscale only: upscaling would add blur that is not in the photo
        scale = NORM_SIDE / min_side
        size = (max(3, round(width * scale)), max(3, round(height * scale)))
        gray = gray.resize(size, Image.Resampling.BILINEAR, reducing_gap=2.0)
    g = np.asarray(gray, dtype=np.float32)
    blur = float(ndimage.laplace(g).var())
    luma = g / 255.0
    brightness = float(luma.mean())
    dark = float((g <= 2).mean())
    bright = float((g >= 253).mean())
    scores = {
        "width": float(width),
        "height": float(height),
        "min_side": float(min_side),
        "blur": blur,
        "noise": noise,
        "brightness": brightness,
        "contrast": float(luma.std()),
        "dark_clip": dark,
        "bright_clip": bright,
    }
    scores["quality"] = gmean(
        [
            ramp(blur, 5.0, 100.0, log=True),
            1.0 - ramp(noise, 8.0, 30.0),
            1.0 - ramp(abs(brightness - 0.5), 0.3, 0.48),
            1.0 - ramp(dark + bright, 0.2, 0.9),
            ramp(min_side, 16.0, 128.0),
        ]
    )
    return scores


# --------------------------------------------------------------------------- audio


def _db(power: float | np.ndarray, floor: float = 1e-10) -> Any:
    return 10.0 * np.log10(np.maximum(power, floor))


def _spectral_snr_db(mono: np.ndarray, sr: int) -> float:
    """Per-frame spectral SNR: noise floor = running median over 31 frequency bins.

    Tonal and harmonic sound is sparse in frequency, so the local median of each
    ~32 ms frame's power spectrum (divided by ln 2, the median of an exponential
    variable) estimates the noise under it; broadband noise, white or coloured,
    reads about 0 dB. At most 64 evenly spaced frames are analysed (a few ms a clip).
    """
    nperseg = 1 << max(5, round(math.log2(max(FRAME_S * 1.6 * sr, 1))))
    if mono.size < nperseg:
        return 0.0
    _, _, z = signal.stft(mono, sr, nperseg=nperseg, noverlap=0, boundary=None, padded=False)
    if z.shape[1] > SPECTRAL_FRAMES:
        z = z[:, np.linspace(0, z.shape[1] - 1, SPECTRAL_FRAMES).round().astype(int)]
    power = np.square(np.abs(z)).astype(np.float32)
    total = float(power.sum(dtype=np.float64))
    if total <= 1e-12:
        return 0.0
    half = SPECTRAL_WINDOW // 2
    windows = np.lib.stride_tricks.sliding_window_view(
        np.pad(power, ((half, half), (0, 0)), mode="edge"), SPECTRAL_WINDOW, axis=0
    )
    floor = np.partition(windows, half, axis=-1)[..., half] / math.log(2)
    noise = float(np.minimum(power, floor).sum(dtype=np.float64))
    return float(np.clip(_db(max(total - noise, 0.0)) - _db(noise, 1e-20), 0.0, 100.0))


def score_audio(audio: Any) -> dict[str, float]:
    """SNR, clipping, silence, level and duration of one clip (see module docstring).

    ``audio`` is anything with ``samples`` ([C, N] or [N] float in [-1, 1]) and ``sample_rate``.
    """
    samples = np.asarray(audio.samples, dtype=np.float32)
    if samples.ndim == 1:
        samples = samples[None, :]
    sr = int(audio.sample_rate)
    channels, n = samples.shape
    scores: dict[str, float] = {
        "duration_s": n / sr if sr > 0 else 0.0,
        "sample_rate": float(sr),
        "channels": float(channels),
    }
    if n == 0 or channels == 0:
        scores.update(
            rms_dbfs=-100.0,
            peak_dbfs=-100.0,
            snr_db=0.0,
            snr_temporal_db=0.0,
            snr_spectral_db=0.0,
            clipping_ratio=0.0,
            silence_ratio=1.0,
            quality=0.0,
        )
        return scores
    mono = samples.mean(axis=0, dtype=np.float64)
    frame = max(1, min(n, round(FRAME_S * sr)))
    n_frames = n // frame
    power = np.square(mono[: n_frames * frame].reshape(n_frames, frame)).mean(axis=1)
    frame_db = _db(power)
    p10, p95 = np.percentile(power, [10, 95])
    snr_temporal = float(np.clip(_db(p95) - _db(p10), 0.0, 100.0))
    snr_spectral = _spectral_snr_db(mono[: int(SPECTRAL_MAX_S * sr)], sr)
    snr_db = max(snr_temporal, snr_spectral)
    silence_floor = max(-60.0, float(frame_db.max()) - 40.0)
    clipping = float((np.abs(samples) >= 0.999).mean())
    silence = float((frame_db < silence_floor).mean()) if power.max() > 1e-10 else 1.0
    scores.update(
        rms_dbfs=float(_db(float(np.mean(np.square(mono))))),
        peak_dbfs=float(_db(float(np.abs(samples).max()) ** 2)),
        snr_db=snr_db,
        snr_temporal_db=snr_temporal,
        snr_spectral_db=snr_spectral,
        clipping_ratio=clipping,
        silence_ratio=silence,
    )
    scores["quality"] = gmean(
        [ramp(snr_db, 3.0, 20.0), 1.0 - ramp(clipping, 0.001, 0.05), 1.0 - ramp(silence, 0.6, 1.0)]
    )
    return scores


# --------------------------------------------------------------------------- text


@lru_cache(maxsize=65536)
def _script(ch: str) -> str:
    """Coarse Unicode script of a letter: the first word of its name (LATIN, CYRILLIC, CJK, HANGUL ...)."""
    name = unicodedata.name(ch, "")
    return name.split(" ", 1)[0] if name else "UNKNOWN"


def _repetition(words: list[str], n: int = 3) -> float:
    grams = [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]
    if not grams:
        return 0.0
    return 1.0 - len(set(grams)) / len(grams)


def score_text(text: str) -> dict[str, float]:
    """Length, character classes, repetition and charset sanity of one text (see module docstring)."""
    n = len(text)
    counts = {"alpha": 0, "digit": 0, "space": 0, "punct": 0, "control": 0}
    scripts: dict[str, int] = {}
    for ch in text:
        if ch.isalpha():
            counts["alpha"] += 1
            script = _script(ch)
            scripts[script] = scripts.get(script, 0) + 1
        elif ch.isdigit():
            counts["digit"] += 1
        elif ch.isspace():
            counts["space"] += 1
        elif unicodedata.category(ch)[0] in "PS":
            counts["punct"] += 1
        elif unicodedata.category(ch) in ("Cc", "Cf", "Cn", "Co", "Cs"):
            counts["control"] += 1
    words = text.lower().split()
    raw = text.encode("utf-8", errors="replace")
    letters = sum(scripts.values())
    denom = max(n, 1)
    scores = {
        "chars": float(n),
        "words": float(len(words)),
        "lines": float(text.count("\n") + 1 if text else 0),
        **{f"{k}_ratio": v / denom for k, v in counts.items()},
        "replacement_ratio": text.count("\ufffd") / denom,
        "repetition": _repetition(words),
        "compression_ratio": len(zlib.compress(raw, 6)) / len(raw) if raw else 1.0,
        "script_mix": 1.0 - max(scripts.values()) / letters if letters else 0.0,
    }
    wordlike = scores["alpha_ratio"] + scores["digit_ratio"] + scores["space_ratio"]
    scores["quality"] = gmean(
        [
            ramp(n, 0.0, 1.0),
            ramp(wordlike, 0.3, 0.6),
            1.0 - ramp(scores["control_ratio"] + scores["replacement_ratio"], 0.0, 0.05),
            1.0 - ramp(scores["repetition"], 0.3, 0.9),
            1.0 - ramp(scores["script_mix"], 0.3, 0.5),
        ]
    )
    return scores


# --------------------------------------------------------------------------- sensor


def score_sensor(series: Any) -> dict[str, float]:
    """NaN/inf, flat-line and saturation fractions and shape of one series [T, C] (see module docstring)."""
    x = np.asarray(series, dtype=np.float64)
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2:
        raise ValueError(f"sensor series must be [T, C], got shape {x.shape}")
    t, c = x.shape
    total = max(x.size, 1)
    nan = float(np.isnan(x).sum() / total)
    inf = float(np.isinf(x).sum() / total)
    finite = np.isfinite(x)
    flat_channels = 0
    stuck = 0
    live = 0
    for j in range(c):
        col = x[finite[:, j], j]
        if col.size == 0 or col.max() == col.min():
            flat_channels += 1
            continue
        lo, hi = col.min(), col.max()
        tol = 1e-9 * (hi - lo)
        stuck += max(0, int((col <= lo + tol).sum()) - 1) + max(0, int((col >= hi - tol).sum()) - 1)
        live += col.size
    unchanged = np.all(np.diff(x, axis=0) == 0, axis=1) if t > 1 and c > 0 else np.zeros(0, dtype=bool)
    scores = {
        "length": float(t),
        "channels": float(c),
        "nan_fraction": nan,
        "inf_fraction": inf,
        "flat_channel_fraction": flat_channels / c if c else 1.0,
        "flat_run_fraction": float(unchanged.mean()) if unchanged.size else 0.0,
        "saturation_fraction": stuck / live if live else 0.0,
    }
    scores["quality"] = gmean(
        [
            1.0 - ramp(nan + inf, 0.0, 0.1),
            1.0 - scores["flat_channel_fraction"],
            1.0 - ramp(scores["saturation_fraction"], 0.02, 0.3),
            1.0 - ramp(scores["flat_run_fraction"], 0.3, 1.0),
        ]
    )
    return scores
