"""Device and precision resolution shared by encoders, fusion and training."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """``"auto"``/None -> cuda when available, else cpu; anything else as given."""
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def resolve_precision(precision: str | None, device: torch.device) -> str:
    """``"auto"`` -> bf16 on a GPU that supports it, fp32 otherwise.

    A CPU stays fp32 under ``auto``: bf16 autocast there was faster for MiniLM's forward on an
    idle AVX512-BF16 CPU but slower than fp32 on a busy one (tests/benchmarks/RESULTS.md, case 1),
    so it is opt-in: ``precision: bf16`` runs CPU autocast.
    """
    if precision in (None, "auto"):
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            return "bf16"
        return "fp32"
    if precision not in _DTYPES:
        raise ValueError(f"precision must be one of auto, {', '.join(_DTYPES)}; got {precision!r}")
    return precision


@contextlib.contextmanager
def autocast(device: torch.device, precision: str) -> Iterator[None]:
    """``torch.amp.autocast`` for bf16/fp16 on GPU and bf16 on CPU; fp32 (and fp16 on CPU, which has
    no fast fp16 kernels) run without it."""
    if precision == "fp32" or (device.type == "cpu" and precision != "bf16") or device.type not in ("cpu", "cuda"):
        yield
        return
    with torch.amp.autocast(device_type=device.type, dtype=_DTYPES[precision]):
        yield
