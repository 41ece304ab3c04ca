"""``ShardedWriter``: stream a dataset to disk one shard at a time, in several formats.

Memory is bounded by one shard: nothing but per-shard counts and hashes is
kept between calls (defect 6). A shard is staged in every format under
temporary names and renamed into place only when all formats succeeded, so a
failure leaves the previous state of that shard untouched (SPEC R2).
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mm_core.atomic import atomic_write_json, fsync_path, sweep_temps
from mm_core.errors import ConfigError
from mm_core.export import manifest as mf
from mm_core.export.formats import get_format
from mm_core.export.records import check_name, make_shard


class ShardedWriter:
    """Write shards of ``(sample_id, unified_vector, modality_mask, ...)`` records.

    ``modalities`` is the dataset's full modality set, fixed by the caller, so
    every shard has the same columns even when it lacks a modality.
    ``modality_dims`` declares the per-modality pooled vectors (``vec_{m}``)
    written for every shard. ``provenance`` (encoder names and weight hashes,
    fusion checkpoint hash ...), ``trained`` and ``notes`` go to the manifest.
    Use as a context manager; leaving it writes ``manifest.json``.

    ``fsync`` flushes files before they are renamed into place (durable across
    a machine crash, not only a process crash); ``checksums`` records each
    file's sha256 in the manifest. Hashing costs about as much as writing, so
    it runs in a background thread while the next format is written, and
    alongside the flush of the same files.
    """

    def __init__(
        self,
        out_dir: str | Path,
        *,
        formats: Sequence[str] = ("npy", "h5", "parquet", "safetensors"),
        modalities: Sequence[str],
        dim: int,
        modality_dims: Mapping[str, int] | None = None,
        dataset_name: str = "mm-fusion",
        provenance: Mapping[str, Any] | None = None,
        trained: bool = False,
        notes: str = "",
        fsync: bool = True,
        checksums: bool = True,
    ) -> None:
        self.out_dir = Path(out_dir)
        self.formats = [get_format(f) for f in dict.fromkeys(formats)]
        if not self.formats:
            raise ConfigError("ShardedWriter needs at least one format")
        self.modalities = [check_name(m, "modality") for m in modalities]
        if len(set(self.modalities)) != len(self.modalities):
            raise ConfigError(f"duplicate modality names in {self.modalities}")
        self.dim = int(dim)
        self.modality_dims = {check_name(m, "modality"): int(d) for m, d in (modality_dims or {}).items()}
        unknown = set(self.modality_dims) - set(self.modalities)
        if unknown:
            raise ConfigError(f"modality_dims names {sorted(unknown)} not in modalities {self.modalities}")
        self.fsync, self.checksums = fsync, checksums
        self.provenance = dict(provenance or {})
        self._header: dict[str, Any] = {
            "manifest_version": mf.MANIFEST_VERSION,
            "dataset_name": dataset_name,
            "dim": self.dim,
            "modalities": self.modalities,
            "modality_dims": self.modality_dims,
            "formats": [f.name for f in self.formats],
            "layout": {f.name: f"{f.name}/{{shard_id}}{f.suffix or '/'}" for f in self.formats},
            "provenance": self.provenance,
            "provenance_id": mf.content_id(self.provenance),
            "trained": bool(trained),
            "notes": notes,
            "code_version": mf.code_version(),
        }
        self._created = self._check_existing()
        self.written: dict[str, dict[str, Any]] = {}
        self._pool: ThreadPoolExecutor | None = None
        self._sync_pool: ThreadPoolExecutor | None = None
        folders = [self.out_dir, self.out_dir / mf.INDEX_DIR, *(self.out_dir / f.name for f in self.formats)]
        for folder in folders:
            sweep_temps(folder)  # leftovers of killed runs

    def _check_existing(self) -> str:
        """A dataset directory keeps one schema: refuse to mix dims, modalities or formats."""
        old = mf.load_manifest(self.out_dir)
        if old is None:
            return mf.now()
        for key in ("dim", "modalities", "modality_dims", "formats"):
            if old.get(key) != self._header[key]:
                raise ConfigError(
                    f"{self.out_dir} holds a dataset with {key}={old.get(key)!r}, not {self._header[key]!r}; "
                    "write to a new directory"
                )
        return old.get("created", mf.now())

    # ------------------------------------------------------------------ writing
    def _flush(self, root: Path, files: list[Path]) -> None:
        for p in files:
            fsync_path(p)
        if root.is_dir():
            fsync_path(root)

    def _digest(self, root: Path, files: list[Path]) -> dict[str, dict[str, Any]]:
        """sha256 and size of each staged file; with ``fsync`` the files are flushed meanwhile.

        Flushing waits on the device and hashing reads the page cache, so they overlap:
        the shard costs write + max(flush, hash), not their sum.
        """
        assert self._sync_pool is not None
        flushed = self._sync_pool.submit(self._flush, root, files) if self.fsync else None
        try:
            return {
                p.name: {"sha256": mf.sha256_file(p) if self.checksums else None, "bytes": p.stat().st_size}
                for p in files
            }
        finally:
            if flushed is not None:
                flushed.result()

    def write_shard(
        self,
        shard_id: str,
        sample_ids: Sequence[str],
        vectors: np.ndarray,
        modality_mask: np.ndarray | Mapping[str, np.ndarray],
        modality_vectors: Mapping[str, np.ndarray] | None = None,
        metadata: Sequence[Mapping[str, Any]] | None = None,
        quality: pd.DataFrame | Sequence[Mapping[str, float]] | None = None,
    ) -> dict[str, Any]:
        """Write (or replace) one shard in every format; returns its manifest entry."""
        check_name(shard_id, "shard_id")
        shard = make_shard(
            sample_ids,
            vectors,
            modality_mask,
            modalities=self.modalities,
            dim=self.dim,
            modality_dims=self.modality_dims,
            modality_vectors=modality_vectors,
            metadata=metadata,
            quality=quality,
        )
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="mm-export-hash")
            self._sync_pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="mm-export-fsync")
        files: dict[str, Future[dict[str, dict[str, Any]]]] = {}
        with contextlib.ExitStack() as stack:  # all formats staged, then all renamed
            try:
                for fmt in self.formats:
                    tmp = stack.enter_context(fmt.staged(fmt.path(self.out_dir, shard_id), fsync=False))
                    fmt.write(shard, tmp)
                    # hash (and flush) this format in the background while the next one is written
                    files[fmt.name] = self._pool.submit(self._digest, tmp, fmt.files(tmp))
            finally:
                wait(files.values())  # before any temporary is renamed or removed
            hashed = {name: fut.result() for name, fut in files.items()}
        entry = {
            "rows": len(shard),
            "written": mf.now(),
            "provenance_id": self._header["provenance_id"],
            "dim": self.dim,
            "modalities": self.modalities,
            "quality_columns": shard.quality_columns,
            "files": {
                f"{fmt.name}/{shard_id}{fmt.suffix}" + (f"/{n}" if fmt.is_dir else ""): info
                for fmt in self.formats
                for n, info in hashed[fmt.name].items()
            },
        }
        if self.fsync:
            for fmt in self.formats:
                fsync_path(fmt.path(self.out_dir, shard_id).parent)
        mf.write_index_entry(self.out_dir, shard_id, entry, fsync=self.fsync)
        self.written[shard_id] = entry
        return entry

    # ------------------------------------------------------------------ closing
    def manifest(self) -> dict[str, Any]:
        """The manifest as it stands: this header plus every shard entry on disk."""
        entries = mf.load_index(self.out_dir)
        schema = (self.dim, self.modalities)
        bad = sorted(s for s, e in entries.items() if (e.get("dim"), e.get("modalities")) != schema)
        if bad:
            raise ConfigError(f"shards {bad} in {self.out_dir} have another dim or modality set")
        return mf.assemble({**self._header, "created": self._created, "updated": mf.now()}, entries)

    def close(self) -> dict[str, Any]:
        """Write ``manifest.json`` atomically and return it."""
        self._shutdown()
        manifest = self.manifest()
        atomic_write_json(self.out_dir / mf.MANIFEST, manifest, fsync=self.fsync)
        return manifest

    def __enter__(self) -> ShardedWriter:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self._shutdown()

    def _shutdown(self) -> None:
        for pool in (self._pool, self._sync_pool):
            if pool is not None:
                pool.shutdown()
        self._pool = self._sync_pool = None
