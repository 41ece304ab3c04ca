"""Shared helpers of the benchmark suite: result rows, timers, memory probes, machine facts.

Every case reports :class:`Row` objects: the project's figure, a baseline's
figure measured in the same run, and ``ratio = project / baseline`` with the
direction that is better. Speeds are throughputs (higher is better), so a
ratio above 1 means the project is faster; memory and overhead rows are
"lower is better".
"""

from __future__ import annotations

import json
import math
import os
import platform
import re
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
DATASETS = Path(os.environ.get("MM_SHARED_DATASETS", REPO.parent / "shared" / "datasets"))


@dataclass
class Row:
    """One measured comparison; ``ratio`` is always ``project / baseline``."""

    case: int
    name: str
    metric: str
    unit: str
    project: float
    baseline: float
    baseline_name: str
    better: str = "higher"  # which direction of ``ratio`` is better: "higher" or "lower"
    extra: dict[str, Any] = field(default_factory=dict)
    ratio: float = field(init=False)

    def __post_init__(self) -> None:
        self.project, self.baseline = float(self.project), float(self.baseline)
        self.ratio = self.project / self.baseline if self.baseline else math.nan

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def timed(fn: Callable[[], Any], *, sync: Callable[[], None] | None = None) -> tuple[float, Any]:
    """Seconds taken by ``fn()`` (``sync`` runs before both clock reads: CUDA) and its value."""
    if sync:
        sync()
    t0 = time.perf_counter()
    value = fn()
    if sync:
        sync()
    return time.perf_counter() - t0, value


def compare(
    fns: dict[str, Callable[[], Any]],
    *,
    repeats: int = 3,
    warmup: Callable[[], Any] | None = None,
    setup: Callable[[], Any] | None = None,
    sync: Callable[[], None] | None = None,
) -> dict[str, float]:
    """Median seconds of each function, repeats interleaved (A B A B ...) so machine drift hits all alike.

    ``warmup`` runs once first (imports, kernel choice, allocator); ``setup``
    runs before every timed call and is not timed (e.g. removing old output).
    """
    if warmup is not None:
        warmup()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            if setup is not None:
                setup()
            times[name].append(timed(fn, sync=sync)[0])
    return {k: statistics.median(v) for k, v in times.items()}


class RssSampler(threading.Thread):
    """Peak resident set size of this process between ``start()`` and ``stop()``.

    Linux keeps a per-process high-water mark (``VmHWM``) that writing ``5``
    to ``/proc/self/clear_refs`` resets, so the peak is exact; the RSS is also
    sampled every ``interval`` s as a fallback where that reset is not allowed.
    (``ru_maxrss`` is useless here: it cannot be reset and survives ``exec``,
    so a child reports its parent's peak.)
    """

    def __init__(self, interval: float = 0.005) -> None:
        super().__init__(daemon=True)
        import psutil

        self.proc = psutil.Process()
        self.interval = interval
        self.exact = reset_peak_rss()
        self.start_rss = self.proc.memory_info().rss
        self.peak = self.start_rss
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            self.peak = max(self.peak, self.proc.memory_info().rss)
            time.sleep(self.interval)

    def stop(self) -> dict[str, Any]:
        """Stop sampling; returns start, peak and growth in MiB, and how the peak was taken."""
        self._stop_event.set()
        self.join()
        peak = max(self.peak, self.proc.memory_info().rss)
        hwm = peak_rss_bytes() if self.exact else None
        if hwm is not None:
            peak = max(peak, hwm)
        return {
            "start_mb": self.start_rss / 2**20,
            "peak_mb": peak / 2**20,
            "growth_mb": (peak - self.start_rss) / 2**20,
            "peak_method": "VmHWM after clear_refs reset" if hwm is not None else "RSS sampled every 5 ms",
        }


def reset_peak_rss() -> bool:
    """Reset this process's peak-RSS counter (Linux >= 4.0); False where not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def peak_rss_bytes() -> int | None:
    """``VmHWM`` of this process (peak RSS since start or the last reset), or None."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def run_child(module: str, *args: str, timeout: float = 1800) -> dict[str, Any]:
    """Run ``python -m module args`` in a fresh process; its last stdout line is JSON."""
    out = subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if out.returncode != 0:
        raise RuntimeError(f"{module} {' '.join(args)} failed ({out.returncode}):\n{out.stderr[-4000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    import psutil
    import torch

    model = platform.processor() or platform.machine()
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        found = re.search(r"^Model name:\s*(.+)$", lscpu, re.MULTILINE)
        model = found.group(1).strip() if found else model
    except (OSError, subprocess.CalledProcessError):
        pass
    info = {
        "cpu_model": model,
        "cpu_cores": os.cpu_count(),
        "ram_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load_avg_1m_at_start": round(os.getloadavg()[0], 2),
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    info.update(code_state())
    return info


def code_state() -> dict[str, Any]:
    """The commit measured and how many files differed from it (read-only git calls)."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True)
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=REPO, capture_output=True, text=True)
    except OSError:
        return {}
    if head.returncode != 0:
        return {}
    return {"git_head": head.stdout.strip(), "uncommitted_files": len(dirty.stdout.splitlines())}


def fmt(value: float) -> str:
    """Compact number for tables."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    a = abs(value)
    if a >= 1000:
        return f"{value:,.0f}"
    if a >= 10:
        return f"{value:.1f}"
    if a >= 0.1:
        return f"{value:.2f}"
    return f"{value:.3g}"


def markdown_table(rows: Sequence[Row]) -> str:
    """The rows as a Markdown table (ratio = project / baseline)."""
    lines = [
        "| case | measurement | unit | project | baseline | baseline is | ratio | better |",
        "|---:|---|---|---:|---:|---|---:|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r.case} | {r.name}: {r.metric} | {r.unit} | {fmt(r.project)} | {fmt(r.baseline)} | "
            f"{r.baseline_name} | {fmt(r.ratio)}x | {r.better} |"
        )
    return "\n".join(lines)
