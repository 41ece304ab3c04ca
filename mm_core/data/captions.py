"""Image-caption layouts: Flickr8k (``captions.txt`` + ``Images/``) and COCO captions JSON.

One record per (image, caption) pair: ``vision`` = the image path, ``text`` = the
caption, label ``image`` = the image file name. Several records share an image,
so retrieval and evaluation group by ``labels["image"]``; ``per_image=True``
gives one record per image instead (text = first caption, all captions in
``labels["captions"]`` as a JSON list).
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

from mm_core.data.records import SampleRecord
from mm_core.errors import ConfigError


def _pairs_to_records(
    pairs: Iterable[tuple[str, str, str, dict[str, str]]],
    images: Path,
    source: str,
    per_image: bool,
) -> Iterator[SampleRecord]:
    """(image key, file name, caption, extra labels) -> records, checking each image once."""
    exists: dict[str, bool] = {}
    grouped: dict[str, list] = {}
    counts: dict[str, int] = {}
    for key, file_name, caption, extra in pairs:
        if per_image:
            grouped.setdefault(key, [file_name, [], extra])[1].append(caption)
            continue
        k = counts.get(key, 0)
        counts[key] = k + 1
        yield _record(f"{source}/{key}#{k}", source, images, file_name, caption, exists, extra)
    for key, (file_name, captions, extra) in grouped.items():
        extra = {**extra, "captions": json.dumps(captions, ensure_ascii=False)}
        yield _record(f"{source}/{key}", source, images, file_name, captions[0], exists, extra)


def _record(
    sample_id: str,
    source: str,
    images: Path,
    file_name: str,
    caption: str,
    exists: dict[str, bool],
    extra: dict[str, str],
) -> SampleRecord:
    path = images / file_name
    if file_name not in exists:
        exists[file_name] = path.is_file()
    errors = [] if exists[file_name] else [f"missing file: {path}"]
    modalities: dict[str, str | bytes] = {"vision": str(path)} if exists[file_name] else {}
    if caption.strip():
        modalities["text"] = caption
    else:
        errors.append("empty caption")
    labels = {"image": file_name, **extra}
    return SampleRecord(sample_id, source, modalities, labels, errors)


def read_flickr8k(
    root: str | os.PathLike,
    *,
    source: str = "flickr8k",
    captions_file: str = "captions.txt",
    images_dir: str = "Images",
    per_image: bool = False,
) -> Iterator[SampleRecord]:
    """Flickr8k: CSV ``image,caption`` with a header, images under ``Images/``."""
    root = Path(root).resolve()
    path = root / captions_file
    if not path.is_file():
        raise ConfigError(f"flickr8k: {path} not found")
    images = root / images_dir

    def pairs() -> Iterator[tuple[str, str, str, dict[str, str]]]:
        with open(path, encoding="utf-8", errors="replace", newline="") as f:
            reader = csv.reader(f)
            header = next(reader, None)
            if header and [h.strip().lower() for h in header[:2]] != ["image", "caption"]:
                f.seek(0)
                reader = csv.reader(f)
            for row in reader:
                if not row:
                    continue
                file_name = row[0].strip()
                caption = ",".join(row[1:]).strip()
                yield Path(file_name).stem, file_name, caption, {}

    yield from _pairs_to_records(pairs(), images, source, per_image)


def _coco_files(root: Path, annotations: str | os.PathLike | None) -> list[Path]:
    if annotations is not None:
        p = Path(annotations)
        return [p if p.is_absolute() else root / p]
    found = sorted((root / "annotations").glob("captions_*.json")) or sorted(root.glob("captions_*.json"))
    if not found:
        raise ConfigError(f"coco: no annotations/captions_*.json under {root}; pass annotations=")
    return found


def _coco_images_dir(root: Path, split: str, images_dir: str | os.PathLike | None) -> Path:
    if images_dir is not None:
        p = Path(images_dir)
        return p if p.is_absolute() else root / p
    for candidate in (root / split, root / "images" / split, root / "images"):
        if split and candidate.is_dir():
            return candidate
    return root


def read_coco(
    root: str | os.PathLike,
    *,
    source: str = "coco",
    annotations: str | os.PathLike | None = None,
    images_dir: str | os.PathLike | None = None,
    per_image: bool = False,
) -> Iterator[SampleRecord]:
    """COCO captions: ``annotations/captions_<split>.json`` + images in ``<split>/`` (or ``images_dir``)."""
    root = Path(root).resolve()
    for ann_path in _coco_files(root, annotations):
        if not ann_path.is_file():
            raise ConfigError(f"coco: {ann_path} not found")
        split = ann_path.stem.removeprefix("captions_") if ann_path.stem.startswith("captions_") else ""
        with open(ann_path, encoding="utf-8") as f:
            data = json.load(f)
        files = {img["id"]: img["file_name"] for img in data.get("images", [])}
        images = _coco_images_dir(root, split, images_dir)

        def pairs(data=data, files=files, split=split) -> Iterator[tuple[str, str, str, dict[str, str]]]:
            for ann in sorted(data.get("annotations", []), key=lambda a: (a["image_id"], a.get("id", 0))):
                image_id = ann["image_id"]
                file_name = files.get(image_id, f"<unknown image id {image_id}>")
                extra = {"image_id": str(image_id), "split": split}
                if "id" in ann:
                    extra["caption_id"] = str(ann["id"])
                key = f"{split}/{image_id}" if split else str(image_id)
                yield key, file_name, str(ann.get("caption", "")), extra

        yield from _pairs_to_records(pairs(), images, source, per_image)
