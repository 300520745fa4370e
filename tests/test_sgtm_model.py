"""SGTM head: matching branch feeds the baselines unchanged, losses, stages, construction errors."""

from __future__ import annotations

import pytest
import torch

import fsarbench as fb
from fsarbench.testing.contract import random_batch, run_contract
from fsarbench_sgtm.saliency import SaliencyClassifier
from fsarbench_sgtm.tokens import frame_token_mask, to_tokens


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny tensors: one intra-op thread avoids oversubscription on a shared, busy CPU."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


SMALL = dict(feature_dim=64, seq_len=8, num_train_classes=7)
SMALL_HP = dict(token_dim=16, num_heads=2, saliency_hidden=16)


def make(name: str = "sgtm-otam", **hp) -> fb.FewShotMethod:
    torch.manual_seed(0)
    return fb.create_method(name, **SMALL, **{**SMALL_HP, **hp}).double()


@pytest.mark.parametrize("name", ["sgtm-otam", "sgtm-bimhm"])
def test_contract(name: str) -> None:
    run_contract(name)


@pytest.mark.parametrize("matcher, hp", [("otam", {"lam": 0.5}), ("bimhm", {})])
def test_matching_branch_feeds_the_baseline_unchanged(matcher: str, hp: dict) -> None:
    m = make(f"sgtm-{matcher}", matcher_hparams=hp).eval()
    batch = random_batch(dtype=torch.float64)
    with torch.no_grad():
        b, ns = batch.support.shape[:2]
        xs = m.matching_features(batch.support.flatten(0, 1)).reshape(batch.support.shape)
        xq = m.matching_features(batch.query.flatten(0, 1)).reshape(batch.query.shape)
        base = fb.create_method(matcher, feature_dim=64, seq_len=8, **hp).double().eval()
        want = base(fb.EpisodeBatch(xs, batch.support_labels, xq, None, way=batch.way)).logits
        got = m(batch).logits
    assert type(m.matcher) is type(base)
    assert m.matcher.config == base.config
    assert torch.equal(got, want)
    assert not torch.allclose(xs, batch.support)  # the branch did transform the frames


def test_baseline_variant_is_transformer_then_matcher() -> None:
    m = make("sgtm-otam-baseline").eval()
    assert m.encoder is None and m.decoder is None and m.saliency is None
    x = torch.randn(4, 8, 64, dtype=torch.float64)
    tokens = m.pos_embed(to_tokens(x, 16))
    want = m.matching(tokens).reshape(4, 8, 64)
    assert torch.equal(m.matching_features(x), want)
    assert [s.name for s in m.training_stages()] == ["main"]
    assert m.train()(random_batch()).losses == {}


def test_variant_structure() -> None:
    enc = make("sgtm-otam-enc")
    assert enc.encoder is not None and enc.decoder is None and enc.saliency is None
    tml = make("sgtm-otam-tml")
    assert tml.decoder is not None and tml.saliency is None and tml.strategy.name == "random"
    assert [s.name for s in tml.training_stages()] == ["main"]
    for region in ("top", "bottom", "middle"):
        v = make(f"sgtm-otam-{region}4")
        assert v.strategy.name == region and v.num_masked == 4 and v.saliency is not None
    ours = make()
    assert ours.strategy.name == "saliency" and ours.num_masked == 4
    assert make(lambda_recon=0.0).decoder is None  # λ = 0: no reconstruction branch


def test_recon_loss_in_training_only_and_weighted() -> None:
    m = make(lambda_recon=0.3)
    batch = random_batch(dtype=torch.float64)
    assert "recon" not in m.eval()(batch).losses
    m.train()
    out = m(batch)
    videos = torch.cat([batch.support.flatten(0, 1), batch.query.flatten(0, 1)])
    assert torch.allclose(out.losses["recon"], 0.3 * m.reconstruction_loss(videos))
    assert out.losses["recon"].dim() == 0


@pytest.mark.parametrize("which", ["all", "masked"])
def test_recon_loss_matches_eq5_by_hand(which: str) -> None:
    m = make(recon_tokens=which).train()
    videos = torch.rand(5, 8, 64, dtype=torch.float64)
    frame_mask = m.frame_mask(videos)
    assert (frame_mask.sum(1) == 4).all()
    recon, token_mask = m.reconstruct(videos, frame_mask)
    assert torch.equal(token_mask, frame_token_mask(frame_mask, 4))
    target = to_tokens(videos, 16)
    per_token = [
        ((recon[n, i] - target[n, i]) ** 2).mean()
        for n in range(5)
        for i in range(32)
        if which == "all" or token_mask[n, i]
    ]
    assert torch.allclose(m.reconstruction_loss(videos), torch.stack(per_token).mean())


def test_saliency_mask_uses_frozen_phi_cls() -> None:
    m = make().train()
    videos = torch.rand(6, 8, 64, dtype=torch.float64)
    with torch.no_grad():
        m.saliency.eval()
        logits = m.saliency(videos).sum(-1)
        act = torch.sigmoid(logits)
        m.saliency.train()
    assert torch.equal(m.actionness_logits(videos), logits)
    assert torch.equal(m.actionness(videos), act)
    assert m.saliency.training  # mode restored
    order = act.argsort(dim=1, descending=True, stable=True)
    want = torch.zeros_like(act, dtype=torch.bool)
    want.scatter_(1, torch.cat([order[:, :2], order[:, -2:]], 1), True)
    assert torch.equal(m.frame_mask(videos), want)


def test_stages_split_parameters_and_freeze_phi_cls() -> None:
    m = make().train()
    first, main = m.training_stages()
    assert (first.name, main.name) == ("saliency", "main")
    assert first.needs_classes and first.fraction == pytest.approx(0.2)
    assert main.fraction == pytest.approx(0.8)
    ids = lambda ps: {id(p) for p in ps}  # noqa: E731
    assert ids(first.parameters()) == ids(m.saliency.parameters())
    assert ids(first.parameters()) | ids(main.parameters()) == ids(m.parameters())
    assert not ids(first.parameters()) & ids(main.parameters())
    m.zero_grad(set_to_none=True)
    batch = random_batch(dtype=torch.float64)
    sum(main.loss(batch).values()).backward()
    assert all(p.grad is None for p in m.saliency.parameters())  # no grad flows into Φ_cls
    assert set(main.loss(batch)) == {"ce", "recon"}
    m.zero_grad(set_to_none=True)
    sum(first.loss(batch).values()).backward()
    assert all(p.grad is None for n, p in m.named_parameters() if not n.startswith("saliency."))


def test_saliency_stage_needs_classes() -> None:
    m = make()
    b = random_batch(dtype=torch.float64)
    bare = fb.EpisodeBatch(b.support, b.support_labels, b.query, b.query_labels, way=b.way)
    with pytest.raises(ValueError, match="needs support_classes"):
        m.training_stages()[0].loss(bare)


def test_construction_errors() -> None:
    with pytest.raises(ValueError, match="pass num_train_classes"):
        fb.create_method("sgtm-otam", feature_dim=64, seq_len=8, **SMALL_HP)
    fb.create_method("sgtm-otam-tml", feature_dim=64, seq_len=8, **SMALL_HP)  # no Φ_cls needed
    with pytest.raises(ValueError, match="use_encoder=True"):
        make(use_encoder=False)
    with pytest.raises(ValueError, match="num_heads=3 must divide"):
        make(num_heads=3)
    with pytest.raises(ValueError, match="either k"):
        make(k=1, mask_ratio=0.25)
    with pytest.raises(fb.ConfigError, match="lambda_recon"):
        make(lambda_recn=0.1)


def test_phi_cls_is_temporal_with_limited_receptive_field() -> None:
    torch.manual_seed(0)
    # unrectified, mean-pooled: every class score of frames 3..7 moves (ReLU could hide some)
    phi = SaliencyClassifier(16, 5, layers=2, hidden=8, kernel=3, dropout=0.0, pool="mean",
                             rectify="none").double()  # fmt: skip
    x = torch.randn(1, 10, 16, dtype=torch.float64)
    y = x.clone()
    y[0, 5] += 1.0
    changed = (phi(x) - phi(y)).abs().sum(-1)[0] > 0
    assert changed.tolist() == [False] * 3 + [True] * 5 + [False] * 2  # frames 3..7
    act = phi.actionness(x)
    assert act.shape == (1, 10) and ((act > 0) & (act < 1)).all()
    assert torch.allclose(phi.video_logits(x), phi(x).mean(1))


@pytest.mark.parametrize("matcher", ["otam", "bimhm"])
def test_nearest_support_scores_each_class_by_its_closest_video(matcher: str) -> None:
    """support_score="nearest" (Sec. 3.2: "find the video in S that is most similar to q"):
    a class's logit is minus the distance to its nearest support video, against a loop over
    classes; the default averages them (the matcher's rule); both are the same at 1-shot."""
    mean = make(f"sgtm-{matcher}").eval()
    nearest = make(f"sgtm-{matcher}", support_score="nearest").eval()
    assert nearest.state_dict().keys() == mean.state_dict().keys()
    nearest.load_state_dict(mean.state_dict())
    batch = random_batch(shot=3, dtype=torch.float64)
    with torch.no_grad():
        support, query = mean.encode_episodes(batch.support), mean.encode_episodes(batch.query)
        pairs = mean.pair_logits(query, support)  # [B, Nq, Ns]
        got = nearest(batch).logits
        averaged = mean(batch).logits
    labels = batch.support_labels
    for b in range(labels.shape[0]):
        for c in range(batch.way):
            members = pairs[b][:, labels[b] == c]
            assert torch.allclose(got[b, :, c], members.amax(-1))
            assert torch.allclose(averaged[b, :, c], members.mean(-1))
    assert not torch.allclose(got, averaged)
    one = random_batch(shot=1, dtype=torch.float64)
    with torch.no_grad():
        assert torch.allclose(nearest(one).logits, mean(one).logits)
    assert nearest.pairwise(1) and not nearest.pairwise(3)  # pair tables average: 1-shot only
    assert mean.pairwise(3)


def test_nearest_support_trains_and_refuses_prototype_matchers() -> None:
    m = make("sgtm-otam", support_score="nearest").train()
    out = m(random_batch(shot=2, dtype=torch.float64))
    loss = torch.nn.functional.cross_entropy(out.logits.flatten(0, 1), torch.arange(5).repeat(6))
    loss.backward()
    assert torch.isfinite(loss)
    assert all(p.grad is not None for p in m.matching.parameters())
    with pytest.raises(ValueError, match="matches class prototypes"):
        make("sgtm-bimhm", support_score="nearest", matcher_hparams={"prototype": True})
    with pytest.raises(fb.ConfigError, match="support_score"):
        make("sgtm-otam", support_score="closest")


@pytest.mark.parametrize(
    "name, hp, unused",
    [
        ("sgtm-otam-baseline", {"lambda_recon": 0.9}, "lambda_recon=0.9"),
        ("sgtm-otam-baseline", {"encoder_layers": 3}, "encoder_layers=3"),
        ("sgtm-otam-enc", {"mask_ratio": 0.25}, "mask_ratio=0.25"),
        ("sgtm-otam-enc", {"k": 1, "recon_loss": "l2"}, "k=1, recon_loss='l2'"),
        ("sgtm-otam", {"lambda_recon": 0.0, "mask_ratio": 0.25}, "mask_ratio=0.25"),
        # no Φ_cls: no mask that needs saliency, or λ = 0 (the saliency settings were
        # accepted and named the record, although nothing used them)
        ("sgtm-otam-tml", {"saliency_hidden": 64}, "saliency_hidden=64"),
        ("sgtm-otam-baseline", {"saliency_pool": "mean"}, "saliency_pool='mean'"),
        ("sgtm-otam", {"lambda_recon": 0.0, "saliency_kernel": 1}, "saliency_kernel=1"),
    ],
)
def test_settings_a_variant_does_not_use_are_refused(name, hp, unused) -> None:
    """They changed no number but named the record after a setting that did nothing."""
    with pytest.raises(ValueError, match=f"{unused} has no effect here"):
        make(name, **hp)


@pytest.mark.parametrize(
    "name, hp",
    [
        ("sgtm-otam-baseline", {}),
        ("sgtm-otam-enc", {"lambda_recon": 0.5}),  # the default, passed explicitly
        ("sgtm-otam", {"lambda_recon": 0.0}),  # Table 5's λ = 0 row: λ removes the branch
        ("sgtm-otam-tml", {"mask_ratio": 0.25}),
    ],
)
def test_settings_a_variant_uses_are_accepted(name, hp) -> None:
    make(name, **hp)
