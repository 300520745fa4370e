"""A method written by hand from the public API (no scaffold): the harness calls it only with
what it declares, the contract passes, it reaches records; signatures that cannot work fail
at registration saying what to write."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch

import fsarbench as fb
from fsarbench.registry import _REGISTRY, register_method
from fsarbench.testing.contract import CONTRACT_CHECKS


class CosineProto(fb.FewShotMethod):
    """Cosine similarity to class-mean frame-averaged features, with a learned scale."""

    @dataclass
    class Config:
        scale: float = 10.0

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.proj = torch.nn.Linear(self.feature_dim, self.feature_dim)
        self.log_scale = torch.nn.Parameter(torch.tensor(float(self.config.scale)).log())

    def encode(self, features):
        return torch.nn.functional.normalize(self.proj(features.mean(1)), dim=-1)

    def match(self, support, support_labels, query, way):  # no class-id keywords
        onehot = torch.nn.functional.one_hot(support_labels, way).to(support.dtype)
        protos = onehot.transpose(1, 2) @ support / onehot.sum(1).unsqueeze(-1)
        protos = torch.nn.functional.normalize(protos, dim=-1)
        return fb.MethodOutput(self.log_scale.exp() * query @ protos.transpose(1, 2))


@pytest.fixture
def registered():
    register_method("cosine-proto")(CosineProto)
    yield "cosine-proto"
    _REGISTRY.pop("cosine-proto", None)


def test_handwritten_method_passes_the_contract(registered, capsys):
    from fsarbench.cli.main import main

    assert main(["check-method", registered]) == 0
    assert f"{len(CONTRACT_CHECKS)}/{len(CONTRACT_CHECKS)} checks passed" in capsys.readouterr().out


def test_handwritten_method_trains_and_reaches_records(registered, tmp_path):
    from test_runner import OPTS, provider

    from fsarbench.experiments.cells import Cell
    from fsarbench.experiments.runner import RunOptions, run_cells

    cells = [Cell(registered, "toy", 5, 1, label=registered)]
    (record,) = run_cells(cells, provider, RunOptions(tmp_path, **OPTS))
    assert record.method == registered and record.accuracy > 20 + 2 * record.ci95


def test_constructor_without_the_harness_keywords_fails_at_registration():
    class Bad(fb.FewShotMethod):
        def __init__(self, feature_dim, seq_len):
            super().__init__(feature_dim=feature_dim, seq_len=seq_len)

        def match(self, support, support_labels, query, way):
            raise NotImplementedError

    with pytest.raises(TypeError, match=r"def __init__\(self, \*\*kwargs\)"):
        register_method("bad-init")(Bad)
    assert "bad-init" not in _REGISTRY


def test_match_without_the_episode_arguments_fails_at_registration():
    class Bad(fb.FewShotMethod):
        def match(self, support, query):
            raise NotImplementedError

    with pytest.raises(
        TypeError, match="must take \\(self, support, support_labels, query, way\\)"
    ):
        register_method("bad-match")(Bad)


def test_a_config_that_is_no_dataclass_fails_at_registration():
    """A plain class as Config failed later, at creation, with the stdlib's 'must be called
    with a dataclass type or instance'."""

    class Bad(fb.FewShotMethod):
        class Config:
            temperature = 1.0

        def match(self, support, support_labels, query, way):
            raise NotImplementedError

    with pytest.raises(TypeError, match=r"Config must be a dataclass .*@dataclasses.dataclass"):
        register_method("bad-config")(Bad)
    assert "bad-config" not in _REGISTRY
