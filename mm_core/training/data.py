"""The build's cached encodings as training and evaluation data, one shard in memory at a time.

Samples are the accepted rows of every shard, split by the holdout rules. An
epoch visits shards in a seeded order and batches inside a shard, so memory is
bounded by one shard whatever the dataset size. Every process of a
data-parallel run computes the same plan and takes its own slice of each
global batch, so all ranks run the same number of steps.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from mm_core.config import BuildConfig
from mm_core.encodings import ShardEncodings
from mm_core.training.batch import Batch, make_batch
from mm_core.training.split import holdout_flags


@dataclass
class ShardSamples:
    """One shard's accepted samples with their labels and split."""

    shard_id: str
    sample_ids: list[str]
    sources: list[str]
    labels: list[dict[str, Any]]
    held_out: list[bool]

    def ids(self, split: str) -> list[str]:
        want = split == "eval"
        return [s for s, h in zip(self.sample_ids, self.held_out, strict=True) if h == want]


@dataclass
class ShardCache:
    """The encodings of one shard, with row lookups."""

    encodings: dict[str, ShardEncodings]
    rows: dict[str, dict[str, int]]

    def batch(self, sample_ids: list[str], trainable: list[str]) -> Batch:
        return make_batch(sample_ids, self.encodings, self.rows, trainable)


def _labels(value: Any) -> dict[str, Any]:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return {}
    return value if isinstance(value, dict) else {}


class BuildData:
    """Accepted samples of a build, split into train / eval, and their cached encodings."""

    def __init__(self, cfg: BuildConfig) -> None:
        from mm_core.pipeline import BuildPaths, build_modalities

        self.cfg = cfg
        self.paths = BuildPaths.of(cfg)
        self.modalities = build_modalities(cfg)
        rules = cfg.evaluation.holdout_rules
        self.shards: list[ShardSamples] = []
        for sid in self.paths.list_shards():
            path = self.paths.accepted(sid)
            if not path.exists():
                continue
            table = pq.read_table(path, columns=["sample_id", "source", "labels"]).to_pydict()
            labels = [_labels(v) for v in table["labels"]]
            flags = holdout_flags(rules, table["sample_id"], table["source"], labels)
            self.shards.append(ShardSamples(sid, table["sample_id"], table["source"], labels, flags))
        self._cached: tuple[str, ShardCache] | None = None

    def count(self, split: str) -> int:
        return sum(len(s.ids(split)) for s in self.shards)

    def fingerprint(self) -> str:
        """Hash of the training samples (a checkpoint resumes only on the same data)."""
        h = hashlib.sha256()
        for s in self.shards:
            h.update(s.shard_id.encode())
            h.update("\n".join(s.ids("train")).encode())
        return h.hexdigest()[:16]

    def load(self, shard_id: str) -> ShardCache:
        """The shard's encodings (the last one loaded is kept)."""
        if self._cached is not None and self._cached[0] == shard_id:
            return self._cached[1]
        from mm_core.encodings import load_encodings

        encodings = {}
        for m in self.modalities:
            p = self.paths.encodings(m, shard_id)
            if p.exists():
                encodings[m] = load_encodings(p)
        rows = {m: {s: i for i, s in enumerate(e.sample_ids)} for m, e in encodings.items()}
        cache = ShardCache(encodings, rows)
        self._cached = (shard_id, cache)
        return cache

    def inputs_for_stats(self, modality: str) -> Iterator[tuple[ShardEncodings, list[int]]]:
        """Each shard's encodings of ``modality`` with the row numbers of its training samples."""
        for s in self.shards:
            enc = self.load(s.shard_id).encodings.get(modality)
            if enc is None or not enc.sample_ids:
                continue
            train = set(s.ids("train"))
            yield enc, [i for i, sid in enumerate(enc.sample_ids) if sid in train]

    # -- the epoch plan ----------------------------------------------------------------------
    def plan(self, epoch: int, seed: int, batch_size: int, world: int, rank: int) -> list[tuple[str, list[str]]]:
        """This rank's micro-batches for one epoch: ``(shard_id, sample_ids)``, in order.

        Global batches of ``batch_size * world`` samples are cut inside each
        shard; one with fewer than two samples per rank is dropped (a
        contrastive batch needs negatives); rank ``r`` takes rows ``r::world``.
        """
        rng = np.random.default_rng([seed, epoch])
        order = rng.permutation(len(self.shards))
        out = []
        size = batch_size * world
        for i in order:
            shard = self.shards[int(i)]
            ids = shard.ids("train")
            ids = [ids[j] for j in rng.permutation(len(ids))]
            for start in range(0, len(ids), size):
                chunk = ids[start : start + size]
                if len(chunk) >= 2 * world:
                    out.append((shard.shard_id, chunk[rank::world]))
        return out
