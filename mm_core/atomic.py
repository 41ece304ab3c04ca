"""Atomic file and directory writes: the project's one way to put output on disk (SPEC R2).

Everything is written under a hidden temporary name in the target's own
directory (same filesystem, so the rename is atomic), flushed to disk, and
moved into place with ``os.replace``. Readers therefore see either the old
file or the complete new one, never a half-written file; a failure removes
the temporary. A process killed outright (SIGKILL, power loss) can leave a
hidden ``.*.tmp*`` entry behind, which :func:`sweep_temps` removes later.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

_TMP_MARK = ".tmp"


def _temp_sibling(target: Path, kind: str) -> Path:
    """A hidden unique name beside ``target`` that keeps its suffix (np.save appends '.npy' otherwise)."""
    return target.with_name(f".{target.name}.{uuid.uuid4().hex[:12]}{_TMP_MARK}{kind}{target.suffix}")


def is_temp_name(name: str) -> bool:
    """True for names this module uses for in-progress writes (readers skip them)."""
    return name.startswith(".") and _TMP_MARK in name


def fsync_path(path: str | os.PathLike[str]) -> None:
    """Flush one file's (or directory's) data to the device."""
    flags = os.O_RDONLY | (os.O_DIRECTORY if Path(path).is_dir() else 0)
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    except OSError:  # some filesystems refuse fsync on directories; the data is still renamed atomically
        if not flags & os.O_DIRECTORY:
            raise
    finally:
        os.close(fd)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike[str], *, fsync: bool = True) -> Iterator[Path]:
    """Yield a temporary path to write; on success it replaces ``target`` atomically.

    The temporary lives in the target's directory and ends with the target's
    suffix. On an exception it is deleted and ``target`` is left untouched.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_sibling(target, "")
    try:
        yield tmp
        if not tmp.exists():
            raise FileNotFoundError(f"nothing was written to the temporary file for {target}")
        if fsync:
            fsync_path(tmp)
        os.replace(tmp, target)
    except BaseException:
        _remove(tmp)
        raise
    if fsync:
        fsync_path(target.parent)


def atomic_write_bytes(target: str | os.PathLike[str], data: bytes, *, fsync: bool = True) -> None:
    """Write ``data`` to ``target`` atomically."""
    with atomic_path(target, fsync=fsync) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(
    target: str | os.PathLike[str], text: str, *, encoding: str = "utf-8", fsync: bool = True
) -> None:
    """Write ``text`` to ``target`` atomically."""
    atomic_write_bytes(target, text.encode(encoding), fsync=fsync)


def atomic_write_json(target: str | os.PathLike[str], obj: Any, *, fsync: bool = True) -> None:
    """Write ``obj`` as indented UTF-8 JSON to ``target`` atomically."""
    atomic_write_text(target, json.dumps(obj, indent=2, ensure_ascii=False) + "\n", fsync=fsync)


@contextlib.contextmanager
def atomic_dir(target: str | os.PathLike[str], *, fsync: bool = True) -> Iterator[Path]:
    """Yield an empty temporary directory; on success it replaces the directory ``target``.

    POSIX cannot rename over a non-empty directory, so an existing ``target`` is
    first renamed aside and deleted after the new one is in place: readers see
    the old directory, then (for an instant) none, then the complete new one.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_sibling(target, "dir")
    tmp.mkdir()
    try:
        yield tmp
        if fsync:
            for child in tmp.rglob("*"):
                fsync_path(child)
            fsync_path(tmp)
        old = None
        if target.exists():
            old = _temp_sibling(target, "old")
            os.replace(target, old)
        os.replace(tmp, target)
    except BaseException:
        _remove(tmp)
        raise
    if old is not None:
        _remove(old)
    if fsync:
        fsync_path(target.parent)


def sweep_temps(directory: str | os.PathLike[str], *, older_than_s: float = 3600.0) -> list[Path]:
    """Delete temporaries left in ``directory`` by killed runs; returns what was removed.

    Only entries older than ``older_than_s`` go, so a write in progress in
    another process is not disturbed.
    """
    directory = Path(directory)
    if not directory.is_dir():
        return []
    cutoff = time.time() - older_than_s
    removed = []
    for entry in directory.iterdir():
        if is_temp_name(entry.name) and entry.lstat().st_mtime < cutoff:
            _remove(entry)
            removed.append(entry)
    return removed
