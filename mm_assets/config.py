"""Which dataset build the code location serves: ``$MM_CONFIG`` or the embedded demo."""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

from mm_core.config import BuildConfig, load_config

DEMO_CONFIG = Path(__file__).parent / "configs" / "demo.yaml"


def config_path() -> Path:
    """The YAML file named by ``$MM_CONFIG``, else the demo configuration."""
    return Path(os.environ.get("MM_CONFIG") or DEMO_CONFIG).resolve()


@lru_cache(maxsize=8)
def _load(path: str, root: str | None) -> BuildConfig:
    return load_config(path)


def build_config() -> BuildConfig:
    """The build configuration shared by assets, checks, schedule, sensor and CLI."""
    return _load(str(config_path()), os.environ.get("MM_STORAGE_ROOT"))
