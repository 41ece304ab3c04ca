"""Deterministic, append-stable sharding of ingested records (SPEC P3, R2).

Why an index rather than ``hash(id) % n_shards``: with a modulus, growing the
dataset (more shards) would move existing samples and invalidate every
downstream partition. Here a shard index (Parquet ``sample_id -> shard`` beside
the shards) is the source of truth: known samples keep their shard; new ones,
ordered by a stable hash of their id (blake2b, not Python's salted ``hash``),
fill the last shard while it has room, then new shards. So the same ids give
the same shards whatever the input order, and adding data never moves a sample.

Each shard is a Parquet table of records (:func:`records_to_table`). Media stay
where they are and are referenced by path (images and audio are big, and the
encoders stream them from there); small items (texts, sensor windows, inline
bytes from ``datasets``) are stored in the shard itself.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path

import pyarrow as pa
import pyarrow.ipc as ipc
import pyarrow.parquet as pq

from mm_core.atomic import atomic_path
from mm_core.data.records import SampleRecord, records_to_table, table_to_records
from mm_core.errors import ConfigError

INDEX_NAME = "shard_index.parquet"
SHARD_PREFIX = "shard-"
_STAGE_SCHEMA = pa.schema(
    [
        ("sample_id", pa.string()),
        ("source", pa.string()),
        (
            "modalities",
            pa.list_(pa.struct([("name", pa.string()), ("text", pa.string()), ("data", pa.binary())])),
        ),
        ("labels", pa.map_(pa.string(), pa.string())),
        ("errors", pa.list_(pa.string())),
    ]
)


def sample_hash(sample_id: str) -> int:
    """Stable 64-bit hash of a sample id (same on every machine and run)."""
    return int.from_bytes(hashlib.blake2b(sample_id.encode("utf-8"), digest_size=8).digest(), "big")


def shard_name(number: int) -> str:
    """``3 -> "shard-00003"``."""
    return f"{SHARD_PREFIX}{number:05d}"


def _shard_number(name: str) -> int:
    return int(name.removeprefix(SHARD_PREFIX))


def load_shard_index(index_path: str | os.PathLike) -> dict[str, str]:
    """``sample_id -> shard`` from an index file; empty when there is none yet."""
    path = Path(index_path)
    if not path.is_file():
        return {}
    table = pq.read_table(path, columns=["sample_id", "shard"])
    return dict(zip(table["sample_id"].to_pylist(), table["shard"].to_pylist(), strict=True))


def save_shard_index(index: dict[str, str], index_path: str | os.PathLike) -> None:
    """Write the index atomically (sorted, so equal indexes give equal files)."""
    ids = sorted(index)
    table = pa.table({"sample_id": ids, "shard": [index[i] for i in ids]})
    with atomic_path(index_path) as tmp:
        pq.write_table(table, tmp)


def extend_assignment(
    index: dict[str, str], sample_ids: Iterable[str], shard_size: int, *, fill_last: bool = True
) -> dict[str, str]:
    """Add the unknown ids of ``sample_ids`` to ``index`` (in place) and return the new entries.

    New ids are taken in (hash, id) order; they go to the highest-numbered shard
    while it has fewer than ``shard_size`` samples (unless ``fill_last=False``),
    then to new shards.
    """
    if shard_size < 1:
        raise ConfigError(f"shard_size must be >= 1, got {shard_size}")
    new = sorted({s for s in sample_ids if s not in index}, key=lambda s: (sample_hash(s), s))
    counts: dict[int, int] = {}
    for shard in index.values():
        counts[_shard_number(shard)] = counts.get(_shard_number(shard), 0) + 1
    current = max(counts, default=-1)
    used = counts.get(current, 0)
    if current < 0 or not fill_last or used >= shard_size:
        current, used = current + 1, 0
    added: dict[str, str] = {}
    for sample_id in new:
        if used >= shard_size:
            current, used = current + 1, 0
        added[sample_id] = index[sample_id] = shard_name(current)
        used += 1
    return added


def assign_shards(
    sample_ids: Iterable[str],
    shard_size: int,
    index_path: str | os.PathLike | None = None,
    *,
    fill_last: bool = True,
) -> dict[str, str]:
    """``sample_id -> shard id`` for ``sample_ids``, keeping every assignment already in the index.

    With ``index_path`` the index is read and, when ids were added, rewritten.
    """
    sample_ids = list(sample_ids)
    index = load_shard_index(index_path) if index_path is not None else {}
    if extend_assignment(index, sample_ids, shard_size, fill_last=fill_last) and index_path is not None:
        save_shard_index(index, index_path)
    return {s: index[s] for s in sample_ids}


def _stage_batch(records: Sequence[SampleRecord]) -> pa.RecordBatch:
    mods = [
        [
            {
                "name": k,
                "text": None if isinstance(v, bytes) else v,
                "data": v if isinstance(v, bytes) else None,
            }
            for k, v in r.modalities.items()
        ]
        for r in records
    ]
    return pa.RecordBatch.from_pydict(
        {
            "sample_id": [r.sample_id for r in records],
            "source": [r.source for r in records],
            "modalities": mods,
            "labels": [list(r.labels.items()) for r in records],
            "errors": [list(r.errors) for r in records],
        },
        schema=_STAGE_SCHEMA,
    )


def _unstage(table: pa.Table) -> list[SampleRecord]:
    return [
        SampleRecord(
            row["sample_id"],
            row["source"],
            {m["name"]: m["data"] if m["data"] is not None else m["text"] for m in row["modalities"]},
            dict(row["labels"]),
            list(row["errors"]),
        )
        for row in table.to_pylist()
    ]


def _stage(records: Iterable[SampleRecord], path: Path, chunk: int) -> None:
    """Spill records to an Arrow IPC file so memory stays bounded by one shard, not the input."""
    seen: dict[str, int] = {}
    buffer: list[SampleRecord] = []
    with ipc.new_file(path, _STAGE_SCHEMA) as writer:
        for rec in records:
            count = seen.get(rec.sample_id, 0)
            seen[rec.sample_id] = count + 1
            if count:  # never silently drop a repeated id: keep it, renamed, with its reason
                rec.errors.append(f"duplicate sample_id {rec.sample_id!r}")
                rec.sample_id = f"{rec.sample_id}#dup{count}"
            buffer.append(rec)
            if len(buffer) >= chunk:
                writer.write_batch(_stage_batch(buffer))
                buffer.clear()
        if buffer:
            writer.write_batch(_stage_batch(buffer))


def shard_path(out_dir: str | os.PathLike, shard: str) -> Path:
    """Where shard ``shard`` lives under ``out_dir``."""
    return Path(out_dir) / f"{shard}.parquet"


def write_shards(
    records: Iterable[SampleRecord],
    out_dir: str | os.PathLike,
    shard_size: int,
    *,
    index_path: str | os.PathLike | None = None,
    fill_last: bool = True,
    chunk: int = 1024,
) -> list[str]:
    """Assign ``records`` to shards and write each touched shard atomically; returns their ids.

    A record whose id is already in a shard replaces its row there; other rows of
    that shard are kept, so re-running with the same input rewrites identical
    shards. Rows are sorted by sample id. The index is saved before the shards,
    so a killed run is repaired by running it again.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    index_path = Path(index_path) if index_path is not None else out / INDEX_NAME
    with tempfile.TemporaryDirectory(dir=out, prefix=".staging.tmp-") as tmp:
        stage = Path(tmp) / "records.arrow"
        _stage(records, stage, chunk)
        with pa.memory_map(str(stage)) as source:
            staged = ipc.open_file(source).read_all()
            ids = staged["sample_id"].to_pylist()
            assignment = assign_shards(ids, shard_size, index_path, fill_last=fill_last)
            rows_by_shard: dict[str, list[int]] = {}
            for row, sample_id in enumerate(ids):
                rows_by_shard.setdefault(assignment[sample_id], []).append(row)
            for shard in sorted(rows_by_shard):
                new = _unstage(staged.take(rows_by_shard[shard]))
                _write_shard(out, shard, new)
            del staged
    return sorted(rows_by_shard)


def _write_shard(out: Path, shard: str, new: list[SampleRecord]) -> None:
    path = shard_path(out, shard)
    replaced = {r.sample_id for r in new}
    kept = [r for r in read_shard(out, shard) if r.sample_id not in replaced] if path.is_file() else []
    merged = sorted(kept + new, key=lambda r: r.sample_id)
    with atomic_path(path) as tmp:
        pq.write_table(records_to_table(merged), tmp)


def list_shards(out_dir: str | os.PathLike) -> list[str]:
    """Shard ids present under ``out_dir``, sorted."""
    return sorted(
        p.stem for p in Path(out_dir).glob(f"{SHARD_PREFIX}*.parquet") if not p.name.startswith(".")
    )


def read_shard(out_dir: str | os.PathLike, shard: str) -> list[SampleRecord]:
    """The records of one shard."""
    return table_to_records(pq.read_table(shard_path(out_dir, shard)))
