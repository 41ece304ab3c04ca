"""Which samples training never sees: holdout rules over labels, stable hashes, or sources.

Rules come from ``evaluation.holdout`` in the build configuration; a sample is
held out when any rule matches it:

- ``{label: speaker, values: [george]}``: its ``labels["speaker"]`` is one of the values;
- ``{fraction: 0.2, key: image}``: a stable hash of ``labels["image"]`` (or of the
  ``sample_id`` when ``key`` is ``sample_id`` or absent) falls below the fraction, so
  every caption of one image lands on the same side; samples without the key never match;
- ``{source: fsdd_test}``: the sample came from that source (a separate source
  listed under ``sources`` with its own layout and path).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Any


def stable_fraction(value: str, salt: str = "") -> float:
    """A number in [0, 1) fixed by ``value`` (sha256), the same on every machine and run."""
    digest = hashlib.sha256(f"{salt}\x00{value}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def rule_matches(rule: Mapping[str, Any], sample_id: str, source: str, labels: Mapping[str, Any]) -> bool:
    """Whether one holdout rule selects this sample."""
    if "source" in rule:
        return source == rule["source"]
    if "label" in rule:
        value = labels.get(rule["label"])
        return value is not None and str(value) in {str(v) for v in rule["values"]}
    key = rule.get("key", "sample_id")
    value = sample_id if key == "sample_id" else labels.get(key)
    return value is not None and stable_fraction(str(value), str(rule.get("salt", ""))) < float(rule["fraction"])


def holdout_flags(
    rules: Sequence[Mapping[str, Any]],
    sample_ids: Sequence[str],
    sources: Sequence[str],
    labels: Sequence[Mapping[str, Any]],
) -> list[bool]:
    """True for every held-out (evaluation) sample."""
    return [
        any(rule_matches(r, sid, src, lab) for r in rules)
        for sid, src, lab in zip(sample_ids, sources, labels, strict=True)
    ]


def first_label(labels: Mapping[str, Any], keys: str | Sequence[str] | None) -> str | None:
    """``"key=value"`` for the first of ``keys`` the sample has (groups and probe classes), else None."""
    if not keys:
        return None
    for key in [keys] if isinstance(keys, str) else keys:
        if labels.get(key) is not None:
            return f"{key}={labels[key]}"
    return None
