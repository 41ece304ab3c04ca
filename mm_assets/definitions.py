"""The code location: every asset, check, resource, job, schedule and sensor of one build.

The build is the YAML named by ``$MM_CONFIG`` (default: the embedded demo), so
``dagster dev -w workspace.yaml``, the schedule and ``mm build`` all share it.
"""

from __future__ import annotations

import dagster as dg

from mm_assets.assets.encodings import build_encoding_assets
from mm_assets.assets.export import build_export_assets
from mm_assets.assets.fusion import build_fusion_assets
from mm_assets.assets.ingest import build_ingest_assets
from mm_assets.assets.quality import build_quality_assets
from mm_assets.automation import build_automation, shard_asset_keys
from mm_assets.checks import build_checks
from mm_assets.config import build_config
from mm_assets.model_checks import build_model_checks
from mm_assets.resources import DeviceResource
from mm_core.config import BuildConfig

SHARD_JOB = "build_shards"
#: shard assets that need the fusion model (run after it, in "finish_shards")
AFTER_MODEL = ("fused_embeddings", "exported_dataset")


def build_definitions(cfg: BuildConfig) -> dg.Definitions:
    """Definitions for one build configuration."""
    assets = [
        *build_ingest_assets(cfg),
        *build_quality_assets(cfg),
        *build_encoding_assets(cfg),
        *build_fusion_assets(cfg),
        *build_export_assets(cfg),
    ]
    shard_keys = shard_asset_keys(assets)
    shard_job = dg.define_asset_job(
        SHARD_JOB,
        selection=dg.AssetSelection.assets(*shard_keys),
        description="Every shard-partitioned asset of the lineage, for one shard.",
    )
    before_model = [k for k in shard_keys if k.path[-1] not in AFTER_MODEL]
    jobs = [
        shard_job,
        dg.define_asset_job("ingest_sources", selection=["source_index"], description="Read sources, write shards."),
        dg.define_asset_job(
            "prepare_shards",
            selection=dg.AssetSelection.assets(*before_model),
            description="raw samples -> quality -> filtered -> encodings, for one shard.",
        ),
        dg.define_asset_job("train_fusion", selection=["fusion_model"], description="Build or train the model."),
        dg.define_asset_job(
            "finish_shards",
            selection=list(AFTER_MODEL),
            description="fused embeddings -> exported files, for one shard.",
        ),
        dg.define_asset_job("write_manifest", selection=["dataset_manifest"], description="Write the manifest."),
    ]
    schedules, sensors = build_automation(cfg, assets, shard_job)
    rt = cfg.runtime
    return dg.Definitions(
        assets=assets,
        asset_checks=[*build_checks(cfg), *build_model_checks(cfg)],
        jobs=jobs,
        schedules=schedules,
        sensors=sensors,
        resources={
            "device": DeviceResource(
                device=rt.device, precision=rt.precision, batch_size=rt.batch_size, num_workers=rt.num_workers
            )
        },
    )


defs = build_definitions(build_config())
