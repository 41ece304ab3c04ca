"""The Dagster lineage in process, on a real (temporary) Dagster instance."""

from __future__ import annotations

import datetime
import json

import dagster as dg
import numpy as np
import pytest

from mm_assets.build import build_all
from mm_assets.definitions import build_definitions
from mm_assets.partitions import shards
from mm_core.export import read_vectors
from mm_core.pipeline import BuildPaths
from tests.dagster_helpers import small_build

NOW = datetime.datetime(2026, 12, 4, 3, 0, tzinfo=datetime.UTC)
SHARD_ASSETS = ["raw_samples", "quality_scores", "filtered_samples", "fused_embeddings", "exported_dataset"]


@pytest.fixture
def instance(tmp_path):
    home = tmp_path / "dagster_home"
    home.mkdir()
    with dg.instance_for_test(temp_dir=str(home)) as inst:
        yield inst


@pytest.fixture
def built(tmp_path, instance, monkeypatch):
    monkeypatch.delenv("MM_STORAGE_ROOT", raising=False)
    _, cfg = small_build(tmp_path)
    result = build_all(cfg, instance=instance, progress=False)
    return cfg, result


def _check_results(instance, asset: str, check: str, partition: str) -> list[bool]:
    key = dg.AssetCheckKey(dg.AssetKey(asset), check)
    history = instance.event_log_storage.get_asset_check_execution_history(key, limit=50)
    out = []
    for rec in history:
        ev = rec.event.dagster_event if rec.event else None
        data = ev.event_specific_data if ev else None
        if data is not None and getattr(data, "partition", partition) == partition:
            out.append(bool(data.passed))
    return out


def test_two_partitions_through_the_whole_lineage(built, instance):
    cfg, result = built
    assert result["ok"], result
    assert len(result["shards"]) == 2
    assert set(instance.get_dynamic_partitions(shards.name)) == set(result["shards"])
    for asset in [*SHARD_ASSETS, "text_encodings", "vision_encodings", "audio_encodings", "sensor_encodings"]:
        done = instance.get_materialized_partitions(dg.AssetKey(asset))
        assert done == set(result["shards"]), asset
    for check in ("row_accounting", "pass_rate"):
        for pk in result["shards"]:
            assert _check_results(instance, "filtered_samples", check, pk) == [True]
    for pk in result["shards"]:
        assert _check_results(instance, "fused_embeddings", "vectors_valid", pk) == [True]

    export = BuildPaths.of(cfg).export_dir
    ids, vectors, mask, modalities = read_vectors(export, "parquet")
    assert len(ids) == len(set(ids)) == result["accepted"] > 0
    assert vectors.shape == (len(ids), 32) and np.isfinite(vectors).all()
    assert modalities == ["audio", "sensor", "text", "vision"] and mask.any(0).all()
    for fmt in ("npy", "h5", "safetensors"):
        other = read_vectors(export, fmt)
        assert other[0] == ids and np.array_equal(other[1], vectors)
    manifest = json.loads((export / "manifest.json").read_text())
    assert manifest["trained"] is False and "untrained" in manifest["notes"]
    assert manifest["total_rows"] == len(ids)
    meta = instance.get_latest_materialization_event(dg.AssetKey("fusion_model")).asset_materialization.metadata
    assert meta["trained"].value is False and "Untrained" in meta["note"].value


def test_rematerializing_a_partition_replaces_its_output_exactly(built, instance):
    cfg, result = built
    export = BuildPaths.of(cfg).export_dir
    before = read_vectors(export, "h5")
    defs = build_definitions(cfg)
    pk = result["shards"][0]
    assert defs.resolve_job_def("finish_shards").execute_in_process(instance=instance, partition_key=pk).success
    assert build_definitions(cfg).resolve_job_def("write_manifest").execute_in_process(instance=instance).success
    after = read_vectors(export, "h5")
    assert after[0] == before[0]  # no duplicates, same order
    assert np.array_equal(after[1], before[1]) and np.array_equal(after[2], before[2])


def test_same_inputs_and_seed_give_identical_outputs(built, tmp_path, monkeypatch):
    cfg, _ = built
    _, cfg2 = small_build(tmp_path / "again")
    (tmp_path / "home2").mkdir()
    with dg.instance_for_test(temp_dir=str(tmp_path / "home2")) as inst2:
        assert build_all(cfg2, instance=inst2, progress=False)["ok"]
    a = read_vectors(BuildPaths.of(cfg).export_dir, "safetensors")
    b = read_vectors(BuildPaths.of(cfg2).export_dir, "safetensors")
    assert a[0] == b[0]
    assert np.array_equal(a[1], b[1])  # bitwise on CPU


def test_failing_blocking_check_stops_that_shards_downstream(tmp_path, instance, monkeypatch):
    monkeypatch.delenv("MM_STORAGE_ROOT", raising=False)
    root = tmp_path / "bad"
    (root / "media").mkdir(parents=True)
    rows = [{"sample_id": f"good{i}", "text": f"a red circle number {i} moving left"} for i in range(2)]
    for i in range(6):  # empty and broken images: rejected at quality
        (root / "media" / f"b{i}.png").write_bytes(b"" if i % 2 else b"\x89PNG broken")
        rows.append({"sample_id": f"bad{i}", "vision": f"media/b{i}.png"})
    (root / "m.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    _, cfg = small_build(
        tmp_path,
        name="gate",
        shard_size=100,
        sources=[{"layout": "manifest", "root": str(root), "path": "m.jsonl"}],
        gates={"min_pass_rate": 0.9},
    )
    result = build_all(cfg, instance=instance, progress=False)
    assert not result["ok"] and result["failed"] == result["shards"]
    pk = result["shards"][0]
    assert _check_results(instance, "filtered_samples", "pass_rate", pk) == [False]
    assert instance.get_materialized_partitions(dg.AssetKey("filtered_samples")) == {pk}
    for blocked in ("text_encodings", "vision_encodings", "fused_embeddings", "exported_dataset"):
        assert instance.get_materialized_partitions(dg.AssetKey(blocked)) == set(), blocked
    assert not BuildPaths.of(cfg).encodings("text", pk).exists()


def test_schedule_requests_exactly_the_stale_partitions_and_sensor_finds_new_shards(built, instance, tmp_path):
    cfg, result = built
    defs = build_definitions(cfg)
    schedule = defs.resolve_schedule_def("backfill_stale_shards")
    repo = defs.get_repository_def()
    with dg.build_schedule_context(instance=instance, scheduled_execution_time=NOW, repository_def=repo) as ctx:
        assert isinstance(schedule.evaluate_tick(ctx).skip_message, str)  # everything current

    # a new text encoder setting marks the text encodings and what follows them stale, nothing else
    changed = {**cfg.modalities, "text": {"max_length": 64}}
    _, cfg2 = small_build(tmp_path, modalities=changed)
    defs2 = build_definitions(cfg2)
    repo2 = defs2.get_repository_def()
    with dg.build_schedule_context(instance=instance, scheduled_execution_time=NOW, repository_def=repo2) as ctx:
        requests = defs2.resolve_schedule_def("backfill_stale_shards").evaluate_tick(ctx).run_requests
    assert sorted(r.partition_key for r in requests) == sorted(result["shards"])
    for r in requests:
        assert [k.path[-1] for k in r.asset_selection] == [
            "text_encodings",
            "fused_embeddings",
            "exported_dataset",
        ]

    # the sensor registers shard tables it has not seen, and asks for their runs
    (tmp_path / "fresh").mkdir()
    with dg.instance_for_test(temp_dir=str(tmp_path / "fresh")) as fresh:
        sensor = defs.resolve_sensor_def("new_shard_sensor")
        with dg.build_sensor_context(instance=fresh, instance_ref=fresh.get_ref(), repository_def=repo) as ctx:
            res = sensor.evaluate_tick(ctx)
        assert sorted(r.partition_key for r in res.run_requests) == sorted(result["shards"])
        assert res.dynamic_partitions_requests[0].partition_keys == sorted(result["shards"])
