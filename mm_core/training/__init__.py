"""Training of the build's fusion model (SPEC M8) and its held-out evaluation (M13).

- :func:`train_fusion` (``loop.py``): self-supervised multi-view InfoNCE on the
  cached encodings; AMP, gradient accumulation and checkpointing, per-epoch
  resumable state, DDP under ``torchrun -m mm_core.training``.
- :class:`FusionStack` (``model.py``): trainable encoders + fusion model, saved as
  safetensors + config.
- :func:`evaluate_build` / :func:`gate` (``evaluation.py``): trained vs untrained vs
  baseline on the held-out split; the rule of the retrieval asset check.
"""

from mm_core.training.build import initial_stack, run_training, trainable_modalities
from mm_core.training.data import BuildData
from mm_core.training.evaluation import evaluate_build, gate, table_md
from mm_core.training.loop import TrainResult, train_fusion
from mm_core.training.model import FusionStack

__all__ = [
    "BuildData",
    "FusionStack",
    "TrainResult",
    "evaluate_build",
    "gate",
    "initial_stack",
    "run_training",
    "table_md",
    "train_fusion",
    "trainable_modalities",
]
