"""Quality scores and filtering: accepted / rejected tables with reasons (SPEC M9, R1).

- ``score_and_filter(records, thresholds=None)`` -> ``(accepted, rejected)`` DataFrames
- ``score_records`` (streaming generator) and ``score_record`` (one record)
- ``Thresholds`` (from a nested dict: ``Thresholds.from_dict``), ``DEFAULT_BOUNDS``, ``DEFAULT_QUALITY``
- per-modality scorers in ``mm_core.quality.scorers``
"""

from mm_core.quality.filtering import (
    ScoredRecord,
    as_records,
    rejection_counts,
    score_and_filter,
    score_record,
    score_records,
)
from mm_core.quality.thresholds import DEFAULT_BOUNDS, DEFAULT_QUALITY, Bound, Thresholds, as_thresholds

__all__ = [
    "DEFAULT_BOUNDS",
    "DEFAULT_QUALITY",
    "Bound",
    "ScoredRecord",
    "Thresholds",
    "as_records",
    "as_thresholds",
    "rejection_counts",
    "score_and_filter",
    "score_record",
    "score_records",
]
