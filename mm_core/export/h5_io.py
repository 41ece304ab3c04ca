"""``.h5`` shard: uncompressed datasets (gzip was ~15x slower, defect 7), UTF-8 ids.

Datasets: ``unified_vector`` float32 [N, D]; ``sample_id`` variable-length
UTF-8 strings; ``modality_mask`` bool [N, M] with attribute ``modalities``;
``vec_{modality}`` float32 [N, D_m]; ``metadata`` UTF-8 JSON per row;
``quality`` float64 [N, Q] with attribute ``columns``.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

from mm_core.export.records import Shard

SUFFIX = ".h5"
_STR = h5py.string_dtype("utf-8")


def _strings(values: list[str]) -> np.ndarray:
    return np.array(values, dtype=object) if values else np.zeros(0, dtype=object)


def write(shard: Shard, path: Path) -> None:
    """Write ``shard`` to the (temporary) file ``path``."""
    with h5py.File(path, "w") as f:
        f.attrs["modalities"] = shard.modalities
        f.attrs["dim"] = shard.vectors.shape[1]
        f.create_dataset("unified_vector", data=shard.vectors)
        f.create_dataset("sample_id", data=_strings(shard.sample_ids), dtype=_STR)
        mask = f.create_dataset("modality_mask", data=shard.modality_mask)
        mask.attrs["modalities"] = shard.modalities
        for m, arr in shard.modality_vectors.items():
            f.create_dataset(f"vec_{m}", data=arr)
        if shard.metadata_json is not None:
            f.create_dataset("metadata", data=_strings(shard.metadata_json), dtype=_STR)
        if shard.quality is not None:
            q = f.create_dataset("quality", data=shard.quality)
            q.attrs["columns"] = shard.quality_columns


def _str_list(values: object) -> list[str]:
    return [v.decode() if isinstance(v, bytes) else str(v) for v in np.atleast_1d(values)]


def read(path: Path, *, columns_only: bool = False) -> Shard:
    """Read a shard file; ``columns_only`` skips modality vectors, metadata and quality."""
    with h5py.File(path, "r") as f:
        modalities = _str_list(f["modality_mask"].attrs["modalities"]) if f["modality_mask"].shape[1] else []
        ids = list(f["sample_id"].asstr()[...])
        vectors, mask = f["unified_vector"][...], f["modality_mask"][...].astype(bool, copy=False)
        if columns_only:
            return Shard(ids, vectors, mask, modalities)
        vecs = {m: f[f"vec_{m}"][...] for m in modalities if f"vec_{m}" in f}
        meta = list(f["metadata"].asstr()[...]) if "metadata" in f else None
        quality, qcols = None, []
        if "quality" in f:
            quality = f["quality"][...]
            qcols = _str_list(f["quality"].attrs["columns"]) if quality.shape[1] else []
    return Shard(ids, vectors, mask, modalities, vecs, meta, quality, qcols)
