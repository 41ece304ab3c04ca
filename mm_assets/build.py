"""Run a whole build through Dagster jobs, partition by partition, on the real instance."""

from __future__ import annotations

from typing import Any

import dagster as dg
import pyarrow.parquet as pq
from tqdm.auto import tqdm

from mm_assets.definitions import build_definitions
from mm_assets.partitions import shards
from mm_core.config import BuildConfig
from mm_core.pipeline import BuildPaths

QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


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
        raise_on_error=False,
        run_config=None if verbose else QUIET,
    )
    return result.success


def build_all(cfg: BuildConfig, *, instance: dg.DagsterInstance | None = None, progress: bool = True) -> dict[str, Any]:
    """ingest -> per shard (raw .. encodings) -> fusion model -> per shard (fused, export) -> dataset card.

    A shard whose blocking check fails stops there (its later assets are
    skipped) and the build goes on with the other shards; ``ok`` says whether
    every shard made it through.
    """
    defs = build_definitions(cfg)
    instance = instance or dg.DagsterInstance.get()
    paths = BuildPaths.of(cfg)
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
