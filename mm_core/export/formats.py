"""The four on-disk formats behind one small interface, and where each puts a shard."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from mm_core.atomic import atomic_dir, atomic_path, is_temp_name
from mm_core.errors import ConfigError
from mm_core.export import h5_io, npy_io, parquet_io, safetensors_io
from mm_core.export.records import Shard


@dataclass(frozen=True)
class ShardFormat:
    """One format: ``out_dir/{name}/{shard_id}{suffix}`` (a directory when ``suffix`` is empty)."""

    name: str
    suffix: str
    write: Callable[[Shard, Path], None]
    read: Callable[..., Shard]

    @property
    def is_dir(self) -> bool:
        return not self.suffix

    def path(self, out_dir: str | Path, shard_id: str) -> Path:
        return Path(out_dir) / self.name / f"{shard_id}{self.suffix}"

    @contextlib.contextmanager
    def staged(self, target: Path, *, fsync: bool = True) -> Iterator[Path]:
        """Temporary path for ``target``, renamed into place on success (see mm_core.atomic)."""
        ctx = atomic_dir(target, fsync=fsync) if self.is_dir else atomic_path(target, fsync=fsync)
        with ctx as tmp:
            yield tmp

    def files(self, path: Path) -> list[Path]:
        """The plain files that make up one shard (for hashing)."""
        return sorted(p for p in path.iterdir() if p.is_file()) if self.is_dir else [path]

    def shard_ids(self, out_dir: str | Path) -> list[str]:
        """Ids of the complete shards present, sorted (temporaries are skipped)."""
        folder = Path(out_dir) / self.name
        if not folder.is_dir():
            return []
        ids = []
        for entry in folder.iterdir():
            if is_temp_name(entry.name) or entry.is_dir() != self.is_dir:
                continue
            if self.is_dir or entry.name.endswith(self.suffix):
                ids.append(entry.name[: len(entry.name) - len(self.suffix)])
        return sorted(ids)


_MODULES = {"npy": npy_io, "h5": h5_io, "parquet": parquet_io, "safetensors": safetensors_io}
FORMATS: dict[str, ShardFormat] = {
    name: ShardFormat(name, mod.SUFFIX, mod.write, mod.read) for name, mod in _MODULES.items()
}


def get_format(name: str) -> ShardFormat:
    """The format called ``name``; a ConfigError lists the known ones."""
    try:
        return FORMATS[name]
    except KeyError:
        raise ConfigError(f"unknown export format {name!r}; choose from {sorted(FORMATS)}") from None
