"""Quality thresholds: configuration, defaults, and the checks that produce rejection reasons.

Three levels, all applied (SPEC M9, defect 10):

1. raw metric bounds per modality, in the metric's own unit (``audio.snr_db >= 3`` dB);
2. a minimum of each modality's normalised quality (0-1, see ``mm_core.quality.scorers``);
3. an 'overall' minimum of the present modalities' normalised qualities combined by
   ``rule`` = ``"mean"`` (default) or ``"min"``.

As a nested dict (the ``quality:`` section of the build YAML), merged over the defaults::

    overall: {min: 0.4, rule: mean}     # or just `overall: 0.4`
    audio:
      quality: 0.3                      # normalised minimum (or {min: 0.3})
      snr_db: {min: 5}
      duration_s: {min: 0.05, max: 30}
      clipping_ratio: null              # drop a default bound

The defaults accept the real public data used in tests (Flickr8k photos, FSDD and
LJSpeech clips, XQuAD and caption text, sp-sw-har IMU windows) and the demo data,
and reject unusable input: tiny or black/white images, clips shorter than 50 ms or
longer than 30 s, digital silence, empty or over-long text, broken charsets, and
sensor series with NaN/inf or mostly dead channels. A modality without an entry
(a plugin) only gets ``default_quality`` and the bounds its config names.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from mm_core.errors import ConfigError

RULES = ("mean", "min")


@dataclass(frozen=True)
class Bound:
    """Inclusive ``[min, max]`` for one raw metric; ``None`` = open side."""

    min: float | None = None
    max: float | None = None

    def __post_init__(self) -> None:
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ConfigError(f"threshold min {self.min} is above max {self.max}")

    def violation(self, value: float) -> str | None:
        """Why ``value`` fails this bound (``"2.1 < 5.0"``), or None when it passes."""
        if math.isnan(value):
            return "nan (not a number)"
        if self.min is not None and value < self.min:
            return f"{fmt(value)} < {fmt(self.min)}"
        if self.max is not None and value > self.max:
            return f"{fmt(value)} > {fmt(self.max)}"
        return None

    def to_dict(self) -> dict[str, float]:
        return {k: v for k, v in (("min", self.min), ("max", self.max)) if v is not None}


def fmt(x: float) -> str:
    """Short, readable number for reasons: ``5.0``, ``2.1``, ``0.000123``, ``1.2e+05``."""
    if math.isfinite(x) and float(x).is_integer() and abs(x) < 1e6:
        return f"{x:.1f}"
    text = f"{x:.3g}"
    return text + ".0" if text.lstrip("-").isdigit() else text


DEFAULT_BOUNDS: dict[str, dict[str, Bound]] = {
    "vision": {
        "min_side": Bound(min=32),
        "blur": Bound(min=2.0),
        "brightness": Bound(min=0.02, max=0.98),
    },
    "audio": {
        "duration_s": Bound(min=0.05, max=30.0),
        "sample_rate": Bound(min=4000),
        "snr_db": Bound(min=3.0),
        "clipping_ratio": Bound(max=0.05),
        "silence_ratio": Bound(max=0.95),
    },
    "text": {
        "chars": Bound(min=1, max=20000),
        "control_ratio": Bound(max=0.01),
        "replacement_ratio": Bound(max=0.01),
        "repetition": Bound(max=0.8),
    },
    "sensor": {
        "length": Bound(min=2),
        "channels": Bound(min=1),
        "nan_fraction": Bound(max=0.0),
        "inf_fraction": Bound(max=0.0),
        "flat_channel_fraction": Bound(max=0.5),
        "saturation_fraction": Bound(max=0.2),
    },
}
DEFAULT_QUALITY = {"vision": 0.3, "audio": 0.3, "text": 0.3, "sensor": 0.3}


@dataclass
class Thresholds:
    """Raw bounds, per-modality quality minimums and the overall rule (see module docstring)."""

    bounds: dict[str, dict[str, Bound]] = field(default_factory=lambda: {m: dict(b) for m, b in DEFAULT_BOUNDS.items()})
    quality: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_QUALITY))
    overall: float = 0.4
    rule: str = "mean"
    default_quality: float = 0.0

    def __post_init__(self) -> None:
        if self.rule not in RULES:
            raise ConfigError(f"quality overall rule must be one of {RULES}, got {self.rule!r}")

    @classmethod
    def from_dict(cls, config: Mapping[str, Any] | None, *, defaults: bool = True) -> Thresholds:
        """Nested dict (YAML) -> thresholds, merged over the defaults unless ``defaults=False``."""
        th = cls() if defaults else cls(bounds={}, quality={})
        for key, value in (config or {}).items():
            if key == "overall":
                if isinstance(value, Mapping):
                    _only(value, {"min", "rule"}, "overall")
                    th.overall = _number(value.get("min", th.overall), "overall.min")
                    th.rule = str(value.get("rule", th.rule))
                else:
                    th.overall = _number(value, "overall")
            elif key == "rule":
                th.rule = str(value)
            elif key == "default_quality":
                th.default_quality = _number(value, key)
            elif isinstance(value, Mapping):
                th._merge_modality(str(key), value)
            else:
                raise ConfigError(f"quality.{key}: expected a mapping of metric bounds, got {value!r}")
        th.__post_init__()
        return th

    def _merge_modality(self, modality: str, config: Mapping[str, Any]) -> None:
        bounds = self.bounds.setdefault(modality, {})
        for metric, value in config.items():
            where = f"quality.{modality}.{metric}"
            if metric == "quality":
                if isinstance(value, Mapping):
                    _only(value, {"min"}, where)
                    value = value.get("min")
                self.quality[modality] = _number(value, where)
            elif value is None:
                bounds.pop(metric, None)
            elif isinstance(value, Mapping):
                _only(value, {"min", "max"}, where)
                lo, hi = value.get("min"), value.get("max")
                bounds[metric] = Bound(
                    min=None if lo is None else _number(lo, where + ".min"),
                    max=None if hi is None else _number(hi, where + ".max"),
                )
            else:
                raise ConfigError(f"{where}: give {{min: ...}} and/or {{max: ...}}, got {value!r}")

    def to_dict(self) -> dict[str, Any]:
        """The nested-dict form (round-trips through :meth:`from_dict` with ``defaults=False``)."""
        out: dict[str, Any] = {"overall": {"min": self.overall, "rule": self.rule}}
        if self.default_quality:
            out["default_quality"] = self.default_quality
        for modality in sorted(set(self.bounds) | set(self.quality)):
            entry: dict[str, Any] = {m: b.to_dict() for m, b in sorted(self.bounds.get(modality, {}).items())}
            if modality in self.quality:
                entry["quality"] = self.quality[modality]
            out[modality] = entry
        return out

    def metric_reasons(self, modality: str, metrics: Mapping[str, float]) -> list[str]:
        """``"audio.snr_db 2.1 < 3.0"`` for each raw metric outside its bound (absent metrics skip)."""
        reasons = []
        for metric, bound in sorted(self.bounds.get(modality, {}).items()):
            if metric in metrics:
                problem = bound.violation(float(metrics[metric]))
                if problem:
                    reasons.append(f"{modality}.{metric} {problem}")
        return reasons

    def quality_reason(self, modality: str, quality: float) -> str | None:
        """Reason when a modality's normalised quality is below its minimum."""
        minimum = self.quality.get(modality, self.default_quality)
        problem = Bound(min=minimum).violation(quality)
        return f"{modality}.quality {problem}" if problem else None

    def combine(self, qualities: Mapping[str, float]) -> float:
        """The overall quality of one sample: ``rule`` over present modalities; NaN when none."""
        values = list(qualities.values())
        if not values:
            return math.nan
        return min(values) if self.rule == "min" else sum(values) / len(values)

    def overall_reason(self, qualities: Mapping[str, float]) -> str | None:
        """Reason when the overall rule fails (SPEC defect 10: the rule is applied)."""
        if not qualities:
            return None
        overall = self.combine(qualities)
        problem = Bound(min=self.overall).violation(overall)
        if problem is None:
            return None
        return f"overall {problem} ({self.rule} of {', '.join(sorted(qualities))})"


def as_thresholds(value: Thresholds | Mapping[str, Any] | None) -> Thresholds:
    """Accept a :class:`Thresholds`, a nested dict (merged over defaults), or None (defaults)."""
    if isinstance(value, Thresholds):
        return value
    return Thresholds.from_dict(value)


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{where}: expected a number, got {value!r}")
    return float(value)


def _only(mapping: Mapping[str, Any], allowed: set[str], where: str) -> None:
    extra = set(mapping) - allowed
    if extra:
        raise ConfigError(f"{where}: unknown keys {sorted(extra)}; allowed: {sorted(allowed)}")
