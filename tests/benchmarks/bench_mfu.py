"""Case 2: model FLOPs utilisation (MFU) of the project's encoders on this machine (SPEC P1).

MFU = encoder throughput x model FLOPs per sample / the machine's fp32 matmul
rate (square matmuls, torch default threads), the two timed in alternation
(encoder, matmuls, encoder, ...) so both see the same load on a shared machine.
FLOPs are counted by ``torch.utils.flop_counter.FlopCounterMode`` over the
same ``encode`` call that is timed (so padding the encoder actually computes is
counted), plus a formula for the CPU SDPA kernel, which torch's table lacks.
Encoders: all-MiniLM-L6-v2 on Flickr8k captions; timm ViT-S/16 (random
weights) on Flickr8k images; a Wav2Vec2-base-sized model (transformers
``Wav2Vec2Config()`` defaults, random weights) on LJSpeech-read clips.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch.utils import flop_counter

from tests.benchmarks.bench_text import load_captions
from tests.benchmarks.common import DATASETS, Row, compare


def _sdpa_cpu_flop(query, key, value, *args: Any, out_shape: Any = None, **kwargs: Any) -> int:
    return flop_counter.sdpa_flop_count(query, key, value)


#: the CPU flash-attention kernel SDPA dispatches to is missing from torch's FLOP table
CUSTOM_FLOPS = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _sdpa_cpu_flop}


def count_flops(fn: Callable[[], Any]) -> int:
    """Total FLOPs of the matmul/conv/attention ops that ``fn`` runs."""
    with flop_counter.FlopCounterMode(display=False, custom_mapping=CUSTOM_FLOPS) as counter:
        fn()
    return int(counter.get_total_flops())


def matmul_work(n: int, times: int = 5) -> tuple[Callable[[], Any], float]:
    """``times`` fp32 ``n x n`` matmuls and their FLOPs: the machine's practical peak when timed."""
    a, b = torch.randn(n, n), torch.randn(n, n)

    def work() -> None:
        with torch.inference_mode():
            for _ in range(times):
                a @ b

    return work, 2.0 * n**3 * times


def wav2vec2_base_dir(root: Path, layers: int | None = None) -> Path:
    """A directory holding only ``config.json``: transformers' Wav2Vec2Config defaults (base size)."""
    from transformers import Wav2Vec2Config

    (Wav2Vec2Config() if layers is None else Wav2Vec2Config(num_hidden_layers=layers)).save_pretrained(root)
    return root


def measure(
    encoder, items: Sequence[Any], *, batch_size: int, repeats: int, matmul: tuple[Callable[[], Any], float]
) -> dict[str, float]:
    """Throughput, FLOPs per sample and achieved FLOP/s of ``encoder.encode(items)``, and the matmul peak."""
    # Frozen for inference anyway; FlopCounterMode's module tracker fails on parametrized
    # weights (Wav2Vec2's weight-normed conv) that require grad under inference_mode.
    encoder.requires_grad_(False)

    def run() -> Any:
        return encoder.encode(items, batch_size=batch_size)

    mm, mm_flops = matmul

    def warm() -> None:
        encoder.encode(items[:2], batch_size=2)
        mm()

    t = compare({"enc": run, "mm": mm}, repeats=repeats, warmup=warm)
    flops = count_flops(run) / len(items)
    per_s = len(items) / t["enc"]
    peak = mm_flops / t["mm"]
    return {"samples_per_s": per_s, "gflop_per_sample": flops / 1e9, "achieved": per_s * flops, "peak": peak}


def run(quick: bool = False) -> list[Row]:
    from mm_core.data.sources import read_source
    from mm_core.registry import get as get_modality

    repeats = 1 if quick else 5
    matmul = matmul_work(512 if quick else 2048)
    n_text, n_img, n_audio = (8, 2, 2) if quick else (256, 32, 8)

    images, seen = [], set()
    for rec in read_source("flickr8k", DATASETS / "flickr8k"):
        path = rec.modalities.get("vision")
        if path and path not in seen:
            seen.add(path)
            images.append(get_modality("vision").decode(path))
        if len(images) == n_img:
            break
    clips = [
        get_modality("audio").decode(r.modalities["audio"])
        for r in read_source("ljspeech", DATASETS / "ljspeech-read", metadata="transcript.csv", text=False)
    ][:n_audio]
    if quick:  # one second each keeps the smoke run short
        from mm_core.modalities.audio import DecodedAudio

        clips = [DecodedAudio(c.samples[:, : c.sample_rate], c.sample_rate) for c in clips]

    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_mfu_") as tmp:
        cases = [
            ("all-MiniLM-L6-v2", "text", {}, load_captions()[:n_text], 32),
            (
                "ViT-S/16 224 (random init)",
                "vision",
                {"model": "vit_small_patch16_224", "pretrained": False},
                images,
                16,
            ),
            (
                "Wav2Vec2-base size (random init)",
                "audio",
                {"model": str(wav2vec2_base_dir(Path(tmp) / "w2v2", 1 if quick else None)), "pretrained": False},
                clips,
                4,
            ),
        ]
        for label, modality, options, items, batch in cases:
            encoder = get_modality(modality).create_encoder(**options)
            r = measure(encoder, items, batch_size=batch, repeats=repeats, matmul=matmul)
            extra = {
                "samples_per_s": round(r["samples_per_s"], 2),
                "gflop_per_sample": round(r["gflop_per_sample"], 3),
                "samples": len(items),
                "batch_size": batch,
                "matmul": "2048x2048 fp32" if not quick else "512x512 fp32",
                "threads": torch.get_num_threads(),
            }
            if modality == "audio":
                extra["clip_seconds_mean"] = round(sum(c.duration for c in items) / len(items), 2)
            rows.append(
                Row(
                    2,
                    f"MFU {label}",
                    "model FLOP rate",
                    "GFLOP/s",
                    r["achieved"] / 1e9,
                    r["peak"] / 1e9,
                    "fp32 matmul peak (timed alternately)",
                    extra=extra,
                )
            )
            del encoder
    return rows
