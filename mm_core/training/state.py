"""Resumable training state: model, optimizer, scheduler, scaler and RNG, saved per epoch atomically.

Everything is safetensors + JSON (no pickle): optimizer tensors are flattened
to ``state.<param>.<name>`` keys, scalars and param groups go to JSON, and each
process's RNG state is its own tensor. The directory is replaced as a whole
(``atomic_dir``), so a run killed while saving leaves the previous epoch's
state intact, and a resumed run continues bit for bit where it stopped.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from mm_core.atomic import atomic_dir

STATE_DIR = "checkpoint"


@dataclass
class TrainerState:
    """Where a run stands: epochs done, losses, and what it was trained on."""

    epoch: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    fingerprint: str = ""
    world_size: int = 1


def _flatten_optimizer(state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors, scalars = {}, {}
    for pid, values in state["state"].items():
        for name, value in values.items():
            if torch.is_tensor(value):
                tensors[f"state.{pid}.{name}"] = value.detach().cpu().contiguous()
            else:
                scalars[f"{pid}.{name}"] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        _, pid, name = key.split(".", 2)
        state.setdefault(int(pid), {})[name] = value
    for key, value in meta["scalars"].items():
        pid, name = key.split(".", 1)
        state.setdefault(int(pid), {})[name] = value
    return {"state": state, "param_groups": meta["param_groups"]}


def rng_state() -> dict[str, torch.Tensor]:
    """This process's torch RNG state (CPU, and the current CUDA device when there is one)."""
    out = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        out["cuda"] = torch.cuda.get_rng_state()
    return out


def set_rng_state(state: dict[str, torch.Tensor]) -> None:
    torch.set_rng_state(state["cpu"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def save_state(
    directory: str | Path,
    *,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    scaler: torch.amp.GradScaler,
    trainer: TrainerState,
    rng_states: list[dict[str, torch.Tensor]],
) -> Path:
    """Write the whole state as ``directory/checkpoint`` (replaced atomically)."""
    target = Path(directory) / STATE_DIR
    opt_tensors, opt_meta = _flatten_optimizer(optimizer.state_dict())
    with atomic_dir(target) as tmp:
        save_file(
            {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, str(tmp / "model.safetensors")
        )
        save_file(opt_tensors, str(tmp / "optimizer.safetensors"))
        for rank, rng in enumerate(rng_states):
            save_file({k: v.cpu() for k, v in rng.items()}, str(tmp / f"rng-{rank}.safetensors"))
        meta = {
            "trainer": trainer.__dict__,
            "optimizer": opt_meta,
            "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict(),
        }
        (tmp / "state.json").write_text(json.dumps(meta, indent=1, default=float))
    return target


def read_trainer_state(directory: str | Path) -> TrainerState | None:
    """The saved :class:`TrainerState`, or None when there is no complete checkpoint."""
    path = Path(directory) / STATE_DIR / "state.json"
    if not path.is_file():
        return None
    return TrainerState(**json.loads(path.read_text())["trainer"])


def load_state(
    directory: str | Path,
    *,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    scaler: torch.amp.GradScaler,
    rank: int = 0,
) -> TrainerState:
    """Restore everything saved by :func:`save_state` into live objects; returns the trainer state."""
    src = Path(directory) / STATE_DIR
    meta = json.loads((src / "state.json").read_text())
    device = next(model.parameters()).device
    model.load_state_dict(load_file(str(src / "model.safetensors"), device=str(device)))
    optimizer.load_state_dict(_unflatten_optimizer(load_file(str(src / "optimizer.safetensors")), meta["optimizer"]))
    scheduler.load_state_dict(meta["scheduler"])
    if meta["scaler"]:
        scaler.load_state_dict(meta["scaler"])
    rng_file = src / f"rng-{rank}.safetensors"
    if rng_file.is_file():
        set_rng_state(load_file(str(rng_file)))
    return TrainerState(**meta["trainer"])
