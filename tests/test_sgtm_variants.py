"""SGTM variants and ablation grids: every row builds and runs by name; parameter report."""

from __future__ import annotations

from importlib import resources

import pytest
import torch
import yaml

import fsarbench as fb
from fsarbench.testing.contract import random_batch
from fsarbench_sgtm.ablations import (
    ABLATIONS,
    LAMBDAS,
    MASK_RATIOS,
    MASK_RATIOS_FULL,
    PAPER_RESULTS,
)
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


def test_every_variant_is_registered() -> None:
    names = fb.list_methods("sgtm*")
    assert sorted(VARIANTS) == names
    assert {"sgtm-otam", "sgtm-bimhm"} <= set(names)
    for table in ("table3", "table4"):
        assert all(row.variant in names and row.overrides == {} for row in ABLATIONS[table])


def test_grids_match_the_paper() -> None:
    assert LAMBDAS == (0.0, 0.1, 0.3, 0.5, 0.7, 0.9)
    lam = [r.overrides.get("lambda_recon", 0.5) for r in ABLATIONS["table5"]]
    assert lam == list(LAMBDAS)
    for grid, ratios in (("figure4", MASK_RATIOS), ("figure4_full", MASK_RATIOS_FULL)):
        got = [r.overrides.get("mask_ratio", 0.5) for r in ABLATIONS[grid]]
        assert got == list(ratios)
    assert [r.label for r in ABLATIONS["figure4"]] == ["25%", "37.5%", "50%", "75%"]
    assert [len(ABLATIONS[t]) for t in ("table3", "table4")] == [4, 4]
    # the default values are the plain variant: same config, one cached training
    assert ABLATIONS["table5"][3].overrides == {} and ABLATIONS["figure4"][2].overrides == {}
    for (table, label), values in PAPER_RESULTS.items():
        assert label in [r.label for r in ABLATIONS[table]], (table, label)
        assert all(20 < v < 100 for v in values.values())


def test_labels_agree_with_the_experiment_grids() -> None:
    grids_file = resources.files("fsarbench.experiments").joinpath("grids.yaml")
    if not grids_file.is_file():
        pytest.skip("no experiment grids yet")
    table = yaml.safe_load(grids_file.read_text())["grids"]
    for name in ("table3", "table4", "table5", "figure4"):
        want = [(m["method"], m.get("hparams", {}), m["label"]) for m in table[name]["methods"]]
        assert [tuple(r) for r in ABLATIONS[name]] == want, name


ROWS = [(t, r) for t in sorted(ABLATIONS) for r in ABLATIONS[t]]


@pytest.mark.parametrize("table, row", ROWS, ids=[f"{t}:{r.label}" for t, r in ROWS])
def test_every_ablation_row_runs_by_name(table: str, row) -> None:
    torch.manual_seed(0)
    m = fb.create_method(row.variant, **SMALL, **SMALL_HP, **row.overrides).double().train()
    batch = random_batch(batch=1)
    for stage in m.training_stages():
        losses = stage.loss(batch)
        assert all(torch.isfinite(v) for v in losses.values())
    m.eval()
    assert m(batch).logits.shape == (1, 10, 5)
    if "mask_ratio" in row.overrides:
        assert m.num_masked == round(row.overrides["mask_ratio"] * 8)
    if row.overrides.get("lambda_recon", 0.5) == 0:
        assert not m.reconstructs


def test_table3_ladder_adds_one_component_at_a_time() -> None:
    parts = {
        row.variant: head_parts(fb.create_method(row.variant, **SMALL, **SMALL_HP))
        for row in ABLATIONS["table3"]
    }
    base, enc, tml, ours = (parts[r.variant] for r in ABLATIONS["table3"])
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
