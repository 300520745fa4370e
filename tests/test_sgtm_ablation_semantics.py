"""Table 3's '+Encoder' rung and Table 5's λ = 0 are one model (issue #16, item 6).

Eq. 8 is ``L = L_CE + λ·L_recon``: at λ = 0 the reconstruction branch sends no gradient, Φ_enc
is trained by L_CE alone, and Φ_cls only ever feeds the mask of that branch. That is Table 3
row 1 ("an Encoder ... 2 Transformer layers without mask reconstruction"). The paper prints
74.50 (Table 3) and 75.05 (Table 5) for them; see docs/methods.md, "Table 3 '+Encoder' and λ = 0".
"""

from __future__ import annotations

import pytest
import torch

import fsarbench as fb
from fsarbench.testing.contract import random_batch

SMALL = dict(feature_dim=64, seq_len=8, num_train_classes=7, token_dim=16, num_heads=2)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny tensors: one intra-op thread avoids oversubscription on a shared, busy CPU."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def build(name: str, **hp) -> fb.FewShotMethod:
    torch.manual_seed(0)
    return fb.create_method(name, **SMALL, **hp).double()


def test_lambda_zero_is_the_encoder_rung() -> None:
    enc, lam0 = build("sgtm-otam-enc"), build("sgtm-otam", lambda_recon=0.0)
    full = build("sgtm-otam")
    a, b = enc.state_dict(), lam0.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert set(full.state_dict()) > set(a)  # λ > 0 adds the decoder and Φ_cls
    assert [s.name for s in enc.training_stages()] == ["main"]
    assert [s.name for s in lam0.training_stages()] == ["main"]
    batch = random_batch(batch=2, dtype=torch.float64)
    losses = []
    for m in (enc, lam0):
        torch.manual_seed(1)
        losses.append(m.train().training_stages()[0].loss(batch))
    assert losses[0].keys() == losses[1].keys() == {"ce"}
    assert torch.equal(losses[0]["ce"], losses[1]["ce"])
