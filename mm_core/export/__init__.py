"""Dataset export: sharded npy / h5 / parquet / safetensors writers, manifest, readers (SPEC M10).

Layout under ``out_dir``: ``{format}/{shard_id}.{ext}`` (``npy/{shard_id}/``
is a directory of ``.npy`` files), ``_index/{shard_id}.json`` per written
shard, and ``manifest.json`` (the dataset card).

    with ShardedWriter(out, modalities=["audio", "text"], dim=768, provenance=prov) as w:
        for shard_id, batch in shards:  # one shard in memory at a time
            w.write_shard(shard_id, batch.ids, batch.vectors, batch.present)
    ids, vectors, mask, modalities = read_vectors(out, format="parquet")
"""

from mm_core.export.formats import FORMATS, ShardFormat, get_format
from mm_core.export.manifest import code_version, load_manifest, sha256_file
from mm_core.export.reader import read_shard, read_vectors, shard_ids
from mm_core.export.records import Shard, make_shard
from mm_core.export.writer import ShardedWriter

__all__ = [
    "FORMATS",
    "Shard",
    "ShardFormat",
    "ShardedWriter",
    "code_version",
    "get_format",
    "load_manifest",
    "make_shard",
    "read_shard",
    "read_vectors",
    "sha256_file",
    "shard_ids",
]
