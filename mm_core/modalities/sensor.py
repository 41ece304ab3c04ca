"""Sensor / tactile / IMU time series: CSV and NPY decoding, calibration, fixed-length windows.

Decoded series are float32 ``[T, C]``. NaN/inf are kept at decode (the quality
scorer reports them) and zeroed only right before the network. Normalisation
uses :class:`mm_core.normalization.ChannelStats` fitted on the data, stored and
reused (defect 8: no undefined globals, no per-batch statistics).
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from mm_core.encoders.base import ModalityEncoder
from mm_core.errors import DecodeError
from mm_core.quality.scorers import score_sensor
from mm_core.registry import ModalitySpec, register

EXTENSIONS = (".csv", ".tsv", ".npy")
#: columns that are never signal, dropped by (case-insensitive) header name
NON_SIGNAL_COLUMNS = frozenset({"timestamp", "time", "t", "ts", "label", "labels", "index", "id", "date"})
_NPY_MAGIC = b"\x93NUMPY"
LongSeries = Literal["windows", "truncate"]


def _is_float(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


def _column_to_float(col: np.ndarray) -> np.ndarray | None:
    """A column of strings as float32, or None when it is not numeric (e.g. labels)."""
    stripped = np.char.strip(col)
    filled = np.where(stripped == "", "nan", stripped)
    try:
        values = filled.astype(np.float64)
    except ValueError:
        return None
    if np.all(stripped == ""):
        return None
    return values.astype(np.float32)


def _sniff_delimiter(first_line: str) -> str:
    """Comma unless the header line clearly uses tabs or semicolons."""
    if "," in first_line:
        return ","
    if "\t" in first_line:
        return "\t"
    return ";" if ";" in first_line else ","


def parse_csv(text: str, name: str = "csv") -> np.ndarray:
    """CSV/TSV text -> float32 ``[T, C]``: header allowed, non-numeric and time/label columns dropped."""
    text = text.removeprefix("\ufeff")
    if not text.strip():
        raise DecodeError(f"sensor {name} has no rows")
    delimiter = _sniff_delimiter(text.split("\n", 1)[0])
    try:
        table = np.loadtxt(io.StringIO(text), dtype=str, delimiter=delimiter, ndmin=2, comments=None, quotechar='"')
    except ValueError as exc:  # numpy reports ragged rows: "the number of columns changed"
        raise DecodeError(f"sensor {name}: malformed rows ({exc})") from exc
    if table.size == 0:
        raise DecodeError(f"sensor {name} has no rows")
    body_numeric = np.array([_column_to_float(table[1:, j]) is not None for j in range(table.shape[1])])
    head_numeric = np.array([_is_float(c) for c in table[0]])
    has_header = bool(np.any(~head_numeric & body_numeric)) or not head_numeric.any()
    names = [c.strip().lower() for c in table[0]] if has_header else [""] * table.shape[1]
    body = table[1:] if has_header else table
    if body.shape[0] == 0:
        raise DecodeError(f"sensor {name} has a header but no data rows")
    columns = []
    for j, col_name in enumerate(names):
        if col_name in NON_SIGNAL_COLUMNS:
            continue
        values = _column_to_float(body[:, j])
        if values is not None:
            columns.append(values)
    if not columns:
        raise DecodeError(f"sensor {name} has no numeric signal columns")
    return np.stack(columns, axis=1)


def _as_series(arr: np.ndarray, name: str) -> np.ndarray:
    if arr.dtype.kind not in "biuf":
        raise DecodeError(f"sensor {name}: array dtype {arr.dtype} is not numeric")
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2:
        raise DecodeError(f"sensor {name}: expected [T] or [T, C], got shape {arr.shape}")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise DecodeError(f"sensor {name} is empty (shape {arr.shape})")
    return np.ascontiguousarray(arr, dtype=np.float32)


def _load_npy(source: Any, name: str) -> np.ndarray:
    try:
        arr = np.load(source, allow_pickle=False)
    except Exception as exc:  # object arrays (pickle), bad header, truncated data
        raise DecodeError(f"sensor {name}: cannot read .npy ({exc})") from exc
    if not isinstance(arr, np.ndarray):
        raise DecodeError(f"sensor {name}: expected one .npy array, got {type(arr).__name__}")
    return _as_series(arr, name)


def decode(item: str | os.PathLike[str] | bytes) -> np.ndarray:
    """Path (.npy, .csv, .tsv) or bytes (.npy, else CSV text) -> float32 ``[T, C]``."""
    if isinstance(item, bytes | bytearray | memoryview):
        data, name = bytes(item), f"({len(item)} bytes)"
        if not data:
            raise DecodeError("empty sensor data")
        if data.startswith(_NPY_MAGIC):
            return _load_npy(io.BytesIO(data), name)
        try:
            return _as_series(parse_csv(data.decode("utf-8"), name), name)
        except UnicodeDecodeError as exc:
            raise DecodeError(f"sensor {name}: neither .npy nor UTF-8 CSV") from exc
    if not isinstance(item, str | os.PathLike):
        raise DecodeError(f"cannot decode a sensor series from {type(item).__name__}; pass a path or bytes")
    path = Path(item)
    if not path.is_file():
        raise DecodeError(f"sensor file not found: {path}")
    if path.stat().st_size == 0:
        raise DecodeError(f"empty sensor file: {path}")
    if path.suffix.lower() == ".npy":
        return _load_npy(path, str(path))
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DecodeError(f"cannot read sensor file {path}: {exc}") from exc
    return _as_series(parse_csv(text, str(path)), str(path))


def calibrate(series: np.ndarray, offset: Sequence[float] | np.ndarray | None) -> np.ndarray:
    """Subtract a per-channel calibration offset (sensor bias at rest); None = no offset."""
    x = np.asarray(series, dtype=np.float32)
    if offset is None:
        return x
    off = np.asarray(offset, dtype=np.float32).reshape(-1)
    if off.shape[0] not in (1, x.shape[-1]):
        raise ValueError(f"calibration offset has {off.shape[0]} values for {x.shape[-1]} channels")
    return x - off


def segment(
    series: np.ndarray, target_length: int, *, long_series: LongSeries = "windows", max_windows: int = 8
) -> list[tuple[np.ndarray, int]]:
    """Cut ``[T, C]`` into fixed-length ``[target_length, C]`` windows, zero-padded, with real lengths.

    Short series give one padded window (length < target_length: the mask
    says so, nothing is hidden). Long ones give consecutive windows (at most
    ``max_windows``) or, with ``long_series="truncate"``, the first window.
    """
    if long_series not in ("windows", "truncate"):
        raise ValueError(f"long_series must be 'windows' or 'truncate', got {long_series!r}")
    x = np.asarray(series, dtype=np.float32)
    t, c = x.shape
    n_win = 1 if long_series == "truncate" else max(1, min(max_windows, -(-t // target_length)))
    out = []
    for w in range(n_win):
        chunk = x[w * target_length : (w + 1) * target_length]
        window = np.zeros((target_length, c), dtype=np.float32)
        window[: len(chunk)] = chunk
        out.append((window, len(chunk)))
    return out


def sliding_windows(series: np.ndarray, length: int, hop: int | None = None) -> np.ndarray:
    """``[T, C]`` -> ``[W, length, C]`` windows every ``hop`` samples (for cutting samples at ingest)."""
    x = np.asarray(series)
    hop = hop or length
    if x.shape[0] < length:
        return np.zeros((0, length, *x.shape[1:]), dtype=x.dtype)
    views = np.lib.stride_tricks.sliding_window_view(x, length, axis=0)[::hop]
    return np.ascontiguousarray(np.moveaxis(views, -1, 1))


def create_encoder(**options: Any) -> ModalityEncoder:
    """Factory for the registry."""
    from mm_core.encoders.sensor_net import SensorEncoder

    return SensorEncoder(**options)


SPEC = register(
    ModalitySpec(
        name="sensor",
        decode=decode,
        score=score_sensor,
        encoder_factory=create_encoder,
        default_encoder={},  # SensorEncoder defaults: 6 channels, CNN-LSTM, random init
        extensions=EXTENSIONS,
        description="Sensor/tactile/IMU time series (CSV, NPY) encoded by a trainable CNN-LSTM",
    )
)
