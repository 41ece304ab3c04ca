"""Masked multi-head attention blocks built on ``scaled_dot_product_attention``.

One block type serves every stage: cross-attention (queries from one token set,
keys/values from another) and self-attention (``context=None``). Key padding
masks are boolean (True = real token). A query row whose keys are all masked (a
modality missing for that sample, an all-padding row) would be a softmax over
``-inf`` only, i.e. NaN; here such rows attend to a harmless unmasked copy and
the block leaves them unchanged, so forward and backward stay finite and the
result does not depend on the masked values.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def as_bool_mask(mask: torch.Tensor) -> torch.Tensor:
    """Any 0/1, int or bool mask -> bool (True = real token)."""
    return mask if mask.dtype == torch.bool else mask != 0


class MultiHeadAttention(nn.Module):
    """Multi-head attention with a key padding mask, through SDPA (flash / efficient kernels).

    The key projection has no bias: a bias on keys adds the same score to every
    key of a query, which softmax cancels, so it could never learn anything.
    """

    def __init__(self, dim: int, num_heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.dropout = dropout
        self.q_proj = nn.Linear(dim, dim)
        self.k_proj = nn.Linear(dim, dim, bias=False)
        self.v_proj = nn.Linear(dim, dim)
        self.out_proj = nn.Linear(dim, dim)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        b, s, d = x.shape
        return x.view(b, s, self.num_heads, d // self.num_heads).transpose(1, 2)

    def forward(
        self, query: torch.Tensor, context: torch.Tensor, key_mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns ``(out [B, Sq, D], has_key [B] bool)``; rows without keys are zero."""
        b, sq, d = query.shape
        q, k, v = (
            self._heads(self.q_proj(query)),
            self._heads(self.k_proj(context)),
            self._heads(self.v_proj(context)),
        )
        if key_mask is None:
            has_key = torch.ones(b, dtype=torch.bool, device=query.device)
            attn_mask = None
        else:
            key_mask = as_bool_mask(key_mask)
            has_key = key_mask.any(dim=-1)
            # Rows with no valid key attend to everything (finite) and are zeroed below.
            attn_mask = (key_mask | ~has_key[:, None])[:, None, None, :]
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=attn_mask, dropout_p=self.dropout if self.training else 0.0
        )
        out = self.out_proj(out.transpose(1, 2).reshape(b, sq, d))
        return torch.where(has_key[:, None, None], out, 0.0), has_key


class AttentionBlock(nn.Module):
    """Pre-norm transformer block: ``x + Attn(LN(x), LN(ctx))`` then ``x + FFN(LN(x))``.

    With ``context=None`` it is self-attention over ``x`` (masked by
    ``context_mask``, which is then ``x``'s own mask); build such blocks with
    ``cross=False``. A sample with no valid key
    is passed through unchanged (no residual update at all).
    """

    def __init__(
        self, dim: int, num_heads: int, dropout: float = 0.0, ffn_ratio: int = 4, *, cross: bool = True
    ) -> None:
        super().__init__()
        self.norm_q = nn.LayerNorm(dim)
        # Self-attention blocks have no context norm: an unused parameter would break DDP.
        self.norm_kv = nn.LayerNorm(dim) if cross else None
        self.attn = MultiHeadAttention(dim, num_heads, dropout)
        self.drop = nn.Dropout(dropout)
        self.norm_ffn = nn.LayerNorm(dim)
        self.ffn = nn.Sequential(
            nn.Linear(dim, dim * ffn_ratio),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(dim * ffn_ratio, dim),
            nn.Dropout(dropout),
        )

    def forward(
        self,
        x: torch.Tensor,
        context: torch.Tensor | None = None,
        context_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``x [B, Sq, D]``, ``context [B, Skv, D]`` (None: self), mask ``[B, Skv]`` -> ``[B, Sq, D]``."""
        h = self.norm_q(x)
        if context is None:
            kv = h
        elif self.norm_kv is None:
            raise ValueError("this block was built for self-attention (cross=False)")
        else:
            kv = self.norm_kv(context)
        attn, has_key = self.attn(h, kv, context_mask)
        y = x + self.drop(attn)
        y = y + self.ffn(self.norm_ffn(y))
        return torch.where(has_key[:, None, None], y, x)


def run_block(block: nn.Module, checkpointing: bool, *args: torch.Tensor | None) -> torch.Tensor:
    """Call ``block``, through activation checkpointing when asked and gradients are on."""
    if checkpointing and torch.is_grad_enabled():
        return torch.utils.checkpoint.checkpoint(block, *args, use_reentrant=False)
    return block(*args)
