"""Every grid names registered methods with valid hyper-parameters."""

from __future__ import annotations

import pytest

import fsarbench as fb
from fsarbench.experiments.grids import all_grids, expand_grid, grid_names


@pytest.mark.parametrize("grid", grid_names())
def test_grid_methods_build(grid):
    cells = expand_grid(grid, available=[])
    assert cells
    for cell in {(c.method, c.hparams) for c in cells}:
        method, hparams = cell
        small = getattr(fb.method_info(method).cls, "CONTRACT_HPARAMS", {})  # no weights offline
        fb.create_method(
            method, feature_dim=512, seq_len=8, num_train_classes=5, **{**small, **dict(hparams)}
        )


def test_all_runs_every_grid_on_the_default_features():
    """``--all`` runs every grid except those that ask for other frame features (``clip``):
    one run has one set of features."""
    from fsarbench.experiments.grids import _builtin, grid_features

    builtin = set(_builtin().grids)  # other tests add user grids to grid_names()
    own_features = {g for g in builtin if grid_features([g])}
    assert own_features == {"clip"}
    assert set(all_grids()) == builtin - own_features


def test_a_grid_of_its_own_features_does_not_share_a_run_with_default_grids():
    """'run --table clip main' ran the main grid on the clip grid's CLIP features (Table 1
    on CLIP features, with a footnote), though the docs said it stops."""
    from fsarbench.experiments.grids import GridError, grid_features

    assert grid_features(["clip"])["backbone"].startswith("clip")
    with pytest.raises(GridError, match=r"\['main'\] for each dataset's default features"):
        grid_features(["clip", "main"])
    assert grid_features(["main", "table1"]) == {}


def test_registered_grid_leaves_out_what_it_excludes() -> None:
    from fsarbench.config import ConfigError
    from fsarbench.experiments.grids import load_grid_file

    methods = {c.method for c in expand_grid("main", [])}
    assert "clip-fsar" not in methods and {"otam", "trx"} <= methods
    bad = "grids:\n  g:\n    datasets: available\n    methods: registered\n    exclude: [otma]\n"
    with pytest.raises(ConfigError, match="otam"):
        load_grid_file(bad, "bad.yaml")
