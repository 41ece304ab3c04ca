"""Materialization metadata a person can read in the UI: counts, histograms, previews."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

import dagster as dg
import numpy as np
import pandas as pd


def histogram_md(values: Iterable[float], *, bins: int = 10, title: str = "") -> dg.MetadataValue:
    """A small text histogram as a markdown table."""
    arr = np.asarray([v for v in values if v is not None], dtype=float)
    arr = arr[np.isfinite(arr)]
    if arr.size == 0:
        return dg.MetadataValue.md(f"{title}: no values")
    counts, edges = np.histogram(arr, bins=bins)
    peak = max(int(counts.max()), 1)
    rows = [
        f"| {edges[i]:.3g} .. {edges[i + 1]:.3g} | {c} | {'#' * round(20 * c / peak)} |" for i, c in enumerate(counts)
    ]
    head = f"**{title}** (n={arr.size}, mean={arr.mean():.3g})\n\n| range | n | |\n|---|---|---|\n"
    return dg.MetadataValue.md(head + "\n".join(rows))


def reasons_md(reasons: Iterable[Iterable[str]], *, top: int = 15) -> dg.MetadataValue:
    """Most common rejection reasons (numbers stripped so alike reasons group)."""
    import re

    counter: Counter[str] = Counter()
    for row in reasons:
        for r in row:
            counter[re.sub(r"[-+]?\d[\d.e+-]*", "#", str(r))[:120]] += 1
    if not counter:
        return dg.MetadataValue.md("no rejections")
    lines = "\n".join(f"| {n} | {r} |" for r, n in counter.most_common(top))
    return dg.MetadataValue.md("| n | reason |\n|---|---|\n" + lines)


def preview_md(df: pd.DataFrame, columns: list[str], *, rows: int = 5) -> dg.MetadataValue:
    """The first rows of a table, long values shortened."""
    cols = [c for c in columns if c in df.columns]
    if df.empty or not cols:
        return dg.MetadataValue.md("(empty)")
    head = df[cols].head(rows).map(lambda v: (str(v)[:60] + "...") if len(str(v)) > 60 else str(v))
    return dg.MetadataValue.md(head.to_markdown(index=False) if hasattr(head, "to_markdown") else head.to_string())
