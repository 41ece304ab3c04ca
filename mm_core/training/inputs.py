"""Cached inputs of encoders that train with the fusion model: pack per sample, collate per batch.

A trainable encoder's features change at every step, so its encodings cache
holds what goes *into* it: the encoder's own ``preprocess`` output for each
sample (raw, unnormalised sensor windows; waveforms; pixels), packed into
tensors whose first dimension is the sample. Normalisation statistics live in
the encoder (buffers fitted on the training split), not in the cache, so the
cache does not depend on the split. ``collate`` rebuilds the keyword tensors of
``encoder.forward`` for any subset of rows.
"""

from __future__ import annotations

import hashlib
import os
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch

from mm_core.encoders.base import ModalityEncoder

Inputs = dict[str, torch.Tensor]


class InputCodec(ABC):
    """How one kind of encoder's preprocessed inputs are stored and batched."""

    name: str = ""

    @abstractmethod
    def pack(self, encoder: ModalityEncoder, items: Sequence[Any]) -> Inputs:
        """Decoded items -> tensors with one leading row per item."""

    @abstractmethod
    def collate(self, inputs: Inputs, rows: torch.Tensor) -> Inputs:
        """Keyword tensors for ``encoder.forward`` of the given rows, in that order."""


class SensorWindows(InputCodec):
    """SensorEncoder inputs: ``windows [N, W, T, C]`` and ``lengths [N, W]`` (0 = no window)."""

    name = "sensor_windows"

    def pack(self, encoder: ModalityEncoder, items: Sequence[Any]) -> Inputs:
        per_item = [encoder.preprocess([item]) for item in items]
        if not per_item:
            return {"windows": torch.zeros(0, 1, 1, 1), "lengths": torch.zeros(0, 1, dtype=torch.long)}
        w = max(p["windows"].shape[0] for p in per_item)
        t, c = per_item[0]["windows"].shape[1:]
        windows = torch.zeros(len(items), w, t, c)
        lengths = torch.zeros(len(items), w, dtype=torch.long)
        for i, p in enumerate(per_item):
            n = p["windows"].shape[0]
            windows[i, :n], lengths[i, :n] = p["windows"], p["lengths"]
        return {"windows": windows, "lengths": lengths}

    def collate(self, inputs: Inputs, rows: torch.Tensor) -> Inputs:
        lengths = inputs["lengths"].index_select(0, rows)
        keep = lengths > 0
        w = max(int(keep.sum(1).max()), 1) if len(rows) else 1
        keep, lengths = keep[:, :w], lengths[:, :w]
        windows = inputs["windows"].index_select(0, rows)[:, :w]
        where = keep.nonzero()
        return {
            "windows": windows[keep],
            "lengths": lengths[keep],
            "item_index": where[:, 0],
            "window_pos": where[:, 1],
        }

    @staticmethod
    def series(inputs: Inputs, rows: Sequence[int]) -> Iterator[np.ndarray]:
        """The real (unpadded) rows of every window of ``rows``: what normalisation statistics fit on."""
        for i in rows:
            for window, length in zip(inputs["windows"][i], inputs["lengths"][i].tolist(), strict=True):
                if length > 0:
                    yield window[:length].numpy()


class PaddedTensors(InputCodec):
    """Any encoder whose ``preprocess([item])`` gives tensors ``[1, ...]`` padded with zeros.

    (HF audio ``input_values``/``attention_mask``, vision ``pixel_values``, text
    ``input_ids``.) Each key is stored zero-padded to the largest item, with
    the real extent of every item (``extent.<key>``) so a batch is cut back to
    its own longest item, as ``preprocess`` on that batch would pad it.
    """

    name = "padded"

    def pack(self, encoder: ModalityEncoder, items: Sequence[Any]) -> Inputs:
        per_item = [encoder.preprocess([item]) for item in items]
        if not per_item:
            return {}
        out: Inputs = {}
        for key in per_item[0]:
            parts = [p[key] for p in per_item]
            if any(x.shape[0] != 1 for x in parts):
                raise ValueError(f"{type(encoder).__name__}.preprocess gives {key!r} without one row per item")
            extents = torch.tensor([list(x.shape[1:]) for x in parts], dtype=torch.long).reshape(len(parts), -1)
            full = parts[0].new_zeros(len(parts), *extents.max(0).values.tolist())
            for i, x in enumerate(parts):
                full[(i, *(slice(0, n) for n in x.shape[1:]))] = x[0]
            out[f"x.{key}"], out[f"extent.{key}"] = full, extents
        return out

    def collate(self, inputs: Inputs, rows: torch.Tensor) -> Inputs:
        out = {}
        for name, tensor in inputs.items():
            if not name.startswith("x."):
                continue
            key = name[2:]
            extent = inputs[f"extent.{key}"].index_select(0, rows).max(0).values.tolist()
            out[key] = tensor.index_select(0, rows)[(slice(None), *(slice(0, n) for n in extent))]
        return out


CODECS: dict[str, InputCodec] = {c.name: c for c in (SensorWindows(), PaddedTensors())}


def codec_for(encoder: ModalityEncoder) -> InputCodec:
    """The codec for an encoder: sensor windows for the sensor net, padded tensors otherwise."""
    from mm_core.encoders.sensor_net import SensorEncoder

    return CODECS["sensor_windows"] if isinstance(encoder, SensorEncoder) else CODECS["padded"]


def get_codec(name: str) -> InputCodec:
    try:
        return CODECS[name]
    except KeyError:
        raise ValueError(f"unknown input codec {name!r}; known: {sorted(CODECS)}") from None


def content_key(raw: Any) -> str:
    """Short hash of a raw item (text, bytes, or a path), equal for identical items."""
    if isinstance(raw, bytes | bytearray | memoryview):
        data = b"b:" + bytes(raw)
    elif isinstance(raw, os.PathLike):
        data = b"p:" + os.fspath(raw).encode()
    else:
        data = b"s:" + str(raw).encode("utf-8", "surrogatepass")
    return hashlib.sha1(data).hexdigest()[:16]


def parameter_count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def trains_encoder(train_encoders: str | list[str], modality: str, encoder: ModalityEncoder, max_params: int) -> bool:
    """Whether ``modality``'s encoder trains with the fusion model (and so caches its inputs).

    ``"auto"``: encoders without pretrained weights and at most ``max_params``
    parameters (the sensor CNN-LSTM). Large random-init fallbacks of pretrained
    families stay frozen random features unless listed explicitly.
    """
    if train_encoders == "none":
        return False
    if isinstance(train_encoders, list):
        return modality in train_encoders
    return not bool(getattr(encoder, "pretrained", False)) and parameter_count(encoder) <= max_params
