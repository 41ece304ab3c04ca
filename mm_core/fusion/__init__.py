"""Fusion of per-modality encoder features into one vector per sample (SPEC M4-M7).

``build_fusion_model(encoder_dims, *, shared_dim, output_dim, strategy, pooling,
num_layers, num_heads, **extra) -> FusionModel``; ``STRATEGIES``, ``POOLINGS``
and ``MISSING_MODES`` name the accepted choices.
"""

from mm_core.fusion.attention import AttentionBlock, MultiHeadAttention
from mm_core.fusion.missing import MISSING_MODES, modality_dropout
from mm_core.fusion.model import FusionModel, build_fusion_model
from mm_core.fusion.pooling import POOLINGS, AttentionPool, PoolingHead, masked_mean
from mm_core.fusion.projection import ModalityProjection
from mm_core.fusion.strategies import STRATEGIES, FusedSequence, FusionStrategy, build_strategy

__all__ = [
    "MISSING_MODES",
    "POOLINGS",
    "STRATEGIES",
    "AttentionBlock",
    "AttentionPool",
    "FusedSequence",
    "FusionModel",
    "FusionStrategy",
    "ModalityProjection",
    "MultiHeadAttention",
    "PoolingHead",
    "build_fusion_model",
    "build_strategy",
    "masked_mean",
    "modality_dropout",
]
