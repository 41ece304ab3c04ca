"""``.npy`` shard: a directory of plain arrays that ``np.load(allow_pickle=False)`` opens (and can mmap).

Layout of ``npy/{shard_id}/``: ``unified_vector.npy`` float32 [N, D],
``sample_id.npy`` unicode [N], ``modality_mask.npy`` bool [N, M],
``modalities.npy`` unicode [M], ``vec_{modality}.npy`` float32 [N, D_m],
``quality.npy`` float64 [N, Q] + ``quality_columns.npy``, ``metadata.jsonl``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mm_core.export.records import Shard

SUFFIX = ""  # a directory


def _strings(values: list[str]) -> np.ndarray:
    """Fixed-width unicode array (never pickled objects); works for non-ASCII ids."""
    return np.array(values, dtype=np.str_) if values else np.zeros(0, dtype="<U1")


def write(shard: Shard, directory: Path) -> None:
    """Write ``shard`` into the (empty, temporary) ``directory``."""
    np.save(directory / "unified_vector.npy", shard.vectors)
    np.save(directory / "sample_id.npy", _strings(shard.sample_ids))
    np.save(directory / "modality_mask.npy", shard.modality_mask)
    np.save(directory / "modalities.npy", _strings(shard.modalities))
    for m, arr in shard.modality_vectors.items():
        np.save(directory / f"vec_{m}.npy", arr)
    if shard.quality is not None:
        np.save(directory / "quality.npy", shard.quality)
        np.save(directory / "quality_columns.npy", _strings(shard.quality_columns))
    if shard.metadata_json is not None:
        text = "".join(line + "\n" for line in shard.metadata_json)
        (directory / "metadata.jsonl").write_text(text, encoding="utf-8")


def _load(path: Path) -> np.ndarray:
    return np.load(path, allow_pickle=False)


def read(directory: Path, *, columns_only: bool = False) -> Shard:
    """Read a shard directory; ``columns_only`` skips modality vectors, metadata and quality."""
    modalities = [str(s) for s in _load(directory / "modalities.npy")]
    shard = Shard(
        sample_ids=[str(s) for s in _load(directory / "sample_id.npy")],
        vectors=_load(directory / "unified_vector.npy"),
        modality_mask=_load(directory / "modality_mask.npy"),
        modalities=modalities,
    )
    if columns_only:
        return shard
    vecs = {m: _load(directory / f"vec_{m}.npy") for m in modalities if (directory / f"vec_{m}.npy").exists()}
    meta_path = directory / "metadata.jsonl"
    # split on "\n" only: JSON escapes it, but not other separators str.splitlines() would cut at (U+2028)
    meta = meta_path.read_text(encoding="utf-8").split("\n")[:-1] if meta_path.exists() else None
    quality, qcols = None, []
    if (directory / "quality.npy").exists():
        quality = _load(directory / "quality.npy")
        qcols = [str(s) for s in _load(directory / "quality_columns.npy")]
    return Shard(shard.sample_ids, shard.vectors, shard.modality_mask, modalities, vecs, meta, quality, qcols)
