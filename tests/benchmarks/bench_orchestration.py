"""Case 5: Dagster orchestration overhead per partition (SPEC P3).

Project: ``mm_assets.build.build_all(cfg, instance=...)``: the whole lineage
as Dagster runs (ingest, then per partition quality..encodings, the fusion
model, per partition fuse + export, the manifest; 2N + 4 in-process runs with
their blocking asset checks) on a fresh SQLite instance (``DagsterInstance.
local_temp``, the embedded default). Baseline: ``mm_core.pipeline.run_build``,
the plain loop over the same stage functions, on its own storage root with
the same configuration (``tests/dagster_helpers.small_build``: vit_tiny at 64
px, the fallback small Wav2Vec2, MiniLM, the CNN-LSTM sensor encoder).

Both paths are warmed first (encoders are cached per process; Dagster's first
run pays for imports), then each build runs on fresh storage. The overhead
per partition is the slope of (Dagster - plain) seconds over two partition
counts, which separates it from the fixed runs (ingest, model, manifest).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from tests.benchmarks.common import Row, timed

SHARD = 12


@contextlib.contextmanager
def dagster_instance(home: Path) -> Iterator[object]:
    import dagster as dg

    home.mkdir(parents=True, exist_ok=True)
    with dg.DagsterInstance.local_temp(tempdir=str(home), overrides={"telemetry": {"enabled": False}}) as inst:
        yield inst


def config(root: Path, name: str, partitions: int, shard: int = SHARD):
    from tests.dagster_helpers import small_build

    sources = [{"layout": "demo", "n_samples": partitions * shard, "seed": 0}]
    return small_build(root / name, name, shard_size=shard, sources=sources)[1]


def dagster_build(root: Path, name: str, partitions: int) -> float:
    from mm_assets.build import build_all

    cfg = config(root, name, partitions)
    with dagster_instance(root / name / "dagster_home") as inst:
        seconds, result = timed(lambda: build_all(cfg, instance=inst, progress=False))
    if not result["ok"] or len(result["shards"]) != partitions:
        raise RuntimeError(f"Dagster build {name} failed: {result}")
    return seconds


def plain_build(root: Path, name: str, partitions: int) -> float:
    from mm_core.pipeline import run_build

    cfg = config(root, name, partitions)
    seconds, result = timed(lambda: run_build(cfg, progress=False))
    if len(result["shards"]) != partitions:
        raise RuntimeError(f"plain build {name} made {result['shards']}")
    return seconds


def run(quick: bool = False) -> list[Row]:
    os.environ.pop("MM_STORAGE_ROOT", None)  # it would override every config's storage root
    counts = [1] if quick else [2, 6]
    with tempfile.TemporaryDirectory(prefix="bench_orch_") as tmp:
        root = Path(tmp)
        plain_build(root, "warm_plain", 1)
        if not quick:
            dagster_build(root, "warm_dagster", 1)
        t = {}
        for n in counts:
            t[n] = (dagster_build(root, f"dagster{n}", n), plain_build(root, f"plain{n}", n))
    rows = []
    for n, (d, p) in t.items():
        rows.append(
            Row(
                5,
                f"whole build, {n} partition(s) x {SHARD} samples",
                "wall time",
                "s",
                d,
                p,
                "plain mm_core run_build",
                better="lower",
                extra={
                    "dagster_runs": 2 * n + 4,
                    "overhead_s": round(d - p, 2),
                    "overhead_per_run_s": round((d - p) / (2 * n + 4), 2),
                },
            )
        )
    if len(counts) == 2:
        (n1, (d1, p1)), (n2, (d2, p2)) = t.items()
        per_partition = ((d2 - p2) - (d1 - p1)) / (n2 - n1)
        work = (p2 - p1) / (n2 - n1)
        fixed = (d1 - p1) - n1 * per_partition
        note = {"fixed_overhead_s": round(fixed, 2), "partition_samples": SHARD, "counts": counts}
    else:
        n, (d, p) = next(iter(t.items()))
        per_partition, work = (d - p) / n, p / n
        note = {"note": "one count only: fixed runs are included in the per-partition figure"}
    rows.append(
        Row(
            5,
            "Dagster overhead per partition",
            "seconds per partition",
            "s",
            per_partition,
            work,
            f"plain work per partition ({SHARD} samples)",
            better="lower",
            extra=note,
        )
    )
    return rows
