"""Schedule and sensor: keep every shard's lineage materialized and current.

The sensor adds a dynamic partition for every shard table that appears on disk
and requests its run. The schedule finds every partition whose shard assets are
missing or stale (materialized under an older code version) and requests a run
for each, so a nightly tick backfills exactly what changed.
"""

from typing import Any

import dagster as dg

from mm_assets.partitions import shards
from mm_core.config import BuildConfig
from mm_core.pipeline import BuildPaths


def shard_asset_keys(assets: list[dg.AssetsDefinition]) -> list[dg.AssetKey]:
    """Keys of the shard-partitioned assets, in definition order."""
    return [a.key for a in assets if a.partitions_def == shards]


def partitions_to_refresh(
    instance: dg.DagsterInstance, assets: list[dg.AssetsDefinition]
) -> dict[str, list[dg.AssetKey]]:
    """Partition -> its shard assets that are missing or stale, plus their downstream shard assets.

    Stale means the latest materialization of that partition carries another
    code version than the definition now has (an encoder, its weights or the
    fusion settings changed), so exactly the dependent partitions are redone.
    """
    keys = shard_asset_keys(assets)
    versions = {a.key: a.code_versions_by_key.get(a.key) for a in assets}
    upstream = {a.key: set(a.asset_deps.get(a.key, ())) for a in assets}
    out: dict[str, list[dg.AssetKey]] = {}
    for pk in instance.get_dynamic_partitions(shards.name):
        todo: set[dg.AssetKey] = set()
        for key in keys:  # definition order is topological for the shard assets
            if upstream[key] & todo:
                todo.add(key)
                continue
            records = instance.fetch_materializations(
                dg.AssetRecordsFilter(asset_key=key, asset_partitions=[pk]), limit=1
            ).records
            tags = records[0].asset_materialization.tags if records else None
            if not records or (tags or {}).get("dagster/code_version") != versions[key]:
                todo.add(key)
        if todo:
            out[pk] = [k for k in keys if k in todo]
    return out


def build_automation(
    cfg: BuildConfig, assets: list[dg.AssetsDefinition], shard_job: Any
) -> tuple[list[dg.ScheduleDefinition], list[dg.SensorDefinition]]:
    paths = BuildPaths.of(cfg)

    @dg.schedule(
        job=shard_job,
        cron_schedule="0 3 * * *",
        default_status=dg.DefaultScheduleStatus.STOPPED,
        description="Nightly backfill of every shard that is missing or stale.",
    )
    def backfill_stale_shards(context: dg.ScheduleEvaluationContext):
        todo = partitions_to_refresh(context.instance, assets)
        if not todo:
            return dg.SkipReason("every shard is materialized and current")
        stamp = context.scheduled_execution_time.isoformat()
        return [
            dg.RunRequest(
                run_key=f"{pk}@{stamp}",
                partition_key=pk,
                asset_selection=keys,
                tags={"mm/reason": "missing-or-stale"},
            )
            for pk, keys in sorted(todo.items())
        ]

    @dg.sensor(
        job=shard_job,
        minimum_interval_seconds=60,
        default_status=dg.DefaultSensorStatus.STOPPED,
        description="Discovers new shard tables under the build's samples/ folder.",
    )
    def new_shard_sensor(context: dg.SensorEvaluationContext):
        on_disk = paths.list_shards()
        known = set(context.instance.get_dynamic_partitions(shards.name))
        new = [s for s in on_disk if s not in known]
        if not new:
            return dg.SkipReason(f"no new shards ({len(on_disk)} known)")
        return dg.SensorResult(
            run_requests=[dg.RunRequest(run_key=f"new-{s}", partition_key=s) for s in new],
            dynamic_partitions_requests=[shards.build_add_request(new)],
        )

    return [backfill_stale_shards], [new_shard_sensor]
