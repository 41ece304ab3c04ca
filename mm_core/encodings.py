"""Per-shard, per-modality encodings on disk: token features, masks and row ids.

The encodings of one shard and one modality live in one safetensors file
(``features`` [N, S, D] float16, ``mask`` [N, S] uint8, ``pooled`` [N, D]
float32 masked means) with the sample ids in the header, so fusion and training
read cached encodings instead of re-running the frozen encoders. float16 halves
the cache; the fused output is float32.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, safe_open, save_file

from mm_core.atomic import atomic_path


@dataclass
class ShardEncodings:
    """One modality's encodings for the samples of a shard that have it."""

    modality: str
    sample_ids: list[str]
    features: torch.Tensor  # [N, S, D]
    mask: torch.Tensor  # [N, S] bool
    encoder: dict[str, str]  # provenance: name, weights id, pretrained

    @property
    def pooled(self) -> torch.Tensor:
        """Masked mean over tokens: one float32 vector per sample."""
        m = self.mask.unsqueeze(-1).float()
        return (self.features.float() * m).sum(1) / m.sum(1).clamp(min=1.0)


def save_encodings(enc: ShardEncodings, path: str | Path) -> Path:
    """Write atomically (temporary name, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {
        "features": enc.features.to(torch.float16).contiguous(),
        "mask": enc.mask.to(torch.uint8).contiguous(),
        "pooled": enc.pooled.contiguous(),
    }
    meta = {
        "modality": enc.modality,
        "sample_ids": json.dumps(enc.sample_ids, ensure_ascii=False),
        "encoder": json.dumps(enc.encoder, sort_keys=True),
    }
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=meta)
    return path


def load_encodings(path: str | Path) -> ShardEncodings:
    """Read a file written by :func:`save_encodings`."""
    path = str(path)
    with safe_open(path, framework="pt") as fh:
        meta = fh.metadata()
    tensors = load_file(path)
    return ShardEncodings(
        modality=meta["modality"],
        sample_ids=json.loads(meta["sample_ids"]),
        features=tensors["features"].float(),
        mask=tensors["mask"].bool(),
        encoder=json.loads(meta["encoder"]),
    )
