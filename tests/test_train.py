"""Fusion training (SPEC M8): cached trainable inputs, reproducibility, resume, checkpoints, and the asset path."""

from __future__ import annotations

import dataclasses
import json
import shutil

import dagster as dg
import numpy as np
import pytest
import torch

from mm_core.config import load_config
from mm_core.encoders.sensor_net import SensorEncoder
from mm_core.encodings import load_encodings
from mm_core.export.manifest import sha256_file
from mm_core.fuse import fuse_encodings, load_fused, load_fused_pooled
from mm_core.normalization import ChannelStats
from mm_core.pipeline import BuildPaths, encode_shard, filter_shard, ingest, load_shard_encodings, score_shard
from mm_core.training import BuildData, FusionStack, train_fusion
from mm_core.training.inputs import PaddedTensors, SensorWindows
from mm_core.training.loop import state_dir
from tests.dagster_helpers import sensor_text_build, small_build

TRAINING = {"enabled": True, "epochs": 3, "batch_size": 12, "lr": 0.002}


def _prepare(cfg) -> None:
    for sid in ingest(cfg):
        score_shard(cfg, sid)
        filter_shard(cfg, sid)
        for m in cfg.modalities:
            encode_shard(cfg, sid, m)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def build(tmp_path_factory):
    """A 48-sample demo build (sensor + text) encoded through the library pipeline."""
    tmp = tmp_path_factory.mktemp("train")
    cfg = sensor_text_build(
        tmp,
        "train",
        training=TRAINING,
        evaluation={"holdout": {"fraction": 0.25, "key": "sample_id"}, "group_by": "motion"},
    )
    _prepare(cfg)
    return cfg


def _with(cfg, **training):
    return dataclasses.replace(cfg, training=dataclasses.replace(cfg.training, **training))


def test_sensor_windows_are_cached_and_batch_like_the_encoder():
    enc = SensorEncoder(in_channels=3, target_length=32, max_windows=3).eval()
    rng = np.random.default_rng(0)
    items = [rng.normal(size=(n, 3)).astype(np.float32) for n in (10, 32, 70, 5)]
    codec = SensorWindows()
    packed = codec.pack(enc, items)
    assert packed["windows"].shape == (4, 3, 32, 3) and packed["lengths"][2].tolist() == [32, 32, 6]
    rows = torch.tensor([2, 0, 3])
    with torch.no_grad():
        feats, mask = enc(**codec.collate(packed, rows))
    ref, ref_mask = enc.encode([items[i] for i in rows.tolist()], batch_size=2, precision="fp32")
    assert torch.equal(mask[:, : ref_mask.shape[1]], ref_mask)
    torch.testing.assert_close(feats[:, : ref.shape[1]] * ref_mask[..., None], ref, atol=1e-5, rtol=1e-5)
    series = list(codec.series(packed, [2]))
    assert [s.shape[0] for s in series] == [32, 32, 6]
    assert np.array_equal(np.concatenate(series), items[2])


def test_padded_inputs_of_a_transformers_encoder_batch_like_the_encoder():
    from mm_core.encoding import get_encoder
    from mm_core.modalities.audio import DecodedAudio

    enc = get_encoder("audio")  # offline: the random small Wav2Vec2
    t = np.arange(16000) / 16000
    items = [
        DecodedAudio(np.sin(2 * np.pi * f * t[:n])[None].astype(np.float32), 16000)
        for f, n in ((220, 4000), (440, 12000), (330, 800))
    ]
    codec = PaddedTensors()
    packed = codec.pack(enc, items)
    rows = torch.tensor([1, 2])
    with torch.no_grad():
        feats, mask = enc.eval()(**codec.collate(packed, rows))
    ref, ref_mask = enc.encode([items[1], items[2]], batch_size=2, precision="fp32")
    assert torch.equal(mask, ref_mask)
    torch.testing.assert_close(feats * mask[..., None], ref, atol=1e-4, rtol=1e-4)


def test_encodings_cache_inputs_and_content_keys(build):
    paths = BuildPaths.of(build)
    sid = paths.list_shards()[0]
    sensor = load_encodings(paths.encodings("sensor", sid))
    text = load_encodings(paths.encodings("text", sid))
    assert sensor.codec == "sensor_windows" and sensor.inputs["windows"].shape[0] == len(sensor.sample_ids)
    assert not text.has_inputs and text.inputs == {}  # pretrained MiniLM stays frozen: features only
    assert len(text.content) == len(text.sample_ids) and len(set(text.content)) <= len(text.content)


def test_fixed_seed_is_bitwise_reproducible_and_resume_equals_an_uninterrupted_run(build):
    fresh = _with(build, resume=False)
    a = train_fusion(fresh)
    assert a.epochs == 3 and a.steps > 0 and a.history[-1]["loss"] < a.history[0]["loss"]
    b = train_fusion(fresh)
    assert a.stack.weights_id() == b.stack.weights_id()  # same seed, same data: same bits on CPU
    shutil.rmtree(state_dir(build), ignore_errors=True)
    first = train_fusion(build, stop_after_epoch=1)  # what a run killed after epoch 1 leaves
    assert first.epochs == 1 and (state_dir(build) / "checkpoint" / "state.json").is_file()
    resumed = train_fusion(build)
    assert resumed.resumed_from == 1 and resumed.epochs == 3
    assert resumed.stack.weights_id() == a.stack.weights_id()
    assert [h["loss"] for h in resumed.history] == [h["loss"] for h in a.history]


def test_sensor_statistics_come_from_the_training_split_and_travel_with_the_checkpoint(build, tmp_path):
    data = BuildData(build)
    result = train_fusion(_with(build, resume=False, epochs=1), data=data)
    sensor = result.stack.encoders["sensor"]
    train_series = [s for enc, rows in data.inputs_for_stats("sensor") for s in SensorWindows.series(enc.inputs, rows)]
    shift, scale = ChannelStats.fit(train_series).affine()
    np.testing.assert_allclose(sensor.norm_shift.numpy(), shift, rtol=1e-6)
    np.testing.assert_allclose(sensor.norm_scale.numpy(), scale, rtol=1e-6)
    everything = [
        s
        for enc, _ in data.inputs_for_stats("sensor")
        for s in SensorWindows.series(enc.inputs, range(len(enc.sample_ids)))
    ]
    assert not np.allclose(ChannelStats.fit(everything).affine()[0], shift)  # eval windows left out

    result.stack.save_pretrained(tmp_path / "model")
    loaded = FusionStack.from_pretrained(tmp_path / "model")
    assert loaded.weights_id() == result.stack.weights_id() and loaded.trainable == ["sensor"]
    sid = BuildPaths.of(build).list_shards()[0]
    encodings = load_shard_encodings(build, sid)
    ids = encodings["sensor"].sample_ids
    v1, p1 = fuse_encodings(result.stack, ids, encodings, batch_size=7, device="cpu")
    v2, p2 = fuse_encodings(loaded, ids, encodings, batch_size=64, device="cpu")
    np.testing.assert_allclose(v1, v2, atol=1e-5)
    assert np.array_equal(p1, p2) and p1[:, 0].all()  # sorted modalities: sensor first, all present


def test_gradient_checkpointing_changes_memory_not_results_and_accumulation_steps(build):
    plain = train_fusion(_with(build, resume=False, epochs=1))
    ckpt = train_fusion(_with(build, resume=False, epochs=1, gradient_checkpointing=True))
    for (name, p), q in zip(plain.stack.state_dict().items(), ckpt.stack.state_dict().values(), strict=True):
        torch.testing.assert_close(p, q, atol=1e-6, rtol=1e-5, msg=name)
    accum = train_fusion(_with(build, resume=False, epochs=1, batch_size=6, grad_accum=2))
    micro = len(BuildData(build).plan(0, 0, 6, 1, 0))
    assert accum.steps == -(-micro // 2) < micro


def _with_model_checks(build_definitions):
    """Definitions with the retrieval check, whether or not definitions.py wires it already."""
    from mm_assets.model_checks import build_model_checks

    def make(cfg):
        defs = build_definitions(cfg)
        keys = {k.name for c in defs.asset_checks or [] for k in c.check_keys}
        if "retrieval_quality" in keys:
            return defs
        return dg.Definitions.merge(defs, dg.Definitions(asset_checks=build_model_checks(cfg)))

    return make


def test_build_all_trains_evaluates_and_gates_the_fusion_model(tmp_path, monkeypatch):
    """CI: training + evaluation as Dagster assets, the blocking retrieval check, trained=True in the manifest."""
    import mm_assets.build as mb
    from mm_assets.build import build_all

    monkeypatch.delenv("MM_STORAGE_ROOT", raising=False)
    monkeypatch.setattr(mb, "build_definitions", _with_model_checks(mb.build_definitions))
    _, cfg = small_build(
        tmp_path,
        name="trained",
        sources=[{"layout": "demo", "n_samples": 96, "seed": 0, "missing": {"sensor": 0.15, "text": 0.0}}],
        shard_size=48,
        modalities={"sensor": {}, "text": {}},
        training={"enabled": True, "epochs": 12, "batch_size": 24, "lr": 0.002},
        evaluation={
            "holdout": {"fraction": 0.25, "key": "sample_id"},
            "retrieval": [["sensor", "text"]],
            "group_by": "motion",
            "probe_label": "motion",
        },
    )
    (tmp_path / "home").mkdir()
    with dg.instance_for_test(temp_dir=str(tmp_path / "home")) as instance:
        result = build_all(cfg, instance=instance, progress=False)
        assert result["ok"], result
        key = dg.AssetCheckKey(dg.AssetKey("fusion_model"), "retrieval_quality")
        history = instance.event_log_storage.get_asset_check_execution_history(key, limit=5)
        assert [r.event.dagster_event.event_specific_data.passed for r in history] == [True]
        meta = instance.get_latest_materialization_event(dg.AssetKey("fusion_model")).asset_materialization.metadata
    paths = BuildPaths.of(cfg)
    manifest = json.loads((paths.export_dir / "manifest.json").read_text())
    fusion = manifest["provenance"]["fusion"]
    assert manifest["trained"] is True and manifest["notes"] == "" and fusion["trained"] is True
    assert (
        fusion["weights_id"]
        == FusionStack.from_pretrained(paths.model_dir).weights_id()
        != fusion["initial_weights_id"]
    )
    assert fusion["checkpoint_sha256"] == sha256_file(paths.model_dir / "model.safetensors")
    assert fusion["trainable_encoders"] == ["sensor"] and (paths.model_dir / "stats" / "sensor.json").is_file()
    figures = fusion["evaluation"]["models"]
    r1 = "sensor->text/recall@1"
    assert figures["trained"][r1] > figures["untrained"][r1]
    assert figures["trained"][r1] >= 1.5 * fusion["evaluation"]["chance"][r1]
    assert meta["trained"].value is True and meta[f"eval/{r1}"].value == pytest.approx(figures["trained"][r1])
    assert fusion["training"]["final_loss"] < fusion["training"]["first_loss"]
    shard = result["shards"][0]
    trained_pooled = load_fused_pooled(paths.fused(shard))["sensor"]  # the trained encoder's vectors
    cached = load_encodings(paths.encodings("sensor", shard))
    ids = load_fused(paths.fused(shard))[0]
    assert trained_pooled.shape == (len(ids), 128)
    rows = [ids.index(s) for s in cached.sample_ids]
    assert not np.allclose(trained_pooled[rows], cached.pooled.numpy(), atol=1e-3)


def test_config_sections_validate_and_version_the_model(tmp_path):
    from mm_core.errors import ConfigError

    def cfg_with(**extra):
        path = tmp_path / "c.yaml"
        path.write_text(json.dumps({"sources": [{"layout": "demo"}], "modalities": {"text": {}}, **extra}))
        return load_config(path)

    base = cfg_with()
    assert base.training.enabled is False and not base.evaluation.enabled
    trained = cfg_with(training={"enabled": True})
    assert trained.fusion_version() != base.fusion_version()
    assert cfg_with(training={"resume": False}).fusion_version() == base.fusion_version()
    held = cfg_with(evaluation={"holdout": {"label": "speaker", "values": ["george"]}})
    assert held.fusion_version() != base.fusion_version()  # the holdout decides the training data
    floors = cfg_with(
        evaluation={"holdout": {"label": "speaker", "values": ["george"]}, "floors": {"a->b/recall@1": 0.5}}
    )
    assert floors.fusion_version() == held.fusion_version() and floors.evaluation_version() != held.evaluation_version()
    listed = cfg_with(training={"train_encoders": ["text"]})
    assert listed.encoder_version("text") != base.encoder_version("text")
    for bad in ({"training": {"epochs": 0}}, {"training": {"nope": 1}}, {"evaluation": {"holdout": {"label": "x"}}}):
        with pytest.raises(ConfigError):
            cfg_with(**bad)
