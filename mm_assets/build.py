"""Run a whole build through Dagster jobs, partition by partition, on the real instance."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any

import dagster as dg
import psutil
import pyarrow.parquet as pq
from tqdm.auto import tqdm

from mm_assets.definitions import build_definitions
from mm_assets.partitions import shards
from mm_core.atomic import is_temp_name, sweep_temps
from mm_core.config import BuildConfig
from mm_core.pipeline import BuildPaths

QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
UNFINISHED = [
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.CANCELING,
]


def _owner_tags() -> dict[str, str]:
    """Which process executes a run in process: host, pid, and the pid's start time (pids get reused)."""
    me = psutil.Process()
    return {"mm/host": socket.gethostname(), "mm/pid": str(me.pid), "mm/pid_started": f"{me.create_time():.3f}"}


def _owner_alive(tags: dict[str, str]) -> bool:
    try:
        return f"{psutil.Process(int(tags['mm/pid'])).create_time():.3f}" == tags.get("mm/pid_started")
    except (psutil.Error, KeyError, ValueError):
        return False


def release_orphaned_runs(instance: dg.DagsterInstance) -> list[str]:
    """Fail the unfinished runs of dead ``mm build`` processes on this host and free their pool slots.

    Runs executed in process have no run monitor: one whose process was killed
    stays STARTED and keeps its 'gpu' pool slot, and every later encodings step
    would wait for that slot forever. Returns the ids of the runs released.
    """
    filters = dg.RunsFilter(statuses=UNFINISHED, tags={"mm/host": socket.gethostname()})
    released = []
    for run in instance.get_runs(filters=filters):
        if _owner_alive(dict(run.tags)):
            continue
        instance.report_run_failed(run, f"the `mm build` process (pid {run.tags.get('mm/pid')}) ended mid-run")
        instance.event_log_storage.free_concurrency_slots_for_run(run.run_id)
        released.append(run.run_id)
    return released


def sweep_leftovers(instance: dg.DagsterInstance, build_dir: Path) -> list[Path]:
    """Delete temporaries that killed runs left under ``build_dir``, when no run is in progress.

    Writes go to hidden temporaries renamed into place (mm_core.atomic), so a
    kill -9 mid-write leaves one behind. With no unfinished run on the
    instance, nobody can be writing one now, so every temporary is a leftover.
    """
    if instance.get_runs(filters=dg.RunsFilter(statuses=UNFINISHED), limit=1) or not build_dir.is_dir():
        return []
    removed: list[Path] = []
    for folder, dirs, _ in os.walk(build_dir):
        dirs[:] = [d for d in dirs if not is_temp_name(d)]
        removed += sweep_temps(folder, older_than_s=0)
    return removed


def _run(
    job: dg.JobDefinition,
    instance: dg.DagsterInstance,
    partition_key: str | None = None,
    *,
    verbose: bool = False,
) -> bool:
    result = job.execute_in_process(
        instance=instance,
        partition_key=partition_key,
        tags=_owner_tags(),
        raise_on_error=False,
        run_config=None if verbose else QUIET,
    )
    return result.success


def build_all(cfg: BuildConfig, *, instance: dg.DagsterInstance | None = None, progress: bool = True) -> dict[str, Any]:
    """ingest -> per shard (raw .. encodings) -> fusion model -> per shard (fused, export) -> dataset card.

    A shard whose blocking check fails stops there (its later assets are
    skipped) and the build goes on with the other shards; ``ok`` says whether
    every shard made it through. Runs left unfinished by a killed earlier build
    are marked failed first, so they cannot block this one, and the temporaries
    it left are removed.
    """
    defs = build_definitions(cfg)
    instance = instance or dg.DagsterInstance.get()
    release_orphaned_runs(instance)
    paths = BuildPaths.of(cfg)
    sweep_leftovers(instance, paths.root)
    if not _run(defs.resolve_job_def("ingest_sources"), instance):
        raise RuntimeError("ingest failed: see the run in the Dagster UI")
    current = set(paths.list_shards())
    parts = [p for p in instance.get_dynamic_partitions(shards.name) if p in current]
    prepare, finish = defs.resolve_job_def("prepare_shards"), defs.resolve_job_def("finish_shards")
    failed: list[str] = []
    for pk in tqdm(parts, desc="quality + encodings", disable=not progress):
        if not _run(prepare, instance, pk):
            failed.append(pk)
    if not _run(defs.resolve_job_def("train_fusion"), instance):
        raise RuntimeError("fusion_model failed: see the run in the Dagster UI")
    for pk in tqdm([p for p in parts if p not in failed], desc="fuse + export", disable=not progress):
        if not _run(finish, instance, pk):
            failed.append(pk)
    _run(defs.resolve_job_def("write_manifest"), instance)
    samples = sum(pq.read_metadata(paths.shard(p)).num_rows for p in parts)
    accepted = sum(pq.read_metadata(paths.accepted(p)).num_rows for p in parts if paths.accepted(p).exists())
    return {
        "ok": not failed,
        "shards": parts,
        "failed": failed,
        "samples": samples,
        "accepted": accepted,
        "export_dir": str(paths.export_dir),
        "manifest": str(paths.export_dir / "manifest.json"),
    }
