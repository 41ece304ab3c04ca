"""Confine manifest paths to the configured data roots (SPEC R3).

A manifest is user data: a row must not make the pipeline read ``/etc/passwd``
through ``../..``, an absolute path, or a symlink that points outside. Paths
are resolved (following symlinks) and must stay relative to an allowed root.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path


class PathRejected(ValueError):
    """A path that is outside the allowed roots, remote, or not a file; the message is the reason."""


def resolve_roots(root: str | os.PathLike, allowed_roots: Sequence[str | os.PathLike] = ()) -> list[Path]:
    """The data root and any extra allowed roots, fully resolved."""
    return [Path(r).resolve() for r in (root, *allowed_roots)]


def resolve_confined(value: str, root: Path, allowed: Sequence[Path], *, must_exist: bool = True) -> Path:
    """Resolve ``value`` against ``root`` and check it stays inside ``allowed``.

    Raises :class:`PathRejected` with a reason such as ``path escapes data root: ...``
    or ``missing file: ...``; the caller turns it into a record error.
    """
    if "://" in value:
        raise PathRejected(f"unsupported URL in manifest (download it first): {value}")
    if "\x00" in value:
        raise PathRejected(f"invalid path (NUL byte): {value!r}")
    candidate = Path(value) if os.path.isabs(value) else root / value
    resolved = candidate.resolve()
    if not any(resolved.is_relative_to(r) for r in allowed):
        lexical = Path(os.path.normpath(candidate))
        via_link = any(lexical.is_relative_to(r) for r in allowed)
        what = "symlink escapes data root" if via_link else "path escapes data root"
        raise PathRejected(f"{what}: {value} -> {resolved}")
    if must_exist and not resolved.is_file():
        raise PathRejected(f"missing file: {value}")
    return resolved
