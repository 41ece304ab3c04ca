"""The exported dataset: every shard in npy/h5/parquet/safetensors, and its dataset card."""

import json

import dagster as dg

from mm_assets.partitions import shards
from mm_core.config import BuildConfig
from mm_core.pipeline import BuildPaths, export_shard, finalize_export


def build_export_assets(cfg: BuildConfig) -> list[dg.AssetsDefinition]:
    paths = BuildPaths.of(cfg)

    @dg.asset(
        name="exported_dataset",
        group_name="export",
        deps=["fused_embeddings"],
        partitions_def=shards,
        code_version=cfg.fusion_version() + "-" + "-".join(cfg.export_formats),
        kinds={"parquet", "hdf5", "numpy", "safetensors"},
        description="The shard's records (id, unified vector, modality mask, per-modality vectors, "
        "metadata, quality) in every configured format.",
    )
    def exported_dataset(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        entry = export_shard(cfg, context.partition_key)
        files = entry["files"]
        return dg.MaterializeResult(
            metadata={
                "dagster/row_count": entry["rows"],
                "formats": dg.MetadataValue.json(cfg.export_formats),
                "bytes": sum(f["bytes"] for f in files.values()),
                "files": dg.MetadataValue.json(sorted(files)),
                "export_dir": dg.MetadataValue.path(str(paths.export_dir)),
            }
        )

    @dg.asset(
        name="dataset_manifest",
        group_name="export",
        deps=[exported_dataset],
        code_version=cfg.fusion_version(),
        kinds={"json"},
        description="manifest.json: dims, modalities, encoders and weight hashes, fusion checkpoint hash, "
        "per-shard counts and file hashes, code version.",
    )
    def dataset_manifest(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        path = finalize_export(cfg)
        manifest = json.loads(path.read_text())
        meta = {
            "shards": len(manifest.get("shards", {})),
            "dagster/row_count": int(manifest.get("total_rows", manifest.get("count", 0)) or 0),
            "trained": bool(manifest.get("trained")),
            "path": dg.MetadataValue.path(str(path)),
        }
        if not manifest.get("trained"):
            meta["note"] = dg.MetadataValue.md("**Fused with an untrained fusion model** (see fusion_model).")
        return dg.MaterializeResult(metadata=meta)

    return [exported_dataset, dataset_manifest]
