"""The default text encoder (bundled all-MiniLM-L6-v2) on real Flickr8k captions."""

from __future__ import annotations

import csv
from collections import defaultdict
from pathlib import Path

import pytest
import torch

import mm_core
from mm_core.encoders.hf_text import default_text_model


def _masked_mean(feats: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    m = mask.unsqueeze(-1).float()
    return (feats * m).sum(1) / m.sum(1).clamp(min=1)


@pytest.fixture(scope="module")
def captions(datasets_dir: Path) -> tuple[list[str], list[int]]:
    """Two captions each of the first 40 images: 80 texts and their image index."""
    by_image: dict[str, list[str]] = defaultdict(list)
    with open(datasets_dir / "flickr8k" / "captions.txt", newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            by_image[row["image"]].append(row["caption"].strip())
    texts, owners = [], []
    for i, image in enumerate(sorted(by_image)[:40]):
        texts += by_image[image][:2]
        owners += [i, i]
    return texts, owners


@pytest.fixture(scope="module")
def embeddings(captions) -> torch.Tensor:
    texts, _ = captions
    feats, mask = mm_core.encode("text", texts, batch_size=16, precision="fp32")
    assert feats.shape[0] == len(texts) and feats.shape[2] == 384
    assert feats.shape[1] == int(mask.sum(1).max()) < 64  # padded to the longest caption only
    return _masked_mean(feats, mask)


def test_masked_mean_matches_sentence_transformers(captions, embeddings) -> None:
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(str(default_text_model()), device="cpu")
    ref = st.encode(captions[0], convert_to_tensor=True, normalize_embeddings=False, batch_size=32).float()
    cos = torch.nn.functional.cosine_similarity(embeddings, ref, dim=1)
    assert cos.min() > 0.999
    ours = torch.nn.functional.normalize(embeddings, dim=1)
    theirs = torch.nn.functional.normalize(ref, dim=1)
    assert torch.allclose(ours, theirs, atol=1e-4)


def test_bf16_stays_close_to_fp32(captions, embeddings) -> None:
    """``precision: bf16`` (CPU autocast) gives vectors within cosine 0.999 of fp32."""
    feats, mask = mm_core.encode("text", captions[0], batch_size=16, precision="bf16")
    cos = torch.nn.functional.cosine_similarity(_masked_mean(feats, mask), embeddings, dim=1)
    assert cos.min() > 0.999


def test_captions_of_the_same_image_are_nearest_neighbours(captions, embeddings) -> None:
    _, owners = captions
    z = torch.nn.functional.normalize(embeddings, dim=1)
    sim = z @ z.T
    sim.fill_diagonal_(-2.0)
    nearest = sim.argmax(1)
    owner = torch.tensor(owners)
    recall_at_1 = (owner[nearest] == owner).float().mean().item()
    assert recall_at_1 > 0.5  # chance is 1/79


def test_embedding_does_not_depend_on_batch_neighbours(captions) -> None:
    texts, _ = captions
    short = min(texts, key=len)
    longer = [*sorted(texts, key=len)[-3:], "word " * 200]
    alone_f, alone_m = mm_core.encode("text", [short], precision="fp32")
    batch_f, batch_m = mm_core.encode("text", [short, *longer], batch_size=8, precision="fp32")
    assert batch_f.shape[1] > alone_f.shape[1]  # the short text really was padded in the batch
    assert torch.allclose(_masked_mean(alone_f, alone_m), _masked_mean(batch_f[:1], batch_m[:1]), atol=1e-5)
    assert batch_m[0].sum() == alone_m[0].sum()
