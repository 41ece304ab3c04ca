"""Shared fixtures: the real datasets beside the repo, offline Hugging Face."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

REPO_ROOT = Path(__file__).resolve().parents[1]
DATASETS = Path(os.environ.get("MM_SHARED_DATASETS", REPO_ROOT.parent / "shared" / "datasets"))


@pytest.fixture(scope="session")
def datasets_dir() -> Path:
    """``../shared/datasets`` (or ``$MM_SHARED_DATASETS``): real public data, read-only."""
    if not DATASETS.is_dir():
        pytest.fail(f"shared datasets not found at {DATASETS}; set MM_SHARED_DATASETS")
    return DATASETS


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models on a shared 2-core machine: one intra-op thread is far faster than two contending."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
