"""Train, measure and write the build's model directory in one atomic step.

``model/`` then holds ``config.json`` + ``model.safetensors`` (the trained
:class:`FusionStack`), ``provenance.json`` (trained flag, weights hash, file
sha256, training summary, evaluation figures: what the dataset manifest
records), ``evaluation.json`` (every figure, chance levels, the gate's rows),
``training.json`` (loss per epoch) and ``stats/<modality>.json`` (normalisation
statistics fitted on the training split, also stored as buffers in the weights).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from mm_core.atomic import atomic_dir
from mm_core.config import BuildConfig
from mm_core.export.manifest import sha256_file

OBJECTIVE = "multi-view symmetric InfoNCE (single-modality pairs + random modality subsets), multi-positive"


def clean(obj: Any) -> Any:
    """JSON-safe copy: NaN/inf become None (the manifest stays strict JSON)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): clean(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [clean(v) for v in obj]
    return obj


def publish_model(cfg: BuildConfig, *, progress: bool = False) -> dict[str, Any]:
    """Train (or resume), evaluate against the untrained model and the baseline, write ``model/``."""
    from mm_core.pipeline import BuildPaths
    from mm_core.training import BuildData, evaluate_build, gate, initial_stack, run_training

    paths = BuildPaths.of(cfg)
    data = BuildData(cfg)
    result = run_training(cfg, data, progress=progress)
    stack = result.stack.eval()
    untrained = initial_stack(cfg, data).eval()
    evaluation = None
    if cfg.evaluation.enabled:
        evaluation = evaluate_build(cfg, data, {"trained": stack, "untrained": untrained, "baseline": None})
        passed, rows = gate(evaluation, cfg.evaluation, trained=True)
        evaluation["gate"] = {"passed": passed, "rows": rows}
    history = result.history
    info: dict[str, Any] = {
        "trained": True,
        "checkpoint": str(paths.model_dir),
        "weights_id": stack.weights_id(),
        "initial_weights_id": untrained.weights_id(),
        "trainable_encoders": stack.trainable,
        "training": {
            "objective": OBJECTIVE,
            "epochs": result.epochs,
            "resumed_from_epoch": result.resumed_from,
            "steps": result.steps,
            "final_loss": history[-1]["loss"] if history else None,
            "first_loss": history[0]["loss"] if history else None,
            "train_samples": result.train_samples,
            "eval_samples": data.count("eval"),
            "seconds": round(result.seconds, 2),
            "device": result.device,
            "precision": result.precision,
            "processes": result.world_size,
        },
    }
    if evaluation is not None:
        info["evaluation"] = {
            "models": evaluation["models"],
            "chance": evaluation["chance"],
            "passed": evaluation["gate"]["passed"],
        }
    with atomic_dir(paths.model_dir) as tmp:
        tmp = Path(tmp)
        stack.save_pretrained(tmp)
        info["checkpoint_sha256"] = sha256_file(tmp / "model.safetensors")
        for m, stats in getattr(untrained, "fitted_stats", {}).items():
            stats.save(tmp / "stats" / f"{m}.json")
        (tmp / "training.json").write_text(json.dumps(clean(history), indent=1))
        if evaluation is not None:
            (tmp / "evaluation.json").write_text(json.dumps(clean(evaluation), indent=2))
        (tmp / "provenance.json").write_text(json.dumps(clean(info), indent=2, sort_keys=True))
    return {**clean(info), "path": str(paths.model_dir)}


def evaluate_untrained(cfg: BuildConfig, model: Any) -> dict[str, Any]:
    """Figures of an untrained (or given-checkpoint) model and the baseline, with the gate's verdict."""
    from mm_core.training import BuildData, evaluate_build, gate

    evaluation = evaluate_build(cfg, BuildData(cfg), {"untrained": model, "baseline": None})
    passed, rows = gate(evaluation, cfg.evaluation, trained=False)
    evaluation["gate"] = {"passed": passed, "rows": rows}
    return evaluation
