"""The training loop: AdamW + warmup/cosine, AMP, gradient accumulation and checkpointing, DDP.

``train_fusion(cfg)`` trains the build's :class:`FusionStack` on the cached
encodings of the training split and returns it. It runs the same in one
process and under ``torchrun`` (``torch.distributed`` initialised: gloo on CPU,
NCCL on GPU); each rank takes its slice of every global batch and DDP averages
the gradients. After every epoch the full state is saved atomically, and a new
call with ``training.resume`` continues from it (same data and settings only).
On CPU a fixed seed gives the same weights bit for bit.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from mm_core.config import BuildConfig
from mm_core.device import autocast, resolve_device, resolve_precision
from mm_core.training.data import BuildData
from mm_core.training.model import FusionStack
from mm_core.training.objective import MultiViewInfoNCE
from mm_core.training.state import TrainerState, load_state, read_trainer_state, rng_state, save_state

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    """The trained model and how it got there."""

    stack: FusionStack
    history: list[dict[str, float]] = field(default_factory=list)
    epochs: int = 0
    resumed_from: int = 0
    seconds: float = 0.0
    train_samples: int = 0
    device: str = "cpu"
    precision: str = "fp32"
    world_size: int = 1
    steps: int = 0


def state_dir(cfg: BuildConfig) -> Path:
    """Where the per-epoch training state and the data-parallel result live."""
    from mm_core.pipeline import BuildPaths

    return BuildPaths.of(cfg).root / "training"


def distributed() -> tuple[int, int]:
    """``(rank, world_size)``: (0, 1) unless ``torch.distributed`` is initialised."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def train_seed(cfg: BuildConfig) -> int:
    return int(cfg.training.seed if cfg.training.seed is not None else cfg.seed)


def _device(cfg: BuildConfig) -> torch.device:
    dev = resolve_device(cfg.runtime.device)
    if dev.type == "cuda" and dev.index is None and dist.is_available() and dist.is_initialized():
        dev = torch.device("cuda", torch.cuda.current_device())
    return dev


def _schedule(total_steps: int, warmup_fraction: float) -> Callable[[int], float]:
    warmup = max(1, int(total_steps * warmup_fraction))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total_steps - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))

    return factor


def _param_groups(objective: MultiViewInfoNCE, cfg: BuildConfig) -> list[dict[str, Any]]:
    t = cfg.training
    stack = objective.stack
    no_decay = [objective.log_scale]
    fusion_decay, fusion_plain = [], []
    for name, p in stack.fusion.named_parameters():
        (fusion_plain if p.ndim < 2 or "norm" in name else fusion_decay).append(p)
    groups = [
        {"params": fusion_decay, "lr": t.lr, "weight_decay": t.weight_decay},
        {"params": fusion_plain + no_decay, "lr": t.lr, "weight_decay": 0.0},
    ]
    encoder_params = [p for p in stack.encoders.parameters() if p.requires_grad]
    if encoder_params:
        groups.append({"params": encoder_params, "lr": t.encoder_lr or t.lr, "weight_decay": t.weight_decay})
    return [g for g in groups if g["params"]]


def _mean_across_ranks(losses: list[torch.Tensor], world: int) -> float:
    """Mean micro-batch loss of the epoch over every rank (one device sync per epoch)."""
    values = torch.stack(losses).double() if losses else torch.zeros(0, dtype=torch.float64)
    total = torch.stack([values.sum(), values.new_tensor(float(len(losses)))])
    if world > 1:
        dist.all_reduce(total)
    return float(total[0] / total[1].clamp(min=1))


def _step(
    model: torch.nn.Module,
    objective: MultiViewInfoNCE,
    data: BuildData,
    group: list[tuple[str, list[str]]],
    generator: torch.Generator,
    dev: torch.device,
    precision: str,
    scaler: torch.amp.GradScaler,
) -> list[torch.Tensor]:
    """Forward and backward of the micro-batches of one optimizer step (DDP syncs on the last one)."""
    losses = []
    for j, (shard_id, ids) in enumerate(group):
        batch = data.load(shard_id).batch(ids, objective.stack.trainable).to(dev)
        last = j == len(group) - 1
        sync = contextlib.nullcontext() if last or not hasattr(model, "no_sync") else model.no_sync()
        with sync:
            with autocast(dev, precision):
                loss, _ = model(batch, generator)
            scaler.scale(loss / len(group)).backward()
        losses.append(loss.detach())
    return losses


def _update(objective: torch.nn.Module, optimizer, scheduler, scaler: torch.amp.GradScaler, max_norm: float) -> None:
    """Unscale, clip, step (skipped by the scaler on fp16 overflow), advance the schedule."""
    scaler.unscale_(optimizer)
    if max_norm > 0:
        torch.nn.utils.clip_grad_norm_(objective.parameters(), max_norm)
    scaler.step(optimizer)
    scaler.update()
    optimizer.zero_grad(set_to_none=True)
    scheduler.step()


def _gather_rng(world: int) -> list[dict[str, torch.Tensor]]:
    mine = rng_state()
    if world == 1:
        return [mine]
    out: list[Any] = [None] * world
    dist.all_gather_object(out, {k: v.cpu() for k, v in mine.items()})
    return out


def train_fusion(
    cfg: BuildConfig,
    *,
    data: BuildData | None = None,
    stop_after_epoch: int | None = None,
    progress: bool = False,
    on_epoch: Callable[[int, float], None] | None = None,
) -> TrainResult:
    """Train the fusion model (and the trainable encoders) of a build on its cached encodings.

    ``stop_after_epoch`` ends the run after that many epochs are done in total
    (the saved state is what a killed run would leave; tests use it).
    """
    from mm_core.training.build import initial_stack

    t = cfg.training
    rank, world = distributed()
    seed = train_seed(cfg)
    dev = _device(cfg)
    precision = resolve_precision(t.precision, dev)
    data = data or BuildData(cfg)
    stack = initial_stack(cfg, data)
    if t.gradient_checkpointing:
        stack.set_gradient_checkpointing(True)
    objective = MultiViewInfoNCE(
        stack,
        temperature=t.temperature,
        learn_temperature=t.learn_temperature,
        modality_dropout=t.modality_dropout,
        pair_weight=t.pair_weight,
        subset_weight=t.subset_weight,
    ).to(dev)
    optimizer = torch.optim.AdamW(_param_groups(objective, cfg), lr=t.lr)
    micro_per_epoch = len(data.plan(0, seed, t.batch_size, world, rank))
    steps_per_epoch = math.ceil(micro_per_epoch / t.grad_accum)
    if steps_per_epoch == 0:
        raise ValueError(
            f"no training batch: {data.count('train')} training samples; a batch needs at least {2 * world}"
        )
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _schedule(steps_per_epoch * t.epochs, t.warmup_fraction))
    scaler = torch.amp.GradScaler(dev.type, enabled=precision == "fp16" and dev.type == "cuda")
    folder = state_dir(cfg)
    fingerprint = f"{cfg.fusion_version()}-{data.fingerprint()}"
    trainer = TrainerState(fingerprint=fingerprint, world_size=world)
    saved = read_trainer_state(folder) if t.resume else None
    if saved is not None and saved.fingerprint == fingerprint and saved.epoch <= t.epochs:
        trainer = load_state(
            folder, model=objective, optimizer=optimizer, scheduler=scheduler, scaler=scaler, rank=rank
        )
        log.info("resuming fusion training after epoch %d", trainer.epoch)
    resumed_from = trainer.epoch
    model: torch.nn.Module = objective
    if world > 1:
        ids = [dev.index] if dev.type == "cuda" else None
        model = torch.nn.parallel.DistributedDataParallel(objective, device_ids=ids, find_unused_parameters=True)
    t0 = time.perf_counter()
    steps = 0
    for epoch in range(trainer.epoch, t.epochs):
        objective.train()
        plan = data.plan(epoch, seed, t.batch_size, world, rank)
        generator = torch.Generator().manual_seed(int(np.random.SeedSequence([seed, epoch, rank]).generate_state(1)[0]))
        losses = []
        for i in range(0, len(plan), t.grad_accum):
            losses += _step(model, objective, data, plan[i : i + t.grad_accum], generator, dev, precision, scaler)
            _update(objective, optimizer, scheduler, scaler, t.max_grad_norm)
            steps += 1
        mean_loss = _mean_across_ranks(losses, world)
        trainer.epoch = epoch + 1
        trainer.history.append({"epoch": epoch + 1, "loss": mean_loss, "lr": scheduler.get_last_lr()[0]})
        rngs = _gather_rng(world)
        if rank == 0:
            save_state(
                folder,
                model=objective,
                optimizer=optimizer,
                scheduler=scheduler,
                scaler=scaler,
                trainer=trainer,
                rng_states=rngs,
            )
        if world > 1:
            dist.barrier()
        if progress and rank == 0:
            print(f"epoch {epoch + 1}/{t.epochs}  loss {mean_loss:.4f}", flush=True)
        if on_epoch is not None:
            on_epoch(epoch + 1, mean_loss)
        if stop_after_epoch is not None and trainer.epoch >= stop_after_epoch:
            break
    stack.eval()
    return TrainResult(
        stack=stack,
        history=trainer.history,
        epochs=trainer.epoch,
        resumed_from=resumed_from,
        seconds=time.perf_counter() - t0,
        train_samples=data.count("train"),
        device=str(dev),
        precision=precision,
        world_size=world,
        steps=steps,
    )
