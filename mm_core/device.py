"""Device and precision resolution shared by encoders, fusion and training."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from functools import cache

import torch

_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """``"auto"``/None -> cuda when available, else cpu; anything else as given."""
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


@cache
def cpu_has_native_bf16() -> bool:
    """Whether this CPU multiplies bf16 in hardware (AVX512-BF16 or AMX), so bf16 autocast is faster than fp32.

    On CPUs without it oneDNN emulates bf16 and is slower than fp32, so ``auto`` stays fp32 there.
    """
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    try:
        return torch.backends.mkldnn.is_available() and any(getattr(torch.cpu, c, lambda: False)() for c in checks)
    except Exception:  # private probes may change between torch releases: fall back to fp32
        return False


def resolve_precision(precision: str | None, device: torch.device, *, inference: bool = False) -> str:
    """``"auto"`` -> bf16 on a GPU that supports it; on a CPU, bf16 for ``inference`` where it has native bf16.

    Training on a CPU stays fp32 under ``auto`` (exact, seed-reproducible gradients); name
    ``bf16`` to train in it anyway. ``fp32`` always means full precision.
    """
    if precision in (None, "auto"):
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            return "bf16"
        if device.type == "cpu" and inference and cpu_has_native_bf16():
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
