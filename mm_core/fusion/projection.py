"""Per-modality projection of encoder features to the shared fusion width (SPEC M4)."""

from __future__ import annotations

from torch import nn


class ModalityProjection(nn.Sequential):
    """``Linear -> LayerNorm -> GELU -> Dropout``: one per modality, encoder width -> shared width."""

    def __init__(self, input_dim: int, shared_dim: int, dropout: float = 0.1) -> None:
        if input_dim <= 0 or shared_dim <= 0:
            raise ValueError(f"projection widths must be positive; got {input_dim} -> {shared_dim}")
        super().__init__(
            nn.Linear(input_dim, shared_dim),
            nn.LayerNorm(shared_dim),
            nn.GELU(),
            nn.Dropout(dropout),
        )
        self.input_dim = input_dim
        self.shared_dim = shared_dim
