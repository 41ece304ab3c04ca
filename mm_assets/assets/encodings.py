"""One encodings asset per modality of the build, generated from the registry.

A plugin modality named in the configuration (or any registered one when the
configuration names none) gets its asset without an edit here.
"""

import time

import dagster as dg

from mm_assets.partitions import shards
from mm_assets.resources import DeviceResource
from mm_core.config import BuildConfig
from mm_core.pipeline import BuildPaths, build_modalities, encode_shard

GPU_POOL = "gpu"
RETRY = dg.RetryPolicy(max_retries=2, delay=5, backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.PLUS_MINUS)


def encodings_key(modality: str) -> str:
    return f"{modality}_encodings"


def _encodings_asset(cfg: BuildConfig, modality: str) -> dg.AssetsDefinition:
    paths = BuildPaths.of(cfg)

    @dg.asset(
        name=encodings_key(modality),
        group_name="encodings",
        deps=["filtered_samples"],
        partitions_def=shards,
        code_version=cfg.encoder_version(modality),
        pool=GPU_POOL,
        retry_policy=RETRY,
        kinds={"pytorch", "safetensors"},
        description=f"Token features [N, S, D] and masks of the {modality} encoder for the accepted samples.",
    )
    def _asset(context: dg.AssetExecutionContext, device: DeviceResource) -> dg.MaterializeResult:
        t0 = time.perf_counter()
        enc = encode_shard(device.apply(cfg), context.partition_key, modality)
        seconds = time.perf_counter() - t0
        n = len(enc.sample_ids)
        return dg.MaterializeResult(
            metadata={
                "dagster/row_count": n,
                "shape": dg.MetadataValue.json(list(enc.features.shape)),
                "mean_tokens": round(float(enc.mask.sum(1).float().mean()), 1) if n else 0.0,
                "samples_per_s": round(n / max(seconds, 1e-9), 2),
                "encoder": dg.MetadataValue.json(enc.encoder),
                **device.describe(),
                "path": dg.MetadataValue.path(str(paths.encodings(modality, context.partition_key))),
            }
        )

    return _asset


def build_encoding_assets(cfg: BuildConfig) -> list[dg.AssetsDefinition]:
    return [_encodings_asset(cfg, m) for m in build_modalities(cfg)]
