"""The fusion model: projection -> modality-type embeddings -> missing handling ->
cross-attention strategy -> [CLS] + masked self-attention -> pooling head.

Modelled on ImageBind's ``imagebind_model.py``: one ``ModuleDict`` per stage
keyed by modality and one uniform loop, but the modalities come from
``encoder_dims`` (which the caller builds from the registry), never hard-wired.
Every registered modality takes part in every forward pass: a modality not
given (or marked absent for a sample) becomes masked tokens, or one learnable
placeholder token, so a sample's output never depends on what else is in the
batch or on which keys the caller happened to pass.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_model, save_model
from torch import nn

from mm_core.fusion.attention import AttentionBlock, as_bool_mask, run_block
from mm_core.fusion.missing import (
    MISSING_MODES,
    effective_mask,
    fill_placeholder,
    modality_dropout,
    zero_masked,
)
from mm_core.fusion.pooling import POOLINGS, PoolingHead
from mm_core.fusion.projection import ModalityProjection
from mm_core.fusion.strategies import STRATEGIES, FusedSequence, build_strategy

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
Tensors = Mapping[str, torch.Tensor]


def _check_name(name: Any) -> str:
    if not isinstance(name, str) or not name or "." in name:
        raise ValueError(f"modality names must be non-empty strings without '.'; got {name!r}")
    if hasattr(nn.ModuleDict(), name) or hasattr(nn.ParameterDict(), name):
        raise ValueError(f"modality name {name!r} clashes with a torch container attribute; rename it")
    return name


def _validate(cfg: dict[str, Any]) -> None:
    dims = cfg["encoder_dims"]
    if not dims:
        raise ValueError("encoder_dims is empty: the fusion model needs at least one modality")
    for name, dim in dims.items():
        _check_name(name)
        if dim <= 0:
            raise ValueError(f"encoder_dims[{name!r}] must be a positive width; got {dim}")
    if cfg["strategy"] not in STRATEGIES:
        raise ValueError(f"unknown fusion strategy {cfg['strategy']!r}; choose one of {', '.join(STRATEGIES)}")
    if cfg["pooling"] not in POOLINGS:
        raise ValueError(f"unknown pooling {cfg['pooling']!r}; choose one of {', '.join(POOLINGS)}")
    if cfg["missing"] not in MISSING_MODES:
        raise ValueError(f"unknown missing mode {cfg['missing']!r}; choose one of {', '.join(MISSING_MODES)}")
    for key in ("shared_dim", "output_dim", "num_heads", "num_layers", "num_latents", "ffn_ratio"):
        if cfg[key] < 1:
            raise ValueError(f"{key} must be >= 1; got {cfg[key]}")
    if cfg["num_self_layers"] < 0:
        raise ValueError(f"num_self_layers must be >= 0; got {cfg['num_self_layers']}")
    if cfg["shared_dim"] % cfg["num_heads"]:
        raise ValueError(f"shared_dim {cfg['shared_dim']} is not divisible by num_heads {cfg['num_heads']}")
    for key in ("dropout", "modality_dropout"):
        if not 0.0 <= cfg[key] < 1.0:
            raise ValueError(f"{key} must be in [0, 1); got {cfg[key]}")
    if cfg["anchor"] is not None and cfg["anchor"] not in dims:
        raise ValueError(f"anchor {cfg['anchor']!r} is not one of the modalities {list(dims)}")


class FusionModel(nn.Module):
    """Fuses per-modality encoder features ``{name: [B, S_m, D_m]}`` into ``[B, output_dim]``.

    Build it with :func:`build_fusion_model`; rebuild it from :attr:`config`
    with :meth:`from_config`, or from a directory with :meth:`from_pretrained`.
    """

    def __init__(
        self,
        encoder_dims: Mapping[str, int],
        *,
        shared_dim: int,
        output_dim: int,
        strategy: str,
        pooling: str,
        num_layers: int,
        num_heads: int,
        dropout: float = 0.1,
        missing: str = "placeholder",
        modality_dropout: float = 0.0,
        anchor: str | None = None,
        num_latents: int = 16,
        tanh: bool = True,
        num_self_layers: int | None = None,
        ffn_ratio: int = 4,
    ) -> None:
        super().__init__()
        dims = {_check_name(k): int(v) for k, v in dict(encoder_dims).items()}
        cfg = {
            "encoder_dims": dims,
            "shared_dim": int(shared_dim),
            "output_dim": int(output_dim),
            "strategy": strategy,
            "pooling": pooling,
            "num_layers": int(num_layers),
            "num_heads": int(num_heads),
            "dropout": float(dropout),
            "missing": missing,
            "modality_dropout": float(modality_dropout),
            "anchor": anchor if strategy != "anchor" else (anchor or next(iter(dims), None)),
            "num_latents": int(num_latents),
            "tanh": bool(tanh),
            "num_self_layers": max(1, int(num_layers) // 2) if num_self_layers is None else int(num_self_layers),
            "ffn_ratio": int(ffn_ratio),
        }
        _validate(cfg)
        self._config = cfg
        self.modalities = list(dims)
        d = cfg["shared_dim"]
        self.projections = nn.ModuleDict({m: ModalityProjection(dims[m], d, cfg["dropout"]) for m in dims})
        self.type_embeddings = nn.ParameterDict({m: nn.Parameter(torch.randn(d) * 0.02) for m in dims})
        self.placeholders = (
            nn.ParameterDict({m: nn.Parameter(torch.randn(d) * 0.02) for m in dims})
            if missing == "placeholder"
            else None
        )
        self.fusion = build_strategy(
            strategy,
            self.modalities,
            dim=d,
            num_heads=cfg["num_heads"],
            num_layers=cfg["num_layers"],
            dropout=cfg["dropout"],
            anchor=cfg["anchor"],
            num_latents=cfg["num_latents"],
        )
        self.cls_token = nn.Parameter(torch.randn(d) * 0.02) if pooling == "cls" else None
        self.self_layers = nn.ModuleList(
            AttentionBlock(d, cfg["num_heads"], cfg["dropout"], cfg["ffn_ratio"], cross=False)
            for _ in range(cfg["num_self_layers"])
        )
        self.norm = nn.LayerNorm(d)
        self.head = PoolingHead(d, cfg["output_dim"], pooling, cfg["tanh"])
        self.gradient_checkpointing = False

    # -- configuration and checkpoints ------------------------------------------------
    @property
    def config(self) -> dict[str, Any]:
        """The constructor arguments as a plain JSON-able dict (defaults resolved)."""
        return json.loads(json.dumps(self._config))

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> FusionModel:
        """A fresh (untrained) model with the architecture that ``config`` describes."""
        cfg = dict(config)
        return cls(cfg.pop("encoder_dims"), **cfg)

    def save_pretrained(self, directory: str | Path) -> Path:
        """Write ``config.json`` and ``model.safetensors`` into ``directory``."""
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        (out / CONFIG_NAME).write_text(json.dumps(self.config, indent=2) + "\n", encoding="utf-8")
        save_model(self, str(out / WEIGHTS_NAME))
        return out

    @classmethod
    def from_pretrained(cls, directory: str | Path, device: str | torch.device = "cpu") -> FusionModel:
        """Rebuild a model saved by :meth:`save_pretrained` (safetensors only: no pickle)."""
        src = Path(directory)
        model = cls.from_config(json.loads((src / CONFIG_NAME).read_text(encoding="utf-8")))
        load_model(model, str(src / WEIGHTS_NAME), device=str(device))
        return model.to(device)

    def weights_id(self) -> str:
        """A short hash of config and parameters (for manifests and code versions)."""
        h = hashlib.sha256(json.dumps(self.config, sort_keys=True).encode())
        for name, tensor in sorted(self.state_dict().items()):
            h.update(name.encode())
            h.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
        return h.hexdigest()[:16]

    def set_gradient_checkpointing(self, enabled: bool = True) -> None:
        """Recompute attention blocks in backward to save activation memory (training)."""
        self.gradient_checkpointing = enabled
        self.fusion.gradient_checkpointing = enabled

    # -- forward ----------------------------------------------------------------------
    def _check_keys(self, what: str, given: Tensors) -> None:
        unknown = sorted(set(given) - set(self.modalities))
        if unknown:
            raise ValueError(f"unknown modality {unknown} in {what}; this model fuses {self.modalities}")

    def resolve_inputs(
        self, features: Tensors, masks: Tensors | None = None, present: Tensors | None = None
    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """Validate the inputs and complete them for every modality of the model.

        Returns ``(features, masks, present)``: a modality not in ``features`` is
        one zero token, masked, absent for all samples; ``present[m]`` is the
        caller's flag AND "has at least one real token" (what output rows record).
        """
        masks, present = dict(masks or {}), dict(present or {})
        for what, given in (("features", features), ("masks", masks), ("present", present)):
            self._check_keys(what, given)
        if not features:
            raise ValueError("features is empty: give at least one modality")
        ref = next(iter(features.values()))
        batch, param = ref.shape[0], self.type_embeddings[self.modalities[0]]
        feats, out_masks, out_present = {}, {}, {}
        for m in self.modalities:
            width = self._config["encoder_dims"][m]
            if m not in features:
                if m in present and as_bool_mask(present[m]).any():
                    raise ValueError(f"present marks {m!r} present but features has no {m!r}")
                feats[m] = torch.zeros(batch, 1, width, device=param.device, dtype=param.dtype)
                out_masks[m] = torch.zeros(batch, 1, dtype=torch.bool, device=param.device)
                out_present[m] = torch.zeros(batch, dtype=torch.bool, device=param.device)
                continue
            x = features[m]
            if x.dim() != 3 or x.shape[0] != batch or x.shape[2] != width:
                raise ValueError(f"features[{m!r}] must be [B={batch}, S, {width}]; got {list(x.shape)}")
            mask = masks.get(m)
            mask = torch.ones(x.shape[:2], dtype=torch.bool) if mask is None else as_bool_mask(mask)
            if mask.shape != x.shape[:2]:
                raise ValueError(f"masks[{m!r}] must be {list(x.shape[:2])}; got {list(mask.shape)}")
            pres = present.get(m)
            pres = torch.ones(batch, dtype=torch.bool) if pres is None else as_bool_mask(pres)
            if pres.shape != (batch,):
                raise ValueError(f"present[{m!r}] must be [{batch}]; got {list(pres.shape)}")
            if x.shape[1] == 0:  # no token at all: one masked slot keeps shapes uniform
                x, mask = x.new_zeros(batch, 1, width), mask.new_zeros(batch, 1)
            mask, pres = mask.to(param.device), pres.to(param.device)
            feats[m] = x.to(device=param.device, dtype=param.dtype)
            out_masks[m] = mask
            out_present[m] = pres & mask.any(dim=1)
        return feats, out_masks, out_present

    def embed(
        self, features: Tensors, masks: Tensors | None = None, present: Tensors | None = None
    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """Per-modality shared-width tokens and masks, after missing-modality handling.

        Modality dropout (``modality_dropout`` > 0) applies here in training mode only.
        """
        feats, masks_, present_ = self.resolve_inputs(features, masks, present)
        if self.training and self._config["modality_dropout"] > 0:
            present_ = modality_dropout(present_, self._config["modality_dropout"])
        tokens, out_masks = {}, {}
        for m, proj in self.projections.items():
            mask = effective_mask(masks_[m], present_[m])
            t = proj(zero_masked(feats[m], mask)) + self.type_embeddings[m]
            if self.placeholders is not None:
                t, mask = fill_placeholder(t, mask, self.placeholders[m])
            tokens[m], out_masks[m] = t, mask
        return tokens, out_masks

    def forward_tokens(
        self, features: Tensors, masks: Tensors | None = None, present: Tensors | None = None
    ) -> FusedSequence:
        """The fused, normalised token sequence with its mask and per-part spans.

        Spans name each modality (or ``latents`` for perceiver) and ``cls`` when
        the CLS token is used, so callers can take per-modality views.
        """
        tokens, masks_ = self.embed(features, masks, present)
        seq, mask, spans = self.fusion(tokens, masks_)
        if self.cls_token is not None:
            cls = self.cls_token.to(seq.dtype).expand(seq.shape[0], 1, -1)
            seq = torch.cat([cls, seq], dim=1)
            mask = torch.cat([mask.new_ones(mask.shape[0], 1), mask], dim=1)
            spans = {"cls": slice(0, 1), **{k: slice(s.start + 1, s.stop + 1) for k, s in spans.items()}}
        for block in self.self_layers:
            seq = run_block(block, self.gradient_checkpointing and self.training, seq, None, mask)
        return FusedSequence(self.norm(seq), mask, spans)

    def forward(self, features: Tensors, masks: Tensors | None = None, present: Tensors | None = None) -> torch.Tensor:
        """One vector per sample, ``[B, output_dim]``.

        ``features {m: [B, S_m, D_m]}`` (any subset of the modalities), ``masks
        {m: [B, S_m]}`` True = real token (default all), ``present {m: [B]}``
        (default all).
        """
        fused = self.forward_tokens(features, masks, present)
        return self.head(fused.tokens, fused.mask)


def build_fusion_model(
    encoder_dims: Mapping[str, int],
    *,
    shared_dim: int,
    output_dim: int,
    strategy: str,
    pooling: str,
    num_layers: int,
    num_heads: int,
    **extra: Any,
) -> FusionModel:
    """Build a :class:`FusionModel`; ``extra``: dropout, missing, modality_dropout, anchor,
    num_latents, tanh, num_self_layers, ffn_ratio (see the class for defaults)."""
    return FusionModel(
        encoder_dims,
        shared_dim=shared_dim,
        output_dim=output_dim,
        strategy=strategy,
        pooling=pooling,
        num_layers=num_layers,
        num_heads=num_heads,
        **extra,
    )
