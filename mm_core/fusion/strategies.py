"""Cross-attention fusion strategies (SPEC M5): pairwise, anchor, sequential, perceiver.

Each strategy takes per-modality tokens ``{name: [B, S_m, D]}`` with bool masks
and returns one sequence with its mask and the span each modality (or the
latents) occupies. Every (layer, modality) step owns its own block; nothing is
shared between pairs, and a step whose keys are all masked for a sample leaves
that sample unchanged (see :mod:`mm_core.fusion.attention`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import nn

from mm_core.fusion.attention import AttentionBlock, run_block

STRATEGIES = ("pairwise", "anchor", "sequential", "perceiver")

Tokens = dict[str, torch.Tensor]


class FusedSequence(NamedTuple):
    """A fused token sequence ``[B, S, D]``, its mask ``[B, S]`` and the slice of each part."""

    tokens: torch.Tensor
    mask: torch.Tensor
    spans: dict[str, slice]


def concat(tokens: Tokens, masks: Tokens, names: Sequence[str]) -> FusedSequence:
    """Concatenate the named modalities along the sequence axis, recording their spans."""
    spans, start = {}, 0
    for n in names:
        spans[n] = slice(start, start + tokens[n].shape[1])
        start = spans[n].stop
    return FusedSequence(
        torch.cat([tokens[n] for n in names], dim=1), torch.cat([masks[n] for n in names], dim=1), spans
    )


class FusionStrategy(nn.Module):
    """Base class: ``forward(tokens, masks) -> FusedSequence``."""

    name = ""

    def __init__(self, modalities: Sequence[str]) -> None:
        super().__init__()
        self.modalities = list(modalities)
        self.gradient_checkpointing = False

    def _block(self, block: nn.Module, *args: torch.Tensor | None) -> torch.Tensor:
        return run_block(block, self.gradient_checkpointing and self.training, *args)

    def forward(self, tokens: Tokens, masks: Tokens) -> FusedSequence:
        raise NotImplementedError


def _blocks(names: Sequence[str], dim: int, num_heads: int, dropout: float) -> nn.ModuleDict:
    return nn.ModuleDict({n: AttentionBlock(dim, num_heads, dropout) for n in names})


class PairwiseFusion(FusionStrategy):
    """Bidirectional: per layer, every modality attends to the tokens of all the others.

    One block per (layer, query modality) attends jointly to every other
    modality's tokens (they carry modality-type embeddings), so each direction
    of each pair is covered with O(n) blocks per layer instead of O(n^2), and
    all modalities update from the same layer-start state (order does not matter).
    """

    name = "pairwise"

    def __init__(self, modalities: Sequence[str], dim: int, num_heads: int, num_layers: int, dropout: float):
        super().__init__(modalities)
        names = self.modalities if len(self.modalities) > 1 else []
        self.layers = nn.ModuleList(_blocks(names, dim, num_heads, dropout) for _ in range(num_layers))

    def forward(self, tokens: Tokens, masks: Tokens) -> FusedSequence:
        for layer in self.layers:
            updated = {}
            for name, block in layer.items():
                ctx = concat(tokens, masks, [n for n in self.modalities if n != name])
                updated[name] = self._block(block, tokens[name], ctx.tokens, ctx.mask)
            tokens = {**tokens, **updated}
        return concat(tokens, masks, self.modalities)


class AnchorFusion(FusionStrategy):
    """Anchor-based: per layer the anchor attends to all other modalities, and each attends to it."""

    name = "anchor"

    def __init__(
        self,
        modalities: Sequence[str],
        anchor: str,
        dim: int,
        num_heads: int,
        num_layers: int,
        dropout: float,
    ):
        super().__init__(modalities)
        if anchor not in self.modalities:
            raise ValueError(f"anchor {anchor!r} is not one of the modalities {self.modalities}")
        self.anchor = anchor
        self.others = [n for n in self.modalities if n != anchor]
        n_layers = num_layers if self.others else 0
        self.to_anchor = nn.ModuleList(AttentionBlock(dim, num_heads, dropout) for _ in range(n_layers))
        self.from_anchor = nn.ModuleList(_blocks(self.others, dim, num_heads, dropout) for _ in range(n_layers))

    def forward(self, tokens: Tokens, masks: Tokens) -> FusedSequence:
        a = self.anchor
        for to_anchor, from_anchor in zip(self.to_anchor, self.from_anchor, strict=True):
            ctx = concat(tokens, masks, self.others)
            updated = {a: self._block(to_anchor, tokens[a], ctx.tokens, ctx.mask)}
            for name, block in from_anchor.items():
                updated[name] = self._block(block, tokens[name], tokens[a], masks[a])
            tokens = {**tokens, **updated}
        return concat(tokens, masks, self.modalities)


class SequentialFusion(FusionStrategy):
    """Sequential: modalities are folded in one at a time, in the configured order.

    The running state starts as the first modality's tokens; at each step it
    attends to the next modality, which then joins the state. A state that
    holds several modalities keeps working when one of them is missing for a
    sample, since the others still carry valid tokens.
    """

    name = "sequential"

    def __init__(self, modalities: Sequence[str], dim: int, num_heads: int, num_layers: int, dropout: float):
        super().__init__(modalities)
        self.layers = nn.ModuleList(_blocks(self.modalities[1:], dim, num_heads, dropout) for _ in range(num_layers))

    def forward(self, tokens: Tokens, masks: Tokens) -> FusedSequence:
        first = self.modalities[0]
        for layer in self.layers:
            state = tokens[first]
            for name, block in layer.items():
                state = self._block(block, state, tokens[name], masks[name])
                state = torch.cat([state, tokens[name]], dim=1)
            fused = concat(tokens, masks, self.modalities)
            tokens = {n: state[:, span] for n, span in fused.spans.items()}
        return concat(tokens, masks, self.modalities)


class PerceiverFusion(FusionStrategy):
    """Perceiver-style: learnable latents cross-attend to all modality tokens, then self-attend."""

    name = "perceiver"

    def __init__(
        self,
        modalities: Sequence[str],
        dim: int,
        num_heads: int,
        num_layers: int,
        dropout: float,
        num_latents: int,
    ):
        super().__init__(modalities)
        if num_latents < 1:
            raise ValueError(f"num_latents must be >= 1; got {num_latents}")
        self.latents = nn.Parameter(torch.randn(num_latents, dim) * 0.02)
        self.cross = nn.ModuleList(AttentionBlock(dim, num_heads, dropout) for _ in range(num_layers))
        self.latent_self = nn.ModuleList(
            AttentionBlock(dim, num_heads, dropout, cross=False) for _ in range(num_layers)
        )

    def forward(self, tokens: Tokens, masks: Tokens) -> FusedSequence:
        ctx = concat(tokens, masks, self.modalities)
        batch = ctx.tokens.shape[0]
        lat = self.latents.to(ctx.tokens.dtype).expand(batch, -1, -1)
        for cross, self_block in zip(self.cross, self.latent_self, strict=True):
            lat = self._block(cross, lat, ctx.tokens, ctx.mask)
            lat = self._block(self_block, lat)
        mask = torch.ones(lat.shape[:2], dtype=torch.bool, device=lat.device)
        return FusedSequence(lat, mask, {"latents": slice(0, lat.shape[1])})


def build_strategy(
    name: str,
    modalities: Sequence[str],
    *,
    dim: int,
    num_heads: int,
    num_layers: int,
    dropout: float,
    anchor: str | None = None,
    num_latents: int = 16,
) -> FusionStrategy:
    """The strategy called ``name`` over ``modalities`` (in that fixed order)."""
    common = {"dim": dim, "num_heads": num_heads, "num_layers": num_layers, "dropout": dropout}
    if name == "pairwise":
        return PairwiseFusion(modalities, **common)
    if name == "anchor":
        return AnchorFusion(modalities, anchor or modalities[0], **common)
    if name == "sequential":
        return SequentialFusion(modalities, **common)
    if name == "perceiver":
        return PerceiverFusion(modalities, num_latents=num_latents, **common)
    raise ValueError(f"unknown fusion strategy {name!r}; choose one of {', '.join(STRATEGIES)}")
