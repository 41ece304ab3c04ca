"""Backbone adapters behind the one ``ModalityEncoder`` interface, plus safe weight loading.

Imports are lazy so that importing ``mm_core.encoders.base`` does not pull in
timm or transformers.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "ModalityEncoder": "mm_core.encoders.base",
    "TimmVisionEncoder": "mm_core.encoders.timm_vision",
    "save_timm_model": "mm_core.encoders.timm_vision",
    "HFAudioEncoder": "mm_core.encoders.hf_audio",
    "HFTextEncoder": "mm_core.encoders.hf_text",
    "SensorEncoder": "mm_core.encoders.sensor_net",
    "LogMelEncoder": "mm_core.encoders.mel_net",
    "load_state_dict_file": "mm_core.encoders.weights",
    "save_state_dict": "mm_core.encoders.weights",
    "resolve_hf_model": "mm_core.encoders.weights",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'mm_core.encoders' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
