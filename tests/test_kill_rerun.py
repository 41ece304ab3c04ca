"""SPEC R2 under a hard kill: ``kill -9`` of ``mm build`` mid-partition, then a re-run.

The killed build must leave no half-written file under a final name, and the
re-run must finish with outputs identical to a clean build of the same config.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import h5py
import numpy as np
import psutil
import pyarrow.parquet as pq
import pytest
from dagster._core.test_utils import create_run_for_test
from safetensors.numpy import load_file

from mm_assets.build import _owner_tags, release_orphaned_runs
from mm_core.atomic import is_temp_name
from mm_core.config import load_config
from mm_core.export import read_shard
from mm_core.pipeline import BuildPaths, run_build
from tests.dagster_helpers import small_build

REPO_ROOT = Path(__file__).resolve().parents[1]
MM = Path(sys.executable).parent / "mm"
FORMATS = ("npy", "h5", "parquet", "safetensors")


def _env() -> dict[str, str]:
    """A user's shell: no test overrides, so `mm` puts DAGSTER_HOME under the storage root."""
    return {k: v for k, v in os.environ.items() if k not in ("DAGSTER_HOME", "MM_STORAGE_ROOT", "MM_CONFIG")}


def _kill_when(proc: subprocess.Popen, ready, timeout: float = 300.0) -> None:
    """SIGKILL the build's whole process group as soon as ``ready()`` is true."""
    deadline = time.monotonic() + timeout
    while not ready():
        assert proc.poll() is None, f"mm build ended (rc={proc.returncode}) before the kill point"
        assert time.monotonic() < deadline, "kill point not reached"
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)


HALF_WRITE = """
import os, signal, sys
from mm_core.atomic import atomic_dir, atomic_path
open_writes = []  # keep every context alive: a collected one would clean up its temporary
for target in sys.argv[1:]:
    open_writes.append(atomic_dir(target) if target.endswith("/") else atomic_path(target))
    tmp = open_writes[-1].__enter__()
    (tmp / "part.npy" if tmp.is_dir() else tmp).write_bytes(b"half a file")
os.kill(os.getpid(), signal.SIGKILL)
"""


def _killed_mid_write(*targets: Path | str) -> None:
    """A process killed -9 while writing ``targets`` through mm_core.atomic (a trailing '/' = directory)."""
    proc = subprocess.run([sys.executable, "-c", HALF_WRITE, *map(str, targets)], cwd=REPO_ROOT, check=False)
    assert proc.returncode == -signal.SIGKILL


def _temps(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if is_temp_name(p.name)]


def _assert_loads(path: Path) -> None:
    """A file under a final name is complete: its own library reads all of it."""
    suffix = path.suffix
    if suffix == ".parquet":
        pq.read_table(path)
    elif suffix == ".safetensors":
        load_file(path)
    elif suffix == ".npy":
        np.load(path, allow_pickle=False)
    elif suffix in (".json", ".jsonl"):
        for line in path.read_text(encoding="utf-8").splitlines() if suffix == ".jsonl" else [path.read_text()]:
            json.loads(line)
    elif suffix == ".h5":
        with h5py.File(path, "r") as f:
            f.visititems(lambda _, obj: obj[()] if isinstance(obj, h5py.Dataset) else None)


def _assert_nothing_partial(build_dir: Path) -> int:
    files = [p for p in build_dir.rglob("*") if p.is_file() and not any(is_temp_name(x) for x in p.parts)]
    for p in files:
        _assert_loads(p)
    return len(files)


def _assert_same_shards(a: Path, b: Path) -> None:
    """Every column of every shard equal in every format (vectors bitwise)."""
    for fmt in FORMATS:
        ids_a = sorted(p.name.split(".")[0] for p in (a / fmt).iterdir() if not is_temp_name(p.name))
        ids_b = sorted(p.name.split(".")[0] for p in (b / fmt).iterdir() if not is_temp_name(p.name))
        assert ids_a == ids_b and ids_a, fmt
        for sid in ids_a:
            x, y = read_shard(a, sid, fmt), read_shard(b, sid, fmt)
            assert x.sample_ids == y.sample_ids, (fmt, sid)
            assert x.modalities == y.modalities
            assert np.array_equal(x.vectors, y.vectors), (fmt, sid)
            assert np.array_equal(x.modality_mask, y.modality_mask)
            assert sorted(x.modality_vectors) == sorted(y.modality_vectors)
            for m in x.modality_vectors:
                assert np.array_equal(x.modality_vectors[m], y.modality_vectors[m]), (fmt, sid, m)
            assert x.metadata_json == y.metadata_json
            assert np.array_equal(x.quality, y.quality, equal_nan=True) and x.quality_columns == y.quality_columns


def test_kill_9_mid_partition_then_rerun_equals_a_clean_build(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg_path, cfg = small_build(tmp_path / "killed", "k")
    paths = BuildPaths.of(cfg)
    build = [str(MM), "build", str(cfg_path), "-q"]
    with (tmp_path / "killed.log").open("wb") as log:
        proc = subprocess.Popen(
            build, cwd=tmp_path, env=_env(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )

    # kill -9 in the middle of the second shard: some of its encodings written, not all
    second = "shard-00001"

    def in_second_shard() -> bool:
        return any(paths.encodings(m, second).exists() for m in cfg.modalities)

    _kill_when(proc, in_second_shard)
    assert proc.returncode == -signal.SIGKILL
    assert not (paths.export_dir / "manifest.json").exists()  # killed before the export finished
    assert _assert_nothing_partial(paths.root) > 0

    home = cfg.root / "dagster_home"
    with dg.DagsterInstance.from_config(str(home)) as inst:
        killed = inst.get_runs(limit=1)[0]
        held = inst.event_log_storage.get_concurrency_info("gpu").claimed_slots
    assert killed.job_name == "prepare_shards" and killed.tags["dagster/partition"] == second
    assert killed.status == dg.DagsterRunStatus.STARTED  # nobody was left to record its end
    assert {s.run_id for s in held} <= {killed.run_id}  # it may still hold the 'gpu' pool slot

    # the kill above may or may not land inside a write; these writers certainly die mid-write
    _killed_mid_write(paths.encodings("text", second), f"{paths.export_dir / 'npy' / second}/")
    assert len(_temps(paths.root)) >= 2
    assert _assert_nothing_partial(paths.root) > 0  # temporaries are hidden, never under a final name

    # the re-run: the same command, to completion, on the same storage and Dagster instance
    # (without releasing the dead run's slot, its encodings steps would wait for the slot forever)
    rerun = subprocess.run(build, cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=300, check=False)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert f"manifest:  {paths.export_dir / 'manifest.json'}" in rerun.stdout
    assert _temps(paths.root) == []  # the re-run removed the dead writers' temporaries
    _assert_nothing_partial(paths.root)
    with dg.DagsterInstance.from_config(str(home)) as inst:
        runs = inst.get_runs()  # newest first
        after = runs[: [r.run_id for r in runs].index(killed.run_id)]
        assert len(after) == 7 and {r.status for r in after} == {dg.DagsterRunStatus.SUCCESS}
        assert inst.get_run_by_id(killed.run_id).status == dg.DagsterRunStatus.FAILURE
        assert inst.event_log_storage.get_concurrency_info("gpu").claimed_slots == []

    # a clean build of the same config elsewhere, by the plain library loop
    monkeypatch.delenv("MM_STORAGE_ROOT", raising=False)
    clean_cfg = load_config(small_build(tmp_path / "clean", "k")[0])
    run_build(clean_cfg, progress=False)
    clean = BuildPaths.of(clean_cfg).export_dir
    _assert_same_shards(paths.export_dir, clean)
    got, want = (json.loads((d / "manifest.json").read_text()) for d in (paths.export_dir, clean))
    for key in ("total_rows", "num_shards", "dim", "modalities", "formats", "stale_shards"):
        assert got[key] == want[key], key
    assert {s: e["rows"] for s, e in got["shards"].items()} == {s: e["rows"] for s, e in want["shards"].items()}


def test_release_orphaned_runs_frees_only_runs_of_dead_processes(tmp_path: Path) -> None:
    dead = psutil.Popen([sys.executable, "-c", "pass"])
    dead_tags = {**_owner_tags(), "mm/pid": str(dead.pid), "mm/pid_started": f"{dead.create_time():.3f}"}
    dead.wait()
    (tmp_path / "home").mkdir()
    with dg.instance_for_test(temp_dir=str(tmp_path / "home")) as inst:
        inst.event_log_storage.set_concurrency_slots("gpu", 3)
        started = dg.DagsterRunStatus.STARTED
        orphan = create_run_for_test(inst, job_name="prepare_shards", status=started, tags=dead_tags)
        live = create_run_for_test(inst, job_name="prepare_shards", status=started, tags=_owner_tags())
        foreign = create_run_for_test(inst, job_name="prepare_shards", status=started, tags={"owner": "ui"})
        for run in (orphan, live, foreign):
            inst.event_log_storage.claim_concurrency_slot("gpu", run.run_id, "text_encodings")

        assert release_orphaned_runs(inst) == [orphan.run_id]
        assert inst.get_run_by_id(orphan.run_id).status == dg.DagsterRunStatus.FAILURE
        assert inst.get_run_by_id(live.run_id).status == started  # its process is this one: alive
        assert inst.get_run_by_id(foreign.run_id).status == started  # not run by `mm build`: the daemon's
        held = {s.run_id for s in inst.event_log_storage.get_concurrency_info("gpu").claimed_slots}
        assert held == {live.run_id, foreign.run_id}
        assert release_orphaned_runs(inst) == []
