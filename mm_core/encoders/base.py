"""The one encoder interface: raw decoded items in, ``[B, S, D]`` features plus mask out."""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from mm_core.device import autocast, resolve_device, resolve_precision


class ModalityEncoder(nn.Module, ABC):
    """Base class of every per-modality encoder.

    Subclasses implement :meth:`preprocess` (decoded items -> padded input
    tensors for one batch, with a mask, never padded to a fixed maximum) and
    :meth:`forward` (those tensors -> ``(features [B, S, D], mask [B, S])``,
    mask True for real tokens). :meth:`encode` batches, buckets by length,
    runs under ``inference_mode`` and autocast, and restores input order.
    """

    modality_name: str = ""
    #: True when the weights are pretrained (frozen during fusion training).
    pretrained: bool = False

    @property
    @abstractmethod
    def output_dim(self) -> int:
        """Width ``D`` of the features."""

    @abstractmethod
    def preprocess(self, items: Sequence[Any]) -> dict[str, torch.Tensor]:
        """Decoded items -> keyword tensors for :meth:`forward` (one batch)."""

    @abstractmethod
    def forward(self, **inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Batch tensors -> ``(features [B, S, D], mask [B, S] bool)``."""

    def item_length(self, item: Any) -> int:
        """Cost proxy for length bucketing (tokens, samples); 0 = no bucketing."""
        return 0

    def weights_id(self) -> str:
        """A short content hash of the parameters (for manifests and code versions)."""
        h = hashlib.sha256()
        for name, tensor in sorted(self.state_dict().items()):
            h.update(name.encode())
            h.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
        return h.hexdigest()[:16]

    @torch.inference_mode()
    def encode(
        self,
        items: Sequence[Any],
        *,
        batch_size: int = 32,
        device: str | torch.device | None = None,
        precision: str | None = "auto",
        progress: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Encode decoded items in batches; returns CPU float32 features and mask.

        Items are sorted by :meth:`item_length` so each batch pads only to its
        own longest item; the result is padded to the longest item overall and
        returned in input order.
        """
        dev = resolve_device(device) if device is not None else next(self.parameters()).device
        prec = resolve_precision(precision, dev)
        if next(self.parameters()).device != dev:
            self.to(dev)
        self.eval()
        n = len(items)
        if n == 0:
            return torch.zeros(0, 0, self.output_dim), torch.zeros(0, 0, dtype=torch.bool)
        order = sorted(range(n), key=lambda i: self.item_length(items[i]))
        feats: list[torch.Tensor] = [None] * n  # type: ignore[list-item]
        masks: list[torch.Tensor] = [None] * n  # type: ignore[list-item]
        starts = range(0, n, batch_size)
        for start in tqdm(starts, disable=not progress, desc=f"encode {self.modality_name}"):
            idx = order[start : start + batch_size]
            inputs = self.preprocess([items[i] for i in idx])
            inputs = {k: v.to(dev, non_blocking=True) for k, v in inputs.items()}
            with autocast(dev, prec):
                f, m = self(**inputs)
            f = f.float().cpu()
            m = m.bool().cpu()
            for j, i in enumerate(idx):
                length = int(m[j].nonzero().max()) + 1 if m[j].any() else 1
                feats[i], masks[i] = f[j, :length], m[j, :length]
        s = max(x.shape[0] for x in feats)
        out = torch.zeros(n, s, self.output_dim)
        out_mask = torch.zeros(n, s, dtype=torch.bool)
        for i, (f, m) in enumerate(zip(feats, masks, strict=True)):
            out[i, : f.shape[0]] = f
            out_mask[i, : m.shape[0]] = m
        return out, out_mask
