"""CLIP-FSAR head vs. the literal reference oracle (tests/oracles/clip_fsar.py), float64.

The oracle is written from ``CNN_OTAM_CLIPFSAR`` / ``Transformer_v1`` / ``OTAM_cum_dist_v2`` /
``cos_sim``; its weights (random, non-trivial LayerNorm affine and ``scale``) are loaded into
the head by name. Both sides get the same text-tower embeddings of ``"a photo of {name}"``
(the head's name cache is filled from one tower call: the tiny tower's float32 output moves
by ~1e-7 with the batch it is encoded in), except in the test of a fresh cache.
"""

from __future__ import annotations

import pytest
import torch

import fsarbench as fb
from oracles.clip_fsar import OracleCLIPFSAR, to_head_names
from oracles.trx_hyrsm import assert_rel_close, grad_scale, random_episodes

NAMES = ["archery", "bowling", "surfing", "juggling", "fencing", "diving", "rowing"]
EMBED = 32  # the tiny text tower's width


def _pair(
    dim: int = EMBED,
    *,
    seq_len: int,
    merge_before: bool,
    heads: int = 4,
    mlp_dim: int = 24,
    depth: int = 1,
    text_coeff: float = 0.9,
    seed: int = 0,
    fill_cache: bool = True,
):
    """An oracle with random weights, the head loaded from its state dict, and the texts."""
    torch.manual_seed(seed)
    fast = fb.create_method(
        "clip-fsar",
        feature_dim=dim,
        seq_len=seq_len,
        text_tower="tiny",
        text_weights="none",
        heads=heads,
        mlp_dim=mlp_dim,
        depth=depth,
        merge_before=merge_before,
        text_coeff=text_coeff,
        attn_dropout=0.0,
        ffn_dropout=0.0,
    )
    fast = fast.double().eval()
    oracle = OracleCLIPFSAR(
        dim,
        text_dim=EMBED,
        heads=heads,
        mlp_dim=mlp_dim,
        depth=depth,
        merge_before=merge_before,
        text_coeff=text_coeff,
        temperature=float(seq_len),  # the head's documented temperature (8 in the reference)
    ).double()
    with torch.no_grad():
        for name, p in oracle.named_parameters():
            if ".norm.weight" in name:
                p.uniform_(0.5, 1.5)
            elif ".norm.bias" in name:
                p.uniform_(-0.5, 0.5)
        oracle.scale.fill_(1.7)
    fast.load_state_dict(to_head_names(oracle.state_dict()), strict=True)
    texts = fast.tower.encode([f"a photo of {n}" for n in NAMES])
    if fill_cache:
        fast.text_cache.update(zip(NAMES, texts))
    return oracle, fast, dict(zip(NAMES, texts.double()))


def _names(batch: int, way: int, seed: int) -> list[list[str]]:
    g = torch.Generator().manual_seed(seed + 50)
    return [
        [NAMES[int(i)] for i in torch.randperm(len(NAMES), generator=g)[:way]] for _ in range(batch)
    ]


def _text(texts: dict[str, torch.Tensor], names: list[str]) -> torch.Tensor:
    return torch.stack([texts[n] for n in names])


EVAL_CASES = [  # way, shot, queries per class, T, merge_before
    (3, 1, 1, 8, True),  # T = 8: the reference's literal temperature
    (5, 1, 1, 5, False),
    (3, 2, 2, 5, True),
    (3, 2, 2, 5, False),
    (5, 3, 1, 4, True),
    (5, 3, 1, 4, False),
]


@pytest.mark.parametrize("way,shot,queries,seq_len,merge_before", EVAL_CASES)
def test_eval_logits_match_oracle(way, shot, queries, seq_len, merge_before):
    oracle, fast, texts = _pair(seq_len=seq_len, merge_before=merge_before, seed=shot)
    support, labels, query = random_episodes(2, way, shot, queries, seq_len, EMBED, seed=way)
    names = _names(2, way, seed=shot)
    with torch.no_grad():
        out = fast(fb.EpisodeBatch(support, labels, query, way=way, class_names=names))
        expected = [
            oracle(support[b], labels[b], query[b], _text(texts, names[b])) for b in range(2)
        ]
    combined, visual, text_q = (torch.stack(parts) for parts in zip(*expected))
    assert_rel_close(out.extras["visual"], visual, "visual logits (-OTAM distance)")
    assert_rel_close(out.extras["text_logits"], text_q, "video-text logits")
    assert_rel_close(out.logits, combined, "combined eval logits")
    assert torch.equal(out.logits.argmax(-1), combined.argmax(-1))


def test_eval_with_text_map_depth_two_and_other_coefficient_match_oracle():
    """Frame dim 16 != text dim 32 (the head's learned ``text_proj``, applied to every use of
    the text), two transformer layers, text_coeff 0.3."""
    oracle, fast, texts = _pair(16, seq_len=5, merge_before=False, depth=2, text_coeff=0.3)
    support, labels, query = random_episodes(1, 3, 2, 1, 5, 16, seed=4)
    names = _names(1, 3, seed=4)
    with torch.no_grad():
        out = fast(fb.EpisodeBatch(support, labels, query, way=3, class_names=names))
        combined, visual, text_q = oracle(support[0], labels[0], query[0], _text(texts, names[0]))
    assert_rel_close(out.extras["visual"][0], visual, "visual logits")
    assert_rel_close(out.extras["text_logits"][0], text_q, "video-text logits")
    assert_rel_close(out.logits[0], combined, "combined eval logits")


GRAD_CASES = [  # way, shot, T, merge_before, dim, depth
    (3, 1, 5, True, EMBED, 1),
    (3, 2, 5, True, EMBED, 1),
    (3, 2, 5, False, EMBED, 1),
    (5, 2, 4, False, 16, 2),
]


@pytest.mark.parametrize("way,shot,seq_len,merge_before,dim,depth", GRAD_CASES)
def test_training_loss_and_gradients_match_oracle(way, shot, seq_len, merge_before, dim, depth):
    oracle, fast, texts = _pair(
        dim, seq_len=seq_len, merge_before=merge_before, depth=depth, seed=10 + shot
    )
    support, labels, query = random_episodes(1, way, shot, 1, seq_len, dim, seed=20 + shot)
    query_labels = torch.arange(way)[None]
    names = _names(1, way, seed=7)
    grads = {}
    for side, model in (("fast", fast), ("oracle", oracle)):
        model.train()
        s, q = support.clone().requires_grad_(), query.clone().requires_grad_()
        if side == "fast":
            batch = fb.EpisodeBatch(s, labels, q, query_labels, way=way, class_names=names)
            losses = fast.episode_loss(batch)
            ce, text = losses["ce"], losses["text"]
        else:
            ce, text = oracle.loss(s[0], labels[0], q[0], query_labels[0], _text(texts, names[0]))
        (ce + text).backward()
        params = {n: p.grad for n, p in model.named_parameters()}
        if side == "oracle":
            params = to_head_names(params)
        grads[side] = (ce.detach(), text.detach(), s.grad, q.grad, params)
    fast_out, oracle_out = grads["fast"], grads["oracle"]
    assert_rel_close(fast_out[0], oracle_out[0], "visual cross-entropy")
    assert_rel_close(fast_out[1], oracle_out[1], "weighted video-text cross-entropy")
    assert_rel_close(fast_out[2], oracle_out[2], "d support")
    assert_rel_close(fast_out[3], oracle_out[3], "d query")
    assert set(fast_out[4]) == set(oracle_out[4])
    floor = grad_scale(oracle_out[4])
    for name, g in oracle_out[4].items():
        assert g is not None and g.abs().max() > 0, f"no gradient reaches {name}"
        assert_rel_close(fast_out[4][name], g, f"d {name}", floor=1e-3 * floor)


def test_fresh_name_cache_prompts_as_the_reference():
    """Without a filled cache the head encodes ``"a photo of {name}"`` itself (float32 tower
    noise only)."""
    oracle, fast, texts = _pair(seq_len=5, merge_before=True, fill_cache=False)
    support, labels, query = random_episodes(1, 3, 2, 1, 5, EMBED, seed=9)
    names = _names(1, 3, seed=9)
    with torch.no_grad():
        out = fast(fb.EpisodeBatch(support, labels, query, way=3, class_names=names))
        combined, visual, _ = oracle(support[0], labels[0], query[0], _text(texts, names[0]))
    assert_rel_close(out.extras["visual"][0], visual, "visual logits", rtol=1e-5)
    assert_rel_close(out.logits[0], combined, "combined eval logits", rtol=1e-5)
