"""Decoding and preprocessing of the built-in modalities on real shared files and generated edge cases."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from PIL import Image

import mm_core
from mm_core.errors import DecodeError
from mm_core.modalities import audio, sensor, text, vision
from mm_core.normalization import ChannelStats

# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def jpeg_path(datasets_dir: Path) -> Path:
    return sorted((datasets_dir / "flickr8k" / "Images").glob("*.jpg"))[0]


@pytest.fixture(scope="module")
def har_csv(datasets_dir: Path) -> Path:
    return datasets_dir / "sp-sw-har" / "DATA" / "s01" / "s01_01_sp.csv"


def _png_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


# ---------------------------------------------------------------- registry


def test_builtin_modalities_are_registered_with_decoders_and_extensions() -> None:
    names = mm_core.available_modalities()
    for name, ext in [("vision", ".jpg"), ("audio", ".flac"), ("text", ".txt"), ("sensor", ".npy")]:
        assert name in names
        spec = mm_core.get_modality(name)
        assert ext in spec.extensions
        assert callable(spec.decode) and callable(spec.score)
    assert mm_core.get_modality("vision").default_encoder["pretrained"] == "auto"


# ---------------------------------------------------------------- vision


def test_vision_decodes_real_jpeg_from_path_and_bytes(jpeg_path: Path) -> None:
    from_path = vision.decode(jpeg_path)
    from_bytes = vision.decode(jpeg_path.read_bytes())
    assert from_path.mode == "RGB" and from_path.width > 100 and from_path.height > 100
    assert np.array_equal(np.asarray(from_path), np.asarray(from_bytes))
    assert vision.decode(str(jpeg_path)).size == from_path.size


@pytest.mark.parametrize("fmt", ["WEBP", "BMP", "PNG"])
def test_vision_decodes_promised_formats(jpeg_path: Path, fmt: str) -> None:
    buf = io.BytesIO()
    Image.open(jpeg_path).save(buf, format=fmt)
    img = vision.decode(buf.getvalue())
    assert img.mode == "RGB" and img.size == Image.open(jpeg_path).size


def test_vision_bad_inputs_raise_decode_error(jpeg_path: Path, tmp_path: Path) -> None:
    data = jpeg_path.read_bytes()
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(data[: len(data) // 2])
    png = bytearray(_png_bytes(Image.open(jpeg_path)))
    png[1:4] = b"XYZ"  # break the PNG signature
    gif = io.BytesIO()
    Image.new("RGB", (8, 8)).save(gif, format="GIF")  # a real image in a format we do not accept
    bad = [
        empty,
        truncated,
        bytes(png),
        b"",
        b"not an image at all",
        tmp_path / "missing.jpg",
        gif.getvalue(),
        42,
    ]
    for item in bad:
        with pytest.raises(DecodeError):
            vision.decode(item)


def test_vision_decompression_bomb_limit_is_enforced(jpeg_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    w, h = Image.open(jpeg_path).size
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", int(w * h * 0.8))  # warning range: treated as error
    with pytest.raises(DecodeError, match="decompression bomb"):
        vision.decode(jpeg_path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", int(w * h * 0.3))  # PIL's hard error range
    with pytest.raises(DecodeError, match="decompression bomb"):
        vision.decode(jpeg_path)


def test_vision_cmyk_jpeg_decodes_to_matching_rgb(jpeg_path: Path) -> None:
    rgb = Image.open(jpeg_path).convert("RGB")
    buf = io.BytesIO()
    rgb.convert("CMYK").save(buf, format="JPEG", quality=95)
    out = vision.decode(buf.getvalue())
    assert out.mode == "RGB"
    diff = np.abs(np.asarray(out, dtype=np.int16) - np.asarray(rgb, dtype=np.int16))
    assert diff.mean() < 6  # JPEG loss only; an un-converted or inverted CMYK would be far off


def test_vision_16bit_png_is_scaled_not_clipped() -> None:
    ramp = np.tile(np.linspace(0, 65535, 256).astype(np.uint16), (16, 1))
    out = np.asarray(vision.decode(_png_bytes(Image.fromarray(ramp))))
    assert out.shape == (16, 256, 3) and out.dtype == np.uint8
    expected = np.rint(ramp / 257.0).astype(np.uint8)
    assert np.array_equal(out[..., 0], expected)
    assert np.array_equal(out[..., 0], out[..., 2])
    assert (out[..., 0] == 255).mean() < 0.01  # clipping would saturate almost every pixel


def test_vision_alpha_and_palette_and_grey_become_rgb() -> None:
    rgba = Image.new("RGBA", (4, 4), (10, 20, 30, 0))  # fully transparent
    assert np.asarray(vision.decode(_png_bytes(rgba)))[0, 0].tolist() == [255, 255, 255]
    grey = Image.new("L", (4, 4), 77)
    assert np.asarray(vision.decode(_png_bytes(grey)))[0, 0].tolist() == [77, 77, 77]
    pal = Image.new("RGB", (4, 4), (200, 10, 10)).convert("P", palette=Image.Palette.ADAPTIVE)
    assert np.asarray(vision.decode(_png_bytes(pal)))[0, 0].tolist() == [200, 10, 10]


def test_vision_exif_orientation_is_applied(jpeg_path: Path) -> None:
    img = Image.open(jpeg_path).convert("RGB")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    buf = io.BytesIO()
    img.save(buf, format="JPEG", exif=exif)
    assert vision.decode(buf.getvalue()).size == (img.height, img.width)


def test_vision_eval_and_train_transforms_follow_the_data_config(jpeg_path: Path) -> None:
    cfg = {"input_size": (3, 224, 224), "crop_pct": 0.875, "mean": (0.485, 0.456, 0.406),
           "std": (0.229, 0.224, 0.225), "interpolation": "bilinear"}  # fmt: skip
    img = vision.decode(jpeg_path)
    ev = vision.build_transform(cfg)
    a, b = ev(img), ev(img)
    assert a.shape == (3, 224, 224) and np.allclose(a, b)
    resize = next(t for t in ev.transforms if type(t).__name__ == "Resize")
    assert resize.size in (256, [256])  # resize 256, then center crop 224
    tr = vision.build_transform(cfg, train=True)
    names = {type(t).__name__ for t in tr.transforms}
    assert {"RandomHorizontalFlip", "ColorJitter"} <= names
    assert any("RandomResizedCrop" in n for n in names)
    assert tr(img).shape == (3, 224, 224)


# ---------------------------------------------------------------- audio


def test_audio_decodes_real_files(datasets_dir: Path) -> None:
    fsdd = audio.decode(datasets_dir / "fsdd" / "recordings" / "0_george_0.wav")
    assert fsdd.sample_rate == 8000 and fsdd.samples.shape[0] == 1 and fsdd.samples.dtype == np.float32
    assert 0.1 < fsdd.duration < 2.5
    lj_path = datasets_dir / "ljspeech-read" / "wavs" / "LJ001-0009.flac"
    lj = audio.decode(lj_path)
    assert lj.sample_rate == 44100 and lj.samples.shape[0] == 1
    assert lj.duration == pytest.approx(sf.info(str(lj_path)).duration)
    dog = audio.decode(datasets_dir / "imagebind-assets" / "dog_audio.wav")
    assert dog.sample_rate == 44100 and dog.samples.shape[0] == 2 and dog.duration == pytest.approx(2.61, abs=0.01)
    assert np.abs(dog.samples).max() <= 1.0 and np.abs(dog.samples).max() > 0.01
    from_bytes = audio.decode((datasets_dir / "imagebind-assets" / "dog_audio.wav").read_bytes())
    assert np.array_equal(from_bytes.samples, dog.samples)


def test_audio_bad_inputs_raise_decode_error(datasets_dir: Path, tmp_path: Path) -> None:
    wav = (datasets_dir / "fsdd" / "recordings" / "0_george_0.wav").read_bytes()
    flac = (datasets_dir / "ljspeech-read" / "wavs" / "LJ001-0009.flac").read_bytes()
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    bad = [
        empty,
        wav[: len(wav) // 2],
        wav[:44],
        flac[: len(flac) // 2],
        b"RIFF....garbage",
        tmp_path / "nope.wav",
    ]
    for item in bad:
        with pytest.raises(DecodeError):
            audio.decode(item)


def test_resampling_keeps_frequency_and_duration() -> None:
    sr, secs, freq = 44100, 1.5, 440.0
    t = np.arange(int(sr * secs)) / sr
    tone = (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)
    buf = io.BytesIO()
    sf.write(buf, np.stack([tone, tone], axis=1), sr, format="FLAC")
    decoded = audio.decode(buf.getvalue())
    wave = audio.prepare_waveform(decoded)
    assert abs(len(wave) - secs * 16000) <= 1
    spectrum = np.abs(np.fft.rfft(wave * np.hanning(len(wave))))
    peak_hz = np.argmax(spectrum) * 16000 / len(wave)
    assert abs(peak_hz - freq) < 2.0
    assert np.abs(wave).max() == pytest.approx(0.5, abs=0.02)  # mono mix-down of equal channels keeps level


def test_audio_is_truncated_at_30_seconds() -> None:
    rng = np.random.default_rng(0)
    long = audio.DecodedAudio(rng.uniform(-0.1, 0.1, (1, 8000 * 31)).astype(np.float32), 8000)
    assert len(audio.prepare_waveform(long)) == 30 * 16000


def test_audio_batch_is_padded_to_longest_clip_not_30s(datasets_dir: Path) -> None:
    names = ["0_george_0.wav", "1_jackson_1.wav", "7_lucas_2.wav"]
    clips = [audio.decode(datasets_dir / "fsdd" / "recordings" / n) for n in names]
    waves = [audio.prepare_waveform(c) for c in clips]
    for c, w in zip(clips, waves, strict=True):
        assert abs(len(w) - c.samples.shape[1] * 2) <= 1  # 8 kHz -> 16 kHz from the file's OWN rate
    values, mask = audio.pad_waveforms(waves)
    longest = max(len(w) for w in waves)
    assert values.shape == (3, longest) and longest < 30 * 16000
    assert mask.sum(1).tolist() == [len(w) for w in waves]
    for i, w in enumerate(waves):
        assert np.allclose(values[i, : len(w)].numpy(), w) and not values[i, len(w) :].any()


# ---------------------------------------------------------------- text


def test_text_decoding_is_strict_utf8(tmp_path: Path) -> None:
    assert text.decode("some/path/like/string.txt") == "some/path/like/string.txt"  # str is the text
    s = "Café, naïve, 東京, emoji 🙂"
    assert text.decode(s.encode("utf-8")) == s
    assert text.decode(b"\xef\xbb\xbf" + s.encode("utf-8")) == s
    f = tmp_path / "t.txt"
    f.write_bytes(s.encode("utf-8"))
    assert text.decode(f) == s
    for bad in [b"caf\xe9", b"\xff\xfe\x00", tmp_path / "missing.txt", 3.5]:
        with pytest.raises(DecodeError):
            text.decode(bad)


# ---------------------------------------------------------------- sensor


def test_sensor_csv_keeps_signal_columns_only(har_csv: Path) -> None:
    series = sensor.decode(har_csv)
    ref = pd.read_csv(har_csv)[["x_acc", "y_acc", "z_acc", "x_gyro", "y_gyro", "z_gyro"]].to_numpy(np.float32)
    assert series.dtype == np.float32 and series.shape == ref.shape
    assert np.array_equal(series, ref)  # timestamp dropped by name, label by content
    assert np.array_equal(sensor.decode(har_csv.read_bytes()), ref)


def test_sensor_csv_variants_and_errors(tmp_path: Path) -> None:
    no_header = sensor.decode(b"1,2,walk\n3,4,sit\n")
    assert no_header.tolist() == [[1, 2], [3, 4]]
    with_gap = sensor.decode(b"a,b\n1,\n3,4\n")
    assert np.isnan(with_gap[0, 1]) and with_gap[1, 1] == 4  # a missing cell is NaN, kept for the scorer
    assert sensor.decode(b"a;b\n1;2\n").tolist() == [[1, 2]]
    for bad in [
        b"a,b\n1,2\n3\n",
        b"a,b\n1,2\n3,4,5\n",
        b"label\nx\ny\n",
        b"",
        b"a,b\n",
        tmp_path / "none.csv",
    ]:
        with pytest.raises(DecodeError):
            sensor.decode(bad)


def test_sensor_npy_path_bytes_and_shapes(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    arr = rng.normal(size=(50, 3)).astype(np.float64)
    arr[4, 1] = np.nan
    arr[5, 2] = np.inf
    path = tmp_path / "s.npy"
    np.save(path, arr)
    out = sensor.decode(path)
    assert out.dtype == np.float32 and out.shape == (50, 3)
    assert np.isnan(out[4, 1]) and np.isinf(out[5, 2])  # kept: the scorer reports them
    assert np.array_equal(sensor.decode(path.read_bytes()), out, equal_nan=True)
    np.save(path, np.arange(7))
    assert sensor.decode(path).shape == (7, 1)
    np.save(path, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(DecodeError):
        sensor.decode(path)  # never unpickled
    np.save(path, np.zeros((2, 3, 4)))
    with pytest.raises(DecodeError):
        sensor.decode(path)


def test_sensor_segments_pad_with_lengths_and_cut_windows() -> None:
    x = np.arange(30, dtype=np.float32).reshape(15, 2)
    (win, n), *rest = sensor.segment(x, 8, long_series="truncate")
    assert not rest and n == 8 and np.array_equal(win, x[:8])
    wins = sensor.segment(x, 8)
    assert [n for _, n in wins] == [8, 7] and not wins[1][0][7:].any()
    short = sensor.segment(x[:3], 8)
    assert short[0][1] == 3 and short[0][0].shape == (8, 2)
    assert sensor.sliding_windows(x, 5, hop=5).shape == (3, 5, 2)
    assert np.array_equal(sensor.sliding_windows(x, 5, hop=2)[1], x[2:7])
    assert np.allclose(sensor.calibrate(x, [1, 2]), x - [1, 2])


# ---------------------------------------------------------------- normalisation statistics


def test_channel_stats_streaming_equals_full_fit_and_round_trips(har_csv: Path, tmp_path: Path) -> None:
    series = sensor.decode(har_csv)
    a, b = series[:500], series[500:]
    streamed = ChannelStats.fit([a, b])
    full = ChannelStats.fit([series])
    assert np.allclose(streamed.mean, series.astype(np.float64).mean(0))
    assert np.allclose(streamed.var, series.astype(np.float64).var(0), rtol=1e-6)
    assert np.allclose(streamed.mean, full.mean) and np.allclose(streamed.m2, full.m2, rtol=1e-9)
    assert np.array_equal(streamed.minimum, series.min(0)) and np.array_equal(streamed.maximum, series.max(0))
    z = streamed.apply(series)
    assert np.allclose(z.mean(0), 0, atol=1e-4) and np.allclose(z.std(0), 1, atol=1e-3)

    path = streamed.save(tmp_path / "stats" / "sensor.json")
    reloaded = ChannelStats.load(path)
    assert np.array_equal(reloaded.apply(b), streamed.apply(b))  # reuse gives the same normalisation

    mm = ChannelStats.fit([a, b], method="minmax").apply(series)
    assert np.allclose(mm.min(0), 0) and np.allclose(mm.max(0), 1)


def test_channel_stats_ignore_nonfinite_values() -> None:
    x = np.array([[1.0, 5.0], [np.nan, 7.0], [3.0, np.inf]])
    stats = ChannelStats.fit([x])
    assert stats.count.tolist() == [2, 2] and stats.mean.tolist() == [2.0, 6.0]
    with pytest.raises(ValueError):
        stats.apply(np.zeros((3, 3)))
