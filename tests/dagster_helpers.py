"""Small build configurations for the Dagster tests (fast encoders, two shards)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from mm_core.config import BuildConfig, load_config


def small_build(tmp_path: Path, name: str = "t", **overrides: Any) -> tuple[Path, BuildConfig]:
    """A demo build of 24 samples in two shards with small, offline encoders."""
    data: dict[str, Any] = {
        "name": name,
        "storage_root": str(tmp_path / "store"),
        "seed": 0,
        "shard_size": 12,
        "sources": [{"layout": "demo", "n_samples": 24, "seed": 0}],
        "modalities": {
            "vision": {"model": "vit_tiny_patch16_224", "pretrained": False, "img_size": 64},
            "audio": {},
            "text": {},
            "sensor": {},
        },
        "fusion": {
            "shared_dim": 32,
            "output_dim": 32,
            "strategy": "perceiver",
            "pooling": "attention",
            "num_layers": 1,
            "num_heads": 2,
        },
        "runtime": {"device": "cpu", "batch_size": 16},
    }
    data.update(overrides)
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path, load_config(path)


def sensor_text_build(tmp_path: Path, name: str, **overrides: Any) -> BuildConfig:
    """A 48-sample, 2-shard demo build of sensor + text (the training tests' data)."""
    _, cfg = small_build(
        tmp_path,
        name=name,
        sources=[{"layout": "demo", "n_samples": 48, "seed": 0, "missing": {"sensor": 0.15, "text": 0.0}}],
        shard_size=24,
        modalities={"sensor": {}, "text": {}},
        **overrides,
    )
    return cfg
