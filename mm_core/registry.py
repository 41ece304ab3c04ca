"""Registry of modalities: the one place that decides which modalities exist.

A modality is one module that builds a :class:`ModalitySpec` (decoder, quality
scorer, encoder factory) and registers it. Built-in modalities register when
``mm_core.modalities`` is imported; third-party packages register through the
``mm_fusion.modalities`` entry-point group, whose objects are either a
``ModalitySpec`` or a zero-argument callable returning one. Projection, fusion,
storage, assets and checks read the registry, so a plugin needs no core edit.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mm_core.encoders.base import ModalityEncoder

ENTRY_POINT_GROUP = "mm_fusion.modalities"
log = logging.getLogger(__name__)


class UnknownModalityError(KeyError):
    """Raised for a modality name that no module registered."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0]) if self.args else "unknown modality"


@dataclass(frozen=True)
class ModalitySpec:
    """Everything the platform needs to know about one modality.

    decode: raw item (file path, bytes, or for text the string itself) -> the
        decoded value the scorer and the encoder's preprocessing take. Raises
        ``mm_core.errors.DecodeError`` (or any exception) on bad input.
    score: decoded value -> quality scores ``{name: float}`` (see mm_core.quality).
    encoder_factory: ``**options -> ModalityEncoder``; options come from the
        dataset configuration (model name or path, weights, device ...).
    default_encoder: options used when the configuration names none.
    extensions: file suffixes this modality reads (lower case, with the dot).
    """

    name: str
    decode: Callable[[Any], Any]
    encoder_factory: Callable[..., ModalityEncoder]
    score: Callable[[Any], dict[str, float]] | None = None
    default_encoder: Mapping[str, Any] = field(default_factory=dict)
    extensions: tuple[str, ...] = ()
    description: str = ""

    def create_encoder(self, **options: Any) -> ModalityEncoder:
        """Build this modality's encoder from defaults overlaid with ``options``."""
        return self.encoder_factory(**{**dict(self.default_encoder), **options})


_REGISTRY: dict[str, ModalitySpec] = {}
_LOCK = threading.RLock()
_LOADED = False


def register(spec: ModalitySpec, *, replace: bool = False) -> ModalitySpec:
    """Register ``spec`` under ``spec.name``; a second registration needs ``replace``."""
    with _LOCK:
        existing = _REGISTRY.get(spec.name)
        if existing is not None and existing is not spec and not replace:
            raise ValueError(f"modality {spec.name!r} is already registered")
        _REGISTRY[spec.name] = spec
    return spec


def unregister(name: str) -> None:
    """Remove a modality (tests and interactive use)."""
    with _LOCK:
        _REGISTRY.pop(name, None)


def _load_builtins_and_plugins() -> None:
    global _LOADED
    with _LOCK:
        if _LOADED:
            return
        import mm_core.modalities  # noqa: F401  (registers the built-ins; an error propagates and is retried)

        _LOADED = True

        for ep in entry_points(group=ENTRY_POINT_GROUP):
            try:
                obj = ep.load()
                spec = obj if isinstance(obj, ModalitySpec) else obj()
                if not isinstance(spec, ModalitySpec):
                    raise TypeError(f"entry point gave {type(spec).__name__}, not ModalitySpec")
                if spec.name not in _REGISTRY:
                    register(spec)
            except Exception as exc:  # a broken plugin must not take the platform down
                log.warning("modality plugin %s failed to load: %s", ep.name, exc)


def get(name: str) -> ModalitySpec:
    """The spec registered under ``name``; a clear error names the known ones."""
    _load_builtins_and_plugins()
    try:
        return _REGISTRY[name]
    except KeyError:
        known = ", ".join(sorted(_REGISTRY)) or "none"
        raise UnknownModalityError(f"unknown modality {name!r}; registered: {known}") from None


def available_modalities() -> list[str]:
    """Names of every registered modality, built-in and plugin, sorted."""
    _load_builtins_and_plugins()
    return sorted(_REGISTRY)
