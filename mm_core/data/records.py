"""The ingest record contract shared by readers, sharding, quality and encoding.

A :class:`SampleRecord` is one sample as a reader found it: which modalities it
has (a media path, inline bytes, or for ``text`` the text itself), its labels,
and the problems met while reading it. Readers never raise for one bad row and
never drop it: they fill ``errors`` so that the quality stage rejects the row
with that reason (SPEC R1: accepted + rejected == input rows).

Table form (one Parquet table per shard): columns ``sample_id``, ``source``,
then per modality ``m`` a string column ``m`` (path or text) and a binary
column ``m__bytes`` (inline bytes), ``labels`` (JSON object of strings) and
``errors`` (list of strings). Modality columns are the union over all records.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import pyarrow as pa

#: Modalities whose string value is the content itself rather than a file path.
INLINE_TEXT_MODALITIES = frozenset({"text"})
#: Suffix of the binary column that holds inline bytes of a modality.
BYTES_SUFFIX = "__bytes"
#: Columns of the table form that are not modalities.
BASE_COLUMNS = ("sample_id", "source", "labels", "errors")

ModalityValue = str | bytes


@dataclass
class SampleRecord:
    """One ingested sample; ``modalities`` maps a modality name to a path, bytes or text."""

    sample_id: str
    source: str
    modalities: dict[str, ModalityValue] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)

    @property
    def present(self) -> list[str]:
        """Sorted names of the modalities this sample has."""
        return sorted(self.modalities)

    @property
    def ok(self) -> bool:
        """True when ingest met no problem with this sample."""
        return not self.errors


def record_modalities(records: Iterable[SampleRecord]) -> list[str]:
    """Sorted union of the modality names over ``records``."""
    names: set[str] = set()
    for rec in records:
        names.update(rec.modalities)
    return sorted(names)


def _schema(modalities: Sequence[str]) -> pa.Schema:
    fields = [pa.field("sample_id", pa.string(), nullable=False), pa.field("source", pa.string())]
    for name in modalities:
        fields += [pa.field(name, pa.string()), pa.field(name + BYTES_SUFFIX, pa.binary())]
    fields += [pa.field("labels", pa.string()), pa.field("errors", pa.list_(pa.string()))]
    return pa.schema(fields)


def records_to_table(records: Iterable[SampleRecord], modalities: Sequence[str] | None = None) -> pa.Table:
    """Records -> Arrow table; ``modalities`` adds columns so shards can share one schema."""
    records = list(records)
    names = sorted(set(record_modalities(records)) | set(modalities or ()))
    columns: dict[str, list] = {c: [] for c in _schema(names).names}
    for rec in records:
        columns["sample_id"].append(rec.sample_id)
        columns["source"].append(rec.source)
        for name in names:
            value = rec.modalities.get(name)
            is_bytes = isinstance(value, bytes | bytearray | memoryview)
            columns[name].append(None if is_bytes else value)
            columns[name + BYTES_SUFFIX].append(bytes(value) if is_bytes else None)
        columns["labels"].append(json.dumps(rec.labels, ensure_ascii=False))
        columns["errors"].append(list(rec.errors))
    return pa.Table.from_pydict(columns, schema=_schema(names))


def table_modalities(table: pa.Table) -> list[str]:
    """Modality names held by a table written with :func:`records_to_table`."""
    names = table.schema.names
    return [n for n in names if n not in BASE_COLUMNS and not n.endswith(BYTES_SUFFIX)]


def table_to_records(table: pa.Table) -> list[SampleRecord]:
    """Inverse of :func:`records_to_table` (exact round trip)."""
    names = table_modalities(table)
    data = table.to_pydict()
    out = []
    for i, sample_id in enumerate(data["sample_id"]):
        modalities: dict[str, ModalityValue] = {}
        for name in names:
            raw = data.get(name + BYTES_SUFFIX, [None] * len(data["sample_id"]))[i]
            value = raw if raw is not None else data[name][i]
            if value is not None:
                modalities[name] = value
        labels = data["labels"][i]
        out.append(
            SampleRecord(
                sample_id=sample_id,
                source=data["source"][i],
                modalities=modalities,
                labels=json.loads(labels) if labels else {},
                errors=list(data["errors"][i] or []),
            )
        )
    return out
