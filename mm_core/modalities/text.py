"""Text modality: strict UTF-8 decoding, tokenizer-driven dynamic padding, HF text encoders.

A ``str`` item is the text itself (never a path); bytes and ``os.PathLike``
files are decoded as strict UTF-8 so mojibake is rejected, not embedded.
Tokenisation pads each batch to its own longest item (defect 8: never 512).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from mm_core.encoders.base import ModalityEncoder
from mm_core.errors import DecodeError
from mm_core.quality.scorers import score_text
from mm_core.registry import ModalitySpec, register

EXTENSIONS = (".txt",)
MAX_TOKENS = 512


def _from_bytes(data: bytes, name: str) -> str:
    try:
        text = data.decode("utf-8", errors="strict")
    except UnicodeDecodeError as exc:
        raise DecodeError(f"text {name} is not valid UTF-8: {exc}") from exc
    return text.removeprefix("\ufeff")  # a BOM is encoding, not content


def decode(item: str | bytes | os.PathLike[str]) -> str:
    """``str`` passes through; bytes / a file path are strict UTF-8. Content is not altered."""
    if isinstance(item, str):
        return item
    if isinstance(item, bytes | bytearray | memoryview):
        return _from_bytes(bytes(item), f"({len(item)} bytes)")
    if isinstance(item, os.PathLike):
        path = Path(item)
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise DecodeError(f"cannot read text file {path}: {exc}") from exc
        return _from_bytes(data, str(path))
    raise DecodeError(f"cannot decode text from {type(item).__name__}; pass str, bytes or a path")


def tokenize_batch(
    tokenizer: Any, texts: Sequence[str], max_length: int, input_names: Sequence[str] | None = None
) -> dict[str, torch.Tensor]:
    """Tokenise with truncation at ``max_length`` and padding to the batch's longest item."""
    enc = tokenizer(
        list(texts),
        padding="longest",
        truncation=True,
        max_length=max_length,
        return_tensors="pt",
    )
    names = input_names or tokenizer.model_input_names
    return {k: v for k, v in enc.items() if k in names}


def create_encoder(**options: Any) -> ModalityEncoder:
    """Factory for the registry (imports transformers only when an encoder is built)."""
    from mm_core.encoders.hf_text import HFTextEncoder

    return HFTextEncoder(**options)


SPEC = register(
    ModalitySpec(
        name="text",
        decode=decode,
        score=score_text,
        encoder_factory=create_encoder,
        default_encoder={},  # HFTextEncoder's default: the bundled all-MiniLM-L6-v2
        extensions=EXTENSIONS,
        description="UTF-8 text encoded by a transformers model (default all-MiniLM-L6-v2)",
    )
)
