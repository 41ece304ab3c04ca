"""Read exported shards back with the plain libraries, in sorted shard order."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mm_core.export.formats import get_format
from mm_core.export.records import Shard


def shard_ids(out_dir: str | Path, format: str = "npy") -> list[str]:
    """Ids of the complete shards present in ``format``, sorted."""
    return get_format(format).shard_ids(out_dir)


def read_shard(out_dir: str | Path, shard_id: str, format: str = "npy") -> Shard:
    """Every column of one shard (vectors, mask, modality vectors, metadata, quality)."""
    fmt = get_format(format)
    path = fmt.path(out_dir, shard_id)
    if not path.exists():
        raise FileNotFoundError(f"no {format} shard {shard_id!r} under {out_dir}")
    return fmt.read(path)


def read_vectors(out_dir: str | Path, format: str = "npy") -> tuple[list[str], np.ndarray, np.ndarray, list[str]]:
    """``(ids, vectors float32 [N, D], mask bool [N, M], modalities)`` over all shards.

    Shards are read in sorted shard-id order (zero-pad numeric ids to keep
    numeric order).
    """
    fmt = get_format(format)
    shards = [fmt.read(fmt.path(out_dir, sid), columns_only=True) for sid in fmt.shard_ids(out_dir)]
    if not shards:
        raise FileNotFoundError(f"no {format} shards under {out_dir}")
    modalities = shards[0].modalities
    for s in shards:
        if s.modalities != modalities:
            raise ValueError(f"shards under {out_dir} disagree on modalities: {s.modalities} vs {modalities}")
    ids = [i for s in shards for i in s.sample_ids]
    vectors = np.concatenate([s.vectors for s in shards]).astype(np.float32, copy=False)
    mask = np.concatenate([s.modality_mask for s in shards]).astype(bool, copy=False)
    return ids, vectors, mask, list(modalities)
