"""The trainable log-mel audio encoder on real FSDD clips: shapes, padding, checkpoints, registry, training."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import mm_core
from mm_core.encoders.mel_net import LogMelEncoder, is_logmel_checkpoint
from mm_core.encoders.sensor_net import SensorEncoder
from mm_core.errors import ConfigError
from mm_core.modalities import audio
from mm_core.training.inputs import codec_for, trains_encoder
from tests.dagster_helpers import small_build

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def recordings(datasets_dir: Path) -> Path:
    return datasets_dir / "fsdd" / "recordings"


@pytest.fixture(scope="module")
def clips(recordings: Path) -> list[audio.DecodedAudio]:
    """Two FSDD clips (8 kHz) of different lengths, and the first one as 16 kHz stereo."""
    short = audio.decode(recordings / "6_nicolas_0.wav")  # 0.22 s
    long = audio.decode(recordings / "8_lucas_0.wav")  # 1.14 s
    wave16 = audio.resample(short.samples[0], short.sample_rate, 16_000)
    stereo = audio.DecodedAudio(np.stack([wave16, wave16]), 16_000)
    assert short.sample_rate == long.sample_rate == 8000 and short.duration != long.duration
    return [short, long, stereo]


def _tokens(n_frames: int, target: int = 256) -> int:
    """Real tokens of a clip: each 256-frame window halves twice (ceil) through the two convs."""
    windows = [min(target, n_frames - s) for s in range(0, n_frames, target)]
    return sum((w + 3) // 4 for w in windows)  # ceil(ceil(w / 2) / 2) == ceil(w / 4)


def test_shapes_masks_and_rates(clips) -> None:
    enc = LogMelEncoder(model="logmel_cnn_gru")
    assert enc.source == "random:logmel-cnn" and not enc.pretrained and enc.in_channels == 40
    frames = [enc.log_mel(c) for c in clips]
    n16k = [len(audio.prepare_waveform(c)) for c in clips]
    assert [f.shape for f in frames] == [(1 + n // 160, 40) for n in n16k]
    assert np.abs(frames[0].mean(0)).max() < 1e-4  # utterance norm: every bin has mean 0
    feats, mask = enc.encode(clips, batch_size=8)
    expected = [_tokens(f.shape[0]) for f in frames]
    assert mask.sum(1).tolist() == expected and feats.shape == (3, max(expected), 128)
    assert torch.isfinite(feats).all()
    # 8 kHz mono and the same clip as 16 kHz stereo give nearly the same frames
    np.testing.assert_allclose(frames[0], frames[2], atol=0.2)


def test_thirty_seconds_fit_and_longer_clips_are_cut(clips) -> None:
    enc = LogMelEncoder(hidden_dim=16, output_dim=8)
    c = clips[1]
    long = audio.DecodedAudio(np.tile(c.samples, int(np.ceil(35 / c.duration))), c.sample_rate)
    assert long.duration > 35
    _, mask = enc.encode([long])
    assert mask.sum() == _tokens(3001) == 751  # 30 s = 3001 frames = 12 windows, all kept


def test_padding_never_changes_a_clips_features(clips) -> None:
    enc = LogMelEncoder(model="logmel_cnn_lstm", hidden_dim=32, output_dim=16)
    alone, alone_mask = enc.encode([clips[0]])
    batched, mask = enc.encode([clips[0], clips[1]], batch_size=8)
    n = int(alone_mask.sum())
    assert mask[0].sum() == n < mask[1].sum()
    torch.testing.assert_close(batched[0, :n], alone[0, :n], atol=1e-5, rtol=1e-5)


def test_checkpoint_reloads_by_path_with_the_same_front_end(clips, tmp_path: Path) -> None:
    opts = {"model": "logmel_cnn_lstm", "n_mels": 64, "utterance_norm": False, "hidden_dim": 32, "seed": 3}
    enc = mm_core.get_modality("audio").create_encoder(**opts)
    assert isinstance(enc, LogMelEncoder)
    enc.fit_stats([enc.log_mel(c) for c in clips])
    path = enc.save(tmp_path / "mel.safetensors")
    assert is_logmel_checkpoint(path)
    for how in ({"model": str(path)}, {"weights": str(path)}):
        loaded = mm_core.get_modality("audio").create_encoder(**how)
        assert isinstance(loaded, LogMelEncoder) and loaded.pretrained and loaded.source == str(path)
        assert loaded.front_end == enc.front_end and loaded.arch == enc.arch
        assert loaded.weights_id() == enc.weights_id()
        assert torch.equal(loaded.encode(clips)[0], enc.encode(clips)[0])
    other = LogMelEncoder(**{**opts, "utterance_norm": True})
    assert other.weights_id() != LogMelEncoder(**opts).weights_id()  # the front end is part of the id


def test_registry_routes_log_mel_names_and_checkpoints_only(recordings: Path, tmp_path: Path) -> None:
    paths = [recordings / "3_lucas_7.wav", recordings / "9_nicolas_1.wav"]
    feats, mask = mm_core.encode("audio", paths, model="logmel_cnn_gru", batch_size=2)
    assert feats.shape[0] == 2 and feats.shape[-1] == 128 and mask.any(1).all()
    enc = mm_core.get_encoder("audio", model="logmel_cnn_gru")
    assert isinstance(enc, LogMelEncoder) and enc.arch["rnn"] == "gru"
    assert trains_encoder("auto", "audio", enc, 2_000_000)
    assert codec_for(enc).name == "sensor_windows"
    sensor_ckpt = SensorEncoder(hidden_dim=16, output_dim=8).save(tmp_path / "sensor.safetensors")
    assert not is_logmel_checkpoint(sensor_ckpt)
    with pytest.raises(ConfigError, match="LogMelEncoder"):
        LogMelEncoder(weights=sensor_ckpt)
    reloaded = LogMelEncoder(weights=enc.save(tmp_path / "mel.safetensors"))
    assert not trains_encoder("auto", "audio", reloaded, 2_000_000)  # trained weights stay frozen


def test_spec_augment_only_while_training(clips) -> None:
    enc = LogMelEncoder(hidden_dim=16, output_dim=8, augment=True, dropout=0.0)
    inputs = enc.preprocess(clips[:2])
    enc.eval()
    with torch.no_grad():
        a, b = enc(**inputs)[0], enc(**inputs)[0]
        assert torch.equal(a, b)
        enc.train()
        torch.manual_seed(0)
        c = enc(**inputs)[0]
    assert not torch.allclose(a, c)


def test_trains_with_the_fusion_model_on_fsdd(recordings: Path, tmp_path: Path) -> None:
    from mm_core.pipeline import encode_shard, filter_shard, ingest, score_shard
    from mm_core.training import train_fusion

    src = tmp_path / "fsdd" / "recordings"
    src.mkdir(parents=True)
    for digit in range(10):
        for speaker in ("jackson", "nicolas"):
            for index in (0, 1):
                name = f"{digit}_{speaker}_{index}.wav"
                (src / name).symlink_to(recordings / name)
    _, cfg = small_build(
        tmp_path,
        "mel",
        sources=[{"layout": "fsdd", "root": str(src.parent)}],
        shard_size=20,
        modalities={"audio": {"model": "logmel_cnn_gru", "hidden_dim": 32, "output_dim": 32}, "text": {}},
        training={"enabled": True, "epochs": 4, "batch_size": 20, "lr": 0.003},
    )
    for sid in ingest(cfg):
        score_shard(cfg, sid)
        filter_shard(cfg, sid)
        for m in cfg.modalities:
            encode_shard(cfg, sid, m)
    result = train_fusion(cfg)
    assert result.stack.trainable == ["audio"] and result.stack.codecs["audio"] == "sensor_windows"
    assert result.history[-1]["loss"] < result.history[0]["loss"]
    mel = result.stack.encoders["audio"]
    assert isinstance(mel, LogMelEncoder) and mel.norm_scale.ne(1).all()  # per-bin stats fitted on frames
