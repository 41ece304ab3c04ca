"""Case 4: export speed of ``ShardedWriter`` per format vs ``numpy.save`` (SPEC P1, M10).

One shard of 100,000 x 768 float32 vectors with string ids and a 4-modality
bool mask (quick: 5,000) is written with ``ShardedWriter`` in one format at a
time (writer construction, the shard, its index entry and ``manifest.json``
all timed), and with ``numpy.save`` of the same three arrays (the id list
converted to a unicode array inside the timing, as the writer must), in the
same process, to the same temporary directory. Rows compare MB/s of vector
payload; the writer's defaults are ``fsync=True, checksums=True``, so those
rows are compared with ``numpy.save`` + ``os.fsync`` of its files, and the
``fsync=False`` rows with a plain ``numpy.save``. Before every timed write the
previous output is removed and ``os.sync()`` runs (untimed), so no write pays
for the write-back of another.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from tests.benchmarks.common import Row, compare

MODALITIES = ["vision", "audio", "text", "sensor"]
DIM = 768


def make_data(n: int, seed: int = 0) -> tuple[list[str], np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    ids = [f"sample-{i:07d}" for i in range(n)]
    return ids, rng.standard_normal((n, DIM), dtype=np.float32), rng.random((n, len(MODALITIES))) < 0.8


def numpy_save(out: Path, ids: list[str], vectors: np.ndarray, mask: np.ndarray, *, fsync: bool) -> None:
    """The baseline: three ``np.save`` calls (and ``fsync`` of each file when asked)."""
    out.mkdir(parents=True, exist_ok=True)
    files = [out / "vectors.npy", out / "ids.npy", out / "mask.npy"]
    for path, arr in zip(files, (vectors, np.array(ids, dtype=np.str_), mask), strict=True):
        np.save(path, arr)
        if fsync:
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)


def writer_save(out: Path, fmt: str, ids, vectors, mask, *, fsync: bool, checksums: bool) -> None:
    from mm_core.export import ShardedWriter

    with ShardedWriter(out, formats=[fmt], modalities=MODALITIES, dim=DIM, fsync=fsync, checksums=checksums) as w:
        w.write_shard("shard-000000", ids, vectors, mask)


def run(quick: bool = False) -> list[Row]:
    from mm_core.export import FORMATS

    n = 5_000 if quick else 100_000
    repeats = 1 if quick else 5
    ids, vectors, mask = make_data(n)
    mb = vectors.nbytes / 2**20
    configs = [(True, True), (True, False), (False, False)]  # (fsync, checksums)
    rows = []
    work = Path(tempfile.mkdtemp(prefix="bench_export_"))
    try:

        def clean() -> None:
            for child in work.iterdir():
                shutil.rmtree(child)
            os.sync()  # start every timed write with no dirty pages left by the previous one

        def target(name: str) -> Path:
            return work / name

        for fmt in FORMATS:
            fns = {"numpy_fsync": lambda: numpy_save(target("np"), ids, vectors, mask, fsync=True)}
            fns["numpy"] = lambda: numpy_save(target("np"), ids, vectors, mask, fsync=False)
            for fs, cs in configs:
                fns[f"{fs}-{cs}"] = lambda fs=fs, cs=cs, fmt=fmt: writer_save(
                    target("w"), fmt, ids, vectors, mask, fsync=fs, checksums=cs
                )
            t = compare(fns, repeats=repeats, setup=clean, warmup=fns[f"{False}-{False}"])
            clean()
            for fs, cs in configs:
                base = "numpy_fsync" if fs else "numpy"
                rows.append(
                    Row(
                        4,
                        f"export {fmt} (fsync={'on' if fs else 'off'}, checksums={'on' if cs else 'off'})",
                        "write speed",
                        "MB/s",
                        mb / t[f"{fs}-{cs}"],
                        mb / t[base],
                        "np.save + fsync" if fs else "np.save",
                        extra={
                            "rows": n,
                            "dim": DIM,
                            "payload_mb": round(mb, 1),
                            "seconds": round(t[f"{fs}-{cs}"], 3),
                            "baseline_seconds": round(t[base], 3),
                        },
                    )
                )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return rows
