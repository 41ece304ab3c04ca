"""Bad input never stops a shard (SPEC R1) and manifest paths stay confined (R3).

One shard mixes real good samples with 20+ kinds of broken, hostile or odd input,
read by the real manifest reader and filtered by the real decoders and scorers.
"""

from __future__ import annotations

import io
import json
import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import soundfile as sf
from PIL import Image
from scipy.signal import resample_poly

from mm_core.data.sources import read_source
from mm_core.quality import score_and_filter

CAPTION = "A dog runs across the grass with a ball."


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _bomb_png(side: int) -> bytes:
    """A tiny PNG that declares ``side`` x ``side`` 1-bit pixels (far above PIL's bomb limit)."""
    ihdr = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    chunks = _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b"")
    return b"\x89PNG\r\n\x1a\n" + chunks


def _npy(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=True)
    return buf.getvalue()


def _build_shard(root: Path, outside: Path, datasets: Path) -> tuple[Path, dict[str, list[str]], set[str]]:
    """Write media + manifest.jsonl; return (manifest, {bad id: reason fragments}, good ids)."""
    media = root / "media"
    media.mkdir(parents=True)
    outside.mkdir()
    photo_path = sorted((datasets / "flickr8k" / "Images").glob("*.jpg"))[0]
    photo = Image.open(photo_path).convert("RGB")
    jpeg = photo_path.read_bytes()
    fsdd = datasets / "fsdd" / "recordings" / "7_george_12.wav"
    speech, rate = sf.read(fsdd, dtype="float32")
    flac = sorted((datasets / "ljspeech-read" / "wavs").glob("*.flac"))[0]
    imu = pd.read_csv(sorted((datasets / "sp-sw-har" / "DATA" / "s02").glob("*_sp.csv"))[0])
    window = imu.iloc[:300, :6].to_numpy(np.float32)

    # ---- good, including the conversions that must be accepted
    photo.save(media / "photo.png")
    photo.convert("CMYK").save(media / "cmyk.jpg", quality=92)
    gray16 = (np.asarray(photo.convert("L"), np.uint16) * 257).astype(np.uint16)
    Image.fromarray(gray16).save(media / "gray16.png")  # mode I;16
    assert Image.open(media / "gray16.png").mode.startswith("I")
    stereo = resample_poly(speech, 441, 80).astype(np.float32)  # 8 kHz -> 44.1 kHz
    sf.write(media / "stereo44k.wav", np.stack([stereo, 0.8 * stereo], axis=1), 44100, subtype="PCM_16")
    noisy = speech + np.random.default_rng(1).normal(0, 0.03, speech.shape).astype(np.float32)
    sf.write(media / "noisy.wav", np.clip(noisy, -1, 1), rate, subtype="PCM_16")
    np.save(media / "window.npy", window)
    imu.iloc[:400].to_csv(media / "imu.csv", index=False)

    # ---- bad
    (media / "empty.jpg").write_bytes(b"")
    (media / "truncated.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    png = (media / "photo.png").read_bytes()
    (media / "badheader.png").write_bytes(b"\x89PNX\r\n\x00\x00" + png[8:])
    (media / "bomb.png").write_bytes(_bomb_png(20_000))
    wav = io.BytesIO()
    sf.write(wav, speech, rate, format="WAV", subtype="PCM_16")
    (media / "truncated.wav").write_bytes(wav.getvalue()[: len(wav.getvalue()) * 6 // 10])
    flac_bytes = flac.read_bytes()
    rng = np.random.default_rng(0)
    (media / "corrupt.flac").write_bytes(flac_bytes[:8192] + rng.bytes(len(flac_bytes) - 8192))
    sf.write(media / "zero.wav", np.zeros((0, 1), np.float32), 16000)
    sf.write(media / "silent.wav", np.zeros(16000, np.float32), 16000)
    nan_inf = window.copy()
    nan_inf[5:40, 1] = np.nan
    nan_inf[50, 3] = np.inf
    pd.DataFrame(nan_inf, columns=list("abcdef")).to_csv(media / "naninf.csv", index=False)
    (media / "ragged.csv").write_text("a,b,c\n1,2,3\n4,5\n6,7,8,9\n")
    (media / "pickled.npy").write_bytes(_npy(np.array([{"x": 1}], dtype=object)))
    (outside / "secret.jpg").write_bytes(jpeg)
    (media / "link.jpg").symlink_to(outside / "secret.jpg")

    rows: list[dict] = [
        {"sample_id": "good_real_jpeg", "vision": str(photo_path), "text": CAPTION},
        {"sample_id": "good_png", "vision": "media/photo.png"},
        {"sample_id": "good_cmyk_jpeg", "vision": "media/cmyk.jpg", "text": CAPTION},
        {"sample_id": "good_16bit_png", "vision": "media/gray16.png"},
        {"sample_id": "good_real_wav", "audio": str(fsdd), "text": "seven"},
        {"sample_id": "good_stereo_44k", "audio": "media/stereo44k.wav"},
        {"sample_id": "good_real_flac", "audio": str(flac)},
        {"sample_id": "good_noisy_wav", "audio": "media/noisy.wav", "text": "seven"},
        {"sample_id": "good_text", "text": "How many points did the Panthers defense surrender?"},
        {"sample_id": "good_npy", "sensor": "media/window.npy", "text": "walking"},
        {"sample_id": "good_csv", "sensor": "media/imu.csv"},
        {"sample_id": "empty_file", "vision": "media/empty.jpg", "text": CAPTION},
        {"sample_id": "truncated_jpeg", "vision": "media/truncated.jpg"},
        {"sample_id": "png_wrong_header", "vision": "media/badheader.png"},
        {"sample_id": "decompression_bomb", "vision": "media/bomb.png"},
        {"sample_id": "truncated_wav", "audio": "media/truncated.wav"},
        {"sample_id": "corrupt_flac", "audio": "media/corrupt.flac"},
        {"sample_id": "zero_length_wav", "audio": "media/zero.wav"},
        {"sample_id": "silent_audio", "audio": "media/silent.wav"},
        {"sample_id": "invalid_utf8", "text": "@@BAD@@"},
        {"sample_id": "empty_text", "text": ""},
        {"sample_id": "huge_text", "text": "word " * 20_000},
        {"sample_id": "nan_inf_sensor", "sensor": "media/naninf.csv"},
        {"sample_id": "ragged_csv", "sensor": "media/ragged.csv"},
        {"sample_id": "pickled_npy", "sensor": "media/pickled.npy"},
        {"sample_id": "missing_file", "vision": "media/nope.jpg", "text": CAPTION},
        {"sample_id": "dotdot", "vision": "../" * 12 + "etc/passwd"},
        {"sample_id": "absolute_outside", "vision": str(outside / "secret.jpg")},
        {"sample_id": "symlink_outside", "vision": "media/link.jpg"},
        {"sample_id": "unknown_modality", "smell": "media/photo.png", "text": CAPTION},
        {"sample_id": "no_modality", "labels": {"note": "nothing here"}},
    ]
    lines = [json.dumps(r).encode() for r in rows]
    lines = [ln.replace(b"@@BAD@@", b"caf\xc3\x28 \xff\xfe\xfd na\xefve") for ln in lines]
    lines.insert(13, b'{"sample_id": "broken_json", "vision": ')
    manifest = root / "manifest.jsonl"
    manifest.write_bytes(b"\n".join(lines) + b"\n")

    expected = {
        "empty_file": ["vision: decode failed", "empty"],
        "truncated_jpeg": ["vision: decode failed", "truncated"],
        "png_wrong_header": ["vision: decode failed", "not a"],
        "decompression_bomb": ["vision: decode failed", "decompression bomb"],
        "truncated_wav": ["audio: decode failed", "truncated"],
        "corrupt_flac": ["audio: decode failed", "flac"],
        "zero_length_wav": ["audio: decode failed", "no samples"],
        "silent_audio": ["audio.silence_ratio 1.0 > 0.95", "audio.snr_db 0.0 < 3.0"],
        "invalid_utf8": ["text.replacement_ratio"],
        "empty_text": ["text.chars 0.0 < 1.0"],
        "huge_text": ["text.chars 100000.0 > 20000.0"],
        "nan_inf_sensor": ["sensor.nan_fraction", "sensor.inf_fraction"],
        "ragged_csv": ["sensor: decode failed", "malformed"],
        "pickled_npy": ["sensor: decode failed", ".npy"],
        "missing_file": ["ingest: vision: missing file"],
        "dotdot": ["ingest: vision: path escapes data root"],
        "absolute_outside": ["ingest: vision: path escapes data root"],
        "symlink_outside": ["ingest: vision: symlink escapes data root"],
        "unknown_modality": ["ingest: unknown modality 'smell'"],
        "line-14": ["ingest: invalid json"],
        "no_modality": ["no modality"],
    }
    good = {r["sample_id"] for r in rows if r["sample_id"].startswith("good_")}
    return manifest, expected, good


@pytest.fixture(scope="module")
def shard(tmp_path_factory, datasets_dir):
    tmp = tmp_path_factory.mktemp("bad_input")
    manifest, expected, good = _build_shard(tmp / "data", tmp / "outside", datasets_dir)
    records = list(read_source("manifest", tmp / "data", path=manifest, allowed_roots=[datasets_dir]))
    return records, expected, good


def _by_id(df: pd.DataFrame) -> dict[str, pd.Series]:
    return {sid.split("/", 1)[1]: row for sid, (_, row) in zip(df["sample_id"], df.iterrows(), strict=True)}


def test_shard_with_bad_input_is_fully_accounted(shard):
    records, expected, good = shard
    assert len(records) == len(expected) + len(good)
    accepted, rejected = score_and_filter(records)  # nothing raises
    assert len(accepted) + len(rejected) == len(records)
    assert set(accepted["sample_id"]).isdisjoint(rejected["sample_id"])
    acc, rej = _by_id(accepted), _by_id(rejected)
    assert set(acc) == good, {k: list(v["reasons"]) for k, v in rej.items() if k in good}
    assert set(rej) == set(expected)
    for sample_id, fragments in expected.items():
        reasons = list(rej[sample_id]["reasons"])
        assert reasons and all(isinstance(r, str) and r.strip() for r in reasons), sample_id
        joined = " | ".join(reasons).lower()
        for fragment in fragments:
            assert fragment.lower() in joined, (sample_id, fragment, reasons)


def test_converted_inputs_are_scored_after_conversion(shard):
    records, _, _ = shard
    accepted, _ = score_and_filter(records)
    acc = _by_id(accepted)
    # 16-bit PNG scaled to 8 bits (not clipped to white), CMYK converted to RGB.
    assert 0.1 < acc["good_16bit_png"]["q_vision_brightness"] < 0.9
    assert acc["good_16bit_png"]["q_vision_bright_clip"] < 0.2
    assert abs(acc["good_cmyk_jpeg"]["q_vision_brightness"] - acc["good_png"]["q_vision_brightness"]) < 0.05
    assert acc["good_stereo_44k"]["q_audio_channels"] == 2.0
    assert acc["good_stereo_44k"]["q_audio_sample_rate"] == 44100.0
    assert acc["good_stereo_44k"]["q_audio_duration_s"] == pytest.approx(
        acc["good_real_wav"]["q_audio_duration_s"], abs=0.01
    )


def test_overall_rule_applied_to_shard(shard):
    """A strict overall minimum rejects good samples by that rule alone (SPEC defect 10)."""
    records, _, good = shard
    good_records = [r for r in records if r.sample_id.split("/", 1)[1] in good]
    base, _ = score_and_filter(good_records)
    cut = 0.999  # strict: anything short of perfect fails
    below = set(base.loc[base["q_overall"] < cut, "sample_id"])
    assert "manifest/good_noisy_wav" in below and len(below) < len(base)
    accepted, rejected = score_and_filter(good_records, {"overall": {"min": cut}})
    assert set(rejected["sample_id"]) == below
    for reasons, q in zip(rejected["reasons"], rejected["q_overall"], strict=True):
        assert len(reasons) == 1 and reasons[0].startswith("overall ")
        assert float(reasons[0].split()[1]) == pytest.approx(q, rel=5e-3)
    assert len(accepted) + len(rejected) == len(good_records)


def test_parquet_manifest_with_inline_bytes(tmp_path, datasets_dir):
    photo = sorted((datasets_dir / "flickr8k" / "Images").glob("*.jpg"))[1].read_bytes()
    rows = {
        "sample_id": ["bytes_ok", "bytes_bad_utf8", "bytes_truncated_jpeg", "bytes_empty"],
        "vision": [photo, None, photo[:300], b""],
        "text": [CAPTION.encode(), b"\xff\xfe not utf-8 \xc3\x28", None, None],
    }
    table = pa.table({k: pa.array(v, pa.binary()) if k != "sample_id" else v for k, v in rows.items()})
    pq.write_table(table, tmp_path / "manifest.parquet")
    records = list(read_source("manifest", tmp_path))
    accepted, rejected = score_and_filter(records)
    assert list(accepted["sample_id"]) == ["manifest/bytes_ok"]
    rej = _by_id(rejected)
    assert any("text: decode failed" in r and "utf-8" in r.lower() for r in rej["bytes_bad_utf8"]["reasons"])
    assert any(r.startswith("vision: decode failed") for r in rej["bytes_truncated_jpeg"]["reasons"])
    assert any("empty" in r for r in rej["bytes_empty"]["reasons"])


def test_shard_survives_deleted_files_between_ingest_and_scoring(shard, tmp_path):
    """A file that vanishes after ingest is a decode failure for that row only."""
    records, _, _ = shard
    picked = [r for r in records if r.sample_id.endswith(("good_png", "good_npy", "good_text"))]
    copies = []
    for rec in picked:
        mods = dict(rec.modalities)
        for name, value in mods.items():
            if name != "text" and isinstance(value, str):
                target = tmp_path / Path(value).name
                shutil.copy(value, target)
                mods[name] = str(target)
        copies.append(type(rec)(rec.sample_id, rec.source, mods, dict(rec.labels), list(rec.errors)))
    (tmp_path / "photo.png").unlink()
    accepted, rejected = score_and_filter(copies)
    assert len(accepted) == 2 and len(rejected) == 1
    assert rejected["reasons"].iloc[0][0].startswith("vision: decode failed")
