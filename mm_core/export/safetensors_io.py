"""``.safetensors`` shard: tensors plus ids and names as JSON strings in the header.

Tensors: ``unified_vector`` float32 [N, D], ``modality_mask`` bool [N, M],
``vec_{modality}`` float32 [N, D_m], ``quality`` float64 [N, Q]. Header
metadata (str -> str): ``sample_id``, ``modalities``, ``quality_columns``
and ``metadata`` (each a JSON list).
"""

from __future__ import annotations

import json
from pathlib import Path

from safetensors import safe_open
from safetensors.numpy import save_file

from mm_core.export.records import Shard

SUFFIX = ".safetensors"
#: The safetensors loader refuses headers over 100 MB; stay well below it.
_MAX_HEADER = 64 << 20


def write(shard: Shard, path: Path) -> None:
    """Write ``shard`` to the (temporary) file ``path``."""
    tensors = {"unified_vector": shard.vectors, "modality_mask": shard.modality_mask}
    tensors.update({f"vec_{m}": a for m, a in shard.modality_vectors.items()})
    header = {
        "format": "mm_fusion",
        "sample_id": json.dumps(shard.sample_ids, ensure_ascii=False),
        "modalities": json.dumps(shard.modalities),
    }
    if shard.quality is not None:
        tensors["quality"] = shard.quality
        header["quality_columns"] = json.dumps(shard.quality_columns)
    if shard.metadata_json is not None:
        header["metadata"] = "[" + ",".join(shard.metadata_json) + "]"
    size = sum(len(v) for v in header.values())
    if size > _MAX_HEADER:
        raise ValueError(f"safetensors header of {size} bytes is too large; write smaller shards")
    save_file(tensors, path, metadata=header)


def read(path: Path, *, columns_only: bool = False) -> Shard:
    """Read a shard file; ``columns_only`` skips modality vectors, metadata and quality."""
    with safe_open(path, framework="np") as f:
        header = f.metadata()
        modalities = json.loads(header["modalities"])
        ids = json.loads(header["sample_id"])
        vectors = f.get_tensor("unified_vector")
        mask = f.get_tensor("modality_mask").astype(bool, copy=False)
        if columns_only:
            return Shard(ids, vectors, mask, modalities)
        names = set(f.keys())
        vecs = {m: f.get_tensor(f"vec_{m}") for m in modalities if f"vec_{m}" in names}
        quality = f.get_tensor("quality") if "quality" in names else None
    meta = None
    if "metadata" in header:
        meta = [json.dumps(r, ensure_ascii=False, sort_keys=True) for r in json.loads(header["metadata"])]
    qcols = json.loads(header["quality_columns"]) if quality is not None else []
    return Shard(ids, vectors, mask, modalities, vecs, meta, quality, qcols)
