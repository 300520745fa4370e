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


def test_list_and_dict_hyper_parameters_make_hashable_cells_of_their_declared_types(
    tmp_path, monkeypatch
) -> None:
    """A grid entry with ``widths: [32, 32]`` (a ``list[int]`` field) or a dict-valued one
    crashed ``run`` in ``unique_cells``: unhashable type 'list'. The cell is hashable now and
    the method still gets a list, a dict (and TRX its tuple), under the names written."""
    import pickle
    from dataclasses import dataclass, field

    import torch

    from fsarbench import registry
    from fsarbench.experiments import grids
    from fsarbench.experiments.grids import add_grid_file
    from fsarbench.experiments.runner import unique_cells

    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    monkeypatch.setattr(grids, "_USER_GRIDS", {})

    @fb.register_method("test-grid-containers")
    class Containers(fb.FewShotMethod):
        """A method with list- and dict-valued hyper-parameters."""

        @dataclass
        class Config:
            widths: list[int] = field(default_factory=lambda: [64])
            extra: dict[str, list[int]] = field(default_factory=dict)

        def match(self, support, support_labels, query, way, **_):
            return fb.MethodOutput(torch.zeros(query.shape[0], query.shape[1], way))

    path = tmp_path / "grids.yaml"
    path.write_text(
        "grids:\n  mine:\n    datasets: [synth]\n    shots: [1]\n    methods:\n"
        "      - {method: test-grid-containers, hparams: {widths: [32, 32]}, label: W}\n"
        "      - {method: test-grid-containers, hparams: {extra: {b: [2], a: [1]}}, label: D}\n"
        "      - {method: test-grid-containers, hparams: {widths: [64]}, label: default}\n"
        "      - {method: trx, hparams: {cardinalities: [2]}, label: T}\n"
    )
    add_grid_file(path)
    cells = grids.expand_grid("mine", [])
    assert unique_cells(cells + cells) == cells
    assert [c.name for c in cells] == [
        "test-grid-containers[widths=[32, 32]]",
        "test-grid-containers[extra={'a': [1], 'b': [2]}]",
        "test-grid-containers",  # the default written out is the plain method
        "trx[cardinalities=(2,)]",
    ]
    assert [pickle.loads(pickle.dumps(c)) for c in cells] == cells
    built = [registry.method_config(c.method, c.dataset, **c.hparams_dict) for c in cells]
    assert type(built[0].widths) is list and built[0].widths == [32, 32]
    assert type(built[1].extra) is dict and built[1].extra == {"a": [1], "b": [2]}
    assert type(built[1].extra["a"]) is list
    assert type(built[3].cardinalities) is tuple and built[3].cardinalities == (2,)
    with pytest.raises(TypeError, match="cannot be changed in place"):
        cells[0].hparams_dict["widths"].append(1)
