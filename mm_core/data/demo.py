"""Embedded demo dataset: synthetic image, caption, audio and IMU samples sharing latent factors.

The platform must run end to end without any downloaded data; this writes
``root/media/{vision,audio,sensor}/<id>.{png,wav,npy}`` and ``root/manifest.jsonl``
(labels shape/colour/size/motion; the caption inline). Each sample draws from
its own ``SeedSequence([seed, index])``, split into independent streams for the
factors and for each modality, so output is byte-identical for a seed, does not
depend on the order or process that generates it, and changing ``missing``
does not change any sample's content. Files are renamed into place; the
manifest is removed first and written last, so a killed generation never
leaves a complete-looking manifest.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from mm_core.atomic import atomic_write_bytes, atomic_write_text
from mm_core.data import demo_render as render
from mm_core.errors import ConfigError

DEMO_MODALITIES = ("vision", "text", "audio", "sensor")
MANIFEST = "manifest.jsonl"
_SUFFIX = {"vision": ".png", "audio": ".wav", "sensor": ".npy"}


def _missing_rates(missing: Mapping[str, float] | float) -> dict[str, float]:
    rates = (
        {m: float(missing) for m in DEMO_MODALITIES}
        if isinstance(missing, int | float)
        else {m: float(missing.get(m, 0.0)) for m in DEMO_MODALITIES}
    )
    unknown = set(missing) - set(DEMO_MODALITIES) if isinstance(missing, Mapping) else set()
    if unknown or not all(0.0 <= r <= 1.0 for r in rates.values()):
        raise ConfigError(f"missing must be rates in [0, 1] for {DEMO_MODALITIES}, got {missing!r}")
    return rates


def _encode(modality: str, value: Any) -> bytes:
    buf = io.BytesIO()
    if modality == "vision":
        value.save(buf, format="PNG", compress_level=1)
    elif modality == "audio":
        sf.write(buf, value, render.SAMPLE_RATE, format="WAV", subtype="PCM_16")
    else:
        np.save(buf, value, allow_pickle=False)
    return buf.getvalue()


def demo_sample(index: int, seed: int, rates: Mapping[str, float]) -> tuple[dict[str, str], dict[str, Any]]:
    """Factors and rendered modalities of sample ``index`` (missing ones left out)."""
    factor_rng, keep_rng, *media_rngs = (
        np.random.default_rng(s)
        for s in np.random.SeedSequence([seed, index]).spawn(2 + len(DEMO_MODALITIES))
    )
    factors = {
        "shape": render.SHAPES[int(factor_rng.integers(len(render.SHAPES)))],
        "colour": list(render.COLOURS)[int(factor_rng.integers(len(render.COLOURS)))],
        "size": list(render.SIZES)[int(factor_rng.integers(len(render.SIZES)))],
        "motion": render.MOTIONS[int(factor_rng.integers(len(render.MOTIONS)))],
    }
    keep = keep_rng.random(len(DEMO_MODALITIES)) >= np.array([rates[m] for m in DEMO_MODALITIES])
    if not keep.any():  # never all missing: keep one, chosen by the same stream
        keep[int(keep_rng.integers(len(DEMO_MODALITIES)))] = True
    renderers = {
        "vision": render.render_image,
        "text": render.render_caption,
        "audio": render.render_audio,
        "sensor": render.render_sensor,
    }
    media = {
        m: renderers[m](**factors, rng=rng)
        for m, rng, k in zip(DEMO_MODALITIES, media_rngs, keep, strict=True)
        if k
    }
    return factors, media


def make_demo_dataset(
    root: str | os.PathLike, n_samples: int, seed: int = 0, missing: Mapping[str, float] | float = 0.15
) -> dict[str, str]:
    """Write ``n_samples`` demo samples under ``root``; returns :func:`read_source` arguments.

    ``missing``: the fraction of samples lacking each modality (one rate, or a
    rate per modality name; unnamed modalities are never missing). A sample is
    never left without any modality.
    """
    if n_samples < 0:
        raise ConfigError(f"n_samples must be >= 0, got {n_samples}")
    rates = _missing_rates(missing)
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    manifest = root / MANIFEST
    manifest.unlink(missing_ok=True)
    for m in _SUFFIX:
        (root / "media" / m).mkdir(parents=True, exist_ok=True)
    lines = []
    for index in range(n_samples):
        sample_id = f"{index:06d}"
        factors, media = demo_sample(index, seed, rates)
        row: dict[str, Any] = {"sample_id": sample_id}
        for modality, value in media.items():
            if modality == "text":
                row["text"] = value
                continue
            rel = f"media/{modality}/{sample_id}{_SUFFIX[modality]}"
            atomic_write_bytes(root / rel, _encode(modality, value), fsync=False)
            row[modality] = rel
        row["labels"] = factors
        lines.append(json.dumps(row, ensure_ascii=False))
    atomic_write_text(manifest, "".join(line + "\n" for line in lines))
    return {"layout": "manifest", "root": str(root), "path": MANIFEST, "source": "demo"}
