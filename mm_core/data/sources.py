"""Layout registry and the ``read_source`` entry point.

A layout is a reader ``reader(root, *, source, **options) -> Iterator[SampleRecord]``
registered under a name, so a user adds a layout with :func:`register_layout`
and no edit here. Built-ins are named by import path and imported on first
use (the ``hf`` reader needs the optional ``datasets`` package).
"""

from __future__ import annotations

import importlib
import itertools
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from mm_core.data.records import SampleRecord
from mm_core.errors import ConfigError

Reader = Callable[..., Iterator[SampleRecord]]

_LAYOUTS: dict[str, Reader | str] = {
    "flickr8k": "mm_core.data.captions:read_flickr8k",
    "coco": "mm_core.data.captions:read_coco",
    "librispeech": "mm_core.data.speech:read_librispeech",
    "ljspeech": "mm_core.data.speech:read_ljspeech",
    "fsdd": "mm_core.data.speech:read_fsdd",
    "squad": "mm_core.data.squad:read_squad",
    "sensor_csv": "mm_core.data.sensor_files:read_sensor_files",
    "manifest": "mm_core.data.manifest:read_manifest",
    "hf": "mm_core.data.hf:read_hf",
}


def register_layout(name: str, reader: Reader, *, replace: bool = False) -> None:
    """Add a layout; a second registration of ``name`` needs ``replace=True``."""
    if name in _LAYOUTS and not replace:
        raise ValueError(f"layout {name!r} is already registered")
    _LAYOUTS[name] = reader


def available_layouts() -> list[str]:
    """Names of every registered layout, sorted."""
    return sorted(_LAYOUTS)


def get_reader(layout: str) -> Reader:
    """The reader registered under ``layout``; a clear error names the known ones."""
    try:
        target = _LAYOUTS[layout]
    except KeyError:
        raise ConfigError(
            f"unknown source layout {layout!r}; known layouts: {', '.join(available_layouts())}"
        ) from None
    if isinstance(target, str):
        module, _, attr = target.partition(":")
        target = getattr(importlib.import_module(module), attr)
        _LAYOUTS[layout] = target
    return target


def read_source(
    layout: str, root: Any, *, source: str | None = None, limit: int | None = None, **options: Any
) -> Iterator[SampleRecord]:
    """Stream the records of one source in ``layout`` under ``root``.

    ``source`` names the source and prefixes every sample id (default: the
    layout name); ``limit`` stops after that many records, reading no further.
    Other options go to the layout's reader.
    """
    reader = get_reader(layout)
    try:
        records = reader(root, source=source or layout, **options)
    except TypeError as exc:
        raise ConfigError(f"layout {layout!r}: {exc}") from exc
    return itertools.islice(records, limit) if limit is not None else records


def combine_sources(*sources: Iterable[SampleRecord]) -> Iterator[SampleRecord]:
    """Chain several record streams, keeping sample ids unique.

    A repeated id is still yielded (never dropped) but renamed ``id#dupN`` and
    given an error, so the quality stage rejects it with that reason.
    """
    seen: dict[str, int] = {}
    for rec in itertools.chain.from_iterable(sources):
        count = seen.get(rec.sample_id, 0)
        seen[rec.sample_id] = count + 1
        if count:
            rec.errors.append(f"duplicate sample_id {rec.sample_id!r}")
            rec.sample_id = f"{rec.sample_id}#dup{count}"
        yield rec


def read_sources(configs: Iterable[Mapping[str, Any]]) -> Iterator[SampleRecord]:
    """Read several sources, each a mapping of :func:`read_source` arguments.

    Source names must differ (they prefix the sample ids), so two sources of
    one layout need explicit ``source`` names.
    """
    configs = [dict(c) for c in configs]
    names = [c.get("source") or c.get("layout") for c in configs]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ConfigError(f"source names must be unique; repeated: {', '.join(map(str, repeated))}")
    return combine_sources(*(read_source(**c) for c in configs))
