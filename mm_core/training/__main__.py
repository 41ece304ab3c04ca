"""Data-parallel training entry point: ``torchrun --nproc_per_node=N -m mm_core.training CONFIG``.

CONFIG is a build YAML, or the JSON that ``run_training`` writes. Each process
joins the process group (gloo on CPU, NCCL on GPU, rendezvous from torchrun's
environment), trains its share, and rank 0 saves the result for the launcher.
Every rank writes ``rank<r>.json`` (weights hash and losses) into ``--report``
(default: ``<storage>/training/ddp-ranks``), so the launcher and tests can
check that the ranks agree.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import torch
import torch.distributed as dist


def _load(path: Path):
    from mm_core.config import config_from_dict, load_config

    if path.suffix == ".json":
        data = json.loads(path.read_text())
        return config_from_dict(data, base_dir=data.get("base_dir", path.parent))
    return load_config(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mm_core.training", description=__doc__)
    parser.add_argument("config", type=Path)
    parser.add_argument("--report", type=Path, default=None, help="folder for one rank<r>.json per process")
    parser.add_argument("--stop-after-epoch", type=int, default=None)
    args = parser.parse_args(argv)
    from mm_core.training.build import RANKS_DIR, save_result
    from mm_core.training.loop import state_dir, train_fusion

    cfg = _load(args.config)
    use_cuda = torch.cuda.is_available() and cfg.runtime.device in ("auto", "cuda")
    if use_cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    dist.init_process_group("nccl" if use_cuda else "gloo")
    try:
        result = train_fusion(cfg, stop_after_epoch=args.stop_after_epoch)
        rank = dist.get_rank()
        report_dir = args.report or state_dir(cfg) / RANKS_DIR
        report_dir.mkdir(parents=True, exist_ok=True)
        report = {"rank": rank, "weights_id": result.stack.weights_id(), "history": result.history}
        (report_dir / f"rank{rank}.json").write_text(json.dumps(report))
        if rank == 0:
            save_result(cfg, result)
        dist.barrier()
    finally:
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
