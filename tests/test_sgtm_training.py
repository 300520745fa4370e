"""SGTM learns: stage 1 (Φ_cls) beats chance, L_recon falls, the trainer runs both stages."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import fsarbench as fb
from fsarbench.training import Recipe, SplitFeatures, train

# saliency_hidden=16 is the contract check's size, which every variant accepts (SGTM refuses
# saliency settings on variants without Φ_cls at other values)
SMALL_HP = dict(token_dim=16, num_heads=2, saliency_hidden=16)
T, D, C = 8, 64, 5


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny tensors: one intra-op thread avoids oversubscription on a shared, busy CPU."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def class_patterns(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Per class a direction ``u_c [D]`` and a temporal profile ``a_c [T]`` (ramps, bumps)."""
    g = torch.Generator().manual_seed(seed)
    dirs = torch.nn.functional.normalize(torch.randn(C, D, generator=g), dim=-1) * 3
    t = torch.linspace(0, 1, T)
    profiles = torch.stack([t, 1 - t, torch.exp(-((t - 0.5) ** 2) / 0.02), (t > 0.5).float(),
                            torch.sin(3.14 * 2 * t).abs()])  # fmt: skip
    return dirs, profiles


def synth_videos(labels: torch.Tensor, seed: int) -> torch.Tensor:
    """``[N]`` class ids -> ``[N, T, D]``: ``a_c(t)·u_c`` plus unit noise."""
    dirs, profiles = class_patterns()
    g = torch.Generator().manual_seed(seed)
    signal = profiles[labels][:, :, None] * dirs[labels][:, None, :]
    return signal + torch.randn(len(labels), T, D, generator=g)


def class_batch(seed: int, way: int = 5) -> fb.EpisodeBatch:
    """One episode per call over all C classes, global classes attached."""
    g = torch.Generator().manual_seed(seed)
    classes = torch.randperm(C, generator=g)[:way]
    labels = torch.arange(way).repeat(2)
    videos = synth_videos(classes[labels], seed)
    cls = classes[labels].reshape(1, -1)
    return fb.EpisodeBatch(videos[None, :way], labels[None, :way], videos[None, way:],
                           labels[None, way:], cls[:, :way], cls[:, way:], way)  # fmt: skip


def test_stage1_phi_cls_learns_above_chance() -> None:
    torch.manual_seed(0)
    m = fb.create_method("sgtm-otam", feature_dim=D, seq_len=T, num_train_classes=C, **SMALL_HP)
    stage = m.training_stages()[0]
    assert stage.name == "saliency"
    opt = torch.optim.Adam(stage.parameters(), lr=3e-3)
    test_labels = torch.arange(C).repeat(40)
    test_videos = synth_videos(test_labels, seed=999)

    def accuracy() -> float:
        m.eval()
        with torch.no_grad():
            pred = m.saliency.video_logits(test_videos).argmax(-1)
        return float((pred == test_labels).float().mean())

    before = accuracy()
    m.train()
    for step in range(60):
        loss = sum(stage.loss(class_batch(step)).values())
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = accuracy()
    assert after > 0.8 > 1.5 / C, (before, after)  # chance is 1/C = 0.2


def smooth_videos(n: int, seed: int) -> torch.Tensor:
    """Low-rank, temporally smooth features ``[n, T, D]``: predictable from visible frames."""
    g = torch.Generator().manual_seed(seed)
    basis = torch.randn(3, D, generator=torch.Generator().manual_seed(7))
    t = torch.linspace(0, 1, T)
    coef = torch.randn(n, 3, 1, generator=g)
    phase = torch.rand(n, 3, 1, generator=g) * 6.28
    waves = torch.cos(2 * t[None, None] + phase) * coef  # [n, 3, T]
    return torch.einsum("nkt,kd->ntd", waves, basis)


@pytest.mark.parametrize("name", ["sgtm-otam", "sgtm-otam-tml"])
def test_reconstruction_loss_falls(name: str) -> None:
    torch.manual_seed(0)
    m = fb.create_method(name, feature_dim=D, seq_len=T, num_train_classes=C, **SMALL_HP).train()
    main = m.training_stages()[-1]
    opt = torch.optim.Adam(main.parameters(), lr=5e-3)
    held_out = smooth_videos(32, seed=123)

    def held_out_loss() -> float:
        torch.manual_seed(1)  # the same random mask for "tml" at every evaluation
        with torch.no_grad():
            return float(m.reconstruction_loss(held_out))

    before = held_out_loss()
    for step in range(80):
        loss = m.reconstruction_loss(smooth_videos(16, seed=step))
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = held_out_loss()
    zeros = float(held_out.pow(2).mean())  # the loss of predicting all-zero tokens
    assert after < 0.5 * before, (before, after)
    assert after < 0.8 * zeros, (after, zeros)


def test_trainer_runs_both_stages_and_freezes_phi_cls() -> None:
    torch.manual_seed(0)
    m = fb.create_method("sgtm-otam", feature_dim=D, seq_len=T, num_train_classes=C, **SMALL_HP)
    stages = m.training_stages()
    seen: dict[str, list[torch.Tensor]] = {}
    main_loss = stages[1].loss

    def spying_loss(batch: fb.EpisodeBatch) -> dict[str, torch.Tensor]:
        seen.setdefault("phi_at_stage2", [p.detach().clone() for p in m.saliency.parameters()])
        return main_loss(batch)

    stages[1].loss = spying_loss
    m.training_stages = lambda: stages
    phi_init = [p.detach().clone() for p in m.saliency.parameters()]
    labels = torch.arange(C).repeat_interleave(6)
    data = SplitFeatures(fb.InMemoryFeatureStore(synth_videos(labels, 5)), labels.numpy())
    recipe = Recipe(steps=10, episodes_per_step=2, way=3, shot=1, queries=2, val_episodes=0,
                    adapter="none")  # fmt: skip
    result = train(m, data, None, recipe, progress=False)
    names = [row["stage"] for row in result.history]
    assert names == ["saliency"] * 2 + ["main"] * 10  # stage 1 on top: round(10 · 0.2 / 0.8)
    assert all("recon" in row and "ce" in row for row in result.history if row["stage"] == "main")
    assert all(np.isfinite(row["saliency_ce"]) for row in result.history[:2])
    phi_end = list(m.saliency.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(phi_init, seen["phi_at_stage2"]))
    assert all(torch.equal(a, b) for a, b in zip(seen["phi_at_stage2"], phi_end))


def test_stage_one_takes_the_recipes_early_stage_lr(monkeypatch) -> None:
    """The finetune recipes' plain SGD at 1e-4 left Φ_cls at its random init (0.4% of its
    weights moved in 312 updates); stage 1 can have a rate of its own, the main stage keeps
    the recipe's."""
    import fsarbench.training.loop as loop

    rates: list[float] = []
    real = loop.make_optimizer
    monkeypatch.setattr(
        loop,
        "make_optimizer",
        lambda r, params, *rest: rates.append(r.lr) or real(r, params, *rest),
    )
    torch.manual_seed(0)
    m = fb.create_method("sgtm-otam", feature_dim=D, seq_len=T, num_train_classes=C, **SMALL_HP)
    labels = torch.arange(C).repeat_interleave(6)
    data = SplitFeatures(fb.InMemoryFeatureStore(synth_videos(labels, 5)), labels.numpy())
    recipe = Recipe(optimizer="sgd", lr=1e-4, early_stage_lr=1e-3, steps=4, episodes_per_step=2,
                    way=3, shot=1, queries=2, val_episodes=0, adapter="none")  # fmt: skip
    train(m, data, None, recipe, progress=False)
    assert rates == [1e-3, 1e-4]
    assert "early_stage_lr" in recipe.to_dict()
    assert "early_stage_lr" not in Recipe().to_dict()  # unset: config hashes as before


@pytest.mark.parametrize("dataset", ["kinetics100", "kinetics100-hyrsm", "ucf101", "hmdb51"])
def test_only_variants_with_a_stage_one_name_an_early_rate(dataset) -> None:
    """The family's early_stage_lr reached the one-stage variants too: their training was
    unchanged but their recipe identity was not (retrained, resume refused)."""
    from fsarbench.training.finetune_recipe import finetune_recipe

    for name in fb.list_methods("sgtm*"):
        m = fb.create_method(name, feature_dim=D, seq_len=T, num_train_classes=C, **SMALL_HP)
        early = len(m.training_stages()) > 1
        assert ("early_stage_lr" in finetune_recipe(name, dataset).recipe.identity()) == early


def test_an_early_rate_for_a_one_stage_method_is_named(caplog) -> None:
    """--recipe early_stage_lr on a method with one stage applied to nothing, silently."""
    import logging

    torch.manual_seed(0)
    hp = {k: v for k, v in SMALL_HP.items() if not k.startswith("saliency")}
    m = fb.create_method("sgtm-otam-baseline", feature_dim=D, seq_len=T, **hp)
    labels = torch.arange(C).repeat_interleave(6)
    data = SplitFeatures(fb.InMemoryFeatureStore(synth_videos(labels, 5)), labels.numpy())
    recipe = Recipe(early_stage_lr=1e-3, steps=1, episodes_per_step=1, way=3, shot=1,
                    queries=1, val_episodes=0, adapter="none")  # fmt: skip
    caplog.set_level(logging.WARNING)
    train(m, data, None, recipe, progress=False)
    assert "early_stage_lr = 0.001: this method trains one stage" in caplog.text
