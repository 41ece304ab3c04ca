# ruff: noqa
# fmt: off
"""Verbatim copy of the seed design's fusion classes (seed-pipeline-spec.ko.md 3.4-3.5, 6.2).

Used ONLY by tests/test_fusion_defects.py to demonstrate the defects listed in
SPEC section 4 (items 1-5); never import it from mm_core. Korean comments are
kept as in the seed; nothing below is corrected.
"""

from typing import Dict, List

import torch
import torch.nn as nn
import torch.nn.functional as F


class CrossModalAttention(nn.Module):
    """
    두 모달리티 간 교차 주의 집중 레이어
    Query: 한 모달리티의 표현
    Key/Value: 다른 모달리티의 표현
    """
    def __init__(
        self, 
        dim: int, 
        num_heads: int = 8, 
        dropout: float = 0.1,
        qkv_bias: bool = True
    ):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim ** -0.5
        
        self.q_proj = nn.Linear(dim, dim, bias=qkv_bias)
        self.k_proj = nn.Linear(dim, dim, bias=qkv_bias)
        self.v_proj = nn.Linear(dim, dim, bias=qkv_bias)
        self.out_proj = nn.Linear(dim, dim)
        
        self.dropout = nn.Dropout(dropout)
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        
        self.ffn = nn.Sequential(
            nn.Linear(dim, dim * 4),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(dim * 4, dim),
            nn.Dropout(dropout)
        )
    
    def forward(
        self, 
        query: torch.Tensor, 
        key_value: torch.Tensor,
        query_mask: torch.Tensor = None,
        kv_mask: torch.Tensor = None
    ) -> torch.Tensor:
        """
        Args:
            query: [B, Sq, D] - Query 모달리티
            key_value: [B, Skv, D] - Key/Value 모달리티
            query_mask: [B, Sq] - Query 패딩 마스크
            kv_mask: [B, Skv] - Key/Value 패딩 마스크
        Returns:
            [B, Sq, D] - Cross-attended 표현
        """
        B, Sq, D = query.shape
        _, Skv, _ = key_value.shape
        
        # Multi-head projection
        Q = self.q_proj(query).view(B, Sq, self.num_heads, self.head_dim).transpose(1, 2)
        K = self.k_proj(key_value).view(B, Skv, self.num_heads, self.head_dim).transpose(1, 2)
        V = self.v_proj(key_value).view(B, Skv, self.num_heads, self.head_dim).transpose(1, 2)
        
        # Attention scores
        attn = (Q @ K.transpose(-2, -1)) * self.scale
        
        # Masking (optional)
        if kv_mask is not None:
            attn = attn.masked_fill(
                kv_mask.unsqueeze(1).unsqueeze(2) == 0, 
                float('-inf')
            )
        
        attn = F.softmax(attn, dim=-1)
        attn = self.dropout(attn)
        
        # Apply attention
        out = (attn @ V).transpose(1, 2).reshape(B, Sq, D)
        out = self.out_proj(out)
        
        # Residual + LayerNorm
        query = self.norm1(query + out)
        
        # Feed-forward
        query = self.norm2(query + self.ffn(query))
        
        return query


class MultimodalFusionTransformer(nn.Module):
    """
    여러 모달리티를 Cross-Attention으로 융합하는 Transformer
    """
    def __init__(
        self,
        dim: int = 768,
        num_heads: int = 8,
        num_layers: int = 4,
        dropout: float = 0.1,
        fusion_strategy: str = 'pairwise'  # 'pairwise', 'anchor', 'perceiver'
    ):
        super().__init__()
        self.dim = dim
        self.fusion_strategy = fusion_strategy
        
        # Cross-attention layers
        self.cross_attn_layers = nn.ModuleList([
            CrossModalAttention(dim, num_heads, dropout)
            for _ in range(num_layers)
        ])
        
        # Self-attention for final fusion
        self.self_attn_layers = nn.ModuleList([
            nn.TransformerEncoderLayer(
                d_model=dim,
                nhead=num_heads,
                dim_feedforward=dim * 4,
                dropout=dropout,
                activation='gelu',
                batch_first=True
            )
            for _ in range(num_layers // 2)
        ])
        
        # Learnable modality tokens (optional)
        self.modality_tokens = nn.ParameterDict()
    
    def register_modality(self, name: str):
        """새 모달리티 토큰 등록"""
        self.modality_tokens[name] = nn.Parameter(torch.randn(1, 1, self.dim))
    
    def forward(
        self, 
        modality_features: dict,  # {name: [B, S, D]}
        modality_masks: dict = None  # {name: [B, S]}
    ) -> torch.Tensor:
        """
        Args:
            modality_features: 모달리티별 투영된 특징
            modality_masks: 모달리티별 패딩 마스크
        Returns:
            [B, S_total, D] - 융합된 표현
        """
        modality_list = list(modality_features.keys())
        features = list(modality_features.values())
        masks = modality_masks or {k: None for k in modality_list}
        
        if self.fusion_strategy == 'pairwise':
            # Pairwise bidirectional cross-attention
            for layer in self.cross_attn_layers:
                updated_features = []
                for i, (name_i, feat_i) in enumerate(modality_features.items()):
                    for j, (name_j, feat_j) in enumerate(modality_features.items()):
                        if i != j:
                            feat_i = layer(feat_i, feat_j, masks[name_i], masks[name_j])
                    updated_features.append(feat_i)
                modality_features = dict(zip(modality_list, updated_features))
        
        # Concatenate all modality features
        fused = torch.cat(list(modality_features.values()), dim=1)
        
        # Apply self-attention
        for layer in self.self_attn_layers:
            fused = layer(fused)
        
        return fused


class UnifiedRepresentationHead(nn.Module):
    """
    융합된 시퀀스를 단일 벡터로 변환
    """
    def __init__(
        self, 
        input_dim: int = 768, 
        output_dim: int = 768,
        pooling_strategy: str = 'cls'  # 'cls', 'mean', 'attention'
    ):
        super().__init__()
        self.pooling_strategy = pooling_strategy
        
        # [CLS] 토큰 (cls 전략용)
        self.cls_token = nn.Parameter(torch.randn(1, 1, input_dim))
        
        # Attention pooling (attention 전략용)
        self.attention_pool = nn.Sequential(
            nn.Linear(input_dim, 1),
            nn.Softmax(dim=1)
        )
        
        # 최종 투영
        self.output_proj = nn.Sequential(
            nn.LayerNorm(input_dim),
            nn.Linear(input_dim, output_dim),
            nn.Tanh()
        )
    
    def forward(self, fused_features: torch.Tensor, mask: torch.Tensor = None) -> torch.Tensor:
        """
        Args:
            fused_features: [B, S, D] - 융합된 시퀀스
            mask: [B, S] - 패딩 마스크
        Returns:
            [B, output_dim] - 통합 벡터
        """
        if self.pooling_strategy == 'cls':
            # [CLS] 토큰을 시퀀스 앞에 추가
            B = fused_features.size(0)
            cls_tokens = self.cls_token.expand(B, -1, -1)
            fused_features = torch.cat([cls_tokens, fused_features], dim=1)
            pooled = fused_features[:, 0]  # [CLS] 위치
            
        elif self.pooling_strategy == 'mean':
            if mask is not None:
                mask = mask.unsqueeze(-1)
                fused_features = fused_features * mask
                pooled = fused_features.sum(dim=1) / mask.sum(dim=1).clamp(min=1)
            else:
                pooled = fused_features.mean(dim=1)
                
        elif self.pooling_strategy == 'attention':
            attn_weights = self.attention_pool(fused_features)  # [B, S, 1]
            if mask is not None:
                attn_weights = attn_weights.masked_fill(~mask.unsqueeze(-1), float('-inf'))
                attn_weights = F.softmax(attn_weights, dim=1)
            pooled = (fused_features * attn_weights).sum(dim=1)
        
        return self.output_proj(pooled)


class MissingModalityHandler(nn.Module):
    """누락된 모달리티 처리"""
    
    def __init__(self, modalities: List[str], dim: int):
        super().__init__()
        # 모달리티별 학습 가능한 placeholder
        self.placeholders = nn.ParameterDict({
            mod: nn.Parameter(torch.randn(1, 1, dim) * 0.02)
            for mod in modalities
        })
    
    def forward(
        self,
        features: Dict[str, torch.Tensor],
        available: Dict[str, bool],
        seq_lengths: Dict[str, int]
    ) -> Dict[str, torch.Tensor]:
        """
        Args:
            features: 인코딩된 특징
            available: 모달리티 가용성
            seq_lengths: 대체 시퀀스 길이
        Returns:
            완성된 특징 딕셔너리
        """
        result = {}
        batch_size = next(iter(features.values())).size(0)
        
        for mod in self.placeholders.keys():
            if available.get(mod, False) and mod in features:
                result[mod] = features[mod]
            else:
                # Placeholder로 대체
                placeholder = self.placeholders[mod].expand(
                    batch_size, 
                    seq_lengths.get(mod, 1), 
                    -1
                )
                result[mod] = placeholder
        
        return result
