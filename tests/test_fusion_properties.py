"""Properties every fusion strategy x pooling must have (SPEC M4-M7).

Inputs are random encoder-like features generated here: four modalities with
different widths and lengths, ragged padding masks. Tiny dims keep it fast.
"""

from __future__ import annotations

import itertools
import json

import pytest
import torch

from mm_core.fusion import (
    MISSING_MODES,
    POOLINGS,
    STRATEGIES,
    AttentionBlock,
    FusionModel,
    build_fusion_model,
    modality_dropout,
)

DIMS = {"vision": 24, "audio": 20, "text": 16, "imu": 12}
LENGTHS = {"vision": 5, "audio": 7, "text": 4, "imu": 3}
COMBOS = list(itertools.product(STRATEGIES, POOLINGS))
ATOL = 1e-5


def build(strategy: str, pooling: str, **extra) -> FusionModel:
    torch.manual_seed(0)
    extra.setdefault("dropout", 0.0)
    dims = {"shared_dim": 32, "output_dim": 16, "num_layers": 2, "num_heads": 2}
    return build_fusion_model(DIMS, strategy=strategy, pooling=pooling, **dims, **extra).eval()


def make_batch(batch: int, seed: int, lengths: dict[str, int] = LENGTHS):
    """Random features and ragged masks (every sample keeps >= 1 real token per modality)."""
    g = torch.Generator().manual_seed(seed)
    features = {m: torch.randn(batch, lengths[m], d, generator=g) for m, d in DIMS.items()}
    masks = {}
    for m in DIMS:
        valid = torch.randint(1, lengths[m] + 1, (batch,), generator=g)
        masks[m] = torch.arange(lengths[m])[None] < valid[:, None]
    return features, masks


def scramble_masked(features, masks, fill: float | None = None, seed: int = 99):
    """Copy of ``features`` with every masked position overwritten (large noise, or ``fill``)."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for m, x in features.items():
        noise = torch.full_like(x, fill) if fill is not None else torch.randn(x.shape, generator=g) * 1e3
        out[m] = torch.where(masks[m][..., None], x, noise)
    return out


@pytest.mark.parametrize(("strategy", "pooling"), COMBOS)
@pytest.mark.parametrize("missing", MISSING_MODES)
def test_masked_padding_changes_nothing(strategy, pooling, missing):
    model = build(strategy, pooling, missing=missing)
    features, masks = make_batch(4, seed=1)
    assert not all(mk.all() for mk in masks.values()), "the batch must have padding"
    with torch.no_grad():
        ref = model(features, masks)
        noisy = model(scramble_masked(features, masks), masks)
        nans = model(scramble_masked(features, masks, fill=float("nan")), masks)
    torch.testing.assert_close(noisy, ref, atol=ATOL, rtol=0)
    torch.testing.assert_close(nans, ref, atol=ATOL, rtol=0)


@pytest.mark.parametrize(("strategy", "pooling"), COMBOS)
def test_sample_independent_of_batch_neighbours(strategy, pooling):
    model = build(strategy, pooling)
    features, masks = make_batch(4, seed=2, lengths={m: n + 3 for m, n in LENGTHS.items()})
    with torch.no_grad():
        in_batch = model(features, masks)[0]
        # Alone, trimmed to its own length: a different padding length and no neighbours.
        alone_f = {m: x[:1, : int(masks[m][0].sum())] for m, x in features.items()}
        alone = model(alone_f)[0]
        other_f, other_m = make_batch(3, seed=3, lengths={m: n + 6 for m, n in LENGTHS.items()})
        mixed_f = {m: torch.cat([torch.nn.functional.pad(features[m][:1], (0, 0, 0, 3)), other_f[m]]) for m in DIMS}
        mixed_m = {m: torch.cat([torch.nn.functional.pad(masks[m][:1], (0, 3)), other_m[m]]) for m in DIMS}
        mixed = model(mixed_f, mixed_m)[0]
    torch.testing.assert_close(alone, in_batch, atol=ATOL, rtol=0)
    torch.testing.assert_close(mixed, in_batch, atol=ATOL, rtol=0)


@pytest.mark.parametrize(("strategy", "pooling"), COMBOS)
@pytest.mark.parametrize("missing", MISSING_MODES)
def test_missing_modality_features_are_ignored_per_sample(strategy, pooling, missing):
    model = build(strategy, pooling, missing=missing)
    features, masks = make_batch(2, seed=4)
    present = {"audio": torch.tensor([False, True])}
    changed = dict(features)
    changed["audio"] = torch.randn_like(features["audio"]) * 10
    with torch.no_grad():
        ref = model(features, masks, present)
        out = model(changed, masks, present)
        # Sample 0 without the audio key at all: same as "audio missing for it".
        others = [m for m in DIMS if m != "audio"]
        no_key = model({m: features[m][:1] for m in others}, {m: masks[m][:1] for m in others})
    torch.testing.assert_close(out[0], ref[0], atol=ATOL, rtol=0)
    assert (out[1] - ref[1]).abs().max() > 1e-4, "a present modality's features must matter"
    torch.testing.assert_close(no_key[0], ref[0], atol=ATOL, rtol=0)


@pytest.mark.parametrize(("strategy", "pooling"), COMBOS)
@pytest.mark.parametrize("missing", MISSING_MODES)
def test_outputs_and_gradients_finite_with_missing_modalities(strategy, pooling, missing):
    model = build(strategy, pooling, missing=missing).train()
    features, masks = make_batch(3, seed=5)
    # sample 0: everything; sample 1: text only; sample 2: nothing at all.
    present = {m: torch.tensor([True, m == "text", False]) for m in DIMS}
    out = model(features, masks, present)
    assert out.shape == (3, 16)
    assert torch.isfinite(out).all()
    out.pow(2).sum().backward()
    for name, p in model.named_parameters():
        assert p.grad is None or torch.isfinite(p.grad).all(), name
    model.eval()
    with torch.no_grad():
        only_features = model({"text": features["text"][:1]}, {"text": masks["text"][:1]})
    assert torch.isfinite(only_features).all()


@pytest.mark.parametrize(("strategy", "pooling"), COMBOS)
def test_gradients_reach_every_cross_attention_layer(strategy, pooling):
    model = build(strategy, pooling).train()
    features, masks = make_batch(3, seed=6)
    present = {m: torch.tensor([True, True, m != "imu"]) for m in DIMS}  # placeholders in use too
    out = model(features, masks, present)
    (out * torch.randn_like(out)).sum().backward()
    blocks = [m for m in model.fusion.modules() if isinstance(m, AttentionBlock)]
    assert blocks, "every strategy must own cross-attention blocks"
    for name, p in [*model.fusion.named_parameters(), *model.self_layers.named_parameters()]:
        assert p.grad is not None and p.grad.abs().sum() > 0, f"no gradient reached {name}"
    for m in DIMS:
        assert model.type_embeddings[m].grad.abs().sum() > 0
        assert model.projections[m][0].weight.grad.abs().sum() > 0
    assert model.placeholders["imu"].grad.abs().sum() > 0


@pytest.mark.parametrize(("strategy", "pooling"), COMBOS)
def test_every_parameter_takes_part_when_nothing_is_missing(strategy, pooling):
    """DDP without ``find_unused_parameters`` needs every parameter in every graph."""
    model = build(strategy, pooling).train()
    features, masks = make_batch(2, seed=13)
    model(features, masks).sum().backward()
    unused = [n for n, p in model.named_parameters() if p.grad is None]
    assert not unused


def test_modality_dropout_keeps_one_modality_per_sample():
    g = torch.Generator().manual_seed(7)
    present = {m: torch.rand(2000, generator=g) < 0.7 for m in DIMS}
    present["imu"][:10] = False
    for m in ("vision", "audio", "text"):
        present[m][:5] = False  # samples 0-4 have nothing
    for p in (0.5, 0.9, 1.0):
        kept = modality_dropout(present, p, generator=g)
        before = torch.stack([present[m] for m in DIMS], 1)
        after = torch.stack([kept[m] for m in DIMS], 1)
        assert not (after & ~before).any(), "dropout must never add a modality"
        assert (after.any(1) == before.any(1)).all(), "no sample may lose every modality"
        assert not after[:5].any()
        dropped = (before & ~after).sum() / before.sum()
        assert dropped > 0.3 * p
        if p == 1.0:
            assert (after.sum(1) == before.any(1).long()).all()
    assert all(torch.equal(modality_dropout(present, 0.0)[m], present[m]) for m in DIMS)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_model_modality_dropout_only_in_training(strategy):
    model = build(strategy, "mean", missing="zero", modality_dropout=0.6)
    features, masks = make_batch(64, seed=8)
    model.train()
    torch.manual_seed(0)
    _, train_masks = model.embed(features, masks)
    has = torch.stack([train_masks[m].any(1) for m in DIMS], 1)
    assert has.any(1).all(), "modality dropout removed every modality of a sample"
    assert (~has).any(), "modality dropout did nothing in training"
    model.eval()
    plain = build(strategy, "mean", missing="zero")
    plain.load_state_dict(model.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(model(features, masks), plain(features, masks), atol=0, rtol=0)


@pytest.mark.parametrize(("strategy", "pooling"), COMBOS)
def test_config_round_trip_gives_identical_outputs(strategy, pooling):
    model = build(strategy, pooling, missing="zero", tanh=False, num_latents=4, num_self_layers=1)
    config = json.loads(json.dumps(model.config))
    rebuilt = FusionModel.from_config(config).eval()
    rebuilt.load_state_dict(model.state_dict())
    features, masks = make_batch(3, seed=9)
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(features, masks), model(features, masks), atol=0, rtol=0)
    assert rebuilt.config == config


def test_save_and_load_pretrained(tmp_path):
    model = build("anchor", "attention", anchor="text", tanh=True)
    model.save_pretrained(tmp_path / "ckpt")
    loaded = FusionModel.from_pretrained(tmp_path / "ckpt").eval()
    assert loaded.config["anchor"] == "text" and loaded.fusion.anchor == "text"
    assert loaded.weights_id() == model.weights_id()
    features, masks = make_batch(2, seed=10)
    with torch.no_grad():
        out = loaded(features, masks)
        torch.testing.assert_close(out, model(features, masks), atol=0, rtol=0)
    assert out.abs().max() <= 1.0  # tanh on by default


def test_defaults_follow_the_brief():
    model = build_fusion_model(
        DIMS, shared_dim=32, output_dim=8, strategy="anchor", pooling="cls", num_layers=4, num_heads=4
    )
    cfg = model.config
    assert cfg["dropout"] == 0.1 and cfg["missing"] == "placeholder" and cfg["modality_dropout"] == 0.0
    assert cfg["num_latents"] == 16 and cfg["tanh"] is True and cfg["num_self_layers"] == 2
    assert cfg["anchor"] == "vision" == model.fusion.anchor


def test_gradient_checkpointing_matches_plain_backward():
    model = build("pairwise", "cls").train()
    features, masks = make_batch(2, seed=11)
    model(features, masks).sum().backward()
    plain = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    model.set_gradient_checkpointing(True)
    model(features, masks).sum().backward()
    for n, g in plain.items():
        torch.testing.assert_close(dict(model.named_parameters())[n].grad, g, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"strategy": "star"}, "unknown fusion strategy"),
        ({"pooling": "max"}, "unknown pooling"),
        ({"num_heads": 5}, "not divisible by num_heads"),
        ({"missing": "impute"}, "unknown missing mode"),
        ({"anchor": "lidar"}, "anchor 'lidar'"),
        ({"modality_dropout": 1.0}, "modality_dropout"),
    ],
)
def test_invalid_arguments_raise_clear_errors(overrides, message):
    args = {"shared_dim": 32, "output_dim": 8, "strategy": "pairwise", "pooling": "mean", "num_layers": 1}
    args["num_heads"] = 2
    args.update(overrides)
    with pytest.raises(ValueError, match=message):
        build_fusion_model(DIMS, **args)


def test_invalid_inputs_raise_clear_errors():
    model = build("sequential", "mean")
    features, _ = make_batch(2, seed=12)
    with pytest.raises(ValueError, match="unknown modality \\['lidar'\\]"):
        model({**features, "lidar": torch.zeros(2, 3, 8)})
    with pytest.raises(ValueError, match="features\\['text'\\] must be"):
        model({**features, "text": torch.zeros(2, 3, 99)})
    with pytest.raises(ValueError, match="masks\\['imu'\\] must be"):
        model(features, {"imu": torch.ones(2, 1, dtype=torch.bool)})
    with pytest.raises(ValueError, match="features is empty"):
        model({})
