"""``.parquet`` shard: vectors as ``fixed_size_list<float32>[D]`` columns built from the flat buffer.

Columns: ``sample_id`` string, ``unified_vector``, one bool ``mask_{modality}``
per modality, ``vec_{modality}`` fixed-size lists, ``metadata`` JSON string,
``q_{name}`` float64. The schema metadata key ``mm_fusion`` holds the
modality order and dims so a reader needs nothing else.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from mm_core.export.records import Shard

SUFFIX = ".parquet"
SCHEMA_KEY = b"mm_fusion"
#: Row groups of about this many bytes: large enough to read fast, small enough to stream.
_ROW_GROUP_BYTES = 64 << 20


def vector_type(dim: int) -> pa.FixedSizeListType:
    """``fixed_size_list<float32>[dim]`` with non-null items (no definition levels to encode)."""
    return pa.list_(pa.field("item", pa.float32(), nullable=False), dim)


def vector_column(arr: np.ndarray) -> pa.FixedSizeListArray:
    """``[N, D]`` float32 -> fixed-size list column, zero-copy from the contiguous buffer."""
    flat = pa.array(np.ascontiguousarray(arr, dtype=np.float32).reshape(-1))
    return pa.FixedSizeListArray.from_arrays(flat, type=vector_type(arr.shape[1]))


def to_table(shard: Shard) -> pa.Table:
    """The shard as an Arrow table (no per-row Python loop over vectors)."""
    fields = [pa.field("sample_id", pa.string(), nullable=False)]
    arrays = [pa.array(shard.sample_ids, pa.string())]

    def add(name: str, array: pa.Array, nullable: bool = True) -> None:
        fields.append(pa.field(name, array.type, nullable=nullable))
        arrays.append(array)

    add("unified_vector", vector_column(shard.vectors), nullable=False)
    mask_t = np.ascontiguousarray(shard.modality_mask.T)  # one contiguous row per modality
    for j, m in enumerate(shard.modalities):
        add(f"mask_{m}", pa.array(mask_t[j], pa.bool_()), nullable=False)
    for m, arr in shard.modality_vectors.items():
        add(f"vec_{m}", vector_column(arr), nullable=False)
    if shard.metadata_json is not None:
        add("metadata", pa.array(shard.metadata_json, pa.string()))
    if shard.quality is not None:
        quality_t = np.ascontiguousarray(shard.quality.T)
        for j, q in enumerate(shard.quality_columns):
            add(f"q_{q}", pa.array(quality_t[j], pa.float64()))
    info = {
        "modalities": shard.modalities,
        "dim": int(shard.vectors.shape[1]),
        "modality_dims": {m: int(a.shape[1]) for m, a in shard.modality_vectors.items()},
        "quality_columns": shard.quality_columns if shard.quality is not None else None,
    }
    schema = pa.schema(fields, metadata={SCHEMA_KEY: json.dumps(info).encode()})
    return pa.Table.from_arrays(arrays, schema=schema)


def write(shard: Shard, path: Path) -> None:
    """Write ``shard`` to the (temporary) file ``path``; float columns uncompressed, strings snappy."""
    table = to_table(shard)
    row_bytes = max(1, table.nbytes // max(1, table.num_rows))
    strings = [c for c in ("sample_id", "metadata") if c in table.column_names]
    pq.write_table(
        table,
        path,
        row_group_size=max(1024, _ROW_GROUP_BYTES // row_bytes),
        compression={c: ("snappy" if c in strings else "none") for c in table.column_names},
        use_dictionary=False,
        write_statistics=strings,
    )


def vectors_of(column: pa.ChunkedArray | pa.Array, dim: int) -> np.ndarray:
    """Fixed-size list column -> ``[N, dim]`` float32 (offset-safe via ``flatten``)."""
    arr = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    return arr.flatten().to_numpy(zero_copy_only=False).reshape(-1, dim)


def read(path: Path, *, columns_only: bool = False) -> Shard:
    """Read a shard file; ``columns_only`` skips modality vectors, metadata and quality."""
    schema = pq.read_schema(path)
    info = json.loads(schema.metadata[SCHEMA_KEY])
    modalities, dim = info["modalities"], info["dim"]
    base = ["sample_id", "unified_vector", *(f"mask_{m}" for m in modalities)]
    table = pq.read_table(path, columns=base if columns_only else None)
    n = table.num_rows
    mask = np.zeros((n, len(modalities)), dtype=bool)
    for j, m in enumerate(modalities):
        mask[:, j] = table.column(f"mask_{m}").to_numpy(zero_copy_only=False)
    ids = table.column("sample_id").to_pylist()
    vectors = vectors_of(table.column("unified_vector"), dim)
    if columns_only:
        return Shard(ids, vectors, mask, modalities)
    vecs = {m: vectors_of(table.column(f"vec_{m}"), d) for m, d in info["modality_dims"].items()}
    meta = table.column("metadata").to_pylist() if "metadata" in table.column_names else None
    qcols = info["quality_columns"]
    quality = None
    if qcols is not None:
        quality = np.zeros((n, len(qcols)), dtype=np.float64)
        for j, q in enumerate(qcols):
            quality[:, j] = table.column(f"q_{q}").to_numpy(zero_copy_only=False)
    return Shard(ids, vectors, mask, modalities, vecs, meta, quality, qcols or [])
