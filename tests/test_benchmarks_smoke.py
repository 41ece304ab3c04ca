"""The benchmark suite still runs: quick mode produces well-formed rows (speed is never asserted).

The runner and the GPU script run as subprocesses, exactly as a person runs
them. Quick/dry-run sizes are tiny, so the figures mean nothing; what is
checked is that every selected case measured both sides and reported them.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest

from tests.conftest import REPO_ROOT

#: one fresh process per side is part of case 3; cases 2, 5 and 6 load many models and a
#: Dagster instance, so they run in the slow smoke test below
DEFAULT_CASES = [1, 3, 4]


def _run(args: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    out = subprocess.run(
        [sys.executable, *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout, check=False
    )
    assert out.returncode == 0, f"{args} failed:\n{out.stderr[-4000:]}"
    return out


def _check_rows(result: dict, cases: list[int]) -> None:
    assert result["quick"] is True
    assert result["cases"] == cases
    assert {int(k) for k, s in result["status"].items() if s["ok"]} == set(cases)
    rows = result["rows"]
    assert {r["case"] for r in rows} == set(cases)
    for r in rows:
        assert {"project", "baseline", "ratio", "baseline_name", "unit", "better"} <= set(r)
        assert r["better"] in ("higher", "lower")
        assert math.isfinite(r["project"]) and math.isfinite(r["baseline"]), r
        assert r["baseline"] > 0 and r["project"] >= 0, r
        assert r["ratio"] == pytest.approx(r["project"] / r["baseline"]), r
    machine = result["machine"]
    assert machine["cpu_cores"] >= 1 and machine["torch"] and machine["ram_gib"] > 0


def test_runner_quick_mode_reports_project_baseline_and_ratio(tmp_path):
    out, md = tmp_path / "quick.json", tmp_path / "quick.md"
    cases = ",".join(map(str, DEFAULT_CASES))
    args = ["-m", "tests.benchmarks.run", "--quick", "--cases", cases, "--out", str(out), "--markdown", str(md)]
    proc = _run(args, 300)
    result = json.loads(out.read_text())
    _check_rows(result, DEFAULT_CASES)
    rows = result["rows"]
    # case 1 compares against both baselines and proves the same embeddings were computed
    assert {r["baseline_name"].split(" (")[0] for r in rows if r["case"] == 1} == {
        "sentence-transformers encode",
        "seed pad-to-512",
    }
    assert next(r for r in rows if r["case"] == 1)["extra"]["min_cosine_vs_sentence_transformers"] > 0.999
    # case 3: every strategy against the seed; case 4: every format, checksums on and off
    assert {r["name"] for r in rows if r["case"] == 3 and r["unit"] == "samples/s"} == {
        f"fusion forward {s}" for s in ("pairwise", "anchor", "sequential", "perceiver")
    }
    assert len([r for r in rows if r["case"] == 4]) == 4 * 3
    table = md.read_text()
    assert table.count("\n") == len(rows) + 2 and "| ratio |" in table
    assert "| 1 | MiniLM text encode" in proc.stdout


def test_runner_rejects_unknown_cases():
    out = subprocess.run(
        [sys.executable, "-m", "tests.benchmarks.run", "--cases", "1,9"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 2 and "unknown case(s) [9]" in out.stderr


def test_gpu_script_dry_run_on_cpu(tmp_path):
    out = tmp_path / "gpu.json"
    _run(["tests/benchmarks/gpu_h200.py", "--dry-run", "--out", str(out)], 300)
    result = json.loads(out.read_text())
    assert result["dry_run"] is True and result["errors"] == {}
    sections = result["sections"]
    assert set(sections) == {"matmul", "vit_b16", "minilm", "fusion", "demo_shard"}
    assert sections["vit_b16"]["gflop_per_image"] > 0 and sections["vit_b16"]["bf16_mfu_vs_989"] > 0
    assert sections["minilm"]["project_bf16_captions_per_s"] > 0
    assert sections["minilm"]["sentence_transformers_fp32_captions_per_s"] > 0
    fusion = sections["fusion"]
    assert fusion["seed_default_samples_per_s"] > 0
    for strategy in ("pairwise", "anchor", "sequential", "perceiver"):
        assert fusion[f"{strategy}_default_samples_per_s"] > 0
        # the flash-only run either measured or recorded why the kernel refused
        assert f"{strategy}_flash_samples_per_s" in fusion or f"{strategy}_flash_error" in fusion
    assert sections["demo_shard"]["samples"] == 8 and sections["demo_shard"]["per_stage_s"]["export"] > 0


@pytest.mark.slow
def test_runner_quick_mode_every_case(tmp_path):
    out = tmp_path / "all.json"
    _run(["-m", "tests.benchmarks.run", "--quick", "--out", str(out)], 900)
    _check_rows(json.loads(out.read_text()), [1, 2, 3, 4, 5, 6])
