"""Dataset writers, readers, manifest and atomic writes (SPEC M10, R2; defects 6 and 7)."""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from safetensors import safe_open
from safetensors.numpy import load_file

import mm_core
from mm_core.atomic import atomic_dir, atomic_path, atomic_write_text, sweep_temps
from mm_core.errors import ConfigError
from mm_core.export import FORMATS, ShardedWriter, load_manifest, read_shard, read_vectors

MODALITIES = ["audio", "text", "vision"]
DIM = 8
MOD_DIMS = {"audio": 5, "text": 6}
UNICODE_IDS = ["샘플-1", "ü", "emoji-😀", "naïve/ß"]


def make_rows(n: int, seed: int, *, prefix: str, with_audio: bool = True) -> dict:
    """One shard of records; non-ASCII ids, uneven quality columns, extreme float32 values."""
    rng = np.random.default_rng(seed)
    ids = [*UNICODE_IDS, *(f"{prefix}-{i}" for i in range(n - len(UNICODE_IDS)))][:n]
    vectors = rng.standard_normal((n, DIM)).astype(np.float32)
    vectors[0, :3] = [np.float32(1e-45), np.float32(3.4e38), np.float32(-0.0)]
    mask = rng.random((n, len(MODALITIES))) < 0.7
    mask[:, 0] &= with_audio
    dims = {m: d for m, d in MOD_DIMS.items() if with_audio or m != "audio"}
    modality_vectors = {m: rng.standard_normal((n, d)).astype(np.float32) for m, d in dims.items()}
    label = "라벨\u2028\n"  # line separators that a naive JSONL reader would split at
    metadata = [{"source": prefix, "label": f"{label}{i % 3}", "i": i, "tags": ["a", i]} for i in range(n)]
    scores = [{"blur": float(i)} if i % 2 else {"snr_db": -3.5 * i, "blur": 0.5} for i in range(n)]
    quality = pd.DataFrame(scores)  # columns differ per row: NaN where a row lacks a score
    return {
        "sample_ids": ids,
        "vectors": vectors,
        "modality_mask": mask,
        "modality_vectors": modality_vectors,
        "metadata": metadata,
        "quality": quality,
    }


def write_dataset(out: Path, shards: dict[str, dict], **kwargs) -> dict:
    opts = {"modalities": MODALITIES, "dim": DIM, "modality_dims": MOD_DIMS, "fsync": False, **kwargs}
    with ShardedWriter(out, **opts) as w:
        for sid, rows in shards.items():
            w.write_shard(sid, **rows)
    return load_manifest(out)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, dict]]:
    """Two shards, written in reverse order; shard-000 has no audio at all."""
    out = tmp_path_factory.mktemp("export")
    shards = {
        "shard-001": make_rows(7, 1, prefix="b"),
        "shard-000": make_rows(6, 0, prefix="a", with_audio=False),
    }
    shards["shard-001"]["sample_ids"] = [f"b-{i}" for i in range(7)]  # ids unique across shards
    write_dataset(out, shards, provenance={"encoders": {"text": {"name": "minilm", "weights": "abc"}}})
    return out, shards


def quality_matrix(rows: dict, columns: list[str]) -> np.ndarray:
    return rows["quality"].reindex(columns=columns).to_numpy(dtype=np.float64)


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_round_trip_every_column(dataset: tuple[Path, dict], fmt: str) -> None:
    out, shards = dataset
    ids, vectors, mask, modalities = read_vectors(out, format=fmt)
    order = sorted(shards)  # sorted shard order, not write order
    assert modalities == MODALITIES
    assert ids == [i for s in order for i in shards[s]["sample_ids"]]
    assert vectors.dtype == np.float32 and mask.dtype == bool
    expected = np.concatenate([shards[s]["vectors"] for s in order])
    np.testing.assert_array_equal(vectors.view(np.uint32), expected.view(np.uint32))  # bit-exact
    np.testing.assert_array_equal(mask, np.concatenate([shards[s]["modality_mask"] for s in order]))
    for sid, rows in shards.items():
        shard = read_shard(out, sid, format=fmt)
        assert shard.metadata == rows["metadata"]
        assert sorted(shard.modality_vectors) == sorted(MOD_DIMS)
        for m, arr in rows["modality_vectors"].items():
            np.testing.assert_array_equal(shard.modality_vectors[m], arr)
        np.testing.assert_array_equal(shard.quality, quality_matrix(rows, shard.quality_columns))
        assert set(shard.quality_columns) == set(rows["quality"].columns)


def test_modality_set_is_the_callers(dataset: tuple[Path, dict]) -> None:
    """shard-000 has no audio sample, yet every format carries the audio mask and vector column."""
    out, _ = dataset
    with h5py.File(out / "h5" / "shard-000.h5") as f:
        assert list(f["modality_mask"].attrs["modalities"]) == MODALITIES
        assert not f["modality_mask"][:, 0].any()
        assert f["vec_audio"].shape == (6, MOD_DIMS["audio"]) and not f["vec_audio"][...].any()
    table = pq.read_table(out / "parquet" / "shard-000.parquet")
    assert {"mask_audio", "mask_text", "mask_vision", "vec_audio", "vec_text"} <= set(table.column_names)
    assert not any(table.column("mask_audio").to_pylist())
    assert np.load(out / "npy" / "shard-000" / "modality_mask.npy").shape == (6, 3)


def test_plain_numpy_reads_npy(dataset: tuple[Path, dict]) -> None:
    out, shards = dataset
    d = out / "npy" / "shard-001"
    ids = np.load(d / "sample_id.npy", allow_pickle=False)
    assert ids.dtype.kind == "U"  # unicode, not pickled objects
    assert list(ids) == shards["shard-001"]["sample_ids"]
    vec = np.load(d / "unified_vector.npy", allow_pickle=False, mmap_mode="r")
    np.testing.assert_array_equal(vec, shards["shard-001"]["vectors"])
    assert list(np.load(d / "modalities.npy", allow_pickle=False)) == MODALITIES
    with open(d / "metadata.jsonl", encoding="utf-8") as fh:
        assert [json.loads(x) for x in fh] == shards["shard-001"]["metadata"]


def test_plain_h5py_reads_h5_uncompressed_utf8(dataset: tuple[Path, dict]) -> None:
    out, shards = dataset
    with h5py.File(out / "h5" / "shard-000.h5") as f:
        for name, ds in f.items():
            assert ds.compression is None, name  # defect 7: no gzip
        assert list(f["sample_id"].asstr()[...]) == shards["shard-000"]["sample_ids"][:6]
        assert f["sample_id"].dtype == h5py.string_dtype("utf-8")
        assert f["modality_mask"].dtype == bool
        np.testing.assert_array_equal(f["unified_vector"][...], shards["shard-000"]["vectors"])


def test_plain_pyarrow_and_pandas_read_parquet(dataset: tuple[Path, dict]) -> None:
    out, shards = dataset
    path = out / "parquet" / "shard-001.parquet"
    schema = pq.read_schema(path)
    vtype = schema.field("unified_vector").type
    assert pa.types.is_fixed_size_list(vtype) and vtype.list_size == DIM
    assert vtype.value_type == pa.float32()
    assert schema.field("vec_text").type.list_size == MOD_DIMS["text"]
    assert schema.field("q_snr_db").type == pa.float64()
    df = pd.read_parquet(path)
    np.testing.assert_array_equal(np.stack(df["unified_vector"].to_numpy()), shards["shard-001"]["vectors"])
    assert [json.loads(s) for s in df["metadata"]] == shards["shard-001"]["metadata"]
    np.testing.assert_array_equal(df["mask_text"].to_numpy(), shards["shard-001"]["modality_mask"][:, 1])


def test_plain_safetensors_reads_safetensors(dataset: tuple[Path, dict]) -> None:
    out, shards = dataset
    path = out / "safetensors" / "shard-000.safetensors"
    tensors = load_file(path)
    np.testing.assert_array_equal(tensors["unified_vector"], shards["shard-000"]["vectors"])
    np.testing.assert_array_equal(tensors["modality_mask"].astype(bool), shards["shard-000"]["modality_mask"])
    with safe_open(path, framework="np") as f:
        header = f.metadata()
    assert json.loads(header["sample_id"]) == shards["shard-000"]["sample_ids"]
    assert json.loads(header["modalities"]) == MODALITIES


def test_hf_datasets_parquet_loader(dataset: tuple[Path, dict], tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    out, shards = dataset
    files = sorted(str(p) for p in (out / "parquet").glob("*.parquet"))
    ds = datasets.load_dataset("parquet", data_files=files, split="train", cache_dir=str(tmp_path))
    assert ds.num_rows == sum(len(s["sample_ids"]) for s in shards.values())
    arr = ds.with_format("numpy")["unified_vector"]
    expected = np.concatenate([shards[s]["vectors"] for s in sorted(shards)])
    np.testing.assert_array_equal(np.asarray(arr, dtype=np.float32), expected)
    assert ds[0]["sample_id"] == shards["shard-000"]["sample_ids"][0]


def test_manifest_card_and_hashes(dataset: tuple[Path, dict]) -> None:
    out, _ = dataset
    man = load_manifest(out)
    assert man["dim"] == DIM and man["modalities"] == MODALITIES and man["modality_dims"] == MOD_DIMS
    assert man["formats"] == ["npy", "h5", "parquet", "safetensors"]
    assert man["total_rows"] == 13 and man["num_shards"] == 2
    assert {s: e["rows"] for s, e in man["shards"].items()} == {"shard-000": 6, "shard-001": 7}
    assert man["provenance"]["encoders"]["text"]["weights"] == "abc"
    assert man["code_version"]["mm_core"] == mm_core.__version__ and "git_commit" in man["code_version"]
    assert man["trained"] is False and "created" in man and man["stale_shards"] == []
    assert man["quality_columns"] == ["blur", "snr_db"]
    files = {rel: info for e in man["shards"].values() for rel, info in e["files"].items()}
    on_disk = {str(p.relative_to(out)) for f in FORMATS for p in (out / f).rglob("*") if p.is_file()}
    assert set(files) == on_disk
    for rel, info in files.items():
        data = (out / rel).read_bytes()
        assert hashlib.sha256(data).hexdigest() == info["sha256"] and len(data) == info["bytes"]


def test_rewrite_replaces_shard_across_processes(tmp_path: Path) -> None:
    """A second writer (as a later run) replaces one shard exactly and keeps the others."""
    first = {"s-0": make_rows(6, 0, prefix="x"), "s-1": make_rows(5, 1, prefix="y")}
    first["s-1"]["sample_ids"] = [f"y{i}" for i in range(5)]
    write_dataset(tmp_path, first, formats=["parquet", "h5"])
    old_hash = load_manifest(tmp_path)["shards"]["s-0"]["files"]["parquet/s-0.parquet"]["sha256"]
    new = make_rows(4, 9, prefix="z")
    man = write_dataset(tmp_path, {"s-0": new}, formats=["parquet", "h5"], provenance={"fusion": "v2"})
    for fmt in ("parquet", "h5"):
        ids, vectors, _, _ = read_vectors(tmp_path, format=fmt)
        assert ids == new["sample_ids"] + first["s-1"]["sample_ids"]  # no duplicates, s-1 kept
        np.testing.assert_array_equal(vectors[:4], new["vectors"])
    assert man["total_rows"] == 9 and man["shards"]["s-0"]["rows"] == 4
    entry = man["shards"]["s-0"]["files"]["parquet/s-0.parquet"]
    assert entry["sha256"] != old_hash
    assert entry["sha256"] == hashlib.sha256((tmp_path / "parquet/s-0.parquet").read_bytes()).hexdigest()
    assert man["stale_shards"] == ["s-1"]  # written with the older provenance


def test_reopening_with_another_schema_is_refused(tmp_path: Path) -> None:
    write_dataset(tmp_path, {"a": make_rows(4, 0, prefix="a")}, formats=["npy"])
    with pytest.raises(ConfigError, match="dim"):
        ShardedWriter(tmp_path, formats=["npy"], modalities=MODALITIES, dim=DIM + 1, modality_dims=MOD_DIMS)


def test_bad_shard_inputs_raise(tmp_path: Path) -> None:
    rows = make_rows(4, 0, prefix="a")
    with ShardedWriter(tmp_path, formats=["npy"], modalities=MODALITIES, dim=DIM, fsync=False) as w:
        with pytest.raises(ValueError, match="shard_id"):
            w.write_shard("../escape", rows["sample_ids"], rows["vectors"], rows["modality_mask"])
        with pytest.raises(ValueError, match="unique"):
            w.write_shard("a", ["x"] * 4, rows["vectors"], rows["modality_mask"])
        with pytest.raises(ValueError, match="vectors shape"):
            w.write_shard("a", rows["sample_ids"], rows["vectors"][:, :3], rows["modality_mask"])
        with pytest.raises(ValueError, match="modality_dims"):
            w.write_shard("a", **{k: v for k, v in rows.items() if k not in ("metadata", "quality")})
    assert not (tmp_path / "npy").exists() or not any((tmp_path / "npy").iterdir())


def _all_names(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def test_crash_mid_shard_keeps_old_shard(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The parquet write dies half-way: npy/h5 were already staged, yet nothing changes on disk."""
    old = make_rows(5, 0, prefix="old")
    write_dataset(tmp_path, {"s": old}, formats=["npy", "h5", "parquet"])
    before = {p: (tmp_path / p).read_bytes() for p in _all_names(tmp_path) if (tmp_path / p).is_file()}

    real = pq.write_table

    def dying_write(table, where, **kwargs):
        real(table.slice(0, 2), where, **kwargs)  # a partial file exists under the temporary name ...
        raise OSError("disk full")  # ... and then the process fails

    monkeypatch.setattr("mm_core.export.parquet_io.pq.write_table", dying_write)
    with pytest.raises(OSError, match="disk full"):
        write_dataset(tmp_path, {"s": make_rows(3, 1, prefix="new")}, formats=["npy", "h5", "parquet"])
    after = {p: (tmp_path / p).read_bytes() for p in _all_names(tmp_path) if (tmp_path / p).is_file()}
    assert after == before  # same names, same bytes: no temporary, no half-new shard
    assert read_vectors(tmp_path, "parquet")[0] == old["sample_ids"]


def test_atomic_path_and_dir(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "x.npy"
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        np.save(tmp, np.arange(3))
        assert tmp.parent == target.parent and tmp.suffix == ".npy" and tmp.exists()
        raise RuntimeError("killed")
    assert _all_names(tmp_path) == ["sub"]
    atomic_write_text(target, "old")
    with atomic_path(target) as tmp:
        np.save(tmp, np.arange(3))
        assert target.read_text() == "old"  # the old file stays until the rename
    np.testing.assert_array_equal(np.load(target), np.arange(3))

    folder = tmp_path / "d"
    for content in ("one", "two"):
        with atomic_dir(folder) as tmp:
            (tmp / f"{content}.txt").write_text(content)
    assert [p.name for p in folder.iterdir()] == ["two.txt"]
    with pytest.raises(ValueError), atomic_dir(folder) as tmp:
        (tmp / "three.txt").write_text("3")
        raise ValueError("boom")
    assert _all_names(tmp_path) == ["d", "d/two.txt", "sub", "sub/x.npy"]


def test_sweep_temps_removes_only_stale_leftovers(tmp_path: Path) -> None:
    stale, fresh = tmp_path / ".a.h5.0123.tmp.h5", tmp_path / ".b.h5.4567.tmp.h5"
    keep = tmp_path / "a.h5"
    for p in (stale, fresh, keep):
        p.write_bytes(b"x")
    past = time.time() - 7200
    os.utime(stale, (past, past))
    os.utime(keep, (past, past))
    assert sweep_temps(tmp_path) == [stale]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([fresh.name, keep.name])
