"""Missing modalities per sample (SPEC M7): masking, learnable placeholders, modality dropout.

Availability is a bool vector per modality, one entry per sample, because real
batches mix samples with and without a modality (the seed's per-batch flag
cannot say that). A missing modality's tokens are masked for that sample, and
its feature values are replaced with zeros so that nothing it carried (even NaN)
can reach the output.
"""

from __future__ import annotations

import torch

MISSING_MODES = ("zero", "placeholder")


def effective_mask(mask: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
    """Token mask ``[B, S]`` with every token of a sample whose modality is absent switched off."""
    return mask & present[:, None]


def zero_masked(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Zero the masked tokens of ``x [B, S, D]`` (``where``, so NaN/inf there cannot leak)."""
    return torch.where(mask[..., None], x, 0.0)


def fill_placeholder(
    tokens: torch.Tensor, mask: torch.Tensor, placeholder: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """For samples with no valid token, put ``placeholder [D]`` in slot 0 as the one valid token.

    The placeholder stays in the autograd graph even when nothing is missing, so
    data-parallel training never sees it as an unused parameter.
    """
    missing = ~mask.any(dim=1)  # [B]
    first = torch.where(missing[:, None], placeholder.to(tokens.dtype).expand(tokens.shape[0], -1), tokens[:, 0])
    tokens = torch.cat([first[:, None], tokens[:, 1:]], dim=1)
    slot0 = torch.zeros_like(mask)
    slot0[:, 0] = True
    return tokens, torch.where(missing[:, None], slot0, mask)


def modality_dropout(
    present: dict[str, torch.Tensor], p: float, generator: torch.Generator | None = None
) -> dict[str, torch.Tensor]:
    """Drop each present modality of each sample with probability ``p`` (training only).

    A sample never loses all of its present modalities: when every one would be
    dropped, one of them, chosen at random, is kept. Samples that had nothing
    present stay that way.
    """
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"modality dropout probability must be in [0, 1]; got {p}")
    if p == 0.0 or not present:
        return dict(present)
    names = list(present)
    avail = torch.stack([present[n] for n in names], dim=1)  # [B, M]
    device = generator.device if generator is not None else avail.device
    r = torch.rand(avail.shape, generator=generator, device=device).to(avail.device)
    drop = (r < p) & avail
    all_dropped = avail.any(dim=1) & ~(avail & ~drop).any(dim=1)
    rescue_idx = torch.where(avail, r, torch.full_like(r, -1.0)).argmax(dim=1)
    rescue = torch.nn.functional.one_hot(rescue_idx, len(names)).bool() & all_dropped[:, None]
    kept = avail & ~(drop & ~rescue)
    return {n: kept[:, i] for i, n in enumerate(names)}
