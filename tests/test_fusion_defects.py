"""SPEC section 4, defects 1-5: each shown on the seed's own code, then shown fixed in ours.

``tests/seed_reference.py`` is a verbatim copy of the seed's classes; inputs
are random features generated here.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mm_core.fusion import AttentionBlock, AttentionPool, PoolingHead, build_fusion_model
from tests import seed_reference as seed

DIM = 32
DIMS = {"vision": 24, "audio": 20, "text": 16}


def ours(strategy: str = "pairwise", pooling: str = "cls", **extra):
    torch.manual_seed(0)
    extra.setdefault("dropout", 0.0)
    args = {"shared_dim": DIM, "output_dim": 16, "num_layers": 2, "num_heads": 2}
    return build_fusion_model(DIMS, strategy=strategy, pooling=pooling, **args, **extra).eval()


def raw_features(batch: int, seed_: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed_)
    return {m: torch.randn(batch, 3 + i, d, generator=g) for i, (m, d) in enumerate(DIMS.items())}


def projected(batch: int, seed_: int) -> dict[str, torch.Tensor]:
    """Already shared-width tokens, as the seed's fusion module takes them."""
    g = torch.Generator().manual_seed(seed_)
    return {m: torch.randn(batch, 3 + i, DIM, generator=g) for i, m in enumerate(DIMS)}


def seed_fusion(strategy: str, num_layers: int = 2) -> seed.MultimodalFusionTransformer:
    torch.manual_seed(0)
    model = seed.MultimodalFusionTransformer(DIM, 2, num_layers, 0.0, strategy)
    for m in DIMS:
        model.register_modality(m)
    return model.eval()


def count_calls(modules: list[nn.Module]) -> tuple[dict[int, int], list]:
    counts = {id(m): 0 for m in modules}

    def hook(module, args, output):
        counts[id(module)] += 1

    return counts, [m.register_forward_hook(hook) for m in modules]


# -- defect 1: CLS token prepended after all attention ----------------------------------
def test_1_seed_cls_output_is_constant_ours_depends_on_the_sample():
    torch.manual_seed(0)
    head = seed.UnifiedRepresentationHead(DIM, 16, "cls").eval()
    a, b = torch.randn(1, 5, DIM), torch.randn(1, 5, DIM)
    with torch.no_grad():
        assert torch.equal(head(a), head(b)), "seed: CLS output should be the same constant"
        out = ours(pooling="cls")(raw_features(2, seed_=1))
    assert (out[0] - out[1]).abs().max() > 1e-3


# -- defect 2: attention pooling softmax twice, bool-only mask ---------------------------
def test_2_seed_attention_pooling_reads_padding_ours_does_not():
    torch.manual_seed(0)
    head = seed.UnifiedRepresentationHead(DIM, 16, "attention").eval()
    tokens = torch.randn(2, 6, DIM)
    mask = torch.tensor([[1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 1, 0]], dtype=torch.bool)
    other = torch.where(mask[..., None], tokens, torch.randn_like(tokens) * 5)
    ours_head = PoolingHead(DIM, 16, "attention").eval()
    with torch.no_grad():
        assert (head(tokens, mask) - head(other, mask)).abs().max() > 1e-5, "seed: padding leaks in"
        torch.testing.assert_close(ours_head(other, mask), ours_head(tokens, mask), atol=0, rtol=0)


def test_2_seed_double_softmax_flattens_weights_ours_single_softmax():
    torch.manual_seed(0)
    head = seed.UnifiedRepresentationHead(4, 4, "attention").eval()
    head.output_proj = nn.Identity()  # read the pooled vector itself
    pool = AttentionPool(4)
    with torch.no_grad():
        for lin in (head.attention_pool[0], pool.score):  # token 0 scores 20, the others 0
            lin.weight.copy_(torch.tensor([[20.0, 0.0, 0.0, 0.0]]))
            lin.bias.zero_()
        tokens = torch.eye(4)[None]  # token i = e_i, so pooled vector = the weights
        mask = torch.ones(1, 4, dtype=torch.bool)
        seed_weights = head(tokens, mask)[0]
        our_weights = pool(tokens, mask)[0]
    single = torch.softmax(torch.tensor([20.0, 0, 0, 0]), 0)
    assert seed_weights[0] < 0.5, "seed: second softmax squashes a clear winner"
    torch.testing.assert_close(our_weights, single)
    torch.testing.assert_close(pool.weights(tokens, mask).sum(1), torch.ones(1))


def test_2_seed_rejects_int_masks_ours_accepts_them():
    torch.manual_seed(0)
    head = seed.UnifiedRepresentationHead(DIM, 16, "attention").eval()
    tokens = torch.randn(2, 4, DIM)
    int_mask = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 0]])
    with pytest.raises((RuntimeError, TypeError)):
        head(tokens, int_mask)
    ours_head = PoolingHead(DIM, 16, "attention").eval()
    with torch.no_grad():
        torch.testing.assert_close(ours_head(tokens, int_mask), ours_head(tokens, int_mask.bool()))


# -- defect 3: fully masked key rows -> NaN ------------------------------------------------
def test_3_seed_cross_attention_nan_on_missing_kv_ours_finite():
    torch.manual_seed(0)
    query, kv = torch.randn(2, 4, DIM), torch.randn(2, 5, DIM)
    kv_mask = torch.tensor([[True] * 5, [False] * 5])  # sample 1 lacks the kv modality
    with torch.no_grad():
        seed_out = seed.CrossModalAttention(DIM, 2, 0.0).eval()(query, kv, None, kv_mask)
    assert torch.isnan(seed_out[1]).all() and torch.isfinite(seed_out[0]).all()

    block = AttentionBlock(DIM, 2, 0.0)
    q = query.clone().requires_grad_(True)
    out = block(q, kv, kv_mask)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out[1], query[1])  # nothing to attend to: left unchanged
    out.sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in block.parameters() if p.grad is not None)
    assert torch.isfinite(q.grad).all()


def test_3_sdpa_never_sees_a_fully_masked_row(monkeypatch):
    """CPU SDPA happens to return 0 for such rows, CUDA flash/efficient kernels may give NaN:
    every kernel must get at least one valid key per row, whatever the backend."""
    real = torch.nn.functional.scaled_dot_product_attention
    seen = []

    def spy(q, k, v, attn_mask=None, **kwargs):
        seen.append(attn_mask is None or bool(attn_mask.any(dim=-1).all()))
        return real(q, k, v, attn_mask=attn_mask, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", spy)
    model = ours("pairwise", missing="zero")
    present = {m: torch.tensor([True, False]) for m in DIMS}  # sample 1 has nothing at all
    with torch.no_grad():
        out = model(raw_features(2, seed_=9), present=present)
    assert seen and all(seen)
    assert torch.isfinite(out).all()


# -- defect 4: strategies that skip cross-attention, shared layers, unused tokens ---------
@pytest.mark.parametrize("strategy", ["anchor", "sequential", "perceiver"])
def test_4_seed_strategy_skips_cross_attention_ours_fuses(strategy):
    fusion = seed_fusion(strategy, num_layers=1)  # num_layers // 2 = 0 self-attention layers
    counts, hooks = count_calls(list(fusion.cross_attn_layers))
    feats = projected(2, seed_=2)
    changed = {**feats, "audio": torch.randn_like(feats["audio"])}
    with torch.no_grad():
        a_before = fusion(feats)[:, :3]
        a_after = fusion(changed)[:, :3]
    for h in hooks:
        h.remove()
    assert sum(counts.values()) == 0, "seed: the cross-attention layers never run"
    assert torch.equal(a_before, a_after), "seed: vision tokens ignore the audio content"

    model = ours(strategy)
    blocks = [m for m in model.fusion.modules() if isinstance(m, AttentionBlock)]
    counts, hooks = count_calls(blocks)
    raw = raw_features(2, seed_=3)
    raw_changed = {**raw, "audio": torch.randn_like(raw["audio"])}
    with torch.no_grad():
        before = model.fusion(*model.embed(raw))
        for h in hooks:
            h.remove()
        after = model.fusion(*model.embed(raw_changed))
    part = "latents" if strategy == "perceiver" else "vision"
    span = before.spans[part]
    assert (before.tokens[:, span] - after.tokens[:, span]).abs().max() > 1e-4
    assert set(counts.values()) == {1}, "each cross-attention block runs exactly once (no sharing)"


def test_4_seed_pairwise_shares_one_layer_object_ours_does_not():
    fusion = seed_fusion("pairwise", num_layers=2)
    counts, hooks = count_calls(list(fusion.cross_attn_layers))
    with torch.no_grad():
        fusion(projected(2, seed_=4))
    for h in hooks:
        h.remove()
    n = len(DIMS)
    assert set(counts.values()) == {n * (n - 1)}, "seed: one layer object serves every pair"

    model = ours("pairwise")
    blocks = [m for m in model.fusion.modules() if isinstance(m, AttentionBlock)]
    assert len(blocks) == 2 * n and len({id(b) for b in blocks}) == len(blocks)
    counts, hooks = count_calls(blocks)
    with torch.no_grad():
        model(raw_features(2, seed_=5))
    for h in hooks:
        h.remove()
    assert set(counts.values()) == {1}


def test_4_seed_modality_tokens_never_used_ours_are():
    fusion = seed_fusion("pairwise").train()
    fusion(projected(2, seed_=6)).sum().backward()
    assert all(p.grad is None for p in fusion.modality_tokens.values()), "seed: tokens unused"

    model = ours("pairwise").train()
    model(raw_features(2, seed_=6)).sum().backward()
    assert all(p.grad.abs().sum() > 0 for p in model.type_embeddings.values())


def test_4_seed_self_attention_ignores_padding_ours_respects_it():
    fusion = seed_fusion("pairwise", num_layers=2)  # one self-attention layer
    feats = projected(2, seed_=7)
    masks = {m: torch.ones(x.shape[:2], dtype=torch.bool) for m, x in feats.items()}
    masks["text"][:, -2:] = False
    padded = {**feats, "text": torch.where(masks["text"][..., None], feats["text"], 50.0)}
    with torch.no_grad():
        changed = (fusion(feats, masks)[:, :3] - fusion(padded, masks)[:, :3]).abs().max()
    assert changed > 1e-4, "seed: padded text tokens change the vision tokens"

    model = ours("pairwise", pooling="mean")
    raw = raw_features(2, seed_=7)
    raw_masks = {m: torch.ones(x.shape[:2], dtype=torch.bool) for m, x in raw.items()}
    raw_masks["text"][:, -2:] = False
    raw_padded = {**raw, "text": torch.where(raw_masks["text"][..., None], raw["text"], 50.0)}
    with torch.no_grad():
        a, b = model.forward_tokens(raw, raw_masks), model.forward_tokens(raw_padded, raw_masks)
    valid = a.mask[..., None]
    torch.testing.assert_close(torch.where(valid, b.tokens, 0.0), torch.where(valid, a.tokens, 0.0), atol=1e-5, rtol=0)


# -- defect 5: availability per batch, not per sample ---------------------------------------
def test_5_seed_missing_handler_is_per_batch_ours_is_per_sample():
    torch.manual_seed(0)
    handler = seed.MissingModalityHandler(list(DIMS), DIM)
    feats = projected(2, seed_=8)
    per_sample = {m: torch.tensor([True, m != "audio"]) for m in DIMS}  # sample 1 lacks audio
    with pytest.raises(RuntimeError, match="ambiguous"):
        handler(feats, per_sample, {})
    # The per-batch flag must say True (sample 0 has audio), so sample 1's audio slot is used as is.
    changed = {**feats, "audio": feats["audio"].clone()}
    changed["audio"][1] = torch.randn_like(changed["audio"][1])
    head = seed.UnifiedRepresentationHead(DIM, 16, "mean").eval()
    fusion = seed_fusion("pairwise")
    with torch.no_grad():
        s_ref = head(fusion(handler(feats, dict.fromkeys(DIMS, True), {})))
        s_new = head(fusion(handler(changed, dict.fromkeys(DIMS, True), {})))
    assert (s_ref[1] - s_new[1]).abs().max() > 1e-5, "seed: the absent audio of sample 1 leaks in"

    model = ours("pairwise", pooling="mean")
    raw = raw_features(2, seed_=8)
    raw_changed = {**raw, "audio": raw["audio"].clone()}
    raw_changed["audio"][1] = torch.randn_like(raw_changed["audio"][1])
    raw_changed["audio"][0] += 1.0
    with torch.no_grad():
        o_ref, o_new = model(raw, present=per_sample), model(raw_changed, present=per_sample)
    torch.testing.assert_close(o_new[1], o_ref[1], atol=1e-5, rtol=0)
    assert (o_new[0] - o_ref[0]).abs().max() > 1e-4, "sample 0 has audio: its output must use it"
