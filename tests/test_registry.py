from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch

import fsarbench as fb
from fsarbench import registry


@pytest.fixture
def clean_registry(monkeypatch):
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    return registry


def test_unknown_method_lists_known_closest_first():
    with pytest.raises(fb.UnknownMethodError) as err:
        fb.create_method("protonnet", feature_dim=8, seq_len=4)
    msg = str(err.value)
    assert "unknown method 'protonnet'" in msg
    assert msg.index("protonet") < len(msg)
    known = msg.split("closest first): ")[1].split(", ")
    assert known[0] == "protonet"


def test_unknown_hparam_names_nearest():
    with pytest.raises(fb.ConfigError, match="Did you mean 'temperature'"):
        fb.create_method("protonet", feature_dim=8, seq_len=4, temperatur=3.0)


def test_hparam_type_checked():
    with pytest.raises(fb.ConfigError, match="expected"):
        fb.create_method("protonet", feature_dim=8, seq_len=4, temperature="hot")


def test_register_decorator_and_presets(clean_registry):
    @fb.register_method("test-scaled", temperature=2.0)
    class Scaled(fb.FewShotMethod):
        """A test method."""

        @dataclass
        class Config:
            temperature: float = 1.0

        def match(self, support, support_labels, query, way, **_):
            return fb.MethodOutput(torch.zeros(query.shape[0], query.shape[1], way))

    assert "test-scaled" in fb.list_methods()
    m = fb.create_method("test-scaled", feature_dim=4, seq_len=2)
    assert m.config.temperature == 2.0
    assert (
        fb.create_method("test-scaled", feature_dim=4, seq_len=2, temperature=5).config.temperature
        == 5.0
    )
    with pytest.raises(ValueError, match="already registered"):
        fb.register_method("test-scaled", temperature=3.0)(Scaled)


def test_register_rejects_non_methods(clean_registry):
    with pytest.raises(TypeError, match="FewShotMethod subclass"):
        fb.register_method("bad")(object)


def test_presets_with_typos_fail_at_registration(clean_registry):
    class M(fb.FewShotMethod):
        pass

    with pytest.raises(fb.ConfigError, match="unknown key 'lamda'"):
        fb.register_method("bad-preset", lamda=1)(M)


def test_entry_points_register_baselines():
    entry = fb.method_info("protonet")
    assert entry.source.startswith("entry point")
    assert entry.cls.__module__ == "fsarbench_baselines.protonet"


def test_episode_batch_validates_shapes():
    s = torch.zeros(1, 2, 4, 3)
    with pytest.raises(ValueError, match=r"\[B, Ns, T, D\]"):
        fb.EpisodeBatch(s[0], torch.zeros(1, 2, dtype=torch.long), s, way=2)
    with pytest.raises(ValueError, match="every class"):
        fb.EpisodeBatch(s, torch.zeros(1, 2, dtype=torch.long), s, way=2)
    with pytest.raises(ValueError, match="must lie in"):
        fb.EpisodeBatch(s, torch.tensor([[0, 2]]), s, way=2)
