"""Pooling the fused sequence to one vector per sample (SPEC M6).

``cls`` reads slot 0, where the model put a learnable CLS token *before* the
self-attention layers (so it has attended to every token; the seed prepended it
after all attention and returned a constant). ``mean`` and ``attention`` honour
the bool padding mask, with a single softmax.
"""

from __future__ import annotations

import torch
from torch import nn

from mm_core.fusion.attention import as_bool_mask

POOLINGS = ("cls", "mean", "attention")


def masked_mean(tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of the real tokens ``[B, S, D] -> [B, D]``; zeros for a row with none."""
    m = as_bool_mask(mask)[..., None]
    total = torch.where(m, tokens, 0.0).sum(dim=1)
    return total / m.sum(dim=1).clamp(min=1).to(tokens.dtype)


class AttentionPool(nn.Module):
    """Learned scores, one masked softmax over the real tokens, weighted sum."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.score = nn.Linear(dim, 1)

    def weights(self, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Pooling weights ``[B, S]``: sum to 1 over real tokens, 0 elsewhere (all 0 if none)."""
        mask = as_bool_mask(mask)
        has_any = mask.any(dim=1, keepdim=True)
        safe = mask | ~has_any  # a row with no real token gets finite weights, zeroed next
        scores = self.score(tokens).squeeze(-1).masked_fill(~safe, float("-inf"))
        return torch.softmax(scores, dim=1) * mask

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        w = self.weights(tokens, mask)[..., None]
        return (torch.where(w > 0, tokens, 0.0) * w).sum(dim=1)


class PoolingHead(nn.Module):
    """Pool (cls / masked mean / masked attention), then ``LayerNorm -> Linear (-> Tanh)``."""

    def __init__(self, dim: int, output_dim: int, pooling: str, tanh: bool = True) -> None:
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"unknown pooling {pooling!r}; choose one of {', '.join(POOLINGS)}")
        self.pooling = pooling
        self.attention = AttentionPool(dim) if pooling == "attention" else None
        self.norm = nn.LayerNorm(dim)
        self.proj = nn.Linear(dim, output_dim)
        self.act = nn.Tanh() if tanh else nn.Identity()

    def pool(self, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``[B, S, D]`` + mask -> ``[B, D]`` (``cls`` expects the CLS token in slot 0)."""
        if self.pooling == "cls":
            return tokens[:, 0]
        if self.pooling == "mean":
            return masked_mean(tokens, mask)
        return self.attention(tokens, mask)

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.act(self.proj(self.norm(self.pool(tokens, mask))))
