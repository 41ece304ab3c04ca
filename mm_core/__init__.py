"""mm_core: the multimodal fusion library (no Dagster import).

Public API, imported lazily so ``import mm_core`` stays cheap:

- ``available_modalities()``, ``get_modality(name)``, ``register_modality(spec)``
- ``encode(modality, items, **options)`` -> ``(features [B, S, D], mask [B, S])``
- ``build_fusion_model(encoder_dims, *, shared_dim, output_dim, strategy, pooling, num_layers, num_heads)``
- ``read_source(layout, root, **options)``, ``score_and_filter(records, thresholds=None)``,
  ``make_demo_dataset(root, n_samples, seed=0)``
- writers: ``ShardedWriter``, ``read_vectors``
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "available_modalities": "mm_core.registry",
    "ModalitySpec": "mm_core.registry",
    "get_modality": ("mm_core.registry", "get"),
    "register_modality": ("mm_core.registry", "register"),
    "encode": "mm_core.encoding",
    "get_encoder": "mm_core.encoding",
    "ModalityEncoder": "mm_core.encoders.base",
    "build_fusion_model": "mm_core.fusion",
    "FusionModel": "mm_core.fusion",
    "read_source": "mm_core.data",
    "make_demo_dataset": "mm_core.data",
    "score_and_filter": "mm_core.quality",
    "ShardedWriter": "mm_core.export",
    "read_vectors": "mm_core.export",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    target = _EXPORTS.get(name)
    if target is None:
        raise AttributeError(f"module 'mm_core' has no attribute {name!r}")
    module, attr = target if isinstance(target, tuple) else (target, name)
    value = getattr(importlib.import_module(module), attr)
    globals()[name] = value
    return value
