"""The fusion model of the build and the fused embeddings of each shard."""

import time

import dagster as dg
import numpy as np

from mm_assets.assets.encodings import GPU_POOL, RETRY, encodings_key
from mm_assets.partitions import shards
from mm_assets.resources import DeviceResource
from mm_core.config import BuildConfig
from mm_core.pipeline import BuildPaths, build_modalities, ensure_fusion_model, fuse_shard

UNTRAINED_NOTE = (
    "**Untrained fusion model.** Projection and cross-attention weights are a seeded random "
    "init: the vectors are deterministic but carry little cross-modal meaning. Set "
    "`fusion.checkpoint` to a trained model."
)


def build_fusion_assets(cfg: BuildConfig) -> list[dg.AssetsDefinition]:
    paths = BuildPaths.of(cfg)
    encodings = [dg.AssetDep(encodings_key(m)) for m in build_modalities(cfg)]

    @dg.asset(
        name="fusion_model",
        group_name="fusion",
        deps=encodings,
        code_version=cfg.fusion_version(),
        kinds={"pytorch", "safetensors"},
        description="Projection + cross-attention fusion + pooling weights (safetensors + config).",
    )
    def fusion_model(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        info = ensure_fusion_model(cfg)
        meta = {
            "trained": bool(info["trained"]),
            "strategy": cfg.fusion.strategy,
            "pooling": cfg.fusion.pooling,
            "output_dim": cfg.fusion.output_dim,
            "path": dg.MetadataValue.path(info["path"]),
        }
        if not info["trained"]:
            meta["note"] = dg.MetadataValue.md(UNTRAINED_NOTE)
            context.log.warning("fusion model is untrained (seeded random init)")
        return dg.MaterializeResult(metadata=meta)

    @dg.asset(
        name="fused_embeddings",
        group_name="fusion",
        deps=[fusion_model, *encodings],
        partitions_def=shards,
        code_version=cfg.fusion_version(),
        pool=GPU_POOL,
        retry_policy=RETRY,
        kinds={"pytorch", "safetensors"},
        description="One unified vector per accepted sample, with the modalities it had.",
    )
    def fused_embeddings(context: dg.AssetExecutionContext, device: DeviceResource) -> dg.MaterializeResult:
        t0 = time.perf_counter()
        ids, vectors, present = fuse_shard(device.apply(cfg), context.partition_key)
        seconds = time.perf_counter() - t0
        norms = np.linalg.norm(vectors, axis=1) if len(vectors) else np.zeros(0)
        names = build_modalities(cfg)
        meta = {
            "dagster/row_count": len(ids),
            "dim": int(vectors.shape[1]) if vectors.ndim == 2 else 0,
            "norm_mean": float(norms.mean()) if norms.size else 0.0,
            "present_rate": dg.MetadataValue.json(
                {m: float(present[:, i].mean()) if len(present) else 0.0 for i, m in enumerate(sorted(names))}
            ),
            "samples_per_s": round(len(ids) / max(seconds, 1e-9), 1),
            **device.describe(),
            "path": dg.MetadataValue.path(str(paths.fused(context.partition_key))),
        }
        return dg.MaterializeResult(metadata=meta)

    return [fusion_model, fused_embeddings]
