"""Ingest: source readers for public layouts and manifests, the demo generator, sharding.

Everything yields or stores :class:`SampleRecord` rows (see ``records.py``);
``read_source(layout, root, **options)`` picks the reader by layout name.
"""

from mm_core.data.demo import make_demo_dataset
from mm_core.data.records import SampleRecord, records_to_table, table_modalities, table_to_records
from mm_core.data.sharding import (
    assign_shards,
    list_shards,
    load_shard_index,
    read_shard,
    sample_hash,
    shard_path,
    write_shards,
)
from mm_core.data.sources import (
    available_layouts,
    combine_sources,
    read_source,
    read_sources,
    register_layout,
)

__all__ = [
    "SampleRecord",
    "assign_shards",
    "available_layouts",
    "combine_sources",
    "list_shards",
    "load_shard_index",
    "make_demo_dataset",
    "read_shard",
    "read_source",
    "read_sources",
    "records_to_table",
    "register_layout",
    "sample_hash",
    "shard_path",
    "table_modalities",
    "table_to_records",
    "write_shards",
]
