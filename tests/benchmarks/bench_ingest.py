"""Ingest + quality benchmark: peak memory vs shard size (SPEC P2) and per-modality throughput.

Not a test (pytest collects ``test_*.py`` only). Run from the repository root::

    python tests/benchmarks/bench_ingest.py                 # 1,000 and 10,000 samples + real data
    python tests/benchmarks/bench_ingest.py --sizes 500 2000 --no-real

Memory: one generated shard of ``max(sizes)`` samples on disk (half 640x480
JPEG + caption, half 16 kHz WAV + caption, about 150 KB per file). Each size is
read with the manifest reader and filtered by ``score_and_filter`` in a fresh
subprocess, whose resident set size is sampled every 10 ms; the growth over the
warmed-up baseline is printed next to the media bytes on disk and the bytes the
decoded media would take if a shard were held decoded. Streaming means the
growth stays flat as the shard grows 10x.

Throughput: read + decode + score per modality on the real data in
``../shared/datasets`` (Flickr8k images, FSDD and LJSpeech audio, XQuAD text,
sp-sw-har IMU windows), against a baseline of read + decode alone in the same
process, so the ratio is the cost that scoring adds.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
DATASETS = Path(os.environ.get("MM_SHARED_DATASETS", REPO.parent / "shared" / "datasets"))
POOL = 32
IMAGE_SIZE = (640, 480)
AUDIO_SECONDS = 4.7


def _pool_media(rng: np.random.Generator) -> tuple[list[bytes], list[bytes]]:
    """POOL distinct textured JPEGs and speech-like WAVs, each about 150 KB."""
    import soundfile as sf
    from PIL import Image, ImageFilter

    images, wavs = [], []
    w, h = IMAGE_SIZE
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    for i in range(POOL):
        base = 128 + 60 * np.sin(xx / (15 + i) + i) * np.cos(yy / (23 + 2 * i))
        texture = rng.normal(0, 18, (h, w, 3)).astype(np.float32)
        rgb = np.clip(base[..., None] + texture + rng.uniform(-30, 30, 3), 0, 255).astype(np.uint8)
        img = Image.fromarray(rgb).filter(ImageFilter.GaussianBlur(0.6))
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=85)
        images.append(buf.getvalue())
        sr = 16000
        t = np.arange(int(AUDIO_SECONDS * sr)) / sr
        syllables = (np.sin(2 * np.pi * (2.5 + 0.2 * i) * t) > 0.2).astype(np.float32)
        voice = sum(np.sin(2 * np.pi * k * (110 + 5 * i) * t) / k for k in range(1, 6))
        wave = 0.15 * syllables * voice + rng.normal(0, 0.003, t.size)
        buf = io.BytesIO()
        sf.write(buf, wave.astype(np.float32), sr, format="WAV", subtype="PCM_16")
        wavs.append(buf.getvalue())
    return images, wavs


def build_shard(root: Path, n: int, sizes: list[int], seed: int = 0) -> dict[int, dict[str, float]]:
    """Write ``n`` samples and one manifest per size; returns per-size disk and decoded bytes."""
    images, wavs = _pool_media(np.random.default_rng(seed))
    (root / "media").mkdir(parents=True, exist_ok=True)
    rows, disk, decoded = [], [], []
    for i in range(n):
        if i % 2 == 0:
            data, rel = images[i % POOL], f"media/{i:06d}.jpg"
            row = {"sample_id": f"{i:06d}", "vision": rel, "text": f"A textured test pattern number {i}."}
            held = IMAGE_SIZE[0] * IMAGE_SIZE[1] * 3
        else:
            data, rel = wavs[i % POOL], f"media/{i:06d}.wav"
            row = {"sample_id": f"{i:06d}", "audio": rel, "text": f"A voice hums syllables, take {i}."}
            held = int(AUDIO_SECONDS * 16000) * 4
        (root / rel).write_bytes(data)
        rows.append(json.dumps(row))
        disk.append(len(data))
        decoded.append(held)
    out = {}
    for size in sizes:
        (root / f"manifest_{size}.jsonl").write_text("\n".join(rows[:size]) + "\n")
        out[size] = {"disk_mb": sum(disk[:size]) / 2**20, "decoded_mb": sum(decoded[:size]) / 2**20}
    return out


class RssSampler(threading.Thread):
    """Peak resident set size, sampled every ``interval`` s (ru_maxrss cannot be reset)."""

    def __init__(self, interval: float = 0.01) -> None:
        super().__init__(daemon=True)
        import psutil

        self.proc = psutil.Process()
        self.interval = interval
        self.peak = self.proc.memory_info().rss
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            self.peak = max(self.peak, self.proc.memory_info().rss)
            time.sleep(self.interval)

    def stop(self) -> int:
        self._stop_event.set()
        self.join()
        return max(self.peak, self.proc.memory_info().rss)


def child(root: Path, manifest: str) -> None:
    """Measure one shard in this (fresh) process and print a JSON line."""
    import psutil

    from mm_core.data.sources import read_source
    from mm_core.quality import score_and_filter

    warm = list(read_source("manifest", root, path="manifest_warm.jsonl"))
    score_and_filter(warm)  # imports, registry, codec tables: not part of the shard's cost
    base = psutil.Process().memory_info().rss
    sampler = RssSampler()
    sampler.start()
    t0 = time.perf_counter()
    accepted, rejected = score_and_filter(read_source("manifest", root, path=manifest))
    seconds = time.perf_counter() - t0
    peak = sampler.stop()
    print(
        json.dumps(
            {
                "n": len(accepted) + len(rejected),
                "accepted": len(accepted),
                "rejected": len(rejected),
                "baseline_mb": base / 2**20,
                "peak_mb": peak / 2**20,
                "growth_mb": (peak - base) / 2**20,
                "ru_maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                "seconds": seconds,
            }
        )
    )


def memory_bench(sizes: list[int], workdir: Path) -> None:
    root = workdir / "shard"
    t0 = time.perf_counter()
    info = build_shard(root, max(sizes), sizes)
    shutil.copy(root / f"manifest_{min(sizes)}.jsonl", root / "manifest_warm.jsonl")
    lines = (root / "manifest_warm.jsonl").read_text().splitlines()[:8]
    (root / "manifest_warm.jsonl").write_text("\n".join(lines) + "\n")
    print(f"built {max(sizes)} samples in {time.perf_counter() - t0:.1f} s under {root}")
    row = "{:>8} {:>9} {:>11} {:>14} {:>12} {:>7} {:>7} {:>9}"
    header = ("samples", "disk MB", "decoded MB", "RSS growth MB", "peak RSS MB", "s", "n/s", "accepted")
    print(row.format(*header))
    for size in sizes:
        out = subprocess.run(
            [sys.executable, __file__, "--child", str(root), f"manifest_{size}.jsonl"],
            check=True,
            capture_output=True,
            text=True,
            cwd=REPO,
        )
        r = json.loads(out.stdout.strip().splitlines()[-1])
        cells = (info[size]["disk_mb"], info[size]["decoded_mb"], r["growth_mb"], r["peak_mb"], r["seconds"])
        print(row.format(size, *(f"{c:.1f}" for c in cells), f"{r['n'] / r['seconds']:.0f}", r["accepted"]))


def _timed(fn) -> tuple[float, object]:
    t0 = time.perf_counter()
    value = fn()
    return time.perf_counter() - t0, value


def throughput_bench(datasets: Path) -> None:
    from mm_core.data.records import SampleRecord
    from mm_core.data.sources import read_source
    from mm_core.quality import score_and_filter
    from mm_core.registry import get as get_modality

    def only(modality: str, records) -> list[SampleRecord]:
        """Keep one modality; one record per distinct file (Flickr8k repeats images)."""
        seen, out = set(), []
        for r in records:
            value = r.modalities.get(modality)
            if value is not None and (modality == "text" or value not in seen):
                seen.add(value)
                out.append(SampleRecord(r.sample_id, r.source, {modality: value}))
        return out

    lj = datasets / "ljspeech-read"
    cases = [
        ("vision", "flickr8k images", lambda: read_source("flickr8k", datasets / "flickr8k")),
        ("audio", "fsdd clips (8 kHz)", lambda: read_source("fsdd", datasets / "fsdd", text=False)),
        (
            "audio",
            "ljspeech-read (44.1 kHz FLAC)",
            lambda: read_source("ljspeech", lj, metadata="transcript.csv", text=False),
        ),
        ("text", "xquad questions", lambda: read_source("squad", datasets / "xquad")),
        (
            "sensor",
            "sp-sw-har 200-row windows",
            lambda: read_source("sensor_csv", datasets / "sp-sw-har" / "DATA", text_from_label=False),
        ),
    ]
    print(f"\n{'modality':<8} {'data':<30} {'n':>6} {'read+decode+score /s':>21} {'read+decode /s':>15} "
          f"{'scoring cost':>13}")  # fmt: skip
    for modality, name, reader in cases:
        decode = get_modality(modality).decode
        score_and_filter(only(modality, reader())[:3])  # warm-up
        t_full, (acc, rej) = _timed(lambda: score_and_filter(only(modality, reader()), decode_cache={}))  # noqa: B023
        n = len(acc) + len(rej)
        t_base, _ = _timed(lambda: [decode(r.modalities[modality]) for r in only(modality, reader())])  # noqa: B023
        print(f"{modality:<8} {name:<30} {n:>6} {n / t_full:>21.0f} {n / t_base:>15.0f} "
              f"{t_full / t_base:>12.2f}x  ({len(rej)} rejected)")  # fmt: skip


def main() -> None:
    fmt = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=fmt)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--workdir", type=Path, help="where to build the shard (default: a temp dir)")
    parser.add_argument("--no-real", action="store_true", help="skip the real-data throughput part")
    parser.add_argument("--no-memory", action="store_true", help="skip the generated-shard memory part")
    parser.add_argument("--child", nargs=2, metavar=("ROOT", "MANIFEST"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(Path(args.child[0]), args.child[1])
        return
    import logging

    logging.basicConfig(level=logging.WARNING)
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs")
    if not args.no_memory:
        workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench_ingest_"))
        try:
            memory_bench(sorted(args.sizes), workdir)
        finally:
            if args.workdir is None:
                shutil.rmtree(workdir, ignore_errors=True)
    if not args.no_real:
        throughput_bench(DATASETS)


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    main()
