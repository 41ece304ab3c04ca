"""One shard of output records, validated once and shared by every format writer.

Columns are held as whole arrays (never per-row objects) so each writer can
hand them to its library in one call (SPEC M10, defect 6).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

#: Modality names, quality names and shard ids become column and file names.
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*$")


def check_name(name: str, what: str) -> str:
    """Reject names that cannot be a file or column name on every format."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise ValueError(f"{what} {name!r} must match {_NAME.pattern}")
    return name


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"metadata value of type {type(obj).__name__} is not JSON-serialisable")


@dataclass(frozen=True)
class Shard:
    """Columns of one shard; row ``i`` of every array is sample ``sample_ids[i]``.

    ``modality_mask[:, j]`` says whether ``modalities[j]`` was present;
    ``quality`` is float64 ``[N, Q]`` with NaN where a row has no such score;
    ``metadata_json`` holds one JSON object text per row (or None).
    """

    sample_ids: list[str]
    vectors: np.ndarray
    modality_mask: np.ndarray
    modalities: list[str]
    modality_vectors: dict[str, np.ndarray] = field(default_factory=dict)
    metadata_json: list[str] | None = None
    quality: np.ndarray | None = None
    quality_columns: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.sample_ids)

    @property
    def metadata(self) -> list[dict[str, Any]] | None:
        """Per-row metadata dicts, parsed from ``metadata_json``."""
        return None if self.metadata_json is None else [json.loads(s) for s in self.metadata_json]

    def quality_frame(self) -> pd.DataFrame:
        """Quality scores as a DataFrame indexed by sample id."""
        data = self.quality if self.quality is not None else np.zeros((len(self), 0))
        index = pd.Index(self.sample_ids, name="sample_id")
        return pd.DataFrame(data, columns=self.quality_columns, index=index)


def _mask_array(modality_mask: Any, modalities: Sequence[str], n: int) -> np.ndarray:
    if isinstance(modality_mask, Mapping):
        unknown = set(modality_mask) - set(modalities)
        if unknown:
            raise ValueError(f"modality_mask names {sorted(unknown)} not in the dataset's modalities")
        out = np.zeros((n, len(modalities)), dtype=bool)
        for j, m in enumerate(modalities):
            if m in modality_mask:
                out[:, j] = np.asarray(modality_mask[m], dtype=bool)
        return out
    out = np.ascontiguousarray(modality_mask, dtype=bool)
    if out.shape != (n, len(modalities)):
        raise ValueError(f"modality_mask shape {out.shape} != (rows, modalities) = {(n, len(modalities))}")
    return out


def _quality_array(quality: Any, n: int) -> tuple[np.ndarray | None, list[str]]:
    if quality is None:
        return None, []
    frame = quality if isinstance(quality, pd.DataFrame) else pd.DataFrame(list(quality))
    if len(frame) != n:
        raise ValueError(f"quality has {len(frame)} rows, expected {n}")
    columns = [check_name(str(c), "quality column") for c in frame.columns]
    values = frame.to_numpy(dtype=np.float64, na_value=np.nan) if columns else np.zeros((n, 0))
    return np.ascontiguousarray(values), columns


def _modality_vectors(given: Mapping[str, np.ndarray], dims: Mapping[str, int], n: int) -> dict[str, np.ndarray]:
    """Every declared modality gets a ``[N, D_m]`` column (zeros if this shard has none)."""
    extra = set(given) - set(dims)
    if extra:
        raise ValueError(f"modality_vectors {sorted(extra)} need a width in modality_dims")
    out = {}
    for m, d in dims.items():
        a = np.ascontiguousarray(given[m], dtype=np.float32) if m in given else np.zeros((n, d), np.float32)
        if a.shape != (n, d):
            raise ValueError(f"modality_vectors[{m!r}] shape {a.shape} != (rows, dim) = {(n, d)}")
        out[m] = a
    return out


def make_shard(
    sample_ids: Sequence[str],
    vectors: np.ndarray,
    modality_mask: np.ndarray | Mapping[str, np.ndarray],
    *,
    modalities: Sequence[str],
    dim: int,
    modality_dims: Mapping[str, int] | None = None,
    modality_vectors: Mapping[str, np.ndarray] | None = None,
    metadata: Sequence[Mapping[str, Any]] | None = None,
    quality: pd.DataFrame | Sequence[Mapping[str, float]] | None = None,
) -> Shard:
    """Validate and normalise one shard's columns (dtypes, shapes, unique ids)."""
    ids = [str(s) for s in sample_ids]
    n = len(ids)
    if len(set(ids)) != n:
        raise ValueError("sample_ids within a shard must be unique")
    vecs = np.ascontiguousarray(vectors, dtype=np.float32)
    if vecs.shape != (n, dim):
        raise ValueError(f"vectors shape {vecs.shape} != (rows, dim) = {(n, dim)}")
    names = list(modalities)
    mask = _mask_array(modality_mask, names, n)
    per_mod = _modality_vectors(modality_vectors or {}, modality_dims or {}, n)
    meta = None
    if metadata is not None:
        if len(metadata) != n:
            raise ValueError(f"metadata has {len(metadata)} rows, expected {n}")
        dumps = json.JSONEncoder(ensure_ascii=False, sort_keys=True, default=_json_default).encode
        meta = [dumps(dict(r)) for r in metadata]
    q, qcols = _quality_array(quality, n)
    return Shard(ids, vecs, mask, names, per_mod, meta, q, qcols)
