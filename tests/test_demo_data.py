"""The embedded demo dataset: deterministic, missing modalities as configured, content matches labels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from mm_core.data import make_demo_dataset, read_source
from mm_core.data.demo_render import COLOURS, SAMPLE_RATE, pitch_hz
from mm_core.errors import ConfigError

MODALITIES = ["audio", "sensor", "text", "vision"]


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, list]:
    root = tmp_path_factory.mktemp("demo")
    info = make_demo_dataset(root, 120, seed=3, missing=0.0)
    return info, list(read_source(**info))


def test_same_seed_same_bytes(tmp_path: Path) -> None:
    a = make_demo_dataset(tmp_path / "a", 25, seed=7)
    make_demo_dataset(tmp_path / "b", 25, seed=7)
    make_demo_dataset(tmp_path / "c", 25, seed=8)
    files_a = _files(tmp_path / "a")
    assert "manifest.jsonl" in files_a and len(files_a) > 25
    assert files_a == _files(tmp_path / "b")
    assert files_a != _files(tmp_path / "c")
    assert not [name for name in files_a if Path(name).name.startswith(".")]  # no temporaries left
    assert a == {
        "layout": "manifest",
        "root": str(tmp_path / "a"),
        "path": "manifest.jsonl",
        "source": "demo",
    }


def test_read_back_both_ways(demo: tuple[dict, list]) -> None:
    info, records = demo
    assert len(records) == 120 and all(r.ok for r in records)
    assert all(r.present == MODALITIES for r in records)  # missing=0.0
    assert records[0].sample_id == "demo/000000"
    plain = list(read_source(info["layout"], info["root"], path=info["path"]))
    assert [r.modalities for r in plain] == [r.modalities for r in records]
    assert all(set(r.labels) == {"shape", "colour", "size", "motion"} for r in records)


def test_missing_fractions_and_never_empty(tmp_path: Path) -> None:
    rates = {"vision": 0.1, "audio": 0.5, "text": 0.0, "sensor": 0.3}
    records = list(read_source(**make_demo_dataset(tmp_path / "m", 400, seed=1, missing=rates)))
    assert len(records) == 400 and all(r.ok for r in records)
    for modality, rate in rates.items():
        observed = 1 - sum(modality in r.modalities for r in records) / len(records)
        assert abs(observed - rate) < 0.07, (modality, observed)

    all_gone = list(read_source(**make_demo_dataset(tmp_path / "z", 80, seed=1, missing=1.0)))
    assert all(len(r.present) == 1 for r in all_gone)
    assert len({r.present[0] for r in all_gone}) == 4
    with pytest.raises(ConfigError):
        make_demo_dataset(tmp_path / "bad", 5, missing={"smell": 0.5})


def test_content_follows_labels(demo: tuple[dict, list]) -> None:
    _, records = demo
    palette = np.array(list(COLOURS.values()), dtype=float)
    onsets, expected = [], []
    for rec in records:
        shape, colour, size, motion = (rec.labels[k] for k in ("shape", "colour", "size", "motion"))
        caption = rec.modalities["text"]
        assert shape in caption and colour in caption and size in caption

        pixels = np.asarray(Image.open(rec.modalities["vision"]).convert("RGB"), dtype=float).reshape(-1, 3)
        dist = np.linalg.norm(pixels[:, None, :] - palette[None], axis=2)
        votes = np.bincount(dist.argmin(1)[dist.min(1) < 40], minlength=len(palette))
        assert list(COLOURS)[votes.argmax()] == colour

        audio, rate = sf.read(rec.modalities["audio"], dtype="float32")
        assert rate == SAMPLE_RATE and audio.ndim == 1
        onsets.append(_peak_hz(audio[: int(0.2 * rate)], rate))
        expected.append(pitch_hz(shape, colour))
        end = _peak_hz(audio[-int(0.1 * rate) :], rate)
        if motion in ("up", "right"):
            assert end > onsets[-1] * 1.1
        elif motion in ("down", "left"):
            assert end < onsets[-1] / 1.1
        elif motion == "static":
            assert abs(end / onsets[-1] - 1) < 0.02

        imu = np.load(rec.modalities["sensor"])
        assert imu.shape == (200, 6) and imu.dtype == np.float32
        mean = imu.mean(0)
        if motion == "left":
            assert mean[0] < -0.1
        elif motion == "right":
            assert mean[0] > 0.1
        elif motion == "spin":
            assert mean[5] > 0.5
        else:
            assert abs(mean[0]) < 0.05 and abs(mean[5]) < 0.05
    onsets_arr, expected_arr = np.array(onsets), np.array(expected)
    assert np.all(np.abs(onsets_arr / expected_arr - 1) < 0.02)  # within a third of a semitone
    order = np.argsort(expected_arr, kind="stable")
    assert np.all(np.diff(onsets_arr[order]) >= -1.0)  # measured pitches follow the shape/colour mapping


def _peak_hz(segment: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(segment * np.hanning(len(segment)), n=1 << 16))
    return float(np.fft.rfftfreq(1 << 16, 1 / rate)[spectrum.argmax()])


def test_failed_generation_leaves_no_manifest(tmp_path: Path) -> None:
    root = tmp_path / "demo"
    make_demo_dataset(root, 10, seed=0)
    assert (root / "manifest.jsonl").is_file()
    (root / "media" / "vision" / "000005.png").unlink()
    (root / "media" / "vision" / "000005.png").mkdir()  # sample 5 cannot be written
    with pytest.raises(OSError):
        make_demo_dataset(root, 10, seed=1)
    assert not (root / "manifest.jsonl").exists()  # the old one is gone, no new one appeared
    assert not [p for p in root.rglob(".*") if p.is_file()]
