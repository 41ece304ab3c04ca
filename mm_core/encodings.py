"""Per-shard, per-modality encodings on disk: token features, masks, row ids, and trainable inputs.

The encodings of one shard and one modality live in one safetensors file
(``features`` [N, S, D] float16, ``mask`` [N, S] uint8, ``pooled`` [N, D]
float32 masked means) with the sample ids in the header, so fusion and training
read cached encodings instead of re-running the frozen encoders. float16 halves
the cache; the fused output is float32.

An encoder that trains with the fusion model (no pretrained weights, e.g. the
sensor CNN-LSTM) cannot be cached as features and trained at the same time, so
its file also holds the encoder's preprocessed *inputs* (``inputs.*`` tensors,
packed by :mod:`mm_core.training.inputs`, float32 and exact). ``content`` keys
(a hash of each raw item) let training treat identical items (one caption
shared by many clips, one image with five captions) as the same item.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file, safe_open, save_file

from mm_core.atomic import atomic_path

INPUT_PREFIX = "inputs."


@dataclass
class ShardEncodings:
    """One modality's encodings for the samples of a shard that have it."""

    modality: str
    sample_ids: list[str]
    features: torch.Tensor  # [N, S, D]
    mask: torch.Tensor  # [N, S] bool
    encoder: dict[str, str]  # provenance: name, weights id, pretrained
    inputs: dict[str, torch.Tensor] = field(default_factory=dict)  # preprocessed encoder inputs, first dim N
    codec: str = ""  # how ``inputs`` are packed (mm_core.training.inputs)
    content: list[str] = field(default_factory=list)  # per sample: hash of the raw item

    @property
    def pooled(self) -> torch.Tensor:
        """Masked mean over tokens: one float32 vector per sample."""
        m = self.mask.unsqueeze(-1).float()
        return (self.features.float() * m).sum(1) / m.sum(1).clamp(min=1.0)

    @property
    def has_inputs(self) -> bool:
        return bool(self.codec)


def save_encodings(enc: ShardEncodings, path: str | Path) -> Path:
    """Write atomically (temporary name, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {
        "features": enc.features.to(torch.float16).contiguous(),
        "mask": enc.mask.to(torch.uint8).contiguous(),
        "pooled": enc.pooled.contiguous(),
    }
    tensors.update({INPUT_PREFIX + k: v.contiguous() for k, v in enc.inputs.items()})
    meta = {
        "modality": enc.modality,
        "sample_ids": json.dumps(enc.sample_ids, ensure_ascii=False),
        "encoder": json.dumps(enc.encoder, sort_keys=True),
        "codec": enc.codec,
        "content": json.dumps(enc.content),
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
        inputs={k.removeprefix(INPUT_PREFIX): v for k, v in tensors.items() if k.startswith(INPUT_PREFIX)},
        codec=meta.get("codec", ""),
        content=json.loads(meta.get("content", "[]")),
    )
