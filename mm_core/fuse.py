"""Apply a fusion model to cached per-modality encodings of one shard."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

from mm_core.atomic import atomic_path
from mm_core.device import autocast, resolve_device, resolve_precision
from mm_core.encodings import ShardEncodings


def load_fusion_model(
    encoder_dims: Mapping[str, int], fusion: Mapping, *, seed: int = 0
) -> tuple[torch.nn.Module, dict[str, str | bool]]:
    """The fusion model for a build: the checkpoint if configured, else a seeded init.

    ``fusion["checkpoint"]`` is a directory written by ``FusionModel.save_pretrained``
    or ``FusionStack.save_pretrained`` (a model trained by an earlier build).
    Returns the model (eval mode) and provenance (``trained``, ``checkpoint``,
    ``weights_id``) for the manifest, which says plainly when it is untrained.
    """
    from mm_core.fusion import build_fusion_model
    from mm_core.training.model import FusionStack

    checkpoint = fusion.get("checkpoint")
    if checkpoint:
        model: torch.nn.Module = FusionStack.from_pretrained(checkpoint)
        info: dict[str, str | bool] = {"trained": True, "checkpoint": str(checkpoint)}
    else:
        torch.manual_seed(seed)
        model = build_fusion_model(
            dict(encoder_dims),
            shared_dim=fusion["shared_dim"],
            output_dim=fusion["output_dim"],
            strategy=fusion["strategy"],
            pooling=fusion["pooling"],
            num_layers=fusion["num_layers"],
            num_heads=fusion["num_heads"],
            **fusion.get("extra", {}),
        )
        info = {"trained": False, "checkpoint": ""}
    info["weights_id"] = model.weights_id()
    return model.eval(), info


def gather_batch(
    sample_ids: Sequence[str], encodings: Mapping[str, ShardEncodings], rows: Mapping[str, dict[str, int]]
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Features, masks and per-sample presence for ``sample_ids`` from cached encodings.

    A sample without a modality gets zero features, an all-False mask and
    ``present=False``; sequences are trimmed to the batch's longest real token.
    """
    feats, masks, present = {}, {}, {}
    n = len(sample_ids)
    for name, enc in encodings.items():
        if not enc.sample_ids:  # nobody in this shard has the modality
            dim = enc.features.shape[-1]
            feats[name], masks[name] = torch.zeros(n, 1, dim), torch.zeros(n, 1, dtype=torch.bool)
            present[name] = torch.zeros(n, dtype=torch.bool)
            continue
        idx = [rows[name].get(sid, -1) for sid in sample_ids]
        have = torch.tensor([i >= 0 for i in idx], dtype=torch.bool)
        src = torch.tensor([max(i, 0) for i in idx], dtype=torch.long)
        f = enc.features.index_select(0, src)
        m = enc.mask.index_select(0, src) & have.unsqueeze(1)
        s = int(m.any(0).nonzero().max()) + 1 if m.any() else 1
        f, m = f[:, :s].float(), m[:, :s]
        f = f * have.view(n, 1, 1)
        feats[name], masks[name], present[name] = f, m, have
    return feats, masks, present


@torch.inference_mode()
def fuse_encodings(
    model: torch.nn.Module,
    sample_ids: Sequence[str],
    encodings: Mapping[str, ShardEncodings],
    *,
    batch_size: int = 64,
    device: str = "auto",
    precision: str = "auto",
    with_pooled: bool = False,
) -> tuple[np.ndarray, ...]:
    """Unified vectors [N, out] float32 and presence [N, M] bool (modalities in sorted order).

    ``model`` is a ``FusionModel`` (frozen features only) or a ``FusionStack``,
    whose trainable encoders run here on the cached inputs of their modality.
    ``with_pooled`` adds a third result: ``{modality: [N, D_m]}`` masked means of
    the *trained* encoders' tokens (zeros where absent), for the export's
    per-modality vectors (the cache holds only the untrained encoder's features).
    """
    from mm_core.training.batch import make_batch
    from mm_core.training.model import FusionStack

    stack = model if isinstance(model, FusionStack) else FusionStack(model)
    dev = resolve_device(device)
    prec = resolve_precision(precision, dev)
    stack = stack.to(dev).eval()
    rows = {name: {sid: i for i, sid in enumerate(enc.sample_ids)} for name, enc in encodings.items()}
    names = sorted(encodings)
    trained = [m for m in stack.trainable if m in encodings]
    outs, pres, pooled = [], [], {m: [] for m in trained}
    for start in range(0, len(sample_ids), batch_size):
        ids = list(sample_ids[start : start + batch_size])
        batch = make_batch(ids, encodings, rows, stack.trainable)
        with autocast(dev, prec):
            feats, masks, present = stack.features(batch.to(dev))
            out = stack.fuse(feats, masks, present)
        outs.append(out.float().cpu().numpy())
        pres.append(torch.stack([batch.present[k] for k in names], 1).numpy())
        for m in trained:
            w = masks[m].unsqueeze(-1).float()
            pooled[m].append(((feats[m].float() * w).sum(1) / w.sum(1).clamp(min=1.0)).cpu().numpy())
    dims = stack.fusion.config["encoder_dims"]
    if outs:
        result = np.concatenate(outs).astype(np.float32, copy=False), np.concatenate(pres)
        per_modality = {m: np.concatenate(v) for m, v in pooled.items()}
    else:
        result = np.zeros((0, stack.output_dim), np.float32), np.zeros((0, len(names)), bool)
        per_modality = {m: np.zeros((0, dims[m]), np.float32) for m in trained}
    return (*result, per_modality) if with_pooled else result


def save_fused(
    path: str | Path,
    sample_ids: Sequence[str],
    vectors: np.ndarray,
    present: np.ndarray,
    modalities: Sequence[str],
    info: Mapping,
    pooled: Mapping[str, np.ndarray] | None = None,
) -> Path:
    """Write one shard's fused vectors atomically (safetensors, ids in the header).

    ``pooled``: per-modality vectors of the trained encoders (``pooled.<m>`` tensors).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "sample_ids": json.dumps(list(sample_ids), ensure_ascii=False),
        "modalities": json.dumps(list(modalities)),
        "info": json.dumps(dict(info), sort_keys=True, default=str),
    }
    tensors = {
        "vectors": torch.from_numpy(np.ascontiguousarray(vectors, dtype=np.float32)),
        "present": torch.from_numpy(np.ascontiguousarray(present, dtype=np.uint8)),
    }
    for m, arr in (pooled or {}).items():
        tensors[f"pooled.{m}"] = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32))
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=meta)
    return path


def load_fused(path: str | Path) -> tuple[list[str], np.ndarray, np.ndarray, list[str], dict]:
    """Ids, vectors [N, D], presence [N, M], modality names and model info of a fused shard."""
    from safetensors import safe_open
    from safetensors.numpy import load_file as load_np

    with safe_open(str(path), framework="numpy") as fh:
        meta = fh.metadata()
    tensors = load_np(str(path))
    return (
        json.loads(meta["sample_ids"]),
        tensors["vectors"],
        tensors["present"].astype(bool),
        json.loads(meta["modalities"]),
        json.loads(meta.get("info", "{}")),
    )


def load_fused_pooled(path: str | Path) -> dict[str, np.ndarray]:
    """Per-modality vectors of the trained encoders stored in a fused shard (rows as its ids)."""
    from safetensors.numpy import load_file as load_np

    return {k.removeprefix("pooled."): v for k, v in load_np(str(path)).items() if k.startswith("pooled.")}
