"""Case 3: fusion forward, each strategy vs the seed's hand-written attention (SPEC P1, M5).

Shapes (full run): batch 32; vision 197 x 768, audio 150 x 768, text 50 x
384, sensor 100 x 256 encoder tokens, with per-sample padding (random real
lengths); shared width 512, 8 heads, 2 cross-attention layers, 1
self-attention layer, masked mean pooling, eval mode, ``inference_mode``.

Baseline: the seed's path with the same widths and layers: its projection
(Linear + LayerNorm + GELU + Dropout, seed section 3.3), its
``MultimodalFusionTransformer`` with 'pairwise' (the only strategy that runs:
one ``CrossModalAttention`` per layer shared by all 12 ordered pairs, softmax
(QK^T)V by hand) and its ``UnifiedRepresentationHead('mean')``, from
``tests/seed_reference.py``.

Memory: each model runs in a fresh process (``--child``); the figure is the
growth of the peak resident set size (Linux ``VmHWM``, reset just before) in the
first forward, over the RSS once the model and inputs are built (a warm-up
forward would leave freed memory mapped and hide the peak). tracemalloc does
not see torch's allocator; this measures what the OS gives the process.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import torch
from torch import nn

from tests.benchmarks.common import Row, RssSampler, compare, run_child

STRATEGIES = ("pairwise", "anchor", "sequential", "perceiver")
FULL = {
    "batch": 32,
    "shared": 512,
    "heads": 8,
    "layers": 2,
    "tokens": {"vision": (197, 768), "audio": (150, 768), "text": (50, 384), "sensor": (100, 256)},
}
QUICK = {
    "batch": 4,
    "shared": 64,
    "heads": 4,
    "layers": 2,
    "tokens": {"vision": (20, 96), "audio": (16, 96), "text": (8, 48), "sensor": (12, 32)},
}


def inputs(shape: dict[str, Any], seed: int = 0) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Random features and padding masks: every sample keeps 25-100 % of each modality's tokens."""
    g = torch.Generator().manual_seed(seed)
    feats, masks = {}, {}
    for m, (s, d) in shape["tokens"].items():
        feats[m] = torch.randn(shape["batch"], s, d, generator=g)
        lengths = torch.randint(max(1, s // 4), s + 1, (shape["batch"],), generator=g)
        masks[m] = torch.arange(s)[None, :] < lengths[:, None]
    return feats, masks


class SeedPipeline(nn.Module):
    """The seed's projection -> pairwise fusion -> head, with the project's widths."""

    def __init__(self, dims: dict[str, int], shared: int, heads: int, layers: int) -> None:
        super().__init__()
        from tests.seed_reference import MultimodalFusionTransformer, UnifiedRepresentationHead

        # seed section 3.3 ProjectionLayer, verbatim
        self.projectors = nn.ModuleDict(
            {
                m: nn.Sequential(nn.Linear(d, shared), nn.LayerNorm(shared), nn.GELU(), nn.Dropout(0.1))
                for m, d in dims.items()
            }
        )
        self.fusion = MultimodalFusionTransformer(shared, heads, layers, fusion_strategy="pairwise")
        self.head = UnifiedRepresentationHead(shared, shared, pooling_strategy="mean")

    def forward(self, feats: dict[str, torch.Tensor], masks: dict[str, torch.Tensor]) -> torch.Tensor:
        projected = {m: self.projectors[m](x) for m, x in feats.items()}
        fused = self.fusion(projected, masks)
        mask = torch.cat([masks[m] for m in feats], dim=1)
        return self.head(fused, mask)


def build(kind: str, shape: dict[str, Any]) -> nn.Module:
    """``kind`` is a project strategy or ``"seed"``; eval mode, fixed seed."""
    torch.manual_seed(0)
    dims = {m: d for m, (_, d) in shape["tokens"].items()}
    if kind == "seed":
        return SeedPipeline(dims, shape["shared"], shape["heads"], shape["layers"]).eval()
    from mm_core.fusion import build_fusion_model

    return build_fusion_model(
        dims,
        shared_dim=shape["shared"],
        output_dim=shape["shared"],
        strategy=kind,
        pooling="mean",
        num_layers=shape["layers"],
        num_heads=shape["heads"],
    ).eval()


def forward(model: nn.Module, feats: dict[str, torch.Tensor], masks: dict[str, torch.Tensor]) -> torch.Tensor:
    with torch.inference_mode():
        return model(feats, masks)


def child(kind: str, quick: bool) -> dict[str, float]:
    """The first forward in this fresh process: RSS growth over the built state."""
    shape = QUICK if quick else FULL
    model = build(kind, shape)
    feats, masks = inputs(shape)
    sampler = RssSampler()
    sampler.start()
    forward(model, feats, masks)
    return sampler.stop()


def run(quick: bool = False) -> list[Row]:
    shape = QUICK if quick else FULL
    feats, masks = inputs(shape)
    models = {k: build(k, shape) for k in ("seed", *STRATEGIES)}
    fns = {k: (lambda m=m: forward(m, feats, masks)) for k, m in models.items()}
    t = compare(fns, repeats=1 if quick else 5, warmup=lambda: [f() for f in fns.values()])
    measured = ("seed", "perceiver") if quick else tuple(fns)  # quick: one fresh process per side is enough
    flag = ["--quick"] if quick else []
    mem = {k: run_child("tests.benchmarks.bench_fusion", "--child", k, *flag) for k in measured}
    b = shape["batch"]
    desc = {
        "batch": b,
        "shared_dim": shape["shared"],
        "layers": shape["layers"],
        "heads": shape["heads"],
        "tokens": {m: s for m, (s, _) in shape["tokens"].items()},
        "threads": torch.get_num_threads(),
    }
    rows = []
    for k in STRATEGIES:
        params = sum(p.numel() for p in models[k].parameters())
        rows.append(
            Row(
                3,
                f"fusion forward {k}",
                "throughput",
                "samples/s",
                b / t[k],
                b / t["seed"],
                "seed pairwise (hand-written softmax(QK^T)V)",
                extra={
                    **desc,
                    "ms_per_batch": round(1000 * t[k], 1),
                    "seed_ms_per_batch": round(1000 * t["seed"], 1),
                    "params_m": round(params / 1e6, 2),
                    "seed_params_m": round(sum(p.numel() for p in models["seed"].parameters()) / 1e6, 2),
                },
            )
        )
        if k not in mem:
            continue
        rows.append(
            Row(
                3,
                f"fusion forward {k}",
                "peak RSS growth",
                "MiB",
                mem[k]["growth_mb"],
                mem["seed"]["growth_mb"],
                "seed pairwise",
                better="lower",
                extra={"method": "fresh process, first forward, VmHWM growth"},
            )
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--child", choices=("seed", *STRATEGIES), help="measure one model's forward memory")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.quick)))
        return
    for row in run(args.quick):
        print(json.dumps(row.as_dict()))


if __name__ == "__main__":
    sys.exit(main())
