"""SGTM tokens: reshape round trip, token layout, sinusoids, positions of visible tokens."""

from __future__ import annotations

import math

import pytest
import torch

import fsarbench as fb
from fsarbench_sgtm.autoencoder import PositionalEmbedding, gather_tokens
from fsarbench_sgtm.tokens import frame_token_mask, from_tokens, sincos_table, to_tokens


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny tensors: one intra-op thread avoids oversubscription on a shared, busy CPU."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


SMALL = dict(feature_dim=64, seq_len=8, num_train_classes=7)
SMALL_HP = dict(matcher="protonet", token_dim=16, num_heads=2, saliency_hidden=16)


def test_round_trip_and_layout() -> None:
    x = torch.randn(3, 8, 64)
    tok = to_tokens(x, 16)
    assert tok.shape == (3, 32, 16)
    assert torch.equal(from_tokens(tok, 8), x)
    for t in range(8):
        for j in range(4):
            assert torch.equal(tok[:, 4 * t + j], x[:, t, 16 * j : 16 * (j + 1)])
    assert torch.equal(to_tokens(x, 64), x)  # P = D: one token per frame
    assert to_tokens(x[:, :3], 16).shape == (3, 12, 16)  # a [T', D] block


def test_bad_token_dim_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="token_dim P=24 must be a positive divisor of"):
        to_tokens(torch.zeros(1, 8, 64), 24)
    with pytest.raises(ValueError, match="feature_dim D=64"):
        fb.create_method("sgtm-otam", **SMALL, **{**SMALL_HP, "token_dim": 48})


def test_frame_token_mask() -> None:
    m = torch.tensor([[True, False, True]])
    assert frame_token_mask(m, 2).tolist() == [[True, True, False, False, True, True]]


def test_sincos_table_known_values() -> None:
    pe = sincos_table(10, 8)
    assert torch.allclose(pe[0], torch.tensor([0.0, 1.0] * 4))
    for p in range(10):
        for i in range(4):
            w = 10000 ** (-2 * i / 8)
            assert math.isclose(pe[p, 2 * i].item(), math.sin(p * w), abs_tol=1e-6)
            assert math.isclose(pe[p, 2 * i + 1].item(), math.cos(p * w), abs_tol=1e-6)
    with pytest.raises(ValueError, match="even width"):
        sincos_table(4, 7)


@pytest.mark.parametrize("kind", ["learned", "sincos"])
def test_visible_tokens_get_their_original_positions(kind: str) -> None:
    emb = PositionalEmbedding(32, 16, kind)
    tokens = torch.randn(2, 32, 16)
    visible = torch.tensor([[0, 1, 2, 3, 12, 13, 14, 15], [4, 5, 6, 7, 28, 29, 30, 31]])
    got = emb(gather_tokens(tokens, visible), visible)
    want = gather_tokens(emb(tokens), visible)
    assert torch.equal(got, want)
    assert torch.allclose(got[1, 4] - tokens[1, 28], emb.table[28], atol=1e-6)
    # and not the positions 0..V-1 the short sequence would otherwise get
    assert not torch.allclose(got, emb(gather_tokens(tokens, visible)))


def test_encoder_sees_visible_tokens_at_true_positions() -> None:
    torch.manual_seed(0)
    m = fb.create_method("sgtm-otam", **SMALL, **SMALL_HP)
    videos = torch.randn(3, 8, 64)
    frame_mask = torch.zeros(3, 8, dtype=torch.bool)
    frame_mask[0, [0, 1, 6, 7]] = True
    frame_mask[1, [2, 3, 4, 5]] = True
    frame_mask[2, [0, 2, 5, 7]] = True
    seen = {}
    handle = m.encoder.register_forward_hook(lambda mod, inp, out: seen.update(x=inp[0]))
    m.reconstruct(videos, frame_mask)
    handle.remove()
    full = m.pos_embed(to_tokens(videos, 16))  # [3, 32, 16], every token at its position
    for b in range(3):
        frames = (~frame_mask[b]).nonzero().flatten().tolist()
        idx = [4 * t + j for t in frames for j in range(4)]
        assert torch.equal(seen["x"][b], full[b, idx])
