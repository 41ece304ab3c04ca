"""The dataset-build configuration: one YAML file describes a whole build.

The UI (Dagster), the schedule, the ``mm`` CLI and the plain-library pipeline
all read the same :class:`BuildConfig`, so a build means the same thing
everywhere. Relative paths resolve against the config file's directory;
a relative ``storage_root`` (default ``data``) resolves against the working
directory at load time, and ``$MM_STORAGE_ROOT`` overrides it (tests, CI).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from mm_core.errors import ConfigError

EXPORT_FORMATS = ("npy", "h5", "parquet", "safetensors")

#: Blocking asset-check settings; override any of them under ``gates:`` in the YAML.
DEFAULT_GATES: dict[str, Any] = {
    "min_pass_rate": 0.5,  # accepted / input rows of a shard
    "norm_min": 1e-3,  # L2 norm of each unified vector
    "norm_max": 1e4,
    "max_missing_rate": 0.99,  # per modality, fraction of accepted samples without it
    "max_missing_rate_by_modality": {},
}


@dataclass
class FusionConfig:
    """Arguments of ``mm_core.build_fusion_model`` plus the trained checkpoint, if any."""

    shared_dim: int = 256
    output_dim: int = 256
    strategy: str = "perceiver"
    pooling: str = "attention"
    num_layers: int = 2
    num_heads: int = 4
    extra: dict[str, Any] = field(default_factory=dict)
    checkpoint: str | None = None


@dataclass
class RuntimeConfig:
    """Where and how models run."""

    device: str = "auto"
    precision: str = "auto"
    batch_size: int = 32
    num_workers: int = 0


@dataclass
class BuildConfig:
    """A dataset build: sources -> quality -> encodings -> fusion -> export."""

    name: str = "dataset"
    storage_root: str = "data"
    sources: list[dict[str, Any]] = field(default_factory=list)
    shard_size: int = 1000
    modalities: dict[str, dict[str, Any]] = field(default_factory=dict)
    quality: dict[str, Any] = field(default_factory=dict)
    gates: dict[str, Any] = field(default_factory=dict)
    fusion: FusionConfig = field(default_factory=FusionConfig)
    export_formats: list[str] = field(default_factory=lambda: list(EXPORT_FORMATS))
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    seed: int = 0
    base_dir: str = "."

    # ---- derived paths -------------------------------------------------
    @property
    def root(self) -> Path:
        """Absolute storage root of this build (resolved at load time)."""
        return Path(self.storage_root)

    @property
    def build_dir(self) -> Path:
        return self.root / "builds" / self.name

    def resolve(self, path: str | Path) -> Path:
        """A path from the config, relative to the config file's directory."""
        p = Path(path).expanduser()
        return p if p.is_absolute() else (Path(self.base_dir) / p).resolve()

    # ---- versions ------------------------------------------------------
    def encoder_version(self, modality: str) -> str:
        """Stable hash of one modality's encoder options (code version of its encodings)."""
        return _digest(self.modalities.get(modality, {}))

    def source_version(self) -> str:
        """Hash of what decides the samples and their shards."""
        return _digest({"sources": self.sources, "shard_size": self.shard_size, "seed": self.seed})

    def quality_version(self) -> str:
        return _digest(self.quality)

    def fusion_version(self) -> str:
        """Hash of the fusion settings and every encoder (the model's inputs)."""
        encoders = {m: self.encoder_version(m) for m in sorted(self.modalities)}
        return _digest({"fusion": asdict(self.fusion), "encoders": encoders, "seed": self.seed})

    def gate(self, name: str) -> Any:
        """A quality-gate setting (asset checks), falling back to :data:`DEFAULT_GATES`."""
        return self.gates.get(name, DEFAULT_GATES[name])

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:12]


def _known(cls: type, data: dict[str, Any], where: str) -> dict[str, Any]:
    names = set(cls.__dataclass_fields__)
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; allowed: {sorted(names)}")
    return data


def config_from_dict(data: dict[str, Any], *, base_dir: str | Path = ".") -> BuildConfig:
    """Validate a parsed YAML mapping into a :class:`BuildConfig`."""
    data = dict(data or {})
    data.pop("base_dir", None)
    _known(BuildConfig, data, "config")
    fusion = FusionConfig(**_known(FusionConfig, dict(data.pop("fusion", {}) or {}), "fusion"))
    runtime = RuntimeConfig(**_known(RuntimeConfig, dict(data.pop("runtime", {}) or {}), "runtime"))
    root = os.environ.get("MM_STORAGE_ROOT") or data.pop("storage_root", "data")
    data.pop("storage_root", None)
    cfg = BuildConfig(
        **data,
        storage_root=str(Path(root).expanduser().resolve()),
        fusion=fusion,
        runtime=runtime,
        base_dir=str(Path(base_dir).resolve()),
    )
    bad = sorted(set(cfg.export_formats) - set(EXPORT_FORMATS))
    if bad:
        raise ConfigError(f"export_formats: unknown {bad}; allowed: {list(EXPORT_FORMATS)}")
    if cfg.shard_size < 1:
        raise ConfigError("shard_size must be >= 1")
    if not cfg.sources:
        raise ConfigError("config: at least one entry under 'sources' is needed")
    for i, src in enumerate(cfg.sources):
        if "layout" not in src:
            raise ConfigError(f"sources[{i}]: 'layout' is required")
    return cfg


def load_config(path: str | Path) -> BuildConfig:
    """Read a build configuration YAML file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    with path.open(encoding="utf-8") as fh:
        data = yaml.safe_load(fh) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping")
    return config_from_dict(data, base_dir=path.parent)
