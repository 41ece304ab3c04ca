"""Encoders built through the registry from tiny real models saved to disk and loaded back by path."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from safetensors.torch import save_file

import mm_core
from mm_core.encoders.hf_audio import default_feature_extractor
from mm_core.encoders.timm_vision import save_timm_model
from mm_core.encoders.weights import load_state_dict_file
from mm_core.errors import ConfigError, WeightsError
from mm_core.modalities import audio, sensor, vision
from mm_core.normalization import ChannelStats

# ---------------------------------------------------------------- helpers


class _Payload:
    """A pickle that runs code on load: creates a marker file (harmless proof of execution)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (Path.touch, (self.marker,))


def _malicious_checkpoint(path: Path, marker: Path, state: dict[str, torch.Tensor]) -> Path:
    torch.save({"state_dict": state, "extra": _Payload(marker)}, path)
    return path


def _fake_hub_cache(cache: Path, repo_id: str, source_dir: Path) -> Path:
    """Lay files out exactly as huggingface_hub's cache does (refs/main -> snapshots/<commit>)."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    commit = "0" * 40
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    for f in source_dir.iterdir():
        (snapshot / f.name).write_bytes(f.read_bytes())
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    return snapshot


@pytest.fixture(scope="module")
def images(datasets_dir: Path) -> list:
    paths = sorted((datasets_dir / "flickr8k" / "Images").glob("*.jpg"))[:3]
    return [vision.decode(p) for p in paths]


@pytest.fixture(scope="module")
def clips(datasets_dir: Path) -> list[audio.DecodedAudio]:
    return [
        audio.decode(datasets_dir / "fsdd" / "recordings" / "0_george_0.wav"),  # 8 kHz mono
        audio.decode(datasets_dir / "ljspeech-read" / "wavs" / "LJ001-0045.flac"),  # 44.1 kHz mono
        audio.decode(datasets_dir / "imagebind-assets" / "dog_audio.wav"),  # 44.1 kHz stereo
    ]


@pytest.fixture(scope="module")
def har(datasets_dir: Path) -> np.ndarray:
    return sensor.decode(datasets_dir / "sp-sw-har" / "DATA" / "s02" / "s02_01_sw.csv")


# ---------------------------------------------------------------- vision (timm)


@pytest.fixture(scope="module")
def tiny_vit_dir(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, torch.nn.Module]:
    torch.manual_seed(3)
    model = timm.create_model("vit_tiny_patch16_224", img_size=32, depth=1, num_classes=0).eval()
    directory = save_timm_model(model, tmp_path_factory.mktemp("vit") / "tiny-vit")
    return directory, model


# Comparisons against a reference forward pass pin fp32 (``auto`` would be bf16 on a GPU).
def test_timm_vit_loads_by_path_and_matches_in_memory_model(tiny_vit_dir, images) -> None:
    directory, model = tiny_vit_dir
    assert {"config.json", "model.safetensors"} <= set(os.listdir(directory))
    enc = mm_core.get_modality("vision").create_encoder(model=str(directory))
    assert enc.pretrained is True and enc.output_dim == 192 and enc.data_config["input_size"] == (3, 32, 32)
    feats, mask = enc.encode(images, batch_size=2, precision="fp32")
    assert feats.shape == (3, 1 + 4, 192) and mask.all()  # cls + (32/16)^2 patches
    with torch.inference_mode():
        ref = model.forward_features(enc.preprocess(images)["pixel_values"])
    assert torch.allclose(feats, ref, atol=1e-5)


def test_timm_weights_file_safetensors_and_plain_pickle(tiny_vit_dir, images, tmp_path: Path) -> None:
    directory, model = tiny_vit_dir
    pt = tmp_path / "w.pt"
    torch.save(model.state_dict(), pt)  # tensors only: allowed with weights_only=True
    opts = {"model": "vit_tiny_patch16_224", "img_size": 32, "depth": 1}
    for weights in (directory / "model.safetensors", pt):
        enc = mm_core.get_modality("vision").create_encoder(weights=str(weights), **opts)
        assert enc.pretrained
        with torch.inference_mode():
            ref = model.forward_features(enc.preprocess(images)["pixel_values"])
        assert torch.allclose(enc.encode(images, precision="fp32")[0], ref, atol=1e-5)


def test_timm_cnn_feature_maps_become_tokens(images) -> None:
    opts = {"model": "resnet10t", "pretrained": False, "input_size": 64, "crop_pct": 1.0}
    enc = mm_core.get_modality("vision").create_encoder(**opts)
    assert enc.data_config["input_size"] == (3, 64, 64)
    feats, mask = enc.encode(images[:2], precision="fp32")
    with torch.inference_mode():
        fmap = enc.backbone.forward_features(enc.preprocess(images[:2])["pixel_values"])
    _b, c, h, w = fmap.shape
    assert feats.shape == (2, h * w, c) == (2, 4, 512) and mask.all()
    assert torch.allclose(feats, fmap.flatten(2).transpose(1, 2), atol=1e-5)
    assert enc.pretrained is False


def test_timm_augmentation_option_randomises_only_training(tiny_vit_dir, images) -> None:
    directory, _ = tiny_vit_dir
    enc = mm_core.get_modality("vision").create_encoder(model=str(directory), augment=True)
    a, b = enc.preprocess(images)["pixel_values"], enc.preprocess(images)["pixel_values"]
    assert a.shape == b.shape == (3, 3, 32, 32) and not torch.equal(a, b)
    enc.augment = False
    assert torch.equal(enc.preprocess(images)["pixel_values"], enc.preprocess(images)["pixel_values"])


def test_vision_default_is_offline_safe() -> None:
    enc = mm_core.get_modality("vision").create_encoder(img_size=32, depth=1)  # default ViT-S, "auto"
    assert enc.pretrained is False and enc.output_dim == 384
    with pytest.raises(WeightsError, match="local directory"):
        mm_core.get_modality("vision").create_encoder(pretrained=True, img_size=32, depth=1)
    with pytest.raises(ConfigError):
        mm_core.get_modality("vision").create_encoder(model="no_such_model_xyz")


def test_vision_auto_uses_weights_from_the_local_hub_cache(tmp_path: Path, images, monkeypatch) -> None:
    import huggingface_hub

    torch.manual_seed(7)
    real = timm.create_model("vit_tiny_patch16_224", img_size=32, depth=1).eval()  # with its ImageNet head
    src = tmp_path / "src"
    src.mkdir()
    save_file(real.state_dict(), src / "model.safetensors")
    hub_id = timm.models.get_pretrained_cfg("vit_tiny_patch16_224").hf_hub_id
    _fake_hub_cache(tmp_path / "hub", hub_id, src)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    enc = mm_core.get_modality("vision").create_encoder(model="vit_tiny_patch16_224", img_size=32, depth=1)
    assert enc.pretrained is True and enc.source == f"hf-cache:{hub_id}"
    with torch.inference_mode():
        ref = real.forward_features(enc.preprocess(images)["pixel_values"])
    assert torch.allclose(enc.encode(images, precision="fp32")[0], ref, atol=1e-5)


# ---------------------------------------------------------------- audio (transformers)


@pytest.fixture(scope="module")
def tiny_wav2vec2_dir(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, torch.nn.Module]:
    from transformers import Wav2Vec2Config, Wav2Vec2Model

    cfg = Wav2Vec2Config(
        hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=37,
        conv_dim=(16, 16, 16), conv_kernel=(10, 8, 4), conv_stride=(5, 4, 4),
        num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2,
        feat_extract_norm="layer", do_stable_layer_norm=True,
    )  # fmt: skip
    torch.manual_seed(0)
    model = Wav2Vec2Model(cfg).eval()
    directory = tmp_path_factory.mktemp("w2v") / "tiny-wav2vec2"
    model.save_pretrained(directory)
    default_feature_extractor(cfg).save_pretrained(directory)
    return directory, model


def test_wav2vec2_by_path_masks_real_frames_and_matches_model(tiny_wav2vec2_dir, clips) -> None:
    directory, model = tiny_wav2vec2_dir
    enc = mm_core.get_modality("audio").create_encoder(model=str(directory))
    assert enc.pretrained is True and enc.output_dim == 32 and enc.pass_attention_mask
    feats, mask = enc.encode(clips, batch_size=3, precision="fp32")
    n16k = torch.tensor([len(audio.prepare_waveform(c)) for c in clips])
    frames = model._get_feat_extract_output_lengths(n16k)
    assert mask.sum(1).tolist() == frames.tolist()
    assert feats.shape == (3, int(frames.max()), 32)  # padded to the longest clip, not 30 s
    for i, clip in enumerate(clips):  # each clip alone through the in-memory model
        inputs = enc.preprocess([clip])
        with torch.inference_mode():
            ref = model(inputs["input_values"], attention_mask=inputs["attention_mask"]).last_hidden_state[0]
        assert torch.allclose(feats[i, : frames[i]], ref, atol=1e-4)  # batching/padding does not leak


def test_whisper_encoder_pads_to_30s_but_masks_real_frames(tmp_path: Path, clips) -> None:
    from transformers import WhisperConfig, WhisperModel

    cfg = WhisperConfig(
        d_model=32, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2, decoder_attention_heads=2,
        encoder_ffn_dim=37, decoder_ffn_dim=37, num_mel_bins=80, vocab_size=100, max_target_positions=32,
        pad_token_id=0, bos_token_id=1, eos_token_id=2, decoder_start_token_id=1,
        begin_suppress_tokens=None, suppress_tokens=None,
    )  # fmt: skip
    torch.manual_seed(0)
    WhisperModel(cfg).save_pretrained(tmp_path)
    enc = mm_core.get_modality("audio").create_encoder(model=str(tmp_path))
    assert enc.is_whisper and enc.output_dim == 32
    inputs = enc.preprocess(clips[:2])
    assert inputs["input_features"].shape == (2, 80, 3000)  # the model's own fixed 30 s window
    feats, mask = enc.encode(clips[:2])
    mel_frames = [int(np.ceil(len(audio.prepare_waveform(c)) / 160)) for c in clips[:2]]
    expected = [(m - 1) // 2 + 1 for m in mel_frames]
    assert mask.sum(1).tolist() == expected and feats.shape[1] == max(expected) < 1500


def test_audio_default_loads_from_hub_cache_when_present(tiny_wav2vec2_dir, tmp_path, monkeypatch) -> None:
    import huggingface_hub

    directory, _ = tiny_wav2vec2_dir
    snapshot = _fake_hub_cache(tmp_path, "facebook/wav2vec2-base", directory)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    enc = mm_core.get_modality("audio").create_encoder()  # default name, pretrained="auto"
    assert enc.pretrained is True and Path(enc.source) == snapshot and enc.output_dim == 32


def test_audio_default_falls_back_offline_and_pretrained_true_fails_clearly(clips) -> None:
    enc = mm_core.get_modality("audio").create_encoder()
    assert enc.pretrained is False and enc.source.startswith("random")
    feats, mask = enc.encode(clips[:1])
    assert feats.shape[-1] == 256 and mask.any()
    with pytest.raises(WeightsError, match="local directory"):
        mm_core.get_modality("audio").create_encoder(model="facebook/hubert-base-ls960", pretrained=True)


# ---------------------------------------------------------------- text (transformers)


@pytest.fixture(scope="module")
def tiny_bert_dir(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, torch.nn.Module]:
    from transformers import AutoTokenizer, BertConfig, BertModel

    from mm_core.encoders.hf_text import default_text_model

    tok = AutoTokenizer.from_pretrained(default_text_model())
    cfg = BertConfig(
        vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=37, max_position_embeddings=128,
    )  # fmt: skip
    torch.manual_seed(0)
    model = BertModel(cfg).eval()
    directory = tmp_path_factory.mktemp("bert") / "tiny-bert"
    model.save_pretrained(directory)
    tok.save_pretrained(directory)
    return directory, model


def test_text_encoder_by_path_pads_dynamically_and_matches_model(tiny_bert_dir, datasets_dir: Path) -> None:
    directory, model = tiny_bert_dir
    lines = (datasets_dir / "flickr8k" / "captions.txt").read_text(encoding="utf-8").splitlines()[1:5]
    texts = [line.split(",", 1)[1] for line in lines] + ["A dog."]
    enc = mm_core.get_modality("text").create_encoder(model=str(directory))
    assert enc.pretrained and enc.output_dim == 32 and enc.max_length == 128
    batch = enc.preprocess(texts)
    counts = [len(enc.tokenizer(t)["input_ids"]) for t in texts]
    assert batch["input_ids"].shape == (len(texts), max(counts))  # the longest item, never 512
    assert batch["attention_mask"].sum(1).tolist() == counts
    feats, mask = enc.encode(texts, batch_size=2, precision="fp32")
    assert mask.sum(1).tolist() == counts and feats.shape == (len(texts), max(counts), 32)
    with torch.inference_mode():
        ref = model(**enc.tokenizer(texts[:1], return_tensors="pt")).last_hidden_state[0]
    assert torch.allclose(feats[0, : counts[0]], ref, atol=1e-5)


def test_text_truncates_at_model_limit(tiny_bert_dir) -> None:
    directory, _ = tiny_bert_dir
    enc = mm_core.get_modality("text").create_encoder(model=str(directory), max_length=16)
    feats, mask = enc.encode(["word " * 300])
    assert feats.shape[1] == 16 and mask.all()


def test_text_unknown_model_fails_with_clear_error() -> None:
    with pytest.raises(WeightsError, match="local directory"):
        mm_core.get_modality("text").create_encoder(model="no-such-org/no-such-model")


# ---------------------------------------------------------------- sensor


def test_sensor_encoder_on_real_window_with_stored_stats(har: np.ndarray, tmp_path: Path) -> None:
    enc = mm_core.get_modality("sensor").create_encoder(target_length=128)
    assert enc.pretrained is False and enc.output_dim == 128
    stats = enc.fit_stats([har], path=tmp_path / "stats.json")
    window = har[:100]
    feats, mask = enc.encode([window, har[:300]])
    # 300 samples -> 3 windows of 128 -> 3 x 32 tokens, of which ceil(300 / 4) = 75 are real
    assert feats.shape == (2, 75, 128) and mask.sum(1).tolist() == [25, 75]
    assert torch.isfinite(feats).all()
    alone, _ = enc.encode([window])
    assert torch.allclose(alone[0], feats[0, :25], atol=1e-5)
    longer_windows = mm_core.get_modality("sensor").create_encoder(target_length=256, stats=stats)
    assert longer_windows.weights_id() == enc.weights_id()
    padded_more, mask_more = longer_windows.encode([window])  # 156 padded steps instead of 28
    assert mask_more.sum() == 25 and torch.allclose(padded_more, alone, atol=1e-5)  # padding never leaks
    with torch.inference_mode():  # stats are applied: same as normalising by hand with identity stats
        ident = mm_core.get_modality("sensor").create_encoder(target_length=128)
        by_hand, _ = ident.encode([stats.apply(window)])
    assert torch.allclose(by_hand, alone, atol=1e-5)

    reused = mm_core.get_modality("sensor").create_encoder(target_length=128, stats=str(tmp_path / "stats.json"))
    assert torch.allclose(reused.encode([window])[0], alone, atol=1e-6)


def test_sensor_encoder_checkpoint_round_trip_and_nan(har: np.ndarray, tmp_path: Path) -> None:
    opts = {"model": "cnn_gru", "in_channels": 3, "hidden_dim": 32, "output_dim": 16, "seed": 5}
    enc = mm_core.get_modality("sensor").create_encoder(**opts)
    enc.set_stats(ChannelStats.fit([har[:, :3]]))
    path = enc.save(tmp_path / "sensor.safetensors")
    loaded = mm_core.get_modality("sensor").create_encoder(weights=str(path))  # architecture from the file
    assert loaded.pretrained is True and loaded.arch == enc.arch and loaded.weights_id() == enc.weights_id()
    x = har[:256, :3].copy()
    assert torch.equal(loaded.encode([x])[0], enc.encode([x])[0])
    x[10, 2] = np.nan
    x[20, 0] = np.inf
    assert torch.isfinite(loaded.encode([x])[0]).all()
    with pytest.raises(ConfigError):
        enc.encode([har])  # wrong channel count is a clear error


# ---------------------------------------------------------------- unsafe checkpoints


def test_pickle_with_code_is_refused_everywhere(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    enc = mm_core.get_modality("sensor").create_encoder(hidden_dim=16, output_dim=8)
    bad = _malicious_checkpoint(tmp_path / "evil.pt", marker, enc.state_dict())
    with pytest.raises(WeightsError, match="refused"):
        load_state_dict_file(bad)
    with pytest.raises(WeightsError, match="refused"):
        mm_core.get_modality("sensor").create_encoder(hidden_dim=16, output_dim=8, weights=str(bad))
    vit = timm.create_model("vit_tiny_patch16_224", img_size=32, depth=1, num_classes=0)
    bad_vit = _malicious_checkpoint(tmp_path / "evil_vit.pt", marker, vit.state_dict())
    with pytest.raises(WeightsError, match="weights_only"):
        mm_core.get_modality("vision").create_encoder(
            model="vit_tiny_patch16_224", weights=str(bad_vit), img_size=32, depth=1
        )
    assert not marker.exists()  # the payload never ran
    good = tmp_path / "good.pt"
    torch.save({"state_dict": enc.state_dict()}, good)
    assert set(load_state_dict_file(good)) == set(enc.state_dict())
