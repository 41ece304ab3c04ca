"""The "sensor_csv" layout: per-file CSV/NPY sensor series cut into fixed-length windows.

Built for sp-sw-har (``DATA/sXX/sXX_YY_{sp,sw}.csv`` with ``x_acc..z_gyro,
timestamp,label`` at about 100 Hz) and any similar folder. A sample is a window
of ``window`` rows (default 200 = 2 s at 100 Hz) every ``stride`` rows; its label
is the majority label of its rows. The window goes inline as ``.npy`` bytes
(float32 ``[T, C]``): windows are small, and a shard then holds its own data.
Files are read one at a time. A ragged or non-numeric row puts an error on the
windows that contain it; an unreadable file gives one record with the error.
A trailing part shorter than a window is not a sample unless ``keep_last=True``.
"""

from __future__ import annotations

import csv
import io
import os
import re
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from mm_core.data.records import SampleRecord
from mm_core.errors import ConfigError

SPSW_NAME = r"(?P<subject>s\d+)_(?P<execution>\d+)_(?P<device>sp|sw)"


@dataclass
class Series:
    """One parsed file: data ``[T, C]``, optional per-row labels, per-row problems."""

    data: np.ndarray
    channels: list[str]
    row_labels: list[str] | None = None
    row_errors: dict[int, str] = field(default_factory=dict)


def label_to_words(label: str) -> str:
    """``"STANDING_UP"`` -> ``"standing up"``: activity codes as caption text."""
    return " ".join(re.split(r"[_\-\s]+", label.strip())).lower()


def _csv_slow(path: Path, label_column: str | None, skip: set[str]) -> Series:
    """Row-by-row parse that pinpoints ragged and non-numeric rows (NaN in their place)."""
    with open(path, encoding="utf-8", errors="replace", newline="") as f:
        rows = csv.reader(f)
        header = [h.strip() for h in next(rows, [])]
        if not header:
            raise ValueError("empty file")
        channels = [h for h in header if h not in skip]
        if not channels:
            raise ValueError("no data columns")
        idx = [header.index(c) for c in channels]
        lab = header.index(label_column) if label_column in header else None
        data, labels, errors = [], [], {}
        for r, row in enumerate(rows):
            line = r + 2
            if len(row) != len(header):
                errors[r] = f"ragged row at line {line}: {len(row)} fields, expected {len(header)}"
            values = []
            for c, i in zip(channels, idx, strict=True):
                cell = row[i].strip() if i < len(row) else ""
                try:
                    values.append(float(cell) if cell else np.nan)
                except ValueError:
                    values.append(np.nan)
                    errors.setdefault(r, f"non-numeric value {cell[:20]!r} in column {c} at line {line}")
            data.append(values)
            labels.append(row[lab].strip() if lab is not None and lab < len(row) else "")
    array = np.asarray(data, dtype=np.float32).reshape(len(data), len(channels))
    return Series(array, channels, labels if lab is not None else None, errors)


def _read_csv(path: Path, label_column: str | None, time_column: str | None) -> Series:
    skip = {c for c in (label_column, time_column) if c}
    try:
        frame = pd.read_csv(path)
        channels = [c for c in frame.columns if c not in skip]
        if channels and all(pd.api.types.is_numeric_dtype(frame[c]) for c in channels):
            labels = None
            if label_column in frame.columns:
                labels = frame[label_column].fillna("").astype(str).str.strip().tolist()
            return Series(frame[channels].to_numpy(np.float32), list(channels), labels)
    except pd.errors.ParserError:
        pass  # ragged rows: the slow path says which
    return _csv_slow(path, label_column, skip)


def _read_npy(path: Path) -> Series:
    array = np.load(path, allow_pickle=False)
    if array.ndim == 1:
        array = array[:, None]
    if array.ndim != 2 or not np.issubdtype(array.dtype, np.number):
        raise ValueError(f"expected a numeric [T, C] array, got {array.dtype} {array.shape}")
    return Series(array.astype(np.float32), [f"ch{i}" for i in range(array.shape[1])])


def npy_bytes(array: np.ndarray) -> bytes:
    """float32 array -> ``.npy`` file bytes (no pickle)."""
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(array, dtype=np.float32), allow_pickle=False)
    return buf.getvalue()


def _starts(n: int, window: int, stride: int, keep_last: bool) -> list[int]:
    starts = list(range(0, n - window + 1, stride))
    if keep_last and n >= window and (not starts or starts[-1] + window < n):
        starts.append(n - window)
    return starts


def _windows(
    series: Series,
    *,
    sample_prefix: str,
    source: str,
    base: dict[str, str],
    window: int,
    stride: int,
    keep_last: bool,
    text_from_label: bool,
) -> Iterator[SampleRecord]:
    n = len(series.data)
    starts = _starts(n, window, stride, keep_last)
    short = not starts
    for start in starts or [0]:
        stop = min(start + window, n)
        labels = {**base, "start": str(start), "rows": str(stop - start)}
        rec = SampleRecord(
            f"{sample_prefix}/{start:06d}", source, {"sensor": npy_bytes(series.data[start:stop])}, labels
        )
        if short:
            rec.errors.append(f"series shorter than one window ({n} < {window} rows)")
        bad = [series.row_errors[r] for r in range(start, stop) if r in series.row_errors]
        if bad:
            more = f" (+{len(bad) - 3} more)" if len(bad) > 3 else ""
            rec.errors.append("; ".join(bad[:3]) + more)
        if series.row_labels is not None:
            votes = Counter(lab for lab in series.row_labels[start:stop] if lab)
            if votes:
                label, count = votes.most_common(1)[0]
                rec.labels["label"] = label
                rec.labels["label_fraction"] = f"{count / (stop - start):.3f}"
                if text_from_label:
                    rec.modalities["text"] = label_to_words(label)
        yield rec


def read_sensor_files(
    root: str | os.PathLike,
    *,
    source: str = "sensor_csv",
    window: int = 200,
    stride: int | None = None,
    patterns: Sequence[str] = ("**/*.csv", "**/*.npy"),
    exclude: Sequence[str] = ("*_info.csv",),
    label_column: str | None = "label",
    time_column: str | None = "timestamp",
    name_pattern: str | None = SPSW_NAME,
    text_from_label: bool = True,
    keep_last: bool = False,
    rate_hz: float | None = None,
) -> Iterator[SampleRecord]:
    """Stream fixed-length windows of every sensor file under ``root``, one file at a time.

    Labels: ``label`` (majority), ``label_fraction``, ``file``, ``start``, ``rows``,
    ``channels`` and the named groups of ``name_pattern`` found in the file name
    (sp-sw-har: ``subject``, ``execution``, ``device``).
    """
    if window < 1 or (stride is not None and stride < 1):
        raise ConfigError(f"sensor_csv: window and stride must be >= 1 (got {window}, {stride})")
    stride = stride or window
    root = Path(root).resolve()
    if not root.is_dir():
        raise ConfigError(f"sensor_csv: {root} is not a directory")
    files = sorted({p for pat in patterns for p in root.glob(pat) if p.is_file()})
    files = [p for p in files if not any(p.match(x) for x in exclude)]
    if not files:
        raise ConfigError(f"sensor_csv: no files matching {list(patterns)} under {root}")
    name_re = re.compile(name_pattern) if name_pattern else None
    for path in files:
        rel = path.relative_to(root).with_suffix("").as_posix()
        base = {"file": path.relative_to(root).as_posix()}
        if name_re and (match := name_re.search(path.stem)):
            base.update({k: v for k, v in match.groupdict().items() if v is not None})
        if rate_hz is not None:
            base["rate_hz"] = f"{rate_hz:g}"
        try:
            series = _read_npy(path) if path.suffix == ".npy" else _read_csv(path, label_column, time_column)
        except Exception as exc:  # one unreadable file must not stop the source
            yield SampleRecord(
                f"{source}/{rel}/file",
                source,
                labels=base,
                errors=[f"cannot read sensor file {base['file']}: {exc}"],
            )
            continue
        base["channels"] = ",".join(series.channels)
        yield from _windows(
            series,
            sample_prefix=f"{source}/{rel}",
            source=source,
            base=base,
            window=window,
            stride=stride,
            keep_last=keep_last,
            text_from_label=text_from_label,
        )
