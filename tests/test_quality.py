"""Quality scores on real data, their sensitivity to real degradations, thresholds and reasons."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFilter

from mm_core.data import make_demo_dataset
from mm_core.data.records import SampleRecord
from mm_core.data.sources import read_source
from mm_core.errors import ConfigError
from mm_core.quality import Thresholds, rejection_counts, score_and_filter, score_record
from mm_core.quality.scorers import score_audio, score_sensor, score_text, score_vision
from mm_core.registry import get as get_modality

RATIOS = {
    "vision": ["brightness", "contrast", "dark_clip", "bright_clip"],
    "audio": ["clipping_ratio", "silence_ratio"],
    "text": ["alpha_ratio", "digit_ratio", "space_ratio", "punct_ratio", "control_ratio", "repetition"],
    "sensor": ["nan_fraction", "inf_fraction", "flat_channel_fraction", "saturation_fraction"],
}
METRIC_RE = re.compile(r"^[a-z_]+\.[a-z_0-9]+ (-?[0-9.e+-]+|nan \(not a number\)|inf) [<>] -?[0-9.e+-]+$")


def _real_records(datasets: Path) -> list[SampleRecord]:
    """A few samples of every real source, through the real readers."""
    sources = [
        read_source("flickr8k", datasets / "flickr8k", limit=40),
        read_source("fsdd", datasets / "fsdd", limit=60),
        read_source("ljspeech", datasets / "ljspeech-read", metadata="transcript.csv", limit=8),
        read_source("squad", datasets / "xquad", limit=60),
        read_source("sensor_csv", datasets / "sp-sw-har" / "DATA" / "s01", limit=40),
    ]
    return [rec for src in sources for rec in src]


@pytest.fixture(scope="module")
def real_scored(datasets_dir):
    records = _real_records(datasets_dir)
    accepted, rejected = score_and_filter(records)
    return records, accepted, rejected


def test_real_data_passes_default_thresholds(real_scored):
    records, accepted, rejected = real_scored
    assert len(accepted) + len(rejected) == len(records)
    assert rejected.empty, rejected[["sample_id", "reasons"]].to_string()
    for modality in ("vision", "audio", "text", "sensor"):
        assert accepted[f"q_{modality}"].notna().sum() > 0, modality


def test_real_scores_lie_in_documented_ranges(real_scored):
    _, accepted, _ = real_scored
    for modality, ratios in RATIOS.items():
        for metric in ratios:
            col = accepted[f"q_{modality}_{metric}"].dropna()
            assert len(col) and col.between(0.0, 1.0).all(), (modality, metric)
        q = accepted[f"q_{modality}"].dropna()
        assert q.between(0.0, 1.0).all() and q.median() > 0.5, modality
    assert accepted["q_overall"].between(0.0, 1.0).all()
    assert accepted["q_audio_snr_db"].dropna().between(3.0, 100.0).all()
    assert accepted["q_audio_sample_rate"].dropna().isin([8000.0, 44100.0]).all()
    assert accepted["q_vision_min_side"].dropna().min() >= 32
    assert (accepted["q_vision_blur"].dropna() > 0).all()
    assert accepted["q_sensor_length"].dropna().eq(200).all()


def test_blurred_image_scores_blurrier(datasets_dir):
    path = sorted((datasets_dir / "flickr8k" / "Images").glob("*.jpg"))[3]
    image = get_modality("vision").decode(str(path))
    sharp = score_vision(image)
    blurred = score_vision(image.filter(ImageFilter.GaussianBlur(4)))
    assert blurred["blur"] < sharp["blur"] / 5
    assert blurred["quality"] < sharp["quality"]

    # resolution-normalised: a large photo and a smaller copy (both above 256 px) measure alike
    def min_side(p: Path) -> int:
        with Image.open(p) as im:
            return min(im.size)

    largest = max(sorted((datasets_dir / "flickr8k" / "Images").glob("*.jpg")), key=min_side)
    large = get_modality("vision").decode(str(largest))
    assert min(large.size) >= 400
    smaller = large.resize((large.width * 2 // 3, large.height * 2 // 3), Image.Resampling.LANCZOS)
    ratio = score_vision(smaller)["blur"] / score_vision(large)["blur"]
    assert 0.6 < ratio < 1.6
    grainy = np.asarray(image, np.float32) + np.random.default_rng(0).normal(0, 20, np.asarray(image).shape)
    grainy_score = score_vision(Image.fromarray(np.clip(grainy, 0, 255).astype(np.uint8)))
    assert grainy_score["noise"] > sharp["noise"] + 5


def test_exposure_and_resolution():
    black = score_vision(Image.new("RGB", (300, 200)))
    assert black["brightness"] == 0.0 and black["dark_clip"] == 1.0 and black["quality"] == 0.0
    tiny = score_vision(Image.effect_noise((20, 12), 40).convert("RGB"))
    assert tiny["min_side"] == 12.0 and tiny["width"] == 20.0


def test_added_noise_lowers_audio_snr(datasets_dir):
    path = datasets_dir / "fsdd" / "recordings" / "3_jackson_7.wav"
    clip = get_modality("audio").decode(str(path))
    clean = score_audio(clip)
    rng = np.random.default_rng(0)
    noisy_samples = clip.samples + rng.normal(0, 0.05, clip.samples.shape).astype(np.float32)
    noisy = score_audio(type(clip)(np.clip(noisy_samples, -1, 1), clip.sample_rate))
    assert noisy["snr_db"] < clean["snr_db"] - 5
    assert noisy["quality"] <= clean["quality"]
    assert clean["duration_s"] == pytest.approx(clip.samples.shape[1] / clip.sample_rate)
    loud = score_audio(type(clip)(np.clip(clip.samples * 50, -1, 1), clip.sample_rate))
    assert loud["clipping_ratio"] > clean["clipping_ratio"] + 0.01


def test_snr_reads_tones_as_clean_and_noise_as_noise():
    rng = np.random.default_rng(0)
    t = np.arange(32000) / 16000
    chirp = 0.3 * np.sin(2 * np.pi * (300 * t + 400 * t**2)) + rng.normal(0, 0.005, t.size)
    white = rng.normal(0, 0.1, t.size)
    clip = type("A", (), {"sample_rate": 16000})
    tone_scores = score_audio(clip.__new__(type("T", (clip,), {"samples": chirp.astype(np.float32)})))
    noise_scores = score_audio(clip.__new__(type("N", (clip,), {"samples": white.astype(np.float32)})))
    # true SNR of the chirp: 10*log10(0.3**2 / 2 / 0.005**2) = 32.6 dB; no pauses, so only the
    # spectral estimate sees it
    assert tone_scores["snr_temporal_db"] < 3 and 25 < tone_scores["snr_spectral_db"] < 40
    assert tone_scores["snr_db"] == tone_scores["snr_spectral_db"]
    assert noise_scores["snr_db"] < 3.0


def test_demo_data_passes_default_thresholds(tmp_path):
    args = make_demo_dataset(tmp_path, 40, seed=3)
    accepted, rejected = score_and_filter(read_source(**args))
    assert len(accepted) == 40 and rejected.empty, rejected.get("reasons")


def test_silence_and_empty_audio():
    silent = score_audio(type("A", (), {"samples": np.zeros((1, 16000), np.float32), "sample_rate": 16000})())
    assert silent["silence_ratio"] == 1.0 and silent["snr_db"] == 0.0 and silent["quality"] == 0.0
    empty = score_audio(type("A", (), {"samples": np.zeros((2, 0), np.float32), "sample_rate": 8000})())
    assert empty["duration_s"] == 0.0 and empty["channels"] == 2.0


def test_repetition_detected_on_repeated_text(datasets_dir):
    question = "How many points did the Panthers defense surrender in the whole season?"
    once = score_text(question)
    repeated = score_text(" ".join([question] * 30))
    assert once["repetition"] == 0.0
    assert repeated["repetition"] > 0.9 and repeated["compression_ratio"] < once["compression_ratio"] / 5
    assert repeated["quality"] < 0.3 <= once["quality"]
    weird = score_text("abc\x00\x01\x02\ufffd\ufffd def")
    assert weird["control_ratio"] > 0.1 and weird["replacement_ratio"] > 0.1
    mixed = score_text("hello привет мир world")
    assert 0.3 < mixed["script_mix"] < 0.7
    assert score_text("")["chars"] == 0.0 and score_text("")["quality"] == 0.0


def test_sensor_flat_line_saturation_and_nan():
    rng = np.random.default_rng(0)
    good = rng.normal(size=(400, 4)).astype(np.float32)
    base = score_sensor(good)
    assert base["flat_channel_fraction"] == 0.0 and base["saturation_fraction"] < 0.01
    assert base["quality"] == 1.0
    flat = good.copy()
    flat[:, 1] = 3.0
    assert score_sensor(flat)["flat_channel_fraction"] == 0.25
    saturated = np.clip(good * 3, -2.0, 2.0)
    sat = score_sensor(saturated)
    assert sat["saturation_fraction"] > 0.2 and sat["quality"] < base["quality"]
    frozen = np.repeat(good[:100], 4, axis=0)
    assert score_sensor(frozen)["flat_run_fraction"] > 0.7
    broken = good.copy()
    broken[:10, 0] = np.nan
    broken[5, 2] = np.inf
    bad = score_sensor(broken)
    assert bad["nan_fraction"] == pytest.approx(10 / 1600) and bad["inf_fraction"] == pytest.approx(1 / 1600)
    dead = score_sensor(np.full((50, 3), np.nan, np.float32))
    assert dead["flat_channel_fraction"] == 1.0 and dead["quality"] == 0.0


def test_thresholds_from_nested_dict():
    th = Thresholds.from_dict(
        {
            "overall": {"min": 0.6, "rule": "min"},
            "audio": {"snr_db": {"min": 12}, "clipping_ratio": None, "quality": 0.5},
            "eeg": {"quality": {"min": 0.2}, "line_noise": {"max": 0.3}},
        }
    )
    assert th.overall == 0.6 and th.rule == "min"
    assert th.bounds["audio"]["snr_db"].min == 12.0
    assert "clipping_ratio" not in th.bounds["audio"]
    assert th.bounds["audio"]["duration_s"].max == 30.0  # defaults kept
    assert th.quality["audio"] == 0.5 and th.quality["eeg"] == 0.2
    assert th.metric_reasons("eeg", {"line_noise": 0.5}) == ["eeg.line_noise 0.5 > 0.3"]
    assert Thresholds.from_dict(th.to_dict(), defaults=False) == th
    assert Thresholds.from_dict({"overall": 0.1}).rule == "mean"
    for bad in (
        {"overall": {"rule": "median"}},
        {"audio": {"snr_db": 5}},
        {"audio": {"snr_db": {"min": "high"}}},
        {"audio": {"snr_db": {"min": 9, "max": 1}}},
        {"audio": {"snr_db": {"minimum": 1}}},
        {"audio": 3},
    ):
        with pytest.raises(ConfigError):
            Thresholds.from_dict(bad)


def test_config_thresholds_change_decisions(datasets_dir):
    records = list(read_source("fsdd", datasets_dir / "fsdd", text=False, limit=12))
    accepted, rejected = score_and_filter(records, {"audio": {"snr_db": {"min": 1000}}})
    assert accepted.empty and len(rejected) == 12
    for reasons, snr in zip(rejected["reasons"], rejected["q_audio_snr_db"], strict=True):
        (reason,) = [r for r in reasons if r.startswith("audio.snr_db ")]
        value, op, limit = reason.split()[1:]
        assert op == "<" and limit == "1000.0" and float(value) == pytest.approx(snr, rel=5e-3)


def test_overall_rule_is_applied():
    """Each modality passes its own minimum; only the combined rule rejects (SPEC defect 10)."""
    rng = np.random.default_rng(1)
    # A railed sensor (about 25% of values on the rails) lowers its normalised quality.
    series = np.clip(rng.normal(size=(300, 3)), -1.15, 1.15).astype(np.float32)
    sensor_q = score_sensor(series)["quality"]
    assert 0.3 < sensor_q < 0.8
    rec = SampleRecord("s1", "test", {"text": "A person walks a dog in the park.", "sensor": _npy(series)})
    mean_q = (1.0 + sensor_q) / 2
    between = round((sensor_q + mean_q) / 2, 3)
    loose = {"sensor": {"saturation_fraction": None}}  # the raw bound alone would reject it
    mean_rule = score_record(rec, {**loose, "overall": {"min": between, "rule": "mean"}})
    assert mean_rule.accepted, mean_rule.reasons
    assert mean_rule.scores["q_overall"] == pytest.approx(mean_q)
    assert mean_rule.scores["q_sensor"] == pytest.approx(sensor_q) and mean_rule.scores["q_text"] == 1.0
    min_rule = score_record(rec, {**loose, "overall": {"min": between, "rule": "min"}})
    (reason,) = min_rule.reasons
    assert reason.startswith("overall ") and reason.endswith(" (min of sensor, text)")
    assert float(reason.split()[1]) == pytest.approx(sensor_q, rel=5e-3)
    assert float(reason.split()[3]) == pytest.approx(between)
    strict_mean = score_record(rec, {**loose, "overall": {"min": mean_q + 0.05}})
    assert len(strict_mean.reasons) == 1 and strict_mean.reasons[0].startswith("overall ")


def _npy(array: np.ndarray) -> bytes:
    import io

    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()


def test_rejected_reasons_format_and_counts(tmp_path):
    Image.new("RGB", (8, 8), (250, 250, 250)).save(tmp_path / "tiny.png")
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0garbage")
    records = [
        SampleRecord("a", "t", {"vision": str(tmp_path / "tiny.png")}),
        SampleRecord("b", "t", {"vision": str(tmp_path / "broken.jpg"), "text": "fine caption"}),
        SampleRecord("c", "t", {"text": ""}),
        SampleRecord("d", "t", {}, errors=["vision: path escapes data root: ../x -> /x"]),
        SampleRecord("e", "t", {}),
        SampleRecord("f", "t", {"text": "A good caption of a photo."}),
    ]
    accepted, rejected = score_and_filter(records)
    assert list(accepted["sample_id"]) == ["f"]
    reasons = dict(zip(rejected["sample_id"], rejected["reasons"], strict=True))
    assert "vision.min_side 8.0 < 32.0" in reasons["a"]
    assert any(r.startswith("vision: decode failed: ") for r in reasons["b"])
    assert "text.chars 0.0 < 1.0" in reasons["c"]
    assert reasons["d"] == ["ingest: vision: path escapes data root: ../x -> /x"]
    assert reasons["e"] == ["record: no modality"]
    for rs in reasons.values():
        assert rs and all(isinstance(r, str) and r for r in rs)
        for r in rs:
            assert METRIC_RE.match(r) or ": " in r or r.startswith("overall "), r
    assert math.isnan(rejected.set_index("sample_id").loc["e", "q_overall"])
    assert rejected.set_index("sample_id").loc["b", "q_vision"] == 0.0  # failed decode counts as 0
    counts = rejection_counts(rejected)
    assert counts["ingest"] == 1 and counts["vision: decode failed"] == 1 and counts["vision.min_side"] == 1


def test_dataframe_input_and_shared_image_cache(datasets_dir):
    records = list(read_source("flickr8k", datasets_dir / "flickr8k", limit=10))
    images = {r.modalities["vision"] for r in records}
    assert len(images) < len(records)  # several captions per image
    cache: dict = {}
    accepted, rejected = score_and_filter(records, decode_cache=cache)
    assert rejected.empty and len(cache) == len(images)
    again, again_rej = score_and_filter(accepted)  # a scored DataFrame is valid input
    assert list(again["sample_id"]) == list(accepted["sample_id"]) and again_rej.empty
    np.testing.assert_allclose(again["q_vision_blur"], accepted["q_vision_blur"])
