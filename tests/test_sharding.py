"""Record tables and deterministic, append-stable sharding."""

from __future__ import annotations

import os
import random
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq

from mm_core.data import (
    SampleRecord,
    assign_shards,
    list_shards,
    load_shard_index,
    read_shard,
    read_source,
    records_to_table,
    shard_path,
    table_to_records,
    write_shards,
)

REPO = Path(__file__).resolve().parents[1]


def _records(n: int, prefix: str = "s") -> list[SampleRecord]:
    out = []
    for i in range(n):
        mods: dict[str, str | bytes] = {"text": f"caption {i}"}
        if i % 3 == 0:
            mods["sensor"] = bytes([i % 256]) * (i % 7 + 1)
        if i % 4 == 0:
            mods["vision"] = f"/data/img/{i}.jpg"
        out.append(SampleRecord(f"{prefix}/{i}", prefix, mods, {"k": str(i)}, ["bad"] if i % 5 == 0 else []))
    return out


def test_record_table_round_trip_uses_union_of_modalities() -> None:
    records = [
        SampleRecord("a/1", "a", {"text": "héllo"}, {"caption": "x"}),
        SampleRecord("a/2", "a", {"sensor": b"\x00\x01", "vision": "/p/2.png"}, {}, ["missing file: y"]),
        SampleRecord("a/3", "a", {"text": "", "audio": b""}, {"captions": '["a", "b"]'}),
    ]
    table = records_to_table(records)
    assert {"text", "vision", "sensor", "sensor__bytes", "audio__bytes"} <= set(table.column_names)
    assert table.schema.field("sensor__bytes").type == "binary"
    assert table_to_records(table) == records
    assert records[1].present == ["sensor", "vision"]

    widened = records_to_table(records[:1], modalities=["audio"])
    assert "audio" in widened.column_names and table_to_records(widened) == records[:1]
    assert table_to_records(records_to_table([])) == []


def test_assignment_is_order_independent_and_sized() -> None:
    ids = [f"src/{i}" for i in range(2500)]
    shuffled = ids[:]
    random.Random(1).shuffle(shuffled)
    a = assign_shards(ids, 1000)
    b = assign_shards(shuffled, 1000)
    assert a == b
    sizes = Counter(a.values())
    assert sorted(sizes) == ["shard-00000", "shard-00001", "shard-00002"]
    assert max(sizes.values()) <= 1000 and sum(sizes.values()) == 2500
    assert Counter(assign_shards(ids + ids[:10], 1000).values()) == sizes  # repeats count once


def test_assignment_is_stable_across_processes() -> None:
    """Python's hash() is salted per process; the assignment must not be."""
    code = (
        "import json,sys; from mm_core.data import assign_shards;"
        "print(json.dumps(assign_shards([f'id-{i}' for i in range(300)], 64)))"
    )
    outs = [
        subprocess.run(
            [sys.executable, "-c", code],
            env={**os.environ, "PYTHONHASHSEED": seed},
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        for seed in ("1", "2")
    ]
    assert outs[0] == outs[1]


def test_adding_ids_never_moves_existing_ones(tmp_path: Path) -> None:
    index = tmp_path / "index.parquet"
    first = assign_shards([f"x/{i}" for i in range(250)], 100, index)
    assert Counter(first.values()) == {"shard-00000": 100, "shard-00001": 100, "shard-00002": 50}
    assert load_shard_index(index) == first

    more = [f"y/{i}" for i in range(120)]
    second = assign_shards(list(first) + more, 100, index)
    assert all(second[k] == v for k, v in first.items())
    counts = Counter(second.values())
    assert counts == {"shard-00000": 100, "shard-00001": 100, "shard-00002": 100, "shard-00003": 70}
    assert len(load_shard_index(index)) == 370

    index2 = tmp_path / "index2.parquet"
    assign_shards(list(first), 100, index2)
    separate = assign_shards(more, 100, index2, fill_last=False)
    assert set(separate.values()) == {"shard-00003", "shard-00004"}


def test_write_shards_round_trip_and_rerun_is_identical(tmp_path: Path) -> None:
    records = _records(45)
    out = tmp_path / "shards"
    written = write_shards(records, out, shard_size=20)
    assert written == list_shards(out) == ["shard-00000", "shard-00001", "shard-00002"]
    back = [r for s in written for r in read_shard(out, s)]
    assert sorted(back, key=lambda r: r.sample_id) == sorted(records, key=lambda r: r.sample_id)
    assert all(pq.read_metadata(shard_path(out, s)).num_rows <= 20 for s in written)
    assert [r.sample_id for r in read_shard(out, written[0])] == sorted(
        r.sample_id for r in read_shard(out, written[0])
    )

    before = {s: shard_path(out, s).read_bytes() for s in written}
    reversed_input = _records(45)[::-1]
    assert write_shards(reversed_input, out, shard_size=20) == written
    assert {s: shard_path(out, s).read_bytes() for s in written} == before
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no staging or temp files left


def test_write_shards_appends_without_touching_full_shards(tmp_path: Path) -> None:
    out = tmp_path / "shards"
    write_shards(_records(45), out, shard_size=20)
    full = {s: shard_path(out, s).read_bytes() for s in ("shard-00000", "shard-00001")}
    index_before = load_shard_index(out / "shard_index.parquet")

    touched = write_shards(_records(30, prefix="new"), out, shard_size=20)
    assert touched == ["shard-00002", "shard-00003"]  # the partial shard is filled, then a new one
    assert {s: shard_path(out, s).read_bytes() for s in full} == full
    index_after = load_shard_index(out / "shard_index.parquet")
    assert all(index_after[k] == v for k, v in index_before.items())
    assert sum(len(read_shard(out, s)) for s in list_shards(out)) == 75
    assert all(len(read_shard(out, s)) <= 20 for s in list_shards(out))


def test_write_shards_keeps_duplicate_ids_as_errors(tmp_path: Path) -> None:
    records = [*_records(5), SampleRecord("s/1", "s", {"text": "again"})]
    write_shards(records, tmp_path, shard_size=100)
    rows = read_shard(tmp_path, "shard-00000")
    assert len(rows) == 6
    dup = next(r for r in rows if r.sample_id == "s/1#dup1")
    assert dup.modalities["text"] == "again" and "duplicate sample_id 's/1'" in dup.errors


def test_sharding_real_sensor_windows_inline(datasets_dir: Path, tmp_path: Path) -> None:
    root = datasets_dir / "sp-sw-har" / "DATA" / "s03"
    records = list(read_source("sensor_csv", root, source="har", limit=60))
    written = write_shards(iter(records), tmp_path, shard_size=25, chunk=16)
    assert len(written) == 3
    back = {r.sample_id: r for s in written for r in read_shard(tmp_path, s)}
    assert back == {r.sample_id: r for r in records}
    table = pq.read_table(shard_path(tmp_path, written[0]))
    assert table.column("sensor__bytes").null_count == 0 and table.column("text").null_count == 0
