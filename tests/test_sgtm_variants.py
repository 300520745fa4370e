"""SGTM variants and ablation grids: every row builds and runs by name; parameter report."""

from __future__ import annotations

import pytest
import torch

import fsarbench as fb
from fsarbench.experiments.grids import expand_grid
from fsarbench.testing.contract import random_batch
from fsarbench_sgtm.params import FEATURE_DIM, build, head_parts
from fsarbench_sgtm.variants import VARIANTS

SMALL = dict(feature_dim=64, seq_len=8, num_train_classes=7)
SMALL_HP = dict(token_dim=16, num_heads=2, saliency_hidden=16)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny tensors: one intra-op thread avoids oversubscription on a shared, busy CPU."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _rows(grid: str) -> list[tuple[str, dict, str]]:
    """(method, overrides, label) of a grid of ``fsarbench/experiments/grids.yaml``."""
    seen: list[tuple[str, dict, str]] = []
    for c in expand_grid(grid, available=[]):
        row = (c.method, dict(c.hparams), c.label)
        if row not in seen:
            seen.append(row)
    return seen


def test_every_variant_is_registered() -> None:
    names = fb.list_methods("sgtm*")
    assert sorted(VARIANTS) == names
    assert {"sgtm-otam", "sgtm-bimhm"} <= set(names)
    assert fb.list_methods("sgtm*", variants=False) == ["sgtm-bimhm", "sgtm-otam"]
    for table in ("table3", "table4"):
        assert all(m in names and hp == {} for m, hp, _ in _rows(table))


def test_grids_match_the_paper() -> None:
    lam = [hp.get("lambda_recon", 0.5) for _, hp, _ in _rows("table5")]
    assert lam == [0.0, 0.1, 0.3, 0.5, 0.7, 0.9]
    ratios = [hp.get("mask_ratio", 0.5) for _, hp, _ in _rows("figure4")]
    assert ratios == [0.25, 0.375, 0.5, 0.75]
    assert [len(_rows(t)) for t in ("table3", "table4")] == [4, 4]
    # the default values are the plain variant: same config, one cached training
    assert _rows("table5")[3][1] == {} and _rows("figure4")[2][1] == {}


ROWS = [(t, r) for t in ("table3", "table4", "table5", "figure4") for r in _rows(t)]


@pytest.mark.parametrize("table, row", ROWS, ids=[f"{t}:{r[2]}" for t, r in ROWS])
def test_every_ablation_row_runs_by_name(table: str, row) -> None:
    torch.manual_seed(0)
    name, overrides, _ = row
    m = fb.create_method(name, **SMALL, **SMALL_HP, **overrides).double().train()
    batch = random_batch(batch=1)
    for stage in m.training_stages():
        losses = stage.loss(batch)
        assert all(torch.isfinite(v) for v in losses.values())
    m.eval()
    assert m(batch).logits.shape == (1, 10, 5)
    if "mask_ratio" in overrides:
        assert m.num_masked == int(overrides["mask_ratio"] * 8 + 0.5)
    if overrides.get("lambda_recon", 0.5) == 0:
        assert not m.reconstructs


def test_table3_ladder_adds_one_component_at_a_time() -> None:
    names = [m for m, _, _ in _rows("table3")]
    parts = {m: head_parts(fb.create_method(m, **SMALL, **SMALL_HP)) for m in names}
    base, enc, tml, ours = (parts[m] for m in names)
    assert base["encoder"] == 0 and enc["encoder"] > 0
    assert enc["decoder"] == 0 and tml["decoder"] > 0 and tml["saliency"] == 0
    assert ours["saliency"] > 0 and ours["decoder"] == tml["decoder"]


def test_parameter_count_at_the_paper_sizes() -> None:
    parts = head_parts(build({}))
    p, hidden = 512, 2048  # P and the MLP width (ratio 4)
    block = 2 * 2 * p + (3 * p * p + 3 * p) + (p * p + p) + (p * hidden + hidden) + (hidden * p + p)
    assert parts["encoder"] == 2 * block + 2 * p  # 2 layers + final LayerNorm
    assert parts["matching"] == 2 * block
    assert parts["decoder"] == 2 * block + 2 * p + p + (p * p + p)  # + mask token, prediction
    assert parts["pos_embed"] == 8 * FEATURE_DIM // p * p
    c = 64
    assert parts["saliency"] == (FEATURE_DIM * 512 * 3 + 512) + (512 * c * 3 + c)
    assert parts["matcher"] == 0


@pytest.mark.parametrize("frames", [8, 16])
def test_table4_rows_mask_as_many_frames_as_sgtm_at_any_clip_length(frames: int) -> None:
    """Table 4 compares where the mask goes: its rows fixed k = 2 (4 frames), so at 16 frames
    they masked 25 % against SGTM's 50 % and differed in the ratio too."""
    sizes = {**SMALL, "seq_len": frames}
    ours = fb.create_method("sgtm-otam", **sizes, **SMALL_HP).num_masked
    assert ours == frames // 2
    for name in ("sgtm-otam-top4", "sgtm-otam-bottom4", "sgtm-otam-middle4", "sgtm-otam-tml"):
        assert fb.create_method(name, **sizes, **SMALL_HP).num_masked == ours, name


@pytest.mark.parametrize("hparams", [{"mask_ratio": 0.05}, {"mask_ratio": 0.0}, {"k": 0}])
def test_a_mask_of_no_frames_is_refused(hparams: dict) -> None:
    """mask_ratio=0.05 at 8 frames rounds to 0: the decoder reconstructed visible frames and
    the saliency mask did nothing, silently."""
    with pytest.raises(ValueError, match="masks 0 of 8 frames"):
        fb.create_method("sgtm-otam", **SMALL, **SMALL_HP, **hparams)
    m = fb.create_method("sgtm-otam-enc", **SMALL, **SMALL_HP)  # no mask: nothing to refuse
    assert not m.reconstructs


def test_saliency_masks_under_bf16_autocast_are_the_float32_masks() -> None:
    """The masks were ranked on bf16 scores under the training's autocast: a trained Φ_cls's
    frame scores differ by less than bf16's step, tied, and the stable sort masked the
    earlier frames instead (73 % of a 5-shot model's masks changed)."""
    torch.manual_seed(0)
    m = fb.create_method("sgtm-otam", **SMALL, **SMALL_HP).train()
    # Φ_cls giving scores 3e-3 apart around -4, as a trained softplus/off one does: bf16's
    # step there is 1.6e-2, so every frame of a video ties where its product runs in bf16
    spread = torch.rand(64, 8, generator=torch.Generator().manual_seed(1)) * 3e-3
    videos = torch.stack([torch.ones(64, 8), spread], -1)
    weight = torch.tensor([[-4.0, 1.0]])
    m.saliency.actionness_logits = lambda v: torch.nn.functional.linear(v, weight)[..., 0]
    want = m.frame_mask(videos)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = m.frame_mask(videos)
    assert torch.equal(got, want)
