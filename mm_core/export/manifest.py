"""The dataset card (``manifest.json``): dims, names, shards with file hashes, provenance.

Each written shard leaves a small entry in ``_index/{shard_id}.json``; the
manifest is assembled from those entries, so shards written by separate
processes (one Dagster partition each) all end up in it.
"""

from __future__ import annotations

import functools
import hashlib
import json
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mm_core.atomic import atomic_write_json, is_temp_name

MANIFEST = "manifest.json"
INDEX_DIR = "_index"
MANIFEST_VERSION = 1


def now() -> str:
    """UTC time in ISO 8601, seconds precision."""
    return datetime.now(UTC).replace(microsecond=0).isoformat()


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file's bytes (streamed; hashlib releases the GIL)."""
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def content_id(obj: Any) -> str:
    """Short stable hash of a JSON-able object (e.g. the provenance dict)."""
    text = json.dumps(obj, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@functools.cache
def code_version() -> dict[str, str | None]:
    """mm_core's version and, when the package sits in a git checkout, its commit."""
    from mm_core import __version__

    commit = None
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
        if out.returncode == 0:
            commit = out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        pass
    return {"mm_core": __version__, "git_commit": commit}


def write_index_entry(out_dir: Path, shard_id: str, entry: dict[str, Any], *, fsync: bool = True) -> None:
    atomic_write_json(out_dir / INDEX_DIR / f"{shard_id}.json", entry, fsync=fsync)


def load_index(out_dir: Path) -> dict[str, dict[str, Any]]:
    """Every shard entry written so far, by shard id (sorted)."""
    folder = out_dir / INDEX_DIR
    if not folder.is_dir():
        return {}
    entries = {}
    for path in sorted(folder.glob("*.json")):
        if not is_temp_name(path.name):
            entries[path.stem] = json.loads(path.read_text(encoding="utf-8"))
    return entries


def load_manifest(out_dir: str | Path) -> dict[str, Any] | None:
    """``manifest.json`` of ``out_dir``, or None when there is none yet."""
    path = Path(out_dir) / MANIFEST
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None


def assemble(header: dict[str, Any], entries: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Header + shard entries -> the manifest dict (counts, stale shards, quality columns)."""
    pid = header.get("provenance_id")
    quality = sorted({c for e in entries.values() for c in e.get("quality_columns", [])})
    return {
        **header,
        "num_shards": len(entries),
        "total_rows": sum(e["rows"] for e in entries.values()),
        "quality_columns": quality,
        "stale_shards": sorted(s for s, e in entries.items() if e.get("provenance_id") != pid),
        "shards": entries,
    }
