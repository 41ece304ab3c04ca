"""timm image backbones (ViT, DINOv2, CLIP vision towers, CNNs) as token encoders.

Weights come from (in order): a local timm directory (``config.json`` +
``model.safetensors``, as written by :func:`save_timm_model` or
``timm.models.push_to_hf_hub``), a checkpoint file (timm's
``pretrained_cfg_overlay=dict(file=...)``, loaded with safetensors or
``weights_only=True``), or the local Hugging Face cache. ``pretrained="auto"``
uses cached weights when present and otherwise initialises randomly with a
warning, so an offline demo still runs and the manifest can say so.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import timm
import torch
from timm.data.model_config import resolve_input_data_config
from torch import nn

from mm_core.encoders.base import ModalityEncoder
from mm_core.encoders.weights import cached_hub_file, local_path, seeded
from mm_core.errors import ConfigError, WeightsError
from mm_core.modalities.vision import build_transform

log = logging.getLogger(__name__)

_HUB_FILES = ("model.safetensors", "pytorch_model.bin", "open_clip_pytorch_model.bin")
Pretrained = bool | str


def save_timm_model(model: nn.Module, directory: str | os.PathLike[str]) -> Path:
    """Save a timm model as ``config.json`` + ``model.safetensors`` (loadable by path)."""
    from timm.models import save_for_hf

    save_for_hf(model, str(directory), safe_serialization=True)
    return Path(directory)


def _check_pretrained(pretrained: Pretrained) -> None:
    if pretrained not in (True, False, "auto"):
        raise ConfigError(f"pretrained must be true, false or 'auto'; got {pretrained!r}")


def _create(name: str, *, pretrained: bool, **kwargs: Any) -> nn.Module:
    try:
        return timm.create_model(name, pretrained=pretrained, num_classes=0, **kwargs)
    except WeightsError:
        raise
    except Exception as exc:
        raise WeightsError(f"cannot build timm model {name!r}: {type(exc).__name__}: {exc}") from exc


def build_timm_backbone(
    model: str,
    *,
    weights: str | os.PathLike[str] | None = None,
    pretrained: Pretrained = False,
    allow_download: bool = False,
    seed: int | None = 0,
    **kwargs: Any,
) -> tuple[nn.Module, bool, str]:
    """Build a headless timm model; returns ``(module, loaded_pretrained_weights, source)``."""
    _check_pretrained(pretrained)
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    model_dir = local_path(model)
    weights_path = local_path(weights) if weights is not None else None
    if weights is not None and weights_path is None:
        raise WeightsError(f"weights not found: {weights}")
    if model_dir is None and weights_path is not None and weights_path.is_dir():
        model_dir = weights_path  # a timm directory given as weights carries its own architecture
    load = pretrained is not False
    with seeded(seed):
        if model_dir is not None:
            if not (model_dir / "config.json").is_file():
                raise WeightsError(f"{model_dir} has no timm config.json (save it with save_timm_model)")
            module = _create(f"local-dir:{model_dir}", pretrained=load, **kwargs)
            return module, load, str(model_dir)
        if model.startswith("hf-hub:"):  # config and weights both live on the hub
            if not allow_download and cached_hub_file(model.split(":", 1)[1], _HUB_FILES) is None:
                raise WeightsError(
                    f"{model} is not in the local Hugging Face cache and downloads are off; "
                    "pass a local directory (model=/path) or allow_download=True"
                )
            return _create(model, pretrained=load, **kwargs), load, model
        if not timm.is_model(model.split(".")[0]):
            raise ConfigError(f"unknown timm model {model!r} (not a local directory either)")
        if weights_path is not None:
            overlay = {"file": str(weights_path), "source": "", "hf_hub_id": None, "url": None}
            module = _create(model, pretrained=True, pretrained_cfg_overlay=overlay, **kwargs)
            return module, True, str(weights_path)
        if not load:
            return _create(model, pretrained=False, **kwargs), False, model
        cfg = timm.models.get_pretrained_cfg(model)
        hub_id = getattr(cfg, "hf_hub_id", None) if cfg is not None else None
        files = (cfg.hf_hub_filename, *_HUB_FILES) if getattr(cfg, "hf_hub_filename", None) else _HUB_FILES
        cached = cached_hub_file(hub_id, files) if hub_id else None
        if cached is not None:
            overlay = {"file": str(cached), "source": "", "hf_hub_id": None, "url": None}
            module = _create(model, pretrained=True, pretrained_cfg_overlay=overlay, **kwargs)
            return module, True, f"hf-cache:{hub_id}"
        if allow_download:
            return _create(model, pretrained=True, **kwargs), True, model
        if pretrained is True:
            raise WeightsError(
                f"pretrained weights for timm model {model!r} are not in the local cache and downloads "
                "are off; pass a local directory (model=/path) or a checkpoint file (weights=/path), "
                "or use pretrained='auto' to fall back to random initialisation"
            )
        log.warning("no local pretrained weights for %s: using RANDOM initialisation (pretrained=False)", model)
        return _create(model, pretrained=False, **kwargs), False, model


class TimmVisionEncoder(ModalityEncoder):
    """Image -> patch tokens ``[B, N, D]`` via timm ``forward_features`` (CNN maps flattened)."""

    modality_name = "vision"

    def __init__(
        self,
        model: str = "vit_base_patch16_224",
        weights: str | os.PathLike[str] | None = None,
        pretrained: Pretrained = "auto",
        img_size: int | None = None,
        *,
        augment: bool = False,
        input_size: int | None = None,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        crop_pct: float | None = None,
        color_jitter: float = 0.4,
        allow_download: bool = False,
        seed: int | None = 0,
        **model_kwargs: Any,
    ) -> None:
        super().__init__()
        self.backbone, self.pretrained, self.source = build_timm_backbone(
            str(model),
            weights=weights,
            pretrained=pretrained,
            allow_download=allow_download,
            seed=seed,
            img_size=img_size,
            **model_kwargs,
        )
        # the model's CURRENT input size (img_size for ViTs; input_size for size-agnostic CNNs),
        # its mean/std (ImageNet or the checkpoint's own) and crop_pct, unless overridden
        overrides = {"img_size": input_size, "mean": mean, "std": std, "crop_pct": crop_pct}
        try:
            self.data_config = resolve_input_data_config(
                self.backbone, {k: v for k, v in overrides.items() if v is not None}
            )
        except ValueError as exc:  # e.g. input_size conflicting with a fixed-size ViT
            raise ConfigError(f"vision preprocessing options do not fit {model!r}: {exc}") from exc
        self.eval_transform = build_transform(self.data_config, train=False)
        self.train_transform = build_transform(self.data_config, train=True, color_jitter=color_jitter)
        #: when True, preprocess applies train-time augmentation (random crop, flip, jitter)
        self.augment = augment

    @property
    def output_dim(self) -> int:
        return int(self.backbone.num_features)

    def preprocess(self, items: Sequence[Any]) -> dict[str, torch.Tensor]:
        transform = self.train_transform if self.augment else self.eval_transform
        return {"pixel_values": torch.stack([transform(img) for img in items])}

    def forward(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feats = self.backbone.forward_features(pixel_values)
        if isinstance(feats, list | tuple):
            feats = feats[-1]
        if feats.ndim == 4:
            if getattr(self.backbone, "output_fmt", "NCHW") == "NHWC":
                feats = feats.flatten(1, 2)  # [B, H, W, C] -> [B, H*W, C]
            else:
                feats = feats.flatten(2).transpose(1, 2)  # [B, C, H, W] -> [B, H*W, C]
        elif feats.ndim == 2:
            feats = feats.unsqueeze(1)
        mask = torch.ones(feats.shape[:2], dtype=torch.bool, device=feats.device)
        return feats, mask
