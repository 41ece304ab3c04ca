"""Speech layouts: LibriSpeech, LJSpeech and the Free Spoken Digit Dataset (FSDD).

Each record pairs one audio file (path) with its transcript as ``text``; the
speaker and utterance ids go into the labels. Audio is referenced by path and
decoded later, so reading a source costs directory listings, not decoding.
"""

from __future__ import annotations

import csv
import os
import re
from collections.abc import Iterator, Sequence
from pathlib import Path

from mm_core.data.records import SampleRecord
from mm_core.errors import ConfigError

AUDIO_SUFFIXES = (".flac", ".wav", ".mp3", ".ogg")
DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
FSDD_NAME = re.compile(r"^(?P<digit>\d)_(?P<speaker>[A-Za-z0-9-]+)_(?P<index>\d+)$")


def _find_audio(directory: Path, stem: str, suffixes: Sequence[str] = AUDIO_SUFFIXES) -> Path | None:
    for suffix in suffixes:
        path = directory / (stem + suffix)
        if path.is_file():
            return path
    return None


def _speech_record(
    sample_id: str, source: str, audio: Path | None, expected: Path, text: str | None, labels: dict[str, str]
) -> SampleRecord:
    rec = SampleRecord(sample_id, source, labels=labels)
    if audio is None:
        rec.errors.append(f"missing file: {expected}")
    else:
        rec.modalities["audio"] = str(audio)
    if text is not None:
        if text.strip():
            rec.modalities["text"] = text
        else:
            rec.errors.append("empty transcript")
    return rec


def read_librispeech(
    root: str | os.PathLike, *, source: str = "librispeech", text: bool = True
) -> Iterator[SampleRecord]:
    """LibriSpeech: ``speaker/chapter/speaker-chapter.trans.txt`` lines ``utt_id TEXT`` + ``utt_id.flac``."""
    root = Path(root).resolve()
    transcripts = sorted(root.rglob("*.trans.txt"))
    if not transcripts:
        raise ConfigError(f"librispeech: no *.trans.txt under {root}")
    for trans in transcripts:
        with open(trans, encoding="utf-8", errors="replace") as f:
            for n, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                utt_id, _, transcript = line.strip().partition(" ")
                parts = utt_id.split("-")
                labels = {"utterance": utt_id}
                if len(parts) == 3:
                    labels.update(speaker=parts[0], chapter=parts[1])
                rec = _speech_record(
                    f"{source}/{utt_id}",
                    source,
                    _find_audio(trans.parent, utt_id),
                    trans.parent / f"{utt_id}.flac",
                    transcript if text else None,
                    labels,
                )
                if len(parts) != 3:
                    rec.errors.append(f"unexpected utterance id {utt_id!r} in {trans.name} line {n}")
                yield rec


def read_ljspeech(
    root: str | os.PathLike,
    *,
    source: str = "ljspeech",
    metadata: str | None = None,
    wavs_dir: str = "wavs",
    normalized: bool = True,
    text: bool = True,
) -> Iterator[SampleRecord]:
    """LJSpeech: ``metadata.csv`` or ``transcript.csv`` rows ``id|text|normalized_text``, audio in ``wavs/``.

    ``text`` is the normalized transcript when present (``normalized=False``: the raw one);
    the raw transcript is kept in ``labels["transcript"]``. Audio may be WAV or FLAC.
    """
    root = Path(root).resolve()
    names = [metadata] if metadata else ["metadata.csv", "transcript.csv"]
    path = next((root / n for n in names if (root / n).is_file()), None)
    if path is None:
        raise ConfigError(f"ljspeech: none of {', '.join(names)} under {root}")
    wavs = root / wavs_dir
    with open(path, encoding="utf-8", errors="replace", newline="") as f:
        for row in csv.reader(f, delimiter="|", quoting=csv.QUOTE_NONE):
            if not row or not row[0].strip():
                continue
            utt_id = row[0].strip()
            raw = row[1] if len(row) > 1 else ""
            norm = row[2] if len(row) > 2 and row[2] else raw
            rec = _speech_record(
                f"{source}/{utt_id}",
                source,
                _find_audio(wavs, utt_id),
                wavs / f"{utt_id}.wav",
                (norm if normalized else raw) if text else None,
                {"utterance": utt_id, "transcript": raw},
            )
            if len(row) < 2:
                rec.errors.append(f"row {utt_id!r} has no transcript column")
            yield rec


def read_fsdd(
    root: str | os.PathLike, *, source: str = "fsdd", text: bool = True, recordings_dir: str = "recordings"
) -> Iterator[SampleRecord]:
    """FSDD: ``recordings/{digit}_{speaker}_{index}.wav``; text = the digit as a word.

    Labels: ``digit``, ``word``, ``speaker``, ``index`` and ``split`` (official
    test split: index 0-4). A file whose name does not parse is yielded with an error.
    """
    root = Path(root).resolve()
    directory = root / recordings_dir if (root / recordings_dir).is_dir() else root
    files = sorted(p for p in directory.iterdir() if p.suffix.lower() in AUDIO_SUFFIXES)
    if not files:
        raise ConfigError(f"fsdd: no audio files in {directory}")
    for path in files:
        match = FSDD_NAME.match(path.stem)
        if match is None:
            yield SampleRecord(
                f"{source}/{path.stem}",
                source,
                {"audio": str(path)},
                errors=[f"unrecognized FSDD file name {path.name!r} (expected digit_speaker_index)"],
            )
            continue
        digit, speaker, index = match["digit"], match["speaker"], match["index"]
        word = DIGIT_WORDS[int(digit)]
        labels = {
            "digit": digit,
            "word": word,
            "speaker": speaker,
            "index": index,
            "split": "test" if int(index) < 5 else "train",
        }
        yield _speech_record(f"{source}/{path.stem}", source, path, path, word if text else None, labels)
