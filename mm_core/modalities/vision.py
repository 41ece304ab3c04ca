"""Vision modality: safe image decoding to RGB, timm preprocessing, timm encoders.

Decoding keeps PIL's decompression-bomb limit (its warning is an error too),
restricts PIL to the formats we promise (fewer parsers exposed to untrusted
files), loads pixels inside the ``try`` so truncated files fail here rather
than later in a DataLoader, applies EXIF orientation, and scales 16-bit images
to 8 bits instead of letting ``convert`` clip them.
"""

from __future__ import annotations

import io
import os
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps

from mm_core.encoders.base import ModalityEncoder
from mm_core.errors import DecodeError
from mm_core.quality.scorers import score_vision
from mm_core.registry import ModalitySpec, register

FORMATS = ("JPEG", "PNG", "BMP", "WEBP")
EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
_SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N", "I")
_ALPHA = ("RGBA", "LA", "PA", "RGBa", "La")


def _describe(item: Any) -> str:
    return f"{len(item)} bytes" if isinstance(item, bytes | bytearray | memoryview) else str(item)


def _open_source(item: Any) -> Any:
    """A path string or a file-like object over in-memory bytes."""
    if isinstance(item, bytes | bytearray | memoryview):
        if len(item) == 0:
            raise DecodeError("empty image data")
        return io.BytesIO(bytes(item))
    if isinstance(item, str | os.PathLike):
        path = Path(item)
        if not path.is_file():
            raise DecodeError(f"image file not found: {path}")
        if path.stat().st_size == 0:
            raise DecodeError(f"empty image file: {path}")
        return str(path)
    raise DecodeError(f"cannot decode an image from {type(item).__name__}; pass a path or bytes")


def to_rgb(img: Image.Image) -> Image.Image:
    """Any PIL mode -> 8-bit RGB: 16-bit scaled (not clipped), alpha composited on white."""
    if img.mode in _SIXTEEN_BIT:
        # mode "I" holds 16-bit PNG/grey data promoted to int32; treat it as 16-bit too
        arr = np.asarray(img, dtype=np.float64)
        arr = np.clip(np.rint(arr / 257.0), 0, 255).astype(np.uint8)
        return Image.fromarray(arr, mode="L").convert("RGB")
    if img.mode == "F":
        arr = np.nan_to_num(np.asarray(img, dtype=np.float64))
        lo, hi = float(arr.min()), float(arr.max())
        arr = (arr - lo) / (hi - lo) * 255.0 if hi > lo else np.zeros_like(arr)
        return Image.fromarray(arr.astype(np.uint8), mode="L").convert("RGB")
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in _ALPHA:
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


def decode(item: str | os.PathLike[str] | bytes) -> Image.Image:
    """Path or bytes -> RGB ``PIL.Image``; ``DecodeError`` on anything unreadable or unsafe."""
    source = _open_source(item)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(source, formats=FORMATS) as img:
                img.load()
                oriented = ImageOps.exif_transpose(img)
                rgb = to_rgb(oriented)
                rgb.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise DecodeError(f"image {_describe(item)} exceeds the pixel limit (decompression bomb): {exc}") from exc
    except Image.UnidentifiedImageError as exc:
        raise DecodeError(f"not a {'/'.join(FORMATS)} image: {_describe(item)}") from exc
    except Exception as exc:  # truncated data, bad chunks, codec errors
        raise DecodeError(f"cannot decode image {_describe(item)}: {type(exc).__name__}: {exc}") from exc
    if rgb.width == 0 or rgb.height == 0:
        raise DecodeError(f"image {_describe(item)} has no pixels")
    return rgb


def build_transform(
    data_config: Mapping[str, Any],
    *,
    train: bool = False,
    hflip: float = 0.5,
    color_jitter: float | tuple[float, ...] = 0.4,
    scale: tuple[float, float] = (0.08, 1.0),
) -> Callable[[Image.Image], Any]:
    """timm's transform for a model's data config (input size, crop_pct, mean/std, interpolation).

    Eval: resize to ``size / crop_pct`` (e.g. 256 for 224) then center crop.
    Train: RandomResizedCrop(scale) + horizontal flip + ColorJitter.
    """
    from timm.data import create_transform

    keys = ("input_size", "interpolation", "mean", "std", "crop_pct", "crop_mode")
    cfg = {k: data_config[k] for k in keys if k in data_config}
    if train:
        return create_transform(**cfg, is_training=True, hflip=hflip, color_jitter=color_jitter, scale=scale)
    return create_transform(**cfg, is_training=False)


def create_encoder(**options: Any) -> ModalityEncoder:
    """Factory for the registry (imports timm only when an encoder is built)."""
    from mm_core.encoders.timm_vision import TimmVisionEncoder

    return TimmVisionEncoder(**options)


SPEC = register(
    ModalitySpec(
        name="vision",
        decode=decode,
        score=score_vision,
        encoder_factory=create_encoder,
        default_encoder={"model": "vit_small_patch16_224", "pretrained": "auto"},
        extensions=EXTENSIONS,
        description="Images (JPEG, PNG, BMP, WEBP) encoded by a timm backbone",
    )
)
