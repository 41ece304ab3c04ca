"""``encode``: raw items of one modality -> features and mask, via the registry."""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from typing import Any

import torch

from mm_core.encoders.base import ModalityEncoder
from mm_core.registry import get

_CACHE: dict[tuple[str, str], ModalityEncoder] = {}
_LOCK = threading.Lock()
_RUN_OPTIONS = {"batch_size", "device", "precision", "progress"}


def get_encoder(modality: str, **options: Any) -> ModalityEncoder:
    """The modality's encoder for ``options`` (default if none), built once and cached."""
    key = (modality, json.dumps(options, sort_keys=True, default=str))
    with _LOCK:
        enc = _CACHE.get(key)
        if enc is None:
            enc = get(modality).create_encoder(**options)
            _CACHE[key] = enc
    return enc


def encode(modality: str, items: Sequence[Any], **options: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """Decode raw ``items`` (paths/bytes for media, strings for text) and encode them.

    ``options`` holds encoder options (``model``, ``weights`` ...) and run options
    (``batch_size``, ``device``, ``precision``, ``progress``). Returns CPU float32
    ``features [B, S, D]`` and bool ``mask [B, S]`` (True = real token).
    """
    run = {k: options.pop(k) for k in list(options) if k in _RUN_OPTIONS}
    spec = get(modality)
    encoder = get_encoder(modality, **options)
    decoded = [spec.decode(item) for item in items]
    return encoder.encode(decoded, **run)
