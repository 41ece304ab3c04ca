"""Source readers on the real public-layout files in ../shared/datasets (or layouts built from them)."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import soundfile as sf
from PIL import Image

from mm_core.data import SampleRecord, available_layouts, combine_sources, read_source, read_sources
from mm_core.data.sources import register_layout
from mm_core.errors import ConfigError


def _unique_ids(records: list[SampleRecord]) -> None:
    ids = [r.sample_id for r in records]
    assert len(ids) == len(set(ids))


# --- image + captions ---------------------------------------------------------------------------


def test_flickr8k_one_record_per_caption(datasets_dir: Path) -> None:
    root = datasets_dir / "flickr8k"
    records = list(read_source("flickr8k", root))
    with open(root / "captions.txt", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert len(records) == len(rows)
    _unique_ids(records)
    assert all(r.sample_id.startswith("flickr8k/") and r.source == "flickr8k" for r in records)
    assert all(r.ok and r.present == ["text", "vision"] for r in records)
    first = records[0]
    assert first.modalities["text"] == rows[0]["caption"].strip()
    assert Path(first.modalities["vision"]).name == rows[0]["image"]
    assert Path(first.modalities["vision"]).is_absolute() and Path(first.modalities["vision"]).is_file()
    per_image = Counter(r.labels["image"] for r in records)
    assert per_image == Counter(row["image"] for row in rows)


def test_flickr8k_per_image_and_missing_image(datasets_dir: Path, tmp_path: Path) -> None:
    real = sorted((datasets_dir / "flickr8k" / "Images").iterdir())[:2]
    (tmp_path / "Images").mkdir()
    for p in real:
        shutil.copy(p, tmp_path / "Images" / p.name)
    lines = ["image,caption"]
    lines += [f"{real[0].name},first caption", f'{real[0].name},"second, with comma"']
    lines += [f"{real[1].name},other image", "gone.jpg,no such image"]
    (tmp_path / "captions.txt").write_text("\n".join(lines) + "\n")

    records = list(read_source("flickr8k", tmp_path, source="f8"))
    assert len(records) == 4
    assert [r.sample_id for r in records[:2]] == [f"f8/{real[0].stem}#0", f"f8/{real[0].stem}#1"]
    assert records[1].modalities["text"] == "second, with comma"
    bad = records[3]
    assert "vision" not in bad.modalities and any("missing file" in e for e in bad.errors)

    grouped = list(read_source("flickr8k", tmp_path, per_image=True))
    assert len(grouped) == 3
    assert json.loads(grouped[0].labels["captions"]) == ["first caption", "second, with comma"]


def test_coco_captions_json(datasets_dir: Path, tmp_path: Path) -> None:
    real = sorted((datasets_dir / "flickr8k" / "Images").iterdir())[:3]
    (tmp_path / "val2017").mkdir()
    images = []
    for i, p in enumerate(real):
        shutil.copy(p, tmp_path / "val2017" / p.name)
        images.append({"id": 100 + i, "file_name": p.name})
    images.append({"id": 999, "file_name": "missing.jpg"})
    annotations = [
        {"id": 1, "image_id": 100, "caption": "a dog"},
        {"id": 2, "image_id": 100, "caption": "a brown dog"},
        {"id": 3, "image_id": 101, "caption": "people"},
        {"id": 4, "image_id": 102, "caption": "a street"},
        {"id": 5, "image_id": 999, "caption": "lost"},
    ]
    (tmp_path / "annotations").mkdir()
    (tmp_path / "annotations" / "captions_val2017.json").write_text(
        json.dumps({"images": images, "annotations": annotations})
    )
    records = list(read_source("coco", tmp_path))
    assert len(records) == len(annotations)
    _unique_ids(records)
    by_caption = {r.modalities["text"]: r for r in records}
    dog = by_caption["a brown dog"]
    assert Path(dog.modalities["vision"]) == (tmp_path / "val2017" / real[0].name).resolve()
    assert dog.labels["image"] == real[0].name and dog.labels["split"] == "val2017"
    assert dog.labels["caption_id"] == "2" and dog.ok
    lost = by_caption["lost"]
    assert not lost.ok and "vision" not in lost.modalities
    assert len(list(read_source("coco", tmp_path, per_image=True))) == 4


# --- speech -------------------------------------------------------------------------------------


def test_librispeech_layout_from_real_flac(datasets_dir: Path, tmp_path: Path) -> None:
    lj = datasets_dir / "ljspeech-read"
    with open(lj / "transcript.csv", encoding="utf-8") as f:
        rows = [line.rstrip("\n").split("|") for line in f][:3]
    chapter = tmp_path / "LibriSpeech" / "dev-clean" / "19" / "198"
    chapter.mkdir(parents=True)
    lines = []
    for i, row in enumerate(rows):
        utt = f"19-198-{i:04d}"
        shutil.copy(lj / "wavs" / f"{row[0]}.flac", chapter / f"{utt}.flac")
        lines.append(f"{utt} {row[2].upper()}")
    lines.append("19-198-0099 THIS ONE HAS NO AUDIO")
    (chapter / "19-198.trans.txt").write_text("\n".join(lines) + "\n")

    records = list(read_source("librispeech", tmp_path / "LibriSpeech"))
    assert len(records) == 4
    assert [r.sample_id for r in records[:3]] == [f"librispeech/19-198-{i:04d}" for i in range(3)]
    for rec, row in zip(records, rows, strict=False):
        assert rec.ok and rec.labels["speaker"] == "19" and rec.labels["chapter"] == "198"
        assert rec.modalities["text"] == row[2].upper()
        assert sf.info(rec.modalities["audio"]).format == "FLAC"
    assert any("missing file" in e for e in records[3].errors)
    assert "text" not in next(read_source("librispeech", tmp_path, text=False)).modalities


def test_ljspeech_real_transcript_and_flac(datasets_dir: Path) -> None:
    root = datasets_dir / "ljspeech-read"
    records = list(read_source("ljspeech", root))
    with open(root / "transcript.csv", encoding="utf-8") as f:
        rows = [line.rstrip("\n").split("|") for line in f if line.strip()]
    assert len(records) == len(rows)
    _unique_ids(records)
    for rec, row in zip(records, rows, strict=True):
        assert rec.ok and rec.sample_id == f"ljspeech/{row[0]}"
        assert rec.modalities["text"] == row[2] and rec.labels["transcript"] == row[1]
        assert rec.modalities["audio"].endswith(".flac") and Path(rec.modalities["audio"]).is_file()


def test_fsdd_labels_from_file_names(datasets_dir: Path) -> None:
    records = list(read_source("fsdd", datasets_dir / "fsdd"))
    files = sorted((datasets_dir / "fsdd" / "recordings").glob("*.wav"))
    assert len(records) == len(files)
    _unique_ids(records)
    words = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
    for rec in records[::97]:
        digit, speaker, index = Path(rec.modalities["audio"]).stem.split("_")
        assert rec.sample_id == f"fsdd/{digit}_{speaker}_{index}"
        assert rec.labels["digit"] == digit and rec.labels["speaker"] == speaker
        assert rec.modalities["text"] == words[int(digit)] == rec.labels["word"]
    test_split = [r for r in records if r.labels["split"] == "test"]
    assert len(test_split) == sum(1 for f in files if int(f.stem.split("_")[2]) < 5)
    assert all("text" not in r.modalities for r in read_source("fsdd", datasets_dir / "fsdd", text=False, limit=5))


def test_fsdd_bad_file_name_is_kept_with_error(datasets_dir: Path, tmp_path: Path) -> None:
    src = datasets_dir / "fsdd" / "recordings"
    (tmp_path / "recordings").mkdir()
    shutil.copy(src / "3_lucas_7.wav", tmp_path / "recordings" / "3_lucas_7.wav")
    shutil.copy(src / "3_lucas_8.wav", tmp_path / "recordings" / "not-a-digit.wav")
    records = list(read_source("fsdd", tmp_path))
    assert len(records) == 2
    good, bad = sorted(records, key=lambda r: r.ok, reverse=True)
    assert good.ok and good.labels["digit"] == "3" and good.labels["split"] == "train"
    assert not bad.ok and "unrecognized FSDD file name" in bad.errors[0]


# --- text ---------------------------------------------------------------------------------------


def test_squad_one_record_per_question(datasets_dir: Path) -> None:
    path = datasets_dir / "xquad" / "xquad.en.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    qas = [(a, p, q) for a in data["data"] for p in a["paragraphs"] for q in p["qas"]]
    records = list(read_source("squad", datasets_dir / "xquad", source="xquad"))
    assert len(records) == len(qas)
    _unique_ids(records)
    article, paragraph, qa = qas[10]
    rec = records[10]
    assert rec.sample_id == f"xquad/{qa['id']}" and rec.modalities["text"] == qa["question"]
    assert rec.labels["title"] == article["title"] and rec.labels["answer"] == qa["answers"][0]["text"]
    assert rec.labels["context"] == paragraph["context"]
    ctx = list(read_source("squad", path, text="context", limit=11))[10]
    assert ctx.modalities["text"] == paragraph["context"]
    with pytest.raises(ConfigError):
        list(read_source("squad", path, text="title"))


# --- sensor -------------------------------------------------------------------------------------


def test_sensor_csv_windows_of_real_har_files(datasets_dir: Path) -> None:
    root = datasets_dir / "sp-sw-har" / "DATA" / "s01"
    files = sorted(root.glob("*.csv"))
    records = list(read_source("sensor_csv", root, source="har", window=200))
    frames = {f.name: pd.read_csv(f) for f in files}
    assert len(records) == sum(len(df) // 200 for df in frames.values())
    _unique_ids(records)
    assert all(r.ok for r in records)
    rec = records[3]
    frame = frames[rec.labels["file"]]
    start = int(rec.labels["start"])
    window = np.load(io.BytesIO(rec.modalities["sensor"]), allow_pickle=False)
    channels = ["x_acc", "y_acc", "z_acc", "x_gyro", "y_gyro", "z_gyro"]
    assert window.dtype == np.float32 and window.shape == (200, 6)
    np.testing.assert_allclose(window, frame[channels].to_numpy()[start : start + 200], rtol=1e-6)
    majority = Counter(frame["label"].iloc[start : start + 200]).most_common(1)[0][0]
    assert rec.labels["label"] == majority
    assert rec.modalities["text"] == majority.lower().replace("_", " ")
    assert rec.labels["subject"] == "s01" and rec.labels["device"] in {"sp", "sw"}
    assert {r.labels["label"] for r in records} >= {"WALKING", "SEATED"}

    overlapping = list(read_source("sensor_csv", root, window=200, stride=100, text_from_label=False))
    assert len(overlapping) == sum((len(df) - 200) // 100 + 1 for df in frames.values())
    assert all("text" not in r.modalities for r in overlapping)


def test_sensor_csv_ragged_and_non_numeric_rows_become_errors(datasets_dir: Path, tmp_path: Path) -> None:
    real = datasets_dir / "sp-sw-har" / "DATA" / "s02" / "s02_01_sw.csv"
    lines = real.read_text().splitlines()[:401]  # header + 400 rows = 4 windows of 100
    lines[150] = lines[150] + ",EXTRA,7"  # ragged row in window 1 (rows 100-199)
    cells = lines[320].split(",")
    cells[2] = "oops"  # non-numeric in window 3
    lines[320] = ",".join(cells)
    (tmp_path / "s02_01_sw.csv").write_text("\n".join(lines) + "\n")
    (tmp_path / "s09_01_sp.npy").write_bytes(b"this is not an npy file")
    records = list(read_source("sensor_csv", tmp_path, window=100))
    by_start = {r.labels["start"]: r for r in records if r.labels.get("file") == "s02_01_sw.csv"}
    assert sorted(by_start) == ["0", "100", "200", "300"]
    assert by_start["0"].ok and by_start["200"].ok
    assert "ragged row at line 151" in by_start["100"].errors[0]
    assert "non-numeric value 'oops'" in by_start["300"].errors[0]
    bad = np.load(io.BytesIO(by_start["300"].modalities["sensor"]))
    assert np.isnan(bad[319 - 300, 2]) and np.isfinite(bad[0]).all()
    unreadable = [r for r in records if r.labels.get("file") == "s09_01_sp.npy"]
    assert len(unreadable) == 1 and "cannot read sensor file" in unreadable[0].errors[0]


# --- manifest -----------------------------------------------------------------------------------


@pytest.fixture
def manifest_root(datasets_dir: Path, tmp_path: Path) -> Path:
    root = tmp_path / "data"
    (root / "img").mkdir(parents=True)
    (root / "snd").mkdir()
    image = sorted((datasets_dir / "flickr8k" / "Images").iterdir())[0]
    shutil.copy(image, root / "img" / "a.jpg")
    shutil.copy(datasets_dir / "fsdd" / "recordings" / "5_george_1.wav", root / "snd" / "a.wav")
    np.save(root / "a.npy", np.zeros((50, 3), np.float32))
    outside = tmp_path / "outside"
    outside.mkdir()
    shutil.copy(image, outside / "secret.jpg")
    os.symlink(outside / "secret.jpg", root / "img" / "link.jpg")
    return root


def _manifest_rows(root: Path) -> list[dict]:
    outside = str(root.parent / "outside" / "secret.jpg")
    return [
        {
            "sample_id": "ok",
            "vision": "img/a.jpg",
            "audio": "snd/a.wav",
            "text": "a caption",
            "sensor": "a.npy",
            "labels": {"label": "dog", "n": 3},
        },
        {"sample_id": "abs-inside", "vision": str(root / "img" / "a.jpg")},
        {"sample_id": "dotdot", "vision": "../outside/secret.jpg", "text": "kept"},
        {"sample_id": "abs-outside", "vision": outside},
        {"sample_id": "symlink", "vision": "img/link.jpg"},
        {"sample_id": "unknown", "text": "hi", "smell": "rose.dat"},
        {"sample_id": "missing", "audio": "snd/none.wav"},
    ]


def test_manifest_jsonl_confines_paths_and_keeps_bad_rows(manifest_root: Path) -> None:
    rows = _manifest_rows(manifest_root)
    lines = [json.dumps(r) for r in rows] + ["{not json", json.dumps(rows[0])]
    (manifest_root / "manifest.jsonl").write_text("\n".join(lines) + "\n")
    records = list(read_source("manifest", manifest_root, source="m"))
    assert len(records) == len(lines)  # one record per row, bad ones included
    _unique_ids(records)
    rec = {r.sample_id: r for r in records}
    ok = rec["m/ok"]
    assert ok.ok and ok.present == ["audio", "sensor", "text", "vision"]
    assert ok.modalities["vision"] == str((manifest_root / "img" / "a.jpg").resolve())
    assert ok.modalities["text"] == "a caption" and ok.labels == {"label": "dog", "n": "3"}
    assert rec["m/abs-inside"].ok
    assert "path escapes data root" in rec["m/dotdot"].errors[0] and rec["m/dotdot"].present == ["text"]
    assert "path escapes data root" in rec["m/abs-outside"].errors[0]
    assert "symlink escapes data root" in rec["m/symlink"].errors[0]
    assert rec["m/unknown"].errors == ["unknown modality 'smell'"]
    assert "missing file" in rec["m/missing"].errors[0]
    assert "invalid JSON at line 8" in rec["m/line-8"].errors[0]
    assert "duplicate sample_id" in rec["m/ok#dup1"].errors[0]

    allowed = list(read_source("manifest", manifest_root, allowed_roots=[manifest_root.parent / "outside"]))
    assert {r.sample_id: r.ok for r in allowed}["manifest/abs-outside"]


def test_manifest_parquet(manifest_root: Path) -> None:
    rows = _manifest_rows(manifest_root)[:3]
    table = pa.Table.from_pylist([{**r, "labels": json.dumps(r.get("labels", {}))} for r in rows])
    pq.write_table(table, manifest_root / "manifest.parquet")
    records = list(read_source("manifest", manifest_root))
    assert [r.sample_id for r in records] == ["manifest/ok", "manifest/abs-inside", "manifest/dotdot"]
    assert records[0].ok and records[0].labels["label"] == "dog" and Path(records[0].modalities["sensor"]).is_file()
    assert not records[2].ok


# --- registry, combining, Hugging Face -----------------------------------------------------------


def test_unknown_layout_names_known_ones_and_custom_layout(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="flickr8k") as err:
        read_source("nope", tmp_path)
    assert "unknown source layout 'nope'" in str(err.value)

    def read_lines(root, *, source):
        for i, line in enumerate(Path(root, "x.txt").read_text().splitlines()):
            yield SampleRecord(f"{source}/{i}", source, {"text": line})

    register_layout("test_lines", read_lines, replace=True)
    (tmp_path / "x.txt").write_text("a\nb\n")
    assert "test_lines" in available_layouts()
    assert [r.modalities["text"] for r in read_source("test_lines", tmp_path)] == ["a", "b"]
    with pytest.raises(ValueError, match="already registered"):
        register_layout("test_lines", read_lines)


def test_read_sources_chains_with_unique_ids(datasets_dir: Path) -> None:
    configs = [
        {"layout": "ljspeech", "root": datasets_dir / "ljspeech-read", "limit": 5},
        {"layout": "fsdd", "root": datasets_dir / "fsdd", "limit": 5},
        {"layout": "squad", "root": datasets_dir / "xquad", "source": "xquad", "limit": 5},
    ]
    records = list(read_sources(configs))
    assert len(records) == 15
    _unique_ids(records)
    assert [r.source for r in records[::5]] == ["ljspeech", "fsdd", "xquad"]
    with pytest.raises(ConfigError, match="unique"):
        read_sources([configs[1], configs[1]])
    twice = list(combine_sources(read_source(**configs[1]), read_source(**configs[1])))
    _unique_ids(twice)
    assert sum(1 for r in twice if any("duplicate sample_id" in e for e in r.errors)) == 5


def test_hf_dataset_from_disk(datasets_dir: Path, tmp_path: Path) -> None:
    import datasets  # the optional "hf" extra; part of the dev install

    image_paths = sorted((datasets_dir / "flickr8k" / "Images").iterdir())[:2]
    images = [Image.open(p).convert("RGB").resize((32, 24)) for p in image_paths]
    waves = [np.sin(np.linspace(0, 60 * (i + 1), 800)).astype(np.float32) * 0.5 for i in range(2)]
    features = datasets.Features(
        {
            "image": datasets.Image(),
            "caption": datasets.Value("string"),
            "speech": {
                "array": datasets.List(datasets.Value("float32")),
                "sampling_rate": datasets.Value("int32"),
            },
            "label": datasets.Value("int64"),
        }
    )
    ds = datasets.Dataset.from_dict(
        {
            "image": images,
            "caption": ["first", "second"],
            "speech": [{"array": w, "sampling_rate": 8000} for w in waves],
            "label": [3, 4],
        },
        features=features,
    )
    datasets.DatasetDict({"train": ds, "test": ds.select([1])}).save_to_disk(tmp_path / "hf")

    columns = {"vision": "image", "text": "caption", "audio": "speech"}
    records = list(read_source("hf", tmp_path / "hf", split="train", columns=columns, source="tiny"))
    assert [r.sample_id for r in records] == ["tiny/train/0", "tiny/train/1"]
    for rec, image, wave in zip(records, images, waves, strict=True):
        assert rec.ok and rec.present == ["audio", "text", "vision"]
        decoded = Image.open(io.BytesIO(rec.modalities["vision"]))
        assert np.array_equal(np.asarray(decoded.convert("RGB")), np.asarray(image))
        audio, rate = sf.read(io.BytesIO(rec.modalities["audio"]), dtype="float32")
        assert rate == 8000 and np.array_equal(audio, wave)
    assert records[1].modalities["text"] == "second" and records[1].labels == {"label": "4"}
    test_split = list(read_source("hf", tmp_path / "hf", split="test", columns={"text": "caption"}))
    assert [r.modalities["text"] for r in test_split] == ["second"]
    with pytest.raises(ConfigError, match="split"):
        list(read_source("hf", tmp_path / "hf", split="validation", columns=columns))
