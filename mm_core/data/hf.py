"""The "hf" layout: a Hugging Face ``datasets`` dataset as a source (optional dependency).

``read_source("hf", name_or_path, split="train", columns={"vision": "image", "text": "caption"})``
reads a local ``save_to_disk`` folder with ``load_from_disk`` or a hub dataset by
name with ``load_dataset`` (needs network). Image and audio columns are read
undecoded, so their original file bytes go inline; decoded values (PIL images,
``{"array", "sampling_rate"}`` audio, numeric arrays for sensors) are encoded
to PNG / WAV / NPY bytes. Other scalar columns become labels.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from mm_core.data.records import INLINE_TEXT_MODALITIES, SampleRecord
from mm_core.data.sensor_files import npy_bytes
from mm_core.errors import ConfigError


def _load(name_or_path: str | os.PathLike, split: str | None, load_options: Mapping[str, Any]) -> Any:
    try:
        import datasets
    except ImportError as exc:  # optional extra
        raise ConfigError("the 'hf' layout needs the 'datasets' package: pip install mm-fusion[hf]") from exc
    if Path(name_or_path).exists():
        ds = datasets.load_from_disk(str(name_or_path))
    else:
        ds = datasets.load_dataset(str(name_or_path), split=split, **load_options)
    if isinstance(ds, datasets.DatasetDict | datasets.IterableDatasetDict):
        if split is None:
            split = "train" if "train" in ds else (next(iter(ds)) if len(ds) == 1 else None)
        if split not in ds:
            raise ConfigError(f"hf: split {split!r} not in {sorted(ds)}; pass split=")
        ds = ds[split]
    for column, feature in (ds.features or {}).items():  # keep the original media bytes, skip decoding
        if isinstance(feature, datasets.Image | datasets.Audio) and feature.decode:
            ds = ds.cast_column(column, type(feature)(decode=False))
    return ds


def _wav_bytes(array: Any, rate: int) -> bytes:
    import soundfile as sf

    data = np.asarray(array, dtype=np.float32)
    buf = io.BytesIO()
    sf.write(
        buf,
        data.T if data.ndim == 2 and data.shape[0] < data.shape[1] else data,
        int(rate),
        format="WAV",
        subtype="FLOAT",
    )
    return buf.getvalue()


def _png_bytes(image: Any) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def _to_value(modality: str, value: Any) -> str | bytes:
    """One cell -> path, text or inline bytes; raises ValueError for what it cannot convert."""
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        if modality not in INLINE_TEXT_MODALITIES and not Path(value).is_file():
            raise ValueError(f"missing file: {value}")
        return value
    if isinstance(value, dict):
        if value.get("bytes"):
            return value["bytes"]
        if value.get("array") is not None:
            return _wav_bytes(value["array"], value.get("sampling_rate") or 16000)
        if value.get("path"):
            return _to_value(modality, value["path"])
    if hasattr(value, "save") and hasattr(value, "mode"):  # a PIL image
        return _png_bytes(value)
    if isinstance(value, list | np.ndarray) and modality not in INLINE_TEXT_MODALITIES:
        return npy_bytes(np.asarray(value, dtype=np.float32))
    raise ValueError(f"cannot use a {type(value).__name__} value as {modality}")


def read_hf(
    name_or_path: str | os.PathLike,
    *,
    source: str = "hf",
    split: str | None = None,
    columns: Mapping[str, str] | None = None,
    id_column: str | None = None,
    label_columns: list[str] | None = None,
    load_options: Mapping[str, Any] | None = None,
) -> Iterator[SampleRecord]:
    """Stream records from a ``datasets`` dataset; ``columns`` maps modality -> column name.

    A text column holding a list (several captions) gives the first as ``text`` and all
    of them in ``labels["captions"]`` (JSON). ``label_columns`` defaults to every other
    column with scalar values.
    """
    if not columns:
        raise ConfigError("hf: pass columns={modality: column}, e.g. {'vision': 'image', 'text': 'caption'}")
    ds = _load(name_or_path, split, load_options or {})
    split_name = split or "train"
    for i, row in enumerate(ds):
        key = str(row.get(id_column)) if id_column else f"{split_name}/{i}"
        rec = SampleRecord(f"{source}/{key}", source)
        for modality, column in columns.items():
            value = row.get(column)
            if value is None:
                continue
            if isinstance(value, list) and modality in INLINE_TEXT_MODALITIES:
                rec.labels["captions"] = json.dumps(value, ensure_ascii=False)
                value = value[0] if value else None
                if value is None:
                    continue
            try:
                rec.modalities[modality] = _to_value(modality, value)
            except Exception as exc:  # one bad cell must not stop the source
                rec.errors.append(f"{modality} ({column}): {exc}")
        used = set(columns.values()) | {id_column}
        names = label_columns if label_columns is not None else [c for c in row if c not in used]
        for name in names:
            value = row.get(name)
            if isinstance(value, str | int | float | bool):
                rec.labels[name] = str(value)
        if not rec.modalities and not rec.errors:
            rec.errors.append("no modality value in row")
        yield rec
