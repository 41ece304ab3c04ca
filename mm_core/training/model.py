"""The trained model of a build: trainable encoders in front of the fusion model, saved together.

Encoders with pretrained weights stay frozen and are read from the encodings
cache as features; encoders without them (the sensor CNN-LSTM) train with the
fusion model, so they are part of this module and run on cached inputs. One
``model.safetensors`` holds every weight and buffer (the sensor normalisation
statistics fitted on the training split included) and ``config.json`` says how
to rebuild it: the fusion architecture and each encoder's registry options.
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

from mm_core.encoders.base import ModalityEncoder
from mm_core.fusion import FusionModel
from mm_core.fusion.model import CONFIG_NAME, WEIGHTS_NAME
from mm_core.training.batch import Batch

STACK_FORMAT = "mm-fusion-stack"
Tensors = dict[str, torch.Tensor]


class FusionStack(nn.Module):
    """``encoders`` (ModuleDict of trainable encoders) -> ``fusion`` (:class:`FusionModel`)."""

    def __init__(
        self,
        fusion: FusionModel,
        encoders: Mapping[str, ModalityEncoder] | None = None,
        encoder_options: Mapping[str, Mapping[str, Any]] | None = None,
        codecs: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__()
        self.fusion = fusion
        self.encoders = nn.ModuleDict(dict(encoders or {}))
        self.encoder_options = {m: dict((encoder_options or {}).get(m, {})) for m in self.encoders}
        self.codecs = {m: (codecs or {}).get(m, "") for m in self.encoders}
        unknown = set(self.encoders) - set(fusion.modalities)
        if unknown:
            raise ValueError(f"trainable encoders {sorted(unknown)} are not modalities of the fusion model")

    @property
    def trainable(self) -> list[str]:
        """Modalities whose encoder is part of this model (fed with cached inputs)."""
        return list(self.encoders)

    @property
    def modalities(self) -> list[str]:
        return list(self.fusion.modalities)

    @property
    def output_dim(self) -> int:
        return int(self.fusion.config["output_dim"])

    @property
    def config(self) -> dict[str, Any]:
        return {
            "format": STACK_FORMAT,
            "fusion": self.fusion.config,
            "encoders": {m: {"options": self.encoder_options[m], "codec": self.codecs[m]} for m in self.encoders},
        }

    # -- forward ----------------------------------------------------------------------------
    def features(self, batch: Batch) -> tuple[Tensors, Tensors, Tensors]:
        """Token features, masks and presence of every modality (trainable encoders run here)."""
        feats, masks, present = dict(batch.features), dict(batch.masks), dict(batch.present)
        n = len(batch)
        ref = next(self.fusion.parameters())
        for m, encoder in self.encoders.items():
            rows = batch.rows.get(m)
            dim = self.fusion.config["encoder_dims"][m]
            if rows is None or rows.numel() == 0:
                feats[m] = ref.new_zeros(n, 1, dim)
                masks[m] = torch.zeros(n, 1, dtype=torch.bool, device=ref.device)
                present[m] = torch.zeros(n, dtype=torch.bool, device=ref.device)
                continue
            f, mk = encoder(**batch.inputs[m])
            full = f.new_zeros(n, f.shape[1], f.shape[2])
            full_mask = torch.zeros(n, f.shape[1], dtype=torch.bool, device=f.device)
            full[rows], full_mask[rows] = f, mk.bool()
            feats[m], masks[m] = full, full_mask
        return feats, masks, present

    def fuse(self, feats: Tensors, masks: Tensors, present: Tensors) -> torch.Tensor:
        return self.fusion(feats, masks=masks, present=present)

    def forward(self, batch: Batch) -> torch.Tensor:
        """One unified vector per sample of ``batch``, ``[B, output_dim]``."""
        return self.fuse(*self.features(batch))

    # -- checkpoints ------------------------------------------------------------------------
    def save_pretrained(self, directory: str | Path) -> Path:
        """``config.json`` + ``model.safetensors`` (fusion and trainable encoders, buffers included)."""
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        (out / CONFIG_NAME).write_text(json.dumps(self.config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        save_model(self, str(out / WEIGHTS_NAME))
        return out

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> FusionStack:
        """A fresh model with the architecture ``config`` describes (encoders built from the registry)."""
        from mm_core.registry import get

        if config.get("format") != STACK_FORMAT:  # a plain FusionModel directory
            return cls(FusionModel.from_config(config))
        specs = config.get("encoders", {})
        encoders = {m: get(m).create_encoder(**s["options"]) for m, s in specs.items()}
        return cls(
            FusionModel.from_config(config["fusion"]),
            encoders,
            {m: s["options"] for m, s in specs.items()},
            {m: s.get("codec", "") for m, s in specs.items()},
        )

    @classmethod
    def from_pretrained(cls, directory: str | Path, device: str | torch.device = "cpu") -> FusionStack:
        """Rebuild a model saved by :meth:`save_pretrained` or ``FusionModel.save_pretrained``."""
        src = Path(directory)
        config = json.loads((src / CONFIG_NAME).read_text(encoding="utf-8"))
        if config.get("format") != STACK_FORMAT:
            return cls(FusionModel.from_pretrained(src, device=device))
        model = cls.from_config(config)
        load_model(model, str(src / WEIGHTS_NAME), device=str(device))
        return model.to(device)

    def weights_id(self) -> str:
        """Short hash of config and every parameter and buffer (manifests, code versions)."""
        h = hashlib.sha256(json.dumps(self.config, sort_keys=True, default=str).encode())
        for name, tensor in sorted(self.state_dict().items()):
            h.update(name.encode())
            h.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
        return h.hexdigest()[:16]

    def set_gradient_checkpointing(self, enabled: bool = True) -> None:
        self.fusion.set_gradient_checkpointing(enabled)
