"""Run the benchmark suite: one command, every figure next to a baseline measured in the same run.

    python -m tests.benchmarks.run                       # the full suite (about 20-30 min on 2 CPU cores)
    python -m tests.benchmarks.run --quick               # tiny sizes: checks that every case runs
    python -m tests.benchmarks.run --cases 1,4 --out results.json --markdown results.md

Cases: 1 text encoding vs sentence-transformers and the seed's pad-to-512;
2 model FLOPs utilisation vs the matmul peak; 3 fusion forward per strategy vs
the seed's hand-written attention; 4 export writers vs numpy.save;
5 Dagster overhead vs the plain library loop; 6 scaling 1k -> 10k -> 100k.
Case 7 (H200) is the separate script ``tests/benchmarks/gpu_h200.py``; the
ingest memory benchmark is ``tests/benchmarks/bench_ingest.py``.

Every row holds ``project``, ``baseline`` and ``ratio = project / baseline``,
with ``better`` saying which direction wins. Timings are medians of
interleaved repeats after a warm-up; torch keeps its default thread count.
Nothing here asserts a speed.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import time
import traceback
from pathlib import Path

from tests.benchmarks.common import Row, machine, markdown_table

CASES = {
    1: "tests.benchmarks.bench_text",
    2: "tests.benchmarks.bench_mfu",
    3: "tests.benchmarks.bench_fusion",
    4: "tests.benchmarks.bench_export",
    5: "tests.benchmarks.bench_orchestration",
    6: "tests.benchmarks.bench_scaling",
}


def parse_cases(text: str) -> list[int]:
    cases = sorted({int(c) for c in text.split(",") if c.strip()})
    unknown = [c for c in cases if c not in CASES]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown case(s) {unknown}; choose from {sorted(CASES)}")
    return cases


def run_cases(cases: list[int], quick: bool) -> tuple[list[Row], dict[int, dict[str, object]]]:
    """Run each case; a failing case is reported (with its traceback) and the others still run."""
    rows: list[Row] = []
    status: dict[int, dict[str, object]] = {}
    for case in cases:
        t0 = time.perf_counter()
        print(f"[case {case}] {CASES[case]} ...", file=sys.stderr, flush=True)
        try:
            got = importlib.import_module(CASES[case]).run(quick=quick)
            rows.extend(got)
            status[case] = {"ok": True, "rows": len(got)}
        except Exception:
            status[case] = {"ok": False, "error": traceback.format_exc()}
            print(status[case]["error"], file=sys.stderr, flush=True)
        status[case]["seconds"] = round(time.perf_counter() - t0, 1)
        print(f"[case {case}] done in {status[case]['seconds']} s", file=sys.stderr, flush=True)
    return rows, status


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny sizes, one repeat: a smoke run, not figures")
    parser.add_argument("--cases", type=parse_cases, default=sorted(CASES), help="comma-separated, e.g. 1,3,4")
    parser.add_argument("--out", type=Path, help="write machine, status and rows as JSON here")
    parser.add_argument("--markdown", type=Path, help="write the Markdown table here")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

    info = machine()
    t0 = time.perf_counter()
    rows, status = run_cases(args.cases, args.quick)
    result = {
        "machine": info,
        "quick": args.quick,
        "cases": args.cases,
        "command": "python -m tests.benchmarks.run " + " ".join(sys.argv[1:] if argv is None else argv),
        "total_seconds": round(time.perf_counter() - t0, 1),
        "status": status,
        "rows": [r.as_dict() for r in rows],
    }
    table = markdown_table(rows)
    print(table)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2, default=str) + "\n", encoding="utf-8")
    if args.markdown:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(table + "\n", encoding="utf-8")
    return 0 if all(s["ok"] for s in status.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
