"""Data-parallel training: ``torchrun`` with two CPU processes on gloo (127.0.0.1), as on a multi-GPU machine."""

from __future__ import annotations

import json

import pytest

from mm_core.training import BuildData, FusionStack, run_training
from mm_core.training.build import RANKS_DIR, RESULT_DIR
from mm_core.training.loop import state_dir
from tests.dagster_helpers import sensor_text_build
from tests.test_train import _prepare


@pytest.fixture(scope="module")
def build(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ddp")
    cfg = sensor_text_build(
        tmp, "ddp", training={"enabled": True, "epochs": 4, "batch_size": 8, "lr": 0.002, "num_processes": 2}
    )
    _prepare(cfg)
    return cfg, tmp


def test_two_processes_agree_and_the_loss_goes_down(build):
    """``training.num_processes: 2``: run_training launches torchrun; both ranks end with the same weights."""
    cfg, _ = build
    result = run_training(cfg, BuildData(cfg))
    ranks = [json.loads((state_dir(cfg) / RANKS_DIR / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0]["weights_id"] == ranks[1]["weights_id"] == result.stack.weights_id()  # replicas identical
    assert ranks[0]["history"] == ranks[1]["history"] == result.history  # losses averaged over both ranks
    losses = [h["loss"] for h in result.history]
    assert len(losses) == 4 and losses[-1] < losses[0]
    assert result.world_size == 2 and result.epochs == 4 and result.stack.trainable == ["sensor"]
    saved = FusionStack.from_pretrained(state_dir(cfg) / RESULT_DIR)
    assert saved.weights_id() == result.stack.weights_id()
