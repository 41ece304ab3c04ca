"""Per-channel normalisation statistics: fitted on the data, stored, reused.

Sensor series differ in scale per channel (m/s^2 next to rad/s), so they are
normalised with statistics fitted once over a dataset (streaming, shard by
shard), saved as JSON beside the dataset, and loaded again for every later
shard and at inference: never refitted per batch, which would make the same
sample encode differently depending on its neighbours.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

Method = Literal["zscore", "minmax"]
_EPS = 1e-8


@dataclass
class ChannelStats:
    """Streaming per-channel count, mean, variance (Chan et al. merge), min and max.

    NaN/inf values are left out of the statistics (the quality scorer reports
    them); each channel keeps its own count of finite values.
    """

    method: Method = "zscore"
    count: np.ndarray = field(default_factory=lambda: np.zeros(0))
    mean: np.ndarray = field(default_factory=lambda: np.zeros(0))
    m2: np.ndarray = field(default_factory=lambda: np.zeros(0))
    minimum: np.ndarray = field(default_factory=lambda: np.zeros(0))
    maximum: np.ndarray = field(default_factory=lambda: np.zeros(0))

    def __post_init__(self) -> None:
        if self.method not in ("zscore", "minmax"):
            raise ValueError(f"method must be 'zscore' or 'minmax', got {self.method!r}")

    @property
    def num_channels(self) -> int:
        return int(self.mean.shape[0])

    @property
    def var(self) -> np.ndarray:
        """Population variance per channel (0 where fewer than one value was seen)."""
        return np.divide(self.m2, self.count, out=np.zeros_like(self.m2), where=self.count > 0)

    @property
    def std(self) -> np.ndarray:
        return np.sqrt(self.var)

    def update(self, array: np.ndarray) -> ChannelStats:
        """Fold one array ``[T, C]`` (or ``[T]``) into the statistics; returns self."""
        x = np.asarray(array, dtype=np.float64)
        if x.ndim == 1:
            x = x[:, None]
        if x.ndim != 2:
            raise ValueError(f"expected a [T, C] array, got shape {x.shape}")
        c = x.shape[1]
        if self.num_channels == 0:
            self.count, self.mean, self.m2 = np.zeros(c), np.zeros(c), np.zeros(c)
            self.minimum, self.maximum = np.full(c, np.inf), np.full(c, -np.inf)
        elif c != self.num_channels:
            raise ValueError(f"array has {c} channels, statistics have {self.num_channels}")
        finite = np.isfinite(x)
        n_b = finite.sum(axis=0).astype(np.float64)
        xz = np.where(finite, x, 0.0)
        mean_b = np.divide(xz.sum(axis=0), n_b, out=np.zeros(c), where=n_b > 0)
        m2_b = (np.where(finite, x - mean_b, 0.0) ** 2).sum(axis=0)
        n = self.count + n_b
        delta = mean_b - self.mean
        safe_n = np.where(n > 0, n, 1.0)
        self.mean = self.mean + delta * n_b / safe_n
        self.m2 = self.m2 + m2_b + delta**2 * self.count * n_b / safe_n
        self.count = n
        self.minimum = np.minimum(self.minimum, np.where(finite, x, np.inf).min(axis=0, initial=np.inf))
        self.maximum = np.maximum(self.maximum, np.where(finite, x, -np.inf).max(axis=0, initial=-np.inf))
        return self

    @classmethod
    def fit(cls, arrays: Iterable[np.ndarray], method: Method = "zscore") -> ChannelStats:
        """Statistics over every array of an iterable (streamed: one array in memory at a time)."""
        stats = cls(method=method)
        for a in arrays:
            stats.update(a)
        if stats.num_channels == 0:
            raise ValueError("cannot fit normalisation statistics on no data")
        return stats

    def affine(self) -> tuple[np.ndarray, np.ndarray]:
        """``(shift, scale)`` such that normalised = (x - shift) / scale (scale never 0)."""
        if self.num_channels == 0:
            raise ValueError("statistics are empty; fit them first")
        if self.method == "zscore":
            shift, scale = self.mean, self.std
        else:
            lo = np.where(np.isfinite(self.minimum), self.minimum, 0.0)
            hi = np.where(np.isfinite(self.maximum), self.maximum, 0.0)
            shift, scale = lo, hi - lo
        scale = np.where(scale > _EPS, scale, 1.0)
        return shift.astype(np.float32), scale.astype(np.float32)

    def apply(self, array: np.ndarray) -> np.ndarray:
        """Normalise ``[T, C]`` with the stored statistics (float32; NaN/inf pass through)."""
        shift, scale = self.affine()
        x = np.asarray(array, dtype=np.float32)
        if x.ndim == 1:
            x = x[:, None]
        if x.shape[-1] != self.num_channels:
            raise ValueError(f"array has {x.shape[-1]} channels, statistics have {self.num_channels}")
        return (x - shift) / scale

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "count": self.count.tolist(),
            "mean": self.mean.tolist(),
            "m2": self.m2.tolist(),
            "min": self.minimum.tolist(),
            "max": self.maximum.tolist(),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ChannelStats:
        arr = lambda key: np.asarray(data[key], dtype=np.float64)  # noqa: E731
        return cls(
            method=data.get("method", "zscore"),
            count=arr("count"),
            mean=arr("mean"),
            m2=arr("m2"),
            minimum=arr("min"),
            maximum=arr("max"),
        )

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write JSON atomically (temporary file + rename), so readers never see half a file."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w") as f:
                # inf (an all-NaN channel's min/max) is written as JSON's Infinity extension
                json.dump(self.to_dict(), f, indent=2)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return path

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> ChannelStats:
        with open(path) as f:
            return cls.from_dict(json.load(f))
