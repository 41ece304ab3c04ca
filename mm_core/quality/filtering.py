"""Score records and split a shard into accepted and rejected tables (SPEC M9, R1, P2).

Per record: ingest errors become reasons; each modality is decoded through the
registry, scored, checked against :class:`~mm_core.quality.thresholds.Thresholds`,
and its decoded media dropped before the next record (a shard streams; only
paths, texts and a few floats per record are kept). Any failure of one record
(unknown modality, decode error, decompression bomb, a scorer exception) becomes
a reason, never an exception, so every input row ends in exactly one table.
A modality that fails to decode or score counts as quality 0 in the overall rule.
Reasons name root causes: a modality's ``quality`` minimum and the overall rule
add their own reason only when no more specific reason explains the rejection.
"""

from __future__ import annotations

import logging
import math
import os
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Mapping, MutableMapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import pandas as pd
import pyarrow as pa
from tqdm.auto import tqdm

from mm_core.data.records import INLINE_TEXT_MODALITIES, SampleRecord, records_to_table, table_to_records
from mm_core.quality.thresholds import Thresholds, as_thresholds
from mm_core.registry import UnknownModalityError
from mm_core.registry import get as get_modality

log = logging.getLogger(__name__)

SCORE_PREFIX = "q_"
OVERALL = "q_overall"
REASONS = "reasons"
DEFAULT_CACHE_SIZE = 4096

ItemResult = tuple[dict[str, float], str | None]  # (metrics incl. "quality", problem)


@dataclass
class ScoredRecord:
    """One record with its score columns and rejection reasons (empty = accepted)."""

    record: SampleRecord
    scores: dict[str, float] = field(default_factory=dict)
    reasons: list[str] = field(default_factory=list)

    @property
    def accepted(self) -> bool:
        return not self.reasons


class _LRU(OrderedDict):
    """Bounded item-result cache used when the caller passes none."""

    def __init__(self, maxsize: int) -> None:
        super().__init__()
        self.maxsize = maxsize

    def __setitem__(self, key: Any, value: Any) -> None:
        super().__setitem__(key, value)
        if len(self) > self.maxsize:
            self.popitem(last=False)


def _message(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return text or type(exc).__name__


def _cache_key(modality: str, value: Any) -> tuple | None:
    """Files are cached by (modality, path, mtime, size); inline values are not cached."""
    if modality in INLINE_TEXT_MODALITIES or not isinstance(value, str):
        return None
    try:
        st = os.stat(value)
    except OSError:
        return None
    return (modality, value, st.st_mtime_ns, st.st_size)


def _score_item(modality: str, value: Any) -> ItemResult:
    """Decode and score one item; the decoded media goes out of scope on return."""
    try:
        spec = get_modality(modality)
    except UnknownModalityError as exc:
        return {}, _message(exc)
    try:
        decoded = spec.decode(value)
    except Exception as exc:  # R1: any decoder failure is a reason, not a crash
        return {}, f"decode failed: {_message(exc)}"
    if spec.score is None:
        return {}, None
    try:
        metrics = {str(k): float(v) for k, v in spec.score(decoded).items()}
    except Exception as exc:
        return {}, f"scoring failed: {type(exc).__name__}: {_message(exc)}"
    return metrics, None


@lru_cache(maxsize=4096)
def _column(modality: str, metric: str = "") -> str:
    """Score column name, shared by all rows (a shard holds one copy of each name)."""
    return f"{SCORE_PREFIX}{modality}_{metric}" if metric else f"{SCORE_PREFIX}{modality}"


def _ingest_reason(error: str) -> str:
    return error if error.startswith("ingest:") else f"ingest: {error}"


def score_record(
    record: SampleRecord,
    thresholds: Thresholds | Mapping[str, Any] | None = None,
    *,
    decode_cache: MutableMapping[Any, ItemResult] | None = None,
) -> ScoredRecord:
    """Score one record: ``q_{modality}_{metric}``, ``q_{modality}``, ``q_overall`` and reasons."""
    th = as_thresholds(thresholds)
    out = ScoredRecord(record, reasons=[_ingest_reason(e) for e in record.errors])
    qualities: dict[str, float] = {}
    for modality, value in sorted(record.modalities.items()):
        key = _cache_key(modality, value) if decode_cache is not None else None
        cached = decode_cache.get(key) if key is not None else None
        metrics, problem = cached if cached is not None else _score_item(modality, value)
        if key is not None and cached is None:
            decode_cache[key] = (metrics, problem)
        if problem is not None:
            out.reasons.append(f"{modality}: {problem}")
            if not problem.startswith("unknown modality"):
                qualities[modality] = 0.0
            continue
        metrics = dict(metrics)
        quality = metrics.pop("quality", None)
        out.scores.update({_column(modality, k): v for k, v in metrics.items()})
        metric_reasons = th.metric_reasons(modality, metrics)
        out.reasons += metric_reasons
        if quality is not None:
            quality = min(1.0, max(0.0, quality)) if math.isfinite(quality) else 0.0
            out.scores[_column(modality)] = quality
            qualities[modality] = quality
            reason = th.quality_reason(modality, quality)
            if reason and not metric_reasons:  # name the root cause, not its echo
                out.reasons.append(reason)
    for modality, quality in qualities.items():
        out.scores.setdefault(_column(modality), quality)
    out.scores[OVERALL] = th.combine(qualities)
    reason = th.overall_reason(qualities)
    if reason and not out.reasons:  # the rule always decides; its reason shows when it alone rejects
        out.reasons.append(reason)
    if not record.modalities and not out.reasons:
        out.reasons.append("record: no modality")
    return out


def score_records(
    records: Iterable[SampleRecord] | pa.Table | pd.DataFrame,
    thresholds: Thresholds | Mapping[str, Any] | None = None,
    *,
    decode_cache: MutableMapping[Any, ItemResult] | None = None,
    progress: bool = False,
) -> Iterator[ScoredRecord]:
    """Stream :class:`ScoredRecord` s, one record decoded at a time.

    ``decode_cache`` maps (modality, path, mtime, size) to an item's scores (or
    its failure), so a file shared by several records (a Flickr8k image with 5
    captions) is decoded once; it holds floats, never decoded media. Default: a
    per-call LRU of 4096 items; pass a dict to share it across calls.
    """
    th = as_thresholds(thresholds)
    cache = _LRU(DEFAULT_CACHE_SIZE) if decode_cache is None else decode_cache
    for record in tqdm(as_records(records), desc="quality", unit="sample", disable=not progress):
        yield score_record(record, th, decode_cache=cache)


def as_records(records: Iterable[SampleRecord] | pa.Table | pd.DataFrame) -> Iterable[SampleRecord]:
    """SampleRecords from records, a records table, or a (scored) DataFrame of records."""
    if isinstance(records, pd.DataFrame):
        keep = [c for c in records.columns if not str(c).startswith(SCORE_PREFIX) and c != REASONS]
        records = pa.Table.from_pandas(records[keep], preserve_index=False)
    if isinstance(records, pa.Table):
        keep = [c for c in records.column_names if not c.startswith(SCORE_PREFIX) and c != REASONS]
        return table_to_records(records.select(keep))
    return records


def _frame(scored: list[ScoredRecord], modalities: list[str], score_columns: list[str]) -> pd.DataFrame:
    table = records_to_table([s.record for s in scored], modalities)
    df = table.to_pandas()
    df["errors"] = pd.Series([list(s.record.errors) for s in scored], index=df.index, dtype=object)
    scores = pd.DataFrame([s.scores for s in scored], columns=score_columns, index=df.index, dtype="float64")
    return pd.concat([df, scores], axis=1)


def score_and_filter(
    records: Iterable[SampleRecord] | pa.Table | pd.DataFrame,
    thresholds: Thresholds | Mapping[str, Any] | None = None,
    *,
    decode_cache: MutableMapping[Any, ItemResult] | None = None,
    progress: bool = False,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split records into ``(accepted, rejected)`` DataFrames; never drops or raises for a row.

    Both keep the record columns (``records_to_table`` form) plus float score
    columns ``q_{modality}_{metric}``, ``q_{modality}`` and ``q_overall``;
    ``rejected`` adds ``reasons`` (list of strings such as
    ``"audio.snr_db 2.1 < 3.0"`` or ``"vision: decode failed: ..."``).
    ``len(accepted) + len(rejected)`` equals the number of input rows.
    """
    scored = list(score_records(records, thresholds, decode_cache=decode_cache, progress=progress))
    modalities = sorted({m for s in scored for m in s.record.modalities})
    metric_cols = sorted({c for s in scored for c in s.scores if c != OVERALL})
    columns = [OVERALL, *metric_cols]
    accepted = [s for s in scored if s.accepted]
    rejected = [s for s in scored if not s.accepted]
    acc_df = _frame(accepted, modalities, columns)
    rej_df = _frame(rejected, modalities, columns)
    rej_df[REASONS] = pd.Series([list(s.reasons) for s in rejected], index=rej_df.index, dtype=object)
    log.info("quality: %d accepted, %d rejected of %d", len(accepted), len(rejected), len(scored))
    return acc_df, rej_df


def rejection_counts(rejected: pd.DataFrame) -> dict[str, int]:
    """How many rejected rows each kind of reason hit (``"audio.snr_db"``, ``"vision: decode failed"``).

    For materialization metadata and dashboards; a row with two reasons counts for both.
    """
    counts: dict[str, int] = {}
    for reasons in rejected.get(REASONS, []):
        kinds = {_reason_kind(r) for r in reasons}
        for kind in kinds:
            counts[kind] = counts.get(kind, 0) + 1
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def _reason_kind(reason: str) -> str:
    head, sep, rest = reason.partition(": ")
    if sep:  # "vision: decode failed: ..." -> "vision: decode failed"; "ingest: vision: ..." -> "ingest"
        return head if head == "ingest" else f"{head}: {rest.split(':', 1)[0]}"
    return reason.split(" ", 1)[0]  # "audio.snr_db 2.1 < 3.0" -> "audio.snr_db"
