"""The "manifest" layout: JSONL or Parquet, one row per sample, paths per modality.

Row: ``{"sample_id": "a1", "vision": "img/a1.jpg", "audio": "...", "text": "a caption",
"sensor": "x.npy", "labels": {...}}``. Relative paths resolve against ``root``;
every path must stay inside ``root`` or ``allowed_roots`` (symlinks followed).
``text`` is the text itself. A bad row (invalid JSON, unknown modality, escaping
or missing path) is yielded with ``errors``; the reader never raises for a row.
"""

from __future__ import annotations

import functools
import json
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from mm_core.data.paths import PathRejected, resolve_confined, resolve_roots
from mm_core.data.records import INLINE_TEXT_MODALITIES, SampleRecord
from mm_core.errors import ConfigError

log = logging.getLogger(__name__)

#: Row keys that are not modalities. ``split`` is copied into the labels.
METADATA_KEYS = frozenset({"sample_id", "labels", "split"})
#: Always known, even before the modality modules are importable.
BUILTIN_MODALITIES = frozenset({"vision", "audio", "text", "sensor"})
DEFAULT_NAMES = ("manifest.jsonl", "manifest.parquet")


def known_modalities() -> frozenset[str]:
    """Built-in modality names plus everything in the registry (plugins included).

    Loading the registry imports the modality modules (and torch), so the
    manifest reader asks only when a row has a key that is not built in.
    """
    try:
        from mm_core.registry import available_modalities

        return BUILTIN_MODALITIES | set(available_modalities())
    except Exception as exc:  # a broken modality module must not stop ingest
        log.warning("modality registry unavailable (%s); using the built-in names", exc)
        return BUILTIN_MODALITIES


def _manifest_path(root: Path, path: str | os.PathLike | None) -> Path:
    if path is not None:
        p = Path(path)
        return p if p.is_absolute() else root / p
    for name in DEFAULT_NAMES:
        if (root / name).is_file():
            return root / name
    raise ConfigError(f"no manifest under {root}: expected one of {', '.join(DEFAULT_NAMES)} or path=")


def _rows(path: Path) -> Iterator[tuple[int, Any]]:
    """(row number, row) pairs; an unparsable JSONL line gives its error as the row."""
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        n = 0
        for batch in pq.ParquetFile(path).iter_batches(batch_size=1024):
            for row in batch.to_pylist():
                n += 1
                yield n, row
        return
    with open(path, encoding="utf-8", errors="replace") as f:
        for n, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                yield n, json.loads(line)
            except json.JSONDecodeError as exc:
                yield n, ValueError(f"invalid JSON at line {n}: {exc.msg}")


def _labels(value: Any, errors: list[str]) -> dict[str, str]:
    if value is None:
        return {}
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            errors.append("labels is not a JSON object")
            return {}
    if isinstance(value, list):  # Parquet map columns arrive as (key, value) pairs
        value = dict(value) if all(isinstance(p, tuple | list) and len(p) == 2 for p in value) else value
    if not isinstance(value, dict):
        errors.append(f"labels must be an object, got {type(value).__name__}")
        return {}
    return {str(k): v if isinstance(v, str) else json.dumps(v, ensure_ascii=False) for k, v in value.items()}


def _row_record(
    n: int, row: Any, *, root: Path, allowed: Sequence[Path], source: str, known: Callable[[], frozenset[str]]
) -> SampleRecord:
    if isinstance(row, Exception):
        return SampleRecord(f"{source}/line-{n}", source, errors=[str(row)])
    if not isinstance(row, dict):
        return SampleRecord(f"{source}/line-{n}", source, errors=[f"row {n} is not an object"])
    errors: list[str] = []
    raw_id = row.get("sample_id")
    if raw_id is None or str(raw_id) == "":
        raw_id = f"line-{n}"
    rec = SampleRecord(f"{source}/{raw_id}", source, labels=_labels(row.get("labels"), errors), errors=errors)
    if row.get("split") is not None:
        rec.labels["split"] = str(row["split"])
    for key, value in row.items():
        if key in METADATA_KEYS or value is None:
            continue
        if key not in BUILTIN_MODALITIES and key not in known():
            errors.append(f"unknown modality {key!r}")
        elif isinstance(value, bytes):
            rec.modalities[key] = value
        elif not isinstance(value, str):
            errors.append(f"{key}: expected a string, got {type(value).__name__}")
        elif key in INLINE_TEXT_MODALITIES:
            rec.modalities[key] = value
        else:
            try:
                rec.modalities[key] = str(resolve_confined(value, root, allowed))
            except PathRejected as exc:
                errors.append(f"{key}: {exc}")
    if not rec.modalities and not errors:
        errors.append("no modality in row")
    return rec


def read_manifest(
    root: str | os.PathLike,
    *,
    source: str = "manifest",
    path: str | os.PathLike | None = None,
    allowed_roots: Sequence[str | os.PathLike] = (),
) -> Iterator[SampleRecord]:
    """Stream records from ``root/manifest.jsonl`` (or ``.parquet``, or ``path``)."""
    allowed = resolve_roots(root, allowed_roots)
    base = allowed[0]
    manifest = _manifest_path(base, path)
    if not manifest.is_file():
        raise ConfigError(f"manifest not found: {manifest}")
    known = functools.cache(known_modalities)
    seen: dict[str, int] = {}
    for n, row in _rows(manifest):
        rec = _row_record(n, row, root=base, allowed=allowed, source=source, known=known)
        count = seen.get(rec.sample_id, 0)
        seen[rec.sample_id] = count + 1
        if count:
            rec.errors.append(f"duplicate sample_id {rec.sample_id!r} (row {n})")
            rec.sample_id = f"{rec.sample_id}#dup{count}"
        yield rec
