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
class TrainingConfig:
    """Self-supervised training of the fusion model (and of encoders without pretrained weights).

    Off by default: an untrained build fuses with a seeded random init and says so
    in the manifest. ``train_encoders``: ``"auto"`` trains every encoder that has
    no pretrained weights and at most ``auto_max_params`` parameters (the sensor
    CNN-LSTM); large random-init fallbacks (ViT, Wav2Vec2) stay frozen unless
    named in a list here. ``batch_size`` is per process and micro-batch.
    """

    enabled: bool = False
    epochs: int = 10
    batch_size: int = 64
    grad_accum: int = 1
    lr: float = 1e-3
    encoder_lr: float | None = None
    weight_decay: float = 0.01
    warmup_fraction: float = 0.1
    max_grad_norm: float = 1.0
    temperature: float = 0.07
    learn_temperature: bool = True
    modality_dropout: float = 0.5
    pair_weight: float = 1.0
    subset_weight: float = 1.0
    train_encoders: str | list[str] = "auto"
    auto_max_params: int = 2_000_000
    precision: str = "auto"
    gradient_checkpointing: bool = False
    num_processes: int = 1
    resume: bool = True
    seed: int | None = None


@dataclass
class EvaluationConfig:
    """Held-out measurement of the embeddings (retrieval, probe, robustness, alignment/uniformity).

    ``holdout``: rules (a mapping or a list of them) naming samples training
    never sees: ``{label: KEY, values: [...]}``, ``{fraction: F, key: KEY}``
    (stable hash of the label value, or of ``sample_id``) or ``{source: NAME}``.
    ``group_by`` / ``probe_label``: label key(s), the first one a sample has is used;
    a retrieved item is a hit when it shares the query's group (default: the same sample).
    ``floors``: ``{"audio->text/recall@1": 0.8}``; with none, the gate asks for
    ``min_ratio_over_chance`` times chance and a gain over the untrained model.
    """

    holdout: dict[str, Any] | list[dict[str, Any]] = field(default_factory=list)
    retrieval: list[list[str]] = field(default_factory=list)
    group_by: str | list[str] | None = None
    probe_label: str | list[str] | None = None
    ks: list[int] = field(default_factory=lambda: [1, 5, 10])
    max_samples: int = 5000
    probe_max_train: int = 5000
    floors: dict[str, float] = field(default_factory=dict)
    min_ratio_over_chance: float = 1.5
    min_gain_over_untrained: float = 0.0

    @property
    def enabled(self) -> bool:
        return bool(self.holdout)

    @property
    def holdout_rules(self) -> list[dict[str, Any]]:
        return [self.holdout] if isinstance(self.holdout, dict) else list(self.holdout)


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
    training: TrainingConfig = field(default_factory=TrainingConfig)
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)
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
        """Stable hash of one modality's encoder options (code version of its encodings).

        A modality named in ``training.train_encoders`` caches its inputs too, so naming it changes the version.
        """
        options = self.modalities.get(modality, {})
        weights = {k: _file_stamp(self.resolve(v)) for k, v in options.items() if k in WEIGHT_KEYS and v}
        key: dict[str, Any] = {"options": options, "weights": weights} if weights else options
        named = self.training.train_encoders
        if isinstance(named, list) and modality in named:
            return _digest({"options": key, "cache_inputs": True})
        return _digest(key)

    def source_version(self) -> str:
        """Hash of what decides the samples and their shards."""
        return _digest({"sources": self.sources, "shard_size": self.shard_size, "seed": self.seed})

    def quality_version(self) -> str:
        return _digest(self.quality)

    def fusion_version(self) -> str:
        """Hash of the fusion settings and every encoder (the model's inputs)."""
        encoders = {m: self.encoder_version(m) for m in sorted(self.modalities)}
        return _digest(
            {
                "fusion": asdict(self.fusion),
                "encoders": encoders,
                "seed": self.seed,
                "training": {k: v for k, v in asdict(self.training).items() if k != "resume"},
                "holdout": self.evaluation.holdout_rules,  # decides the training data
            }
        )

    def evaluation_version(self) -> str:
        """Hash of the evaluation settings (metrics and floors do not change the model)."""
        return _digest(asdict(self.evaluation))

    def gate(self, name: str) -> Any:
        """A quality-gate setting (asset checks), falling back to :data:`DEFAULT_GATES`."""
        return self.gates.get(name, DEFAULT_GATES[name])

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


#: encoder options that may name local weight files or directories
WEIGHT_KEYS = ("model", "weights", "checkpoint_path")


def _file_stamp(path: Path) -> list[tuple[str, int, int]] | None:
    """Size and mtime of a local weights file (or of a directory's files): new weights at the same
    path change the encoder's version, so exactly its dependent partitions turn stale."""
    if path.is_file():
        files = [path]
    elif path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file())
    else:
        return None  # a hub name: its options are the version
    return [(p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in files]


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
    training = TrainingConfig(**_known(TrainingConfig, dict(data.pop("training", {}) or {}), "training"))
    evaluation = EvaluationConfig(**_known(EvaluationConfig, dict(data.pop("evaluation", {}) or {}), "evaluation"))
    root = os.environ.get("MM_STORAGE_ROOT") or data.pop("storage_root", "data")
    data.pop("storage_root", None)
    cfg = BuildConfig(
        **data,
        storage_root=str(Path(root).expanduser().resolve()),
        fusion=fusion,
        runtime=runtime,
        training=training,
        evaluation=evaluation,
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
    _check_training(cfg.training)
    _check_evaluation(cfg.evaluation)
    return cfg


def _check_training(t: TrainingConfig) -> None:
    for key in ("epochs", "batch_size", "grad_accum", "num_processes"):
        if getattr(t, key) < 1:
            raise ConfigError(f"training.{key} must be >= 1")
    if t.lr <= 0 or t.temperature <= 0:
        raise ConfigError("training.lr and training.temperature must be > 0")
    if not 0.0 <= t.modality_dropout < 1.0 or not 0.0 <= t.warmup_fraction < 1.0:
        raise ConfigError("training.modality_dropout and training.warmup_fraction must be in [0, 1)")
    if not (t.train_encoders in ("auto", "none") or isinstance(t.train_encoders, list)):
        raise ConfigError("training.train_encoders must be 'auto', 'none' or a list of modality names")


def _check_evaluation(e: EvaluationConfig) -> None:
    for i, rule in enumerate(e.holdout_rules):
        kinds = [k for k in ("label", "fraction", "source") if k in rule]
        if len(kinds) != 1:
            raise ConfigError(f"evaluation.holdout[{i}]: give exactly one of label/fraction/source, got {rule}")
        if "label" in rule and not rule.get("values"):
            raise ConfigError(f"evaluation.holdout[{i}]: a label rule needs 'values'")
        if "fraction" in rule and not 0.0 < float(rule["fraction"]) < 1.0:
            raise ConfigError(f"evaluation.holdout[{i}]: fraction must be in (0, 1)")
    for pair in e.retrieval:
        if len(pair) != 2:
            raise ConfigError(f"evaluation.retrieval entries are [query, gallery] pairs; got {pair}")
    if not e.ks or min(e.ks) < 1:
        raise ConfigError("evaluation.ks must be a non-empty list of positive integers")


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
