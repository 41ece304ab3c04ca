"""Measures of an embedding space (SPEC M13): retrieval, linear probe, robustness, alignment/uniformity.

Plain functions over arrays, so they serve the build's evaluation, asset
checks and any user's own vectors alike. Similarities are cosine.

- :func:`retrieval_recall`: recall@k of query -> gallery, group-aware: a
  retrieved item is a hit when it shares the query's group (same image, same
  digit word, same activity) or is the query's own item; :func:`chance_recall`
  gives what a random ranking scores on the same data.
- :func:`linear_probe`: multinomial logistic regression (torch, L-BFGS) fitted
  on training vectors, accuracy on held-out ones.
- :func:`robustness`: how far a partial-modality vector is from the sample's full one.
- :func:`alignment` / :func:`uniformity`: Wang & Isola (2020), on L2-normalised vectors.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import numpy as np
import torch


def normalize(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (zero rows stay zero), float32."""
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def hit_matrix(
    query_groups: Sequence[str],
    gallery_groups: Sequence[str],
    query_items: Sequence[str] | None = None,
    gallery_items: Sequence[str] | None = None,
) -> np.ndarray:
    """``[Q, G]`` bool: gallery j is a correct answer for query i (same group, or the query's own item)."""
    _, inv = np.unique(
        np.concatenate([np.asarray(query_groups, object), np.asarray(gallery_groups, object)]).astype(str),
        return_inverse=True,
    )
    q, g = inv[: len(query_groups)], inv[len(query_groups) :]
    hits = q[:, None] == g[None, :]
    if query_items is not None and gallery_items is not None:
        _, inv = np.unique(
            np.concatenate([np.asarray(query_items, str), np.asarray(gallery_items, str)]), return_inverse=True
        )
        hits |= inv[: len(query_items), None] == inv[None, len(query_items) :]
    return hits


def retrieval_recall(
    queries: np.ndarray, gallery: np.ndarray, hits: np.ndarray, ks: Sequence[int] = (1, 5, 10)
) -> dict[int, float]:
    """Fraction of queries with a hit among their ``k`` most similar gallery items, per k.

    Ties are broken against the query (a hit ranks after equally similar misses).
    Queries without any hit in the gallery are left out.
    """
    valid = hits.any(1)
    if not valid.any():
        return {k: float("nan") for k in ks}
    sims = normalize(queries[valid]) @ normalize(gallery).T
    h = hits[valid]
    best_hit = np.where(h, sims, -np.inf).max(1)
    rank = (sims > best_hit[:, None]).sum(1) + ((sims == best_hit[:, None]) & ~h).sum(1)
    return {k: float((rank < k).mean()) for k in ks}


def chance_recall(hits: np.ndarray, ks: Sequence[int] = (1, 5, 10)) -> dict[int, float]:
    """Expected recall@k of a uniformly random ranking: 1 - C(G - g, k) / C(G, k) per query."""
    valid = hits.any(1)
    g_total = hits.shape[1]
    pos = hits[valid].sum(1).astype(np.float64)
    out = {}
    for k in ks:
        miss = np.ones_like(pos)
        for t in range(min(k, g_total)):
            miss *= np.clip((g_total - pos - t) / (g_total - t), 0.0, 1.0)
        out[k] = float((1.0 - miss).mean()) if pos.size else float("nan")
    return out


def unique_items(items: Sequence[str]) -> np.ndarray:
    """Index of the first occurrence of every distinct item (a gallery lists each item once)."""
    _, first = np.unique(np.asarray(items, dtype=str), return_index=True)
    return np.sort(first)


def linear_probe(
    train_x: np.ndarray,
    train_y: Sequence[str],
    test_x: np.ndarray,
    test_y: Sequence[str],
    *,
    l2: float = 1e-3,
    max_iter: int = 200,
) -> dict[str, float]:
    """Logistic-regression accuracy on held-out vectors; classes unseen in training count as errors."""
    classes = sorted(set(train_y))
    if len(classes) < 2 or len(test_y) == 0:
        return {"accuracy": float("nan"), "majority": float("nan"), "classes": float(len(classes))}
    index = {c: i for i, c in enumerate(classes)}
    x = torch.from_numpy(normalize(train_x)).double()
    mu, sd = x.mean(0), x.std(0).clamp(min=1e-6)
    x = (x - mu) / sd
    y = torch.tensor([index[c] for c in train_y])
    w = torch.zeros(x.shape[1], len(classes), dtype=torch.float64, requires_grad=True)
    b = torch.zeros(len(classes), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(x @ w + b, y) + l2 * (w**2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    xt = (torch.from_numpy(normalize(test_x)).double() - mu) / sd
    with torch.no_grad():
        pred = (xt @ w + b).argmax(1).numpy()
    truth = np.array([index.get(c, -1) for c in test_y])
    majority = max(np.mean([c == k for c in test_y]) for k in classes)
    return {"accuracy": float((pred == truth).mean()), "majority": float(majority), "classes": float(len(classes))}


def robustness(partial: np.ndarray, full: np.ndarray, hits: np.ndarray | None = None) -> dict[str, float]:
    """Mean cosine of each partial vector to its sample's full vector, and recall@1 of finding it.

    Row i of ``partial`` and ``full`` is one sample. ``hits`` (default: the
    diagonal) says which full vectors count as found, e.g. the same group when
    many samples share the partial view's content (one caption for many clips).
    """
    p, f = normalize(partial), normalize(full)
    cos = (p * f).sum(1)
    hits = np.eye(len(p), dtype=bool) if hits is None else hits | np.eye(len(p), dtype=bool)
    r1 = retrieval_recall(p, f, hits, ks=(1,))[1] if len(p) else float("nan")
    return {"cosine": float(cos.mean()) if len(cos) else float("nan"), "recall@1": r1}


def alignment(x: np.ndarray, y: np.ndarray, alpha: float = 2.0) -> float:
    """E ||f(x) - f(y)||^alpha over positive pairs (rows of x and y): lower is better aligned."""
    d = np.linalg.norm(normalize(x) - normalize(y), axis=1)
    return float((d**alpha).mean()) if len(d) else float("nan")


def uniformity(x: np.ndarray, t: float = 2.0, max_points: int = 2000, seed: int = 0) -> float:
    """log E exp(-t ||f(x) - f(y)||^2) over distinct pairs: lower is more uniform on the sphere."""
    z = normalize(x)
    if len(z) > max_points:
        z = z[np.random.default_rng(seed).choice(len(z), max_points, replace=False)]
    if len(z) < 2:
        return float("nan")
    sq = np.clip(2.0 - 2.0 * (z @ z.T), 0.0, None).astype(np.float64)
    iu = np.triu_indices(len(z), 1)
    vals = -t * sq[iu]
    top = vals.max()
    return float(top + np.log(np.exp(vals - top).mean()))


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m mm_core.evaluate CONFIG.yaml``: the held-out figures of a built model, as a table."""
    import argparse
    import json

    from mm_core.config import load_config
    from mm_core.pipeline import BuildPaths
    from mm_core.training.evaluation import table_md

    parser = argparse.ArgumentParser(prog="python -m mm_core.evaluate", description=main.__doc__)
    parser.add_argument("config", help="the build YAML (after `mm build CONFIG`)")
    args = parser.parse_args(argv)
    path = BuildPaths.of(load_config(args.config)).model_dir / "evaluation.json"
    if not path.is_file():
        print(f"no evaluation at {path}: build it first, with evaluation.holdout set", file=sys.stderr)
        return 1
    result = json.loads(path.read_text())
    print(f"{path}\nsplit: {result['split']}\n")
    print(table_md(result))
    gate = result.get("gate")
    if gate:
        print(f"\nretrieval gate: {'passed' if gate['passed'] else 'FAILED'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
