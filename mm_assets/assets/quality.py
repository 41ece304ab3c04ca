"""Quality scores and filtered samples, per shard."""

import time

import dagster as dg

from mm_assets.metadata import histogram_md, preview_md, reasons_md
from mm_assets.partitions import shards
from mm_core.config import BuildConfig
from mm_core.pipeline import BuildPaths, filter_shard, score_shard


def build_quality_assets(cfg: BuildConfig) -> list[dg.AssetsDefinition]:
    paths = BuildPaths.of(cfg)

    @dg.asset(
        name="quality_scores",
        group_name="quality",
        deps=["raw_samples"],
        partitions_def=shards,
        code_version=cfg.quality_version(),
        kinds={"parquet"},
        description="Per-modality quality scores of every sample of the shard, with verdict and reasons.",
    )
    def quality_scores(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        t0 = time.perf_counter()
        scores = score_shard(cfg, context.partition_key)
        seconds = time.perf_counter() - t0
        meta: dict = {
            "dagster/row_count": len(scores),
            "accepted": int(scores["accepted"].sum()),
            "rejected": int((~scores["accepted"]).sum()),
            "samples_per_s": round(len(scores) / max(seconds, 1e-9), 1),
            "path": dg.MetadataValue.path(str(paths.scores(context.partition_key))),
        }
        for col in sorted(c for c in scores.columns if c.startswith("q_") and c.count("_") == 1):
            meta[f"hist_{col}"] = histogram_md(scores[col], title=col)
        return dg.MaterializeResult(metadata=meta)

    @dg.asset(
        name="filtered_samples",
        group_name="quality",
        deps=[quality_scores],
        partitions_def=shards,
        code_version=cfg.quality_version(),
        kinds={"parquet"},
        description="Accepted samples; the rejected ones are kept beside them with their reasons.",
    )
    def filtered_samples(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        accepted, rejected = filter_shard(cfg, context.partition_key)
        total = len(accepted) + len(rejected)
        return dg.MaterializeResult(
            metadata={
                "dagster/row_count": len(accepted),
                "accepted": len(accepted),
                "rejected": len(rejected),
                "pass_rate": round(len(accepted) / total, 4) if total else 0.0,
                "rejection_reasons": reasons_md(rejected["reasons"]) if len(rejected) else "none",
                "accepted_path": dg.MetadataValue.path(str(paths.accepted(context.partition_key))),
                "rejected_path": dg.MetadataValue.path(str(paths.rejected(context.partition_key))),
                "preview": preview_md(accepted, ["sample_id", "source", "q_overall", "labels"]),
            }
        )

    return [quality_scores, filtered_samples]
