"""Evaluate a build's model on its held-out split: trained vs untrained vs a simple baseline.

Views of every held-out sample are embedded from the cached encodings: the
full vector (all modalities it has), each single-modality vector, and each
drop-one vector. Three embedders see the same samples:

- ``trained``: the trained :class:`FusionStack`;
- ``untrained``: the same architecture at its seeded initialisation (where training started);
- ``baseline``: no fusion model at all: each modality's pooled encoder vector
  (masked mean of its tokens), L2-normalised, times a fixed Gaussian random
  matrix ``[D_m, output_dim] / sqrt(output_dim)`` (seeded by the build seed and
  the modality name), averaged over the modalities present.

The figures (:mod:`mm_core.evaluate`) go to ``evaluation.json`` beside the model,
to the dataset manifest and to the fusion_model asset; :func:`gate` is the
retrieval-quality rule the blocking asset check applies.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import permutations
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from mm_core import evaluate as ev
from mm_core.config import BuildConfig, EvaluationConfig
from mm_core.device import autocast, resolve_device, resolve_precision
from mm_core.training.data import BuildData, ShardCache
from mm_core.training.model import FusionStack
from mm_core.training.split import first_label, stable_fraction

Arrays = dict[str, np.ndarray]


@dataclass
class Views:
    """Vectors of a set of samples: ``full [N, d]``, ``single[m]`` and ``drop[m]`` (NaN rows where undefined)."""

    full: list[np.ndarray] = field(default_factory=list)
    single: dict[str, list[np.ndarray]] = field(default_factory=dict)
    drop: dict[str, list[np.ndarray]] = field(default_factory=dict)

    def add(self, full: np.ndarray, single: Arrays, drop: Arrays) -> None:
        self.full.append(full)
        for m, v in single.items():
            self.single.setdefault(m, []).append(v)
        for m, v in drop.items():
            self.drop.setdefault(m, []).append(v)

    def stacked(self) -> tuple[np.ndarray, Arrays, Arrays]:
        cat = lambda parts: np.concatenate(parts) if parts else np.zeros((0, 0), np.float32)  # noqa: E731
        return cat(self.full), {m: cat(v) for m, v in self.single.items()}, {m: cat(v) for m, v in self.drop.items()}


class StackViews:
    """Embed views with a :class:`FusionStack` (trainable encoders run once per batch)."""

    def __init__(self, stack: FusionStack, device: str = "auto", precision: str = "auto") -> None:
        self.device = resolve_device(device)
        self.precision = resolve_precision(precision, self.device)
        stack = stack if isinstance(stack, FusionStack) else FusionStack(stack)  # a bare FusionModel
        self.stack = stack.to(self.device).eval()

    @torch.inference_mode()
    def __call__(self, cache: ShardCache, ids: list[str], modalities: list[str]) -> tuple[np.ndarray, Arrays, Arrays]:
        batch = cache.batch(ids, self.stack.trainable).to(self.device)
        with autocast(self.device, self.precision):
            feats, masks, present = self.stack.features(batch)
            full = self.stack.fuse(feats, masks, present).float()
            n = len(ids)
            count = torch.stack([present[m] for m in modalities], 1).sum(1)
            single, drop = {}, {}
            for m in modalities:
                single[m] = self._partial(feats, masks, present, present[m], {m}, n)
                keep = {k for k in modalities if k != m}
                drop[m] = self._partial(feats, masks, present, present[m] & (count >= 2), keep, n)
        return full.cpu().numpy(), single, drop

    def _partial(self, feats, masks, present, rows: torch.Tensor, keep: set[str], n: int) -> np.ndarray:
        out = np.full((n, self.stack.output_dim), np.nan, np.float32)
        idx = rows.nonzero().squeeze(1)
        if idx.numel() == 0:
            return out
        names = [m for m in keep if m in feats]
        sub = lambda d: {m: d[m].index_select(0, idx) for m in names}  # noqa: E731
        z = self.stack.fuse(sub(feats), sub(masks), sub(present))
        out[idx.cpu().numpy()] = z.float().cpu().numpy()
        return out


class BaselineViews:
    """Average of per-modality pooled encoder vectors after a fixed random projection (no training)."""

    def __init__(self, dims: dict[str, int], output_dim: int, seed: int) -> None:
        self.output_dim = output_dim
        self.proj = {}
        for m, d in dims.items():
            digest = hashlib.sha256(f"{seed}:{m}".encode()).digest()
            g = torch.Generator().manual_seed(int.from_bytes(digest[:8], "big") & (2**63 - 1))
            self.proj[m] = (torch.randn(d, output_dim, generator=g) / output_dim**0.5).numpy()

    def __call__(self, cache: ShardCache, ids: list[str], modalities: list[str]) -> tuple[np.ndarray, Arrays, Arrays]:
        n = len(ids)
        single = {}
        for m in modalities:
            out = np.full((n, self.output_dim), np.nan, np.float32)
            enc = cache.encodings.get(m)
            if enc is not None and enc.sample_ids:
                have = [(j, cache.rows[m][s]) for j, s in enumerate(ids) if s in cache.rows[m]]
                if have:
                    dst, src = (list(x) for x in zip(*have, strict=True))
                    pooled = F.normalize(enc.pooled[src], dim=-1).numpy()
                    out[dst] = pooled @ self.proj[m]
            single[m] = out
        stacked = np.stack([single[m] for m in modalities])  # [M, N, d]
        have = ~np.isnan(stacked[..., 0])
        full = np.nansum(stacked, 0) / np.maximum(have.sum(0), 1)[:, None]
        drop = {}
        for i, m in enumerate(modalities):
            others = [k for k in range(len(modalities)) if k != i]
            cnt = have[others].sum(0)
            v = np.nansum(stacked[others], 0) / np.maximum(cnt, 1)[:, None]
            v[~(have[i] & (cnt >= 1))] = np.nan
            drop[m] = v.astype(np.float32)
        return full.astype(np.float32), single, drop


@dataclass
class SampleInfo:
    """Per-sample facts the metrics need, aligned with the embedded views."""

    ids: list[str] = field(default_factory=list)
    groups: list[str] = field(default_factory=list)
    probe: list[str | None] = field(default_factory=list)
    content: dict[str, list[str | None]] = field(default_factory=dict)


def _select(data: BuildData, split: str, limit: int) -> Iterator[tuple[str, list[str], list[dict]]]:
    """``(shard, ids, labels)`` of a split, at most ``limit`` samples chosen by a stable hash."""
    chosen: list[tuple[float, str, str, dict]] = []
    for s in data.shards:
        for sid, lab, held in zip(s.sample_ids, s.labels, s.held_out, strict=True):
            if held == (split == "eval"):
                chosen.append((stable_fraction(sid, "eval-sample"), s.shard_id, sid, lab))
    if len(chosen) > limit:
        chosen = sorted(chosen)[:limit]
    by_shard: dict[str, tuple[list[str], list[dict]]] = {}
    for _, shard, sid, lab in chosen:
        ids, labels = by_shard.setdefault(shard, ([], []))
        ids.append(sid)
        labels.append(lab)
    for shard in sorted(by_shard):
        yield shard, *by_shard[shard]


def embed_split(
    embedder: Any, data: BuildData, split: str, limit: int, cfg: EvaluationConfig, batch_size: int = 256
) -> tuple[tuple[np.ndarray, Arrays, Arrays], SampleInfo]:
    """Views of (up to ``limit``) samples of ``split`` and their groups, probe labels and item keys."""
    views, info = Views(), SampleInfo()
    mods = data.modalities
    for shard, ids, labels in _select(data, split, limit):
        cache = data.load(shard)
        for start in range(0, len(ids), batch_size):
            chunk = ids[start : start + batch_size]
            views.add(*embedder(cache, chunk, mods))
        info.ids += ids
        info.groups += [first_label(lab, cfg.group_by) or f"id={sid}" for sid, lab in zip(ids, labels, strict=True)]
        info.probe += [first_label(lab, cfg.probe_label) for lab in labels]
        for m in mods:
            enc, row = cache.encodings.get(m), cache.rows.get(m, {})
            keys = info.content.setdefault(m, [])
            for sid in ids:
                i = row.get(sid)
                keys.append(None if i is None else (enc.content[i] if enc.content else f"{m}:{sid}"))
    return views.stacked(), info


def retrieval_pairs(cfg: EvaluationConfig, single: Arrays) -> list[tuple[str, str]]:
    """Configured ``[query, gallery]`` pairs, else every ordered pair that co-occurs in 2+ samples."""
    if cfg.retrieval:
        return [(q, g) for q, g in cfg.retrieval]
    have = {m: ~np.isnan(v[:, 0]) for m, v in single.items() if v.size}
    return [(q, g) for q, g in permutations(sorted(have), 2) if (have[q] & have[g]).sum() >= 2]


def _retrieval(q: str, g: str, single: Arrays, info: SampleInfo, ks: list[int]) -> tuple[dict, dict]:
    if q not in single or g not in single or not single[q].size:
        return {}, {}
    has_q, has_g = ~np.isnan(single[q][:, 0]), ~np.isnan(single[g][:, 0])
    queries = np.flatnonzero(has_q & has_g)
    pool = np.flatnonzero(has_g)
    if len(queries) == 0 or len(pool) == 0:
        return {}, {}
    items = np.asarray([info.content[g][i] for i in pool], dtype=str)
    gallery = pool[ev.unique_items(items)]
    groups = np.asarray(info.groups, dtype=object)
    q_items = [str(info.content[g][i]) for i in queries]
    g_items = [str(info.content[g][i]) for i in gallery]
    hits = ev.hit_matrix(groups[queries], groups[gallery], q_items, g_items)
    recall = ev.retrieval_recall(single[q][queries], single[g][gallery], hits, ks)
    chance = ev.chance_recall(hits, ks)
    name = f"{q}->{g}"
    meta = {f"{name}/queries": float(len(queries)), f"{name}/gallery": float(len(gallery))}
    return {**{f"{name}/recall@{k}": v for k, v in recall.items()}, **meta}, {
        f"{name}/recall@{k}": v for k, v in chance.items()
    }


def measure(
    views: tuple[np.ndarray, Arrays, Arrays],
    info: SampleInfo,
    train: tuple[tuple[np.ndarray, Arrays, Arrays], SampleInfo] | None,
    cfg: EvaluationConfig,
) -> tuple[dict[str, float], dict[str, float]]:
    """Flat metrics of one embedder, and chance levels of its retrieval figures."""
    full, single, drop = views
    out: dict[str, float] = {}
    chance: dict[str, float] = {}
    pairs = retrieval_pairs(cfg, single)
    for q, g in pairs:
        got, ch = _retrieval(q, g, single, info, list(cfg.ks))
        out.update(got)
        chance.update(ch)
    present = {m: ~np.isnan(v[:, 0]) for m, v in single.items() if v.size}
    multi = np.sum(list(present.values()), 0) >= 2 if present else np.zeros(0, bool)
    groups = np.asarray(info.groups, dtype=object)
    for m, has in present.items():
        rows = np.flatnonzero(has & multi)
        if len(rows) < 2:
            continue
        hits = ev.hit_matrix(groups[rows], groups[rows])
        for k, v in ev.robustness(single[m][rows], full[rows], hits).items():
            out[f"robustness/{m}-only/{k}"] = v
        if len(present) > 2:  # with two modalities, "without m" is the other one alone
            for k, v in ev.robustness(drop[m][rows], full[rows], hits).items():
                out[f"robustness/without-{m}/{k}"] = v
    aligned = [
        ev.alignment(single[q][present[q] & present[g]], single[g][present[q] & present[g]])
        for q, g in pairs
        if q < g and (present[q] & present[g]).any()
    ]
    if aligned:
        out["alignment"] = float(np.mean(aligned))
    if len(full):
        out["uniformity"] = ev.uniformity(full)
    if train is not None:
        (train_full, train_single, _), train_info = train
        for view, test_x, train_x in (
            ("full", full, train_full),
            *((m, single[m], train_single.get(m)) for m in present),
        ):
            if train_x is None or not train_x.size:
                continue
            tr = [i for i, y in enumerate(train_info.probe) if y is not None and not np.isnan(train_x[i, 0])]
            te = [i for i, y in enumerate(info.probe) if y is not None and not np.isnan(test_x[i, 0])]
            if tr and te:
                probe = ev.linear_probe(
                    train_x[tr], [train_info.probe[i] for i in tr], test_x[te], [info.probe[i] for i in te]
                )
                name = "probe/accuracy" if view == "full" else f"probe/{view}-only/accuracy"
                out[name] = probe["accuracy"]
                chance[name] = probe["majority"]
    return out, chance


def evaluate_build(
    cfg: BuildConfig, data: BuildData, models: dict[str, FusionStack | None], *, batch_size: int = 256
) -> dict[str, Any]:
    """Figures of each model (``None`` = the baseline) on the held-out split, with chance levels."""
    from mm_core.pipeline import encoder_dims

    e = cfg.evaluation
    rt = cfg.runtime
    embedders: dict[str, Any] = {}
    for name, stack in models.items():
        if stack is None:
            embedders[name] = BaselineViews(encoder_dims(cfg), cfg.fusion.output_dim, cfg.seed)
        else:
            embedders[name] = StackViews(stack, rt.device, rt.precision)
    result: dict[str, Any] = {
        "split": {"train": data.count("train"), "eval": data.count("eval"), "holdout": e.holdout_rules},
        "models": {},
        "chance": {},
    }
    for name, embedder in embedders.items():
        views, info = embed_split(embedder, data, "eval", e.max_samples, e, batch_size)
        train = embed_split(embedder, data, "train", e.probe_max_train, e, batch_size) if e.probe_label else None
        metrics, chance = measure(views, info, train, e)
        result["models"][name] = metrics
        result["chance"].update(chance)
        result["split"]["evaluated"] = len(info.ids)
    result["pairs"] = [f"{q}->{g}" for q, g in retrieval_pairs(e, views[1])] if embedders else []
    return result


def gate(result: dict[str, Any], cfg: EvaluationConfig, *, trained: bool) -> tuple[bool, list[dict[str, Any]]]:
    """The retrieval-quality rule: configured floors, else well above chance and above the untrained model.

    Each row: ``metric``, ``value``, ``bound``, ``rule``, ``passed``. A metric
    that could not be measured (no held-out queries) fails.
    """
    models = result.get("models", {})
    num = lambda d, k: float("nan") if d.get(k) is None else float(d[k])  # noqa: E731  (JSON null = not measured)
    mine = models.get("trained" if trained else "untrained", {})
    untrained = models.get("untrained", {})
    rows = []

    def row(metric: str, value: float, bound: float, rule: str, strict: bool = False) -> None:
        ok = bool(np.isfinite(value) and (value > bound if strict else value >= bound))
        rows.append({"metric": metric, "value": value, "bound": bound, "rule": rule, "passed": ok})

    for metric, floor in cfg.floors.items():
        row(metric, num(mine, metric), float(floor), "floor")
    if not cfg.floors:
        k = min(cfg.ks)
        for pair in result.get("pairs", []):
            metric = f"{pair}/recall@{k}"
            value = num(mine, metric)
            chance = num(result.get("chance", {}), metric)
            if cfg.min_ratio_over_chance > 0:
                row(metric, value, cfg.min_ratio_over_chance * chance, f"{cfg.min_ratio_over_chance}x chance")
            if trained:
                base = num(untrained, metric)
                row(metric, value, base + cfg.min_gain_over_untrained, "above untrained", strict=True)
    if not rows:
        rows.append(
            {"metric": "-", "value": float("nan"), "bound": float("nan"), "rule": "nothing measured", "passed": False}
        )
    return all(r["passed"] for r in rows), rows


def table_md(result: dict[str, Any], metrics: list[str] | None = None) -> str:
    """Markdown table: metric x (trained, untrained, baseline, chance)."""
    models = result.get("models", {})
    names = [n for n in ("trained", "untrained", "baseline") if n in models]
    keys = metrics or sorted({k for m in models.values() for k in m if not k.endswith(("/queries", "/gallery"))})
    fmt = lambda v: "-" if v is None or not np.isfinite(v) else f"{v:.3f}"  # noqa: E731
    head = "| metric | " + " | ".join(names) + " | chance |\n|---|" + "---|" * (len(names) + 1) + "\n"
    lines = [
        f"| {k} | " + " | ".join(fmt(models[n].get(k)) for n in names) + f" | {fmt(result.get('chance', {}).get(k))} |"
        for k in keys
    ]
    return head + "\n".join(lines)
