"""Assemble a build's model: which encoders train, the seeded initial model, and running training.

``initial_stack`` is both where training starts and the "untrained" model the
evaluation compares against: the same seed gives the same weights, and the
sensor normalisation statistics are fitted on the training split (the stored
``stats`` of an encoder's options are reused instead when given).
``run_training`` trains in this process, or launches ``torchrun`` for
``training.num_processes > 1`` and reads back what rank 0 saved.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import fields
from pathlib import Path
from typing import Any

import torch

from mm_core.atomic import atomic_dir, atomic_write_json
from mm_core.config import BuildConfig
from mm_core.training.data import BuildData
from mm_core.training.inputs import SensorWindows, trains_encoder
from mm_core.training.model import FusionStack

RESULT_DIR = "ddp-result"
RANKS_DIR = "ddp-ranks"


def trainable_modalities(cfg: BuildConfig) -> list[str]:
    """Modalities whose encoder trains with the fusion model (empty when training is off)."""
    if not cfg.training.enabled:
        return []
    from mm_core.encoding import get_encoder
    from mm_core.pipeline import build_modalities, encoder_options

    t = cfg.training
    out = []
    for m in build_modalities(cfg):
        encoder = get_encoder(m, **encoder_options(cfg, m))
        if trains_encoder(t.train_encoders, m, encoder, t.auto_max_params):
            out.append(m)
    return out


def _fit_stats(encoder: torch.nn.Module, modality: str, data: BuildData) -> Any:
    if not hasattr(encoder, "fit_stats"):
        return None

    def series():
        for enc, rows in data.inputs_for_stats(modality):
            if enc.codec == SensorWindows.name:
                yield from SensorWindows.series(enc.inputs, rows)

    try:
        return encoder.fit_stats(series())
    except ValueError:  # no training series of this modality
        return None


def initial_stack(cfg: BuildConfig, data: BuildData | None = None) -> FusionStack:
    """The seeded, untrained model of a build (normalisation statistics fitted on the training split)."""
    from mm_core.fusion import build_fusion_model
    from mm_core.pipeline import encoder_dims, encoder_options
    from mm_core.registry import get

    f = cfg.fusion
    seed = int(cfg.training.seed if cfg.training.seed is not None else cfg.seed)
    torch.manual_seed(seed)
    fusion = build_fusion_model(
        encoder_dims(cfg),
        shared_dim=f.shared_dim,
        output_dim=f.output_dim,
        strategy=f.strategy,
        pooling=f.pooling,
        num_layers=f.num_layers,
        num_heads=f.num_heads,
        **f.extra,
    )
    trainable = trainable_modalities(cfg)
    options = {m: encoder_options(cfg, m) for m in trainable}
    encoders = {m: get(m).create_encoder(**options[m]) for m in trainable}  # fresh: never the cached encoder
    codecs, stats = {}, {}
    for m, encoder in encoders.items():
        for p in encoder.parameters():
            p.requires_grad_(True)
        if data is not None:
            first = next((enc for enc, _ in data.inputs_for_stats(m)), None)
            codecs[m] = first.codec if first is not None else ""
            if "stats" not in options[m]:
                stats[m] = _fit_stats(encoder, m, data)
    stack = FusionStack(fusion, encoders, options, codecs)
    stack.fitted_stats = {m: s for m, s in stats.items() if s is not None}
    return stack


def run_training(cfg: BuildConfig, data: BuildData, *, progress: bool = False) -> Any:
    """Train in process, or under torchrun with ``training.num_processes`` workers."""
    from mm_core.training.loop import TrainResult, state_dir, train_fusion

    n = cfg.training.num_processes
    if n <= 1:
        return train_fusion(cfg, data=data, progress=progress)
    folder = state_dir(cfg)
    config_path = folder / "config.json"
    atomic_write_json(config_path, {**cfg.to_dict(), "base_dir": cfg.base_dir})
    result_dir = folder / RESULT_DIR
    for stale in (result_dir, folder / RANKS_DIR):  # never read a stale result
        shutil.rmtree(stale, ignore_errors=True)
    cmd = launch_command(config_path, n)
    subprocess.run(cmd, check=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    info = json.loads((result_dir / "result.json").read_text())
    stack = FusionStack.from_pretrained(result_dir).eval()
    return TrainResult(stack=stack, **{k: v for k, v in info.items() if k != "weights_id"})


def launch_command(config_path: str | Path, nproc: int, *, port: int | None = None) -> list[str]:
    """``python -m torch.distributed.run`` on this machine (127.0.0.1) running :mod:`mm_core.training`."""
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}", "--nnodes=1"]
    cmd += ["--master_addr=127.0.0.1", f"--master_port={port or free_port()}"]
    return [*cmd, "-m", "mm_core.training", str(config_path)]


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def save_result(cfg: BuildConfig, result: Any) -> Path:
    """Rank 0 of a data-parallel run: the trained model and its summary, for the launching process."""
    from mm_core.training.loop import state_dir

    target = state_dir(cfg) / RESULT_DIR
    with atomic_dir(target) as tmp:
        result.stack.save_pretrained(tmp)
        info = {f.name: getattr(result, f.name) for f in fields(result) if f.name != "stack"}
        (Path(tmp) / "result.json").write_text(json.dumps({**info, "weights_id": result.stack.weights_id()}))
    return target
