"""Registry behaviour and device/precision resolution (SPEC M2, defect 9)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

import mm_core
from mm_core.device import autocast, resolve_device, resolve_precision
from mm_core.registry import ModalitySpec, UnknownModalityError, get, register, unregister

REPO = Path(__file__).resolve().parents[1]


def test_builtins_and_plugin_are_registered():
    names = mm_core.available_modalities()
    assert {"vision", "audio", "text", "sensor", "eeg"} <= set(names)
    assert names == sorted(names)


def test_unknown_modality_names_the_known_ones():
    with pytest.raises(UnknownModalityError, match=r"registered: .*text"):
        get("lidar")


def test_registering_twice_needs_replace():
    spec = ModalitySpec(name="dummy_mod", decode=str, encoder_factory=lambda **_: None)
    try:
        register(spec)
        with pytest.raises(ValueError, match="already registered"):
            register(ModalitySpec(name="dummy_mod", decode=bytes, encoder_factory=lambda **_: None))
        other = ModalitySpec(name="dummy_mod", decode=bytes, encoder_factory=lambda **_: None)
        register(other, replace=True)
        assert get("dummy_mod") is other and "dummy_mod" in mm_core.available_modalities()
    finally:
        unregister("dummy_mod")
    assert "dummy_mod" not in mm_core.available_modalities()


def test_import_mm_core_is_cheap_and_dagster_free():
    code = "import sys, mm_core; mm_core.available_modalities(); print('dagster' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert out.stdout.strip() == "False"


def test_precision_and_device_resolution():
    cpu = torch.device("cpu")
    assert resolve_device("cpu") == cpu
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_precision("auto", cpu) == "fp32"
    assert resolve_precision("bf16", cpu) == "bf16"
    with pytest.raises(ValueError, match="precision"):
        resolve_precision("int3", cpu)
    x = torch.ones(2, 2)
    with autocast(cpu, "bf16"):
        assert x.matmul(x).dtype == torch.bfloat16
    for prec in ("fp32", "fp16"):  # no fast fp16 kernels on a CPU: it runs fp32
        with autocast(cpu, prec):
            assert x.matmul(x).dtype == torch.float32


def test_no_deprecated_cuda_amp_in_the_code():
    """Defect 9: the seed used torch.cuda.amp; the code uses torch.amp."""
    offenders = [
        str(p.relative_to(REPO))
        for pkg in ("mm_core", "mm_assets")
        for p in (REPO / pkg).rglob("*.py")
        if "torch.cuda.amp" in p.read_text(encoding="utf-8")
    ]
    assert offenders == []
