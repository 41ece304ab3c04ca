"""Raw downloads: read every source, assign samples to shards, one partition per shard."""

import dagster as dg
import pyarrow.parquet as pq

from mm_assets.metadata import preview_md
from mm_assets.partitions import shards
from mm_core.config import BuildConfig
from mm_core.pipeline import BuildPaths, ingest


def build_ingest_assets(cfg: BuildConfig) -> list[dg.AssetsDefinition]:
    paths = BuildPaths.of(cfg)

    @dg.asset(
        name="source_index",
        group_name="ingest",
        code_version=cfg.source_version(),
        kinds={"python", "parquet"},
        description="Reads (and downloads) every configured source and writes the shard tables; "
        "samples keep their shard when data is added.",
    )
    def source_index(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        shard_ids = ingest(cfg)
        known = set(context.instance.get_dynamic_partitions(shards.name))
        new = [s for s in shard_ids if s not in known]
        if new:
            context.instance.add_dynamic_partitions(shards.name, new)
        rows = sum(pq.read_metadata(paths.shard(s)).num_rows for s in shard_ids)
        return dg.MaterializeResult(
            metadata={
                "shards": len(shard_ids),
                "new_shards": dg.MetadataValue.json(new),
                "samples": rows,
                "shard_dir": dg.MetadataValue.path(str(paths.shards_dir)),
            }
        )

    @dg.asset(
        name="raw_samples",
        group_name="ingest",
        deps=[source_index],
        partitions_def=shards,
        code_version=cfg.source_version(),
        kinds={"parquet"},
        description="One shard of sample records (media by path, small items inline).",
    )
    def raw_samples(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        shard_id = context.partition_key
        path = paths.shard(shard_id)
        if not path.exists():
            raise dg.Failure(f"shard table {path.name} is missing: materialize source_index first")
        df = pq.read_table(path).to_pandas()
        modal = [c for c in df.columns if c in cfg.modalities or c.endswith("__bytes")]
        counts = {c.replace("__bytes", ""): 0 for c in modal}
        for c in modal:
            counts[c.replace("__bytes", "")] += int(df[c].notna().sum())
        with_errors = int(df["errors"].map(lambda e: len(e) > 0 if e is not None else False).sum())
        return dg.MaterializeResult(
            metadata={
                "dagster/row_count": len(df),
                "samples_per_modality": dg.MetadataValue.json(counts),
                "ingest_errors": with_errors,
                "path": dg.MetadataValue.path(str(path)),
                "preview": preview_md(df, ["sample_id", "source", "labels", "errors"]),
            }
        )

    return [source_index, raw_samples]
