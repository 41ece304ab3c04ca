"""The fusion model of the build (trained and measured when configured) and the fused embeddings of each shard."""

import json
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
    "`training.enabled: true` (or `fusion.checkpoint` to a trained model)."
)
#: figures shown as their own metadata entries (plottable over materializations)
HEADLINE = ("recall@1", "recall@5", "accuracy", "alignment", "uniformity")


def _loss_md(history: list[dict]) -> dg.MetadataValue:
    rows = "\n".join(f"| {h['epoch']} | {h['loss']:.4f} | {h['lr']:.2e} |" for h in history)
    return dg.MetadataValue.md("| epoch | loss | lr |\n|---|---|---|\n" + rows)


def _evaluation_metadata(paths: BuildPaths) -> dict:
    """Figures of ``evaluation.json`` as metadata: a table, the gate's rows and headline numbers."""
    from mm_core.training.evaluation import table_md

    path = paths.model_dir / "evaluation.json"
    if not path.exists():
        return {}
    result = json.loads(path.read_text())
    meta = {
        "evaluation": dg.MetadataValue.md(table_md(result)),
        "eval_samples": int(result["split"].get("evaluated", 0)),
        "train_samples": int(result["split"].get("train", 0)),
    }
    name = "trained" if "trained" in result["models"] else "untrained"
    for key, value in sorted(result["models"][name].items()):
        if value is not None and key.endswith(HEADLINE) and "robustness" not in key:
            meta[f"eval/{key}"] = float(value)
    gate = result.get("gate")
    if gate:
        meta["retrieval_gate_passed"] = bool(gate["passed"])
    return meta


def build_fusion_assets(cfg: BuildConfig) -> list[dg.AssetsDefinition]:
    paths = BuildPaths.of(cfg)
    encodings = [dg.AssetDep(encodings_key(m)) for m in build_modalities(cfg)]

    @dg.asset(
        name="fusion_model",
        group_name="fusion",
        deps=encodings,
        code_version=f"{cfg.fusion_version()}-{cfg.evaluation_version()}",
        pool=GPU_POOL if cfg.training.enabled else None,
        kinds={"pytorch", "safetensors"},
        description="Trainable encoders + projection + cross-attention fusion + pooling (safetensors + config), "
        "trained self-supervised on the cached encodings when `training.enabled`, and measured on the "
        "held-out split (`evaluation.holdout`) against the untrained model and a baseline.",
    )
    def fusion_model(context: dg.AssetExecutionContext, device: DeviceResource) -> dg.MaterializeResult:
        t0 = time.perf_counter()
        info = ensure_fusion_model(device.apply(cfg))
        meta = {
            "trained": bool(info["trained"]),
            "weights_id": str(info.get("weights_id", "")),
            "strategy": cfg.fusion.strategy,
            "pooling": cfg.fusion.pooling,
            "output_dim": cfg.fusion.output_dim,
            "seconds": round(time.perf_counter() - t0, 1),
            **device.describe(),
            "path": dg.MetadataValue.path(info["path"]),
        }
        training = info.get("training")
        if training:
            meta["checkpoint_sha256"] = str(info.get("checkpoint_sha256", ""))
            meta["trainable_encoders"] = dg.MetadataValue.json(info.get("trainable_encoders", []))
            meta["training"] = dg.MetadataValue.json(training)
            history = json.loads((paths.model_dir / "training.json").read_text())
            meta["loss"] = _loss_md(history)
            if training.get("final_loss") is not None:
                meta["final_loss"] = float(training["final_loss"])
        meta.update(_evaluation_metadata(paths))
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
