"""The self-supervised objective: multi-view symmetric InfoNCE with modality dropout.

For a batch, every trainable encoder runs once; then the fusion model runs on
several *views* of each sample, each a subset of the modalities it has:

- single-modality views: for each pair of modalities (m, n), the m-only and
  n-only unified vectors of the samples that have both are pulled together
  with a symmetric InfoNCE (CLIP's loss, with a learnable temperature);
- subset views: for samples with two or more modalities, two random subsets
  (modality dropout, never empty) are pulled together the same way.

Both use the same fusion model and pooling, so a sample with *any* set of
present modalities gets a vector in one space: its audio-only, text-only and
full vectors land near each other. Identical raw items are the same item,
not negatives: when a caption is shared by many clips (FSDD's digit words)
or an image by five captions (Flickr8k), every pair that shares the item is
a positive (multi-positive InfoNCE, the log of the summed positive probability).
"""

from __future__ import annotations

import math
from itertools import combinations

import torch
import torch.nn.functional as F
from torch import nn

from mm_core.fusion.missing import modality_dropout
from mm_core.training.batch import Batch
from mm_core.training.model import FusionStack

MAX_LOGIT_SCALE = math.log(100.0)


def multi_positive_infonce(a: torch.Tensor, b: torch.Tensor, positive: torch.Tensor, scale: torch.Tensor):
    """Symmetric InfoNCE between rows of ``a`` and ``b`` (L2-normalised) with a boolean positive matrix."""
    logits = scale * a @ b.T
    neg_inf = torch.finfo(logits.dtype).min
    a2b = torch.logsumexp(logits.masked_fill(~positive, neg_inf), 1) - torch.logsumexp(logits, 1)
    b2a = torch.logsumexp(logits.T.masked_fill(~positive.T, neg_inf), 1) - torch.logsumexp(logits.T, 1)
    return -(a2b.mean() + b2a.mean()) / 2


def _same(ids: torch.Tensor) -> torch.Tensor:
    return (ids[:, None] == ids[None, :]) & (ids[:, None] >= 0)


def _eye(n: int, device: torch.device) -> torch.Tensor:
    return torch.eye(n, dtype=torch.bool, device=device)


def _sub(d: dict[str, torch.Tensor], idx: torch.Tensor, keys) -> dict[str, torch.Tensor]:
    return {k: d[k].index_select(0, idx) for k in keys}


class MultiViewInfoNCE(nn.Module):
    """Loss module (holds the learnable temperature); ``forward(batch, generator) -> (loss, stats)``."""

    def __init__(
        self,
        stack: FusionStack,
        *,
        temperature: float = 0.07,
        learn_temperature: bool = True,
        modality_dropout: float = 0.5,
        pair_weight: float = 1.0,
        subset_weight: float = 1.0,
    ) -> None:
        super().__init__()
        self.stack = stack
        self.log_scale = nn.Parameter(torch.tensor(math.log(1.0 / temperature)), requires_grad=learn_temperature)
        self.dropout = float(modality_dropout)
        self.pair_weight, self.subset_weight = float(pair_weight), float(subset_weight)

    def scale(self) -> torch.Tensor:
        return self.log_scale.clamp(max=MAX_LOGIT_SCALE).exp()

    def view(self, feats, masks, idx: torch.Tensor, keep: dict[str, torch.Tensor]) -> torch.Tensor:
        """Normalised unified vectors of rows ``idx`` with only the modalities in ``keep`` present."""
        names = [m for m, k in keep.items() if k.any()]
        z = self.stack.fuse(_sub(feats, idx, names), _sub(masks, idx, names), {m: keep[m] for m in names})
        return F.normalize(z.float(), dim=-1)

    def forward(self, batch: Batch, generator: torch.Generator | None = None) -> tuple[torch.Tensor, dict]:
        feats, masks, present = self.stack.features(batch)
        names = [m for m in self.stack.modalities if m in present]
        scale = self.scale()
        singles: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        anchor = None
        for m in names:
            idx = present[m].nonzero().squeeze(1)
            if idx.numel():
                z = self.view(feats, masks, idx, {m: torch.ones_like(idx, dtype=torch.bool)})
                singles[m] = (idx, z)
                anchor = z if anchor is None else anchor
        pair_losses, stats = [], {}
        for m, n in combinations(singles, 2):
            both = present[m] & present[n]
            if int(both.sum()) < 2:
                continue
            idx = both.nonzero().squeeze(1)
            za = singles[m][1][torch.searchsorted(singles[m][0], idx)]
            zb = singles[n][1][torch.searchsorted(singles[n][0], idx)]
            pos = _same(batch.content[m][idx]) | _same(batch.content[n][idx]) | _eye(len(idx), idx.device)
            loss = multi_positive_infonce(za, zb, pos, scale)
            pair_losses.append(loss)
            stats[f"{m}-{n}"] = float(loss.detach())
        terms = [self.pair_weight * torch.stack(pair_losses).mean()] if pair_losses else []
        avail = torch.stack([present[m] for m in names], 1)
        multi = avail.sum(1) >= 2
        if self.subset_weight > 0 and int(multi.sum()) >= 2:
            idx = multi.nonzero().squeeze(1)
            sub_present = {m: present[m].index_select(0, idx) for m in names}
            zu = self.view(feats, masks, idx, modality_dropout(sub_present, self.dropout, generator))
            zv = self.view(feats, masks, idx, modality_dropout(sub_present, self.dropout, generator))
            content = torch.stack([batch.content[m].index_select(0, idx) for m in names], 1)
            pos = (content[:, None, :] == content[None, :, :]).all(-1) | _eye(len(idx), idx.device)
            loss = multi_positive_infonce(zu, zv, pos, scale)
            terms.append(self.subset_weight * loss)
            stats["subsets"] = float(loss.detach())
        total = sum(terms) if terms else torch.zeros((), device=scale.device)
        if anchor is not None:  # keeps the graph connected when a batch has no pair (data-parallel ranks agree)
            total = total + 0.0 * anchor.sum()
        stats["terms"] = len(terms)
        return total, stats
