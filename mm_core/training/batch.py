"""A batch of samples gathered from cached encodings: frozen features, trainable inputs, content ids."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch

from mm_core.encodings import ShardEncodings
from mm_core.training.inputs import get_codec


@dataclass
class Batch:
    """Inputs of :class:`~mm_core.training.model.FusionStack` for ``len(sample_ids)`` samples.

    ``features``/``masks``: frozen modalities' cached tokens; ``inputs``/``rows``:
    a trainable modality's encoder keyword tensors for the batch positions in
    ``rows``; ``present``: every modality, per sample; ``content``: per modality
    an id per sample, equal for identical raw items, -1 where absent.
    """

    sample_ids: list[str]
    features: dict[str, torch.Tensor] = field(default_factory=dict)
    masks: dict[str, torch.Tensor] = field(default_factory=dict)
    present: dict[str, torch.Tensor] = field(default_factory=dict)
    inputs: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)
    rows: dict[str, torch.Tensor] = field(default_factory=dict)
    content: dict[str, torch.Tensor] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.sample_ids)

    def to(self, device: torch.device | str) -> Batch:
        move = lambda d: {k: v.to(device, non_blocking=True) for k, v in d.items()}  # noqa: E731
        return Batch(
            self.sample_ids,
            move(self.features),
            move(self.masks),
            move(self.present),
            {m: move(v) for m, v in self.inputs.items()},
            move(self.rows),
            move(self.content),
        )


def _content_ids(
    sample_ids: Sequence[str], enc: ShardEncodings, row: Mapping[str, int], vocab: dict[str, int]
) -> torch.Tensor:
    out = []
    for sid in sample_ids:
        i = row.get(sid, -1)
        if i < 0:
            out.append(-1)
            continue
        key = enc.content[i] if enc.content else f"{enc.modality}:{sid}"
        out.append(vocab.setdefault(key, len(vocab)))
    return torch.tensor(out, dtype=torch.long)


def make_batch(
    sample_ids: Sequence[str],
    encodings: Mapping[str, ShardEncodings],
    rows: Mapping[str, Mapping[str, int]],
    trainable: Sequence[str] = (),
) -> Batch:
    """Gather ``sample_ids`` from a shard's encodings; ``trainable`` modalities come as encoder inputs.

    A sample without a modality gets zero features, an all-False mask and
    ``present=False``; frozen sequences are trimmed to the batch's longest real token.
    """
    from mm_core.fuse import gather_batch

    frozen = {m: e for m, e in encodings.items() if m not in trainable}
    feats, masks, present = gather_batch(sample_ids, frozen, rows) if frozen else ({}, {}, {})
    batch = Batch(list(sample_ids), feats, masks, present)
    vocab: dict[str, int] = {}
    for m, enc in encodings.items():
        row = rows[m]
        if m in trainable:
            if not enc.has_inputs and enc.sample_ids:
                raise ValueError(f"the {m} encodings hold no encoder inputs; re-run its encodings asset")
            have = [(j, row[s]) for j, s in enumerate(sample_ids) if s in row]
            pos = torch.tensor([j for j, _ in have], dtype=torch.long)
            src = torch.tensor([i for _, i in have], dtype=torch.long)
            flag = torch.zeros(len(sample_ids), dtype=torch.bool)
            flag[pos] = True
            batch.present[m], batch.rows[m] = flag, pos
            batch.inputs[m] = get_codec(enc.codec).collate(enc.inputs, src) if have else {}
        batch.content[m] = _content_ids(sample_ids, enc, row, vocab)
    return batch
