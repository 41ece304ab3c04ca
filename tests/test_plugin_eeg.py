"""The EEG plugin proves SPEC M2: a modality added by one module and an entry point, no core edit."""

from __future__ import annotations

import ast
import pickle
from importlib.metadata import entry_points
from pathlib import Path

import numpy as np
import pytest
import torch

import mm_core
from mm_core import registry
from mm_core.errors import DecodeError
from mm_core.plugins import eeg

FS = 250


def recording(n: int, channels: int = 8, seed: int = 0) -> np.ndarray:
    """Alpha-like 10 Hz rhythm plus noise, in microvolts, ``[T, C]``."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) / FS
    phase = rng.uniform(0, 2 * np.pi, channels)
    x = 20 * np.sin(2 * np.pi * 10 * t[:, None] + phase) + 5 * rng.standard_normal((n, channels))
    return x.astype(np.float32)


def expected_tokens(n: int) -> int:
    for k, s, p in ((7, 2, 3), (5, 2, 2)):  # the two stride-2 convolutions of the stem
        n = (n + 2 * p - k) // s + 1
    return n


def test_registered_through_the_entry_point() -> None:
    eps = {ep.name: ep for ep in entry_points(group=registry.ENTRY_POINT_GROUP)}
    assert eps["eeg"].value == "mm_core.plugins.eeg:SPEC"
    assert "eeg" in mm_core.available_modalities()
    assert registry.get("eeg") is eps["eeg"].load() is eeg.SPEC
    builtins = Path(mm_core.__file__).parent / "modalities" / "__init__.py"
    assert "eeg" not in builtins.read_text()  # no core module names the plugin


def test_plugin_uses_only_public_api() -> None:
    tree = ast.parse(Path(eeg.__file__).read_text())
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert {m for m in imported if m.startswith("mm_core")} <= {
        "mm_core.registry",
        "mm_core.encoders.base",
        "mm_core.errors",
    }


def test_encode_files_of_different_lengths(tmp_path: Path) -> None:
    lengths = [1000, 257, 64]
    paths = []
    for i, n in enumerate(lengths):
        x = recording(n, seed=i)
        paths.append(tmp_path / f"rec{i}.npy")
        np.save(paths[-1], x.T if i == 1 else x)  # one stored channels-first
    features, mask = mm_core.encode("eeg", paths, batch_size=2)
    enc = mm_core.get_encoder("eeg")
    assert features.shape == (3, expected_tokens(max(lengths)), enc.output_dim)
    assert mask.sum(1).tolist() == [expected_tokens(n) for n in lengths]
    assert torch.isfinite(features).all()
    assert not features[~mask].any() and features[mask].abs().sum(-1).gt(0).all()
    for i, p in enumerate(paths):  # padding is respected: a batch gives what each file gives alone
        alone, alone_mask = mm_core.encode("eeg", [p])
        s = alone.shape[1]
        assert s == expected_tokens(lengths[i]) and alone_mask.all()
        torch.testing.assert_close(features[i, :s], alone[0], atol=1e-4, rtol=1e-4)


def test_csv_and_layout_options(tmp_path: Path) -> None:
    x = recording(300, channels=4)
    header = "time," + ",".join(f"ch{j}" for j in range(4))
    rows = [f"{i / FS}," + ",".join(f"{v:.9g}" for v in row) for i, row in enumerate(x)]
    path = tmp_path / "rec.csv"
    path.write_text("\n".join([header, *rows]) + "\n")
    np.testing.assert_allclose(eeg.decode_eeg(path), x, rtol=1e-6)
    short = np.arange(12, dtype=np.float32).reshape(3, 4)  # 3 samples x 4 channels: the guess would flip it
    assert eeg.decode_eeg(short).shape == (4, 3)
    assert eeg.decode_eeg(short, channels_first=False).shape == (3, 4)


@pytest.mark.parametrize(
    "content",
    [
        "empty",
        "pickled",
        "ragged_csv",
        "text_csv",
        "three_d",
        "missing",
        "unknown_suffix",
    ],
)
def test_bad_eeg_raises_decode_error(tmp_path: Path, content: str) -> None:
    path = tmp_path / "bad.npy"
    if content == "empty":
        path.write_bytes(b"")
    elif content == "pickled":
        path.write_bytes(pickle.dumps({"not": "an array"}))
    elif content == "ragged_csv":
        path = tmp_path / "bad.csv"
        path.write_text("1,2,3\n4,5\n")
    elif content == "text_csv":
        path = tmp_path / "bad.csv"
        path.write_text("a,b\nx,y\n")
    elif content == "three_d":
        np.save(path, np.zeros((2, 3, 4), np.float32))
    elif content == "unknown_suffix":
        path = tmp_path / "bad.edf"
        path.write_bytes(b"0       patient")
    with pytest.raises(DecodeError):
        eeg.decode_eeg(path)
    with pytest.raises(DecodeError):
        mm_core.encode("eeg", [path])


def test_quality_scores_see_the_defects() -> None:
    clean = recording(2 * FS)
    good = eeg.score_eeg(clean)
    assert good["duration_s"] == pytest.approx(2.0) and good["num_channels"] == 8
    assert good["nonfinite_fraction"] == 0 and good["flatline_fraction"] == 0
    assert good["saturation_fraction"] < 0.01 and 40 < good["amplitude_range_uv"] < 200

    bad = clean.copy()
    bad[:, 0] = 3.0  # detached electrode: flat
    bad[:50, 1] = np.nan
    bad[:, 2] = np.clip(bad[:, 2] * 50, -500, 500)  # amplifier clipping
    scores = eeg.score_eeg(bad)
    assert scores["flatline_fraction"] == pytest.approx(1 / 8)
    assert scores["nonfinite_fraction"] == pytest.approx(50 / bad.size)
    assert scores["saturation_fraction"] > 0.05
    assert scores["max_abs_uv"] == pytest.approx(500)


def test_fusion_with_eeg_and_text() -> None:
    """A fusion model built from registry encoders (eeg + text) fuses both and trains the EEG encoder."""
    from mm_core.fusion import build_fusion_model

    names = [m for m in mm_core.available_modalities() if m in ("eeg", "text")]
    assert names == ["eeg", "text"]
    specs = {m: registry.get(m) for m in names}
    encoders = {
        "eeg": specs["eeg"].create_encoder(hidden_dim=32, num_layers=1),
        "text": specs["text"].create_encoder(),
    }
    model = build_fusion_model(
        {m: e.output_dim for m, e in encoders.items()},
        shared_dim=32,
        output_dim=16,
        strategy="pairwise",
        pooling="mean",
        num_layers=1,
        num_heads=4,
    )
    texts = ["eyes closed, relaxed", "eyes open, counting", "motor imagery, left hand"]
    text_feats, text_mask = encoders["text"].encode([specs["text"].decode(t) for t in texts])
    eeg_inputs = encoders["eeg"].preprocess([recording(n, seed=n) for n in (600, 300, 450)])
    eeg_feats, eeg_mask = encoders["eeg"](**eeg_inputs)  # with grad: trained together with the fusion
    present = {"eeg": torch.tensor([True, True, False]), "text": torch.ones(3, dtype=torch.bool)}
    feats = {"eeg": eeg_feats, "text": text_feats}
    out = model(feats, masks={"eeg": eeg_mask, "text": text_mask}, present=present)
    assert out.shape == (3, 16) and torch.isfinite(out).all()
    out.pow(2).sum().backward()
    grad = encoders["eeg"].stem[0].weight.grad
    assert grad is not None and grad.abs().sum() > 0

    model.eval()
    masks = {"eeg": eeg_mask, "text": text_mask}
    with torch.no_grad():  # a sample marked without EEG ignores whatever EEG features it carries
        a = model({"eeg": eeg_feats.detach(), "text": text_feats}, masks=masks, present=present)
        b = model({"eeg": eeg_feats.detach() * 3 + 1, "text": text_feats}, masks=masks, present=present)
    torch.testing.assert_close(a[2], b[2])
    assert not torch.allclose(a[0], b[0])


def test_seeded_init_and_saved_weights(tmp_path: Path) -> None:
    a, b = eeg.create_encoder(seed=1), eeg.create_encoder(seed=1)
    assert a.weights_id() == b.weights_id() != eeg.create_encoder(seed=2).weights_id()
    from safetensors.torch import save_file

    path = tmp_path / "eeg.safetensors"
    save_file({k: v.contiguous() for k, v in eeg.create_encoder(seed=2).state_dict().items()}, str(path))
    loaded = eeg.create_encoder(seed=1, weights=str(path))
    assert loaded.weights_id() == eeg.create_encoder(seed=2).weights_id()
