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


def test_dataset_presets_sit_between_defaults_and_name_presets(clean_registry):
    @fb.register_method("test-per-dataset")
    @fb.register_method("test-per-dataset-hot", temperature=9.0)
    class PerDataset(fb.FewShotMethod):
        """A test method."""

        dataset_presets = {"kinetics100": {"temperature": 3.0}}

        @dataclass
        class Config:
            temperature: float = 1.0
            margin: float = 0.0

        def encode(self, features):  # a working head: create_method checks outside methods
            return features.mean(1)

        def match(self, support, support_labels, query, way, **_):
            ones = torch.nn.functional.one_hot(support_labels, way).to(support.dtype)
            protos = ones.transpose(1, 2) @ support / ones.sum(1)[..., None]
            return fb.MethodOutput(-torch.cdist(query, protos))

    def temp(name, **kw):
        return fb.create_method(name, feature_dim=4, seq_len=2, **kw).config.temperature

    assert temp("test-per-dataset") == 1.0
    assert temp("test-per-dataset", dataset="ucf101") == 1.0
    assert temp("test-per-dataset", dataset="kinetics100") == 3.0
    assert temp("test-per-dataset", dataset="kinetics100", temperature=5.0) == 5.0
    assert temp("test-per-dataset-hot", dataset="kinetics100") == 9.0


def test_dataset_presets_with_typos_fail_at_registration(clean_registry):
    class M(fb.FewShotMethod):
        dataset_presets = {"hmdb51": {"lamda": 1}}

        @dataclass
        class Config:
            lam: float = 0.1

    with pytest.raises(fb.ConfigError, match="unknown key 'lamda'"):
        fb.register_method("bad-dataset-preset")(M)


@pytest.mark.parametrize(
    "dataset, expect",
    [
        ("kinetics100", (2048.0, 0.01, 0.4)),
        ("ssv2-full", (10.0, 1.0, 0.6)),
        ("hmdb51", (10.0, 1.0, 0.15)),
        ("synth", (10.0, 1.0, 0.15)),
    ],
)
def test_hyrsm_takes_the_reference_config_of_each_dataset(dataset, expect):
    cfg = fb.create_method("hyrsm", feature_dim=16, seq_len=4, dataset=dataset).config
    assert (cfg.position_a, cfg.position_b, cfg.lambda_cls) == expect


def test_runner_builds_methods_with_their_dataset_presets():
    from types import SimpleNamespace

    from fsarbench.experiments.runner import build_method

    feats = SimpleNamespace(
        name="kinetics100",
        feature_shape=(4, 16),
        splits={"train": SimpleNamespace(num_classes=64)},
        info={"backbone": "resnet50", "weights": "imagenet"},
    )
    recipe = SimpleNamespace(adapter="none")
    method = build_method("hyrsm", {"lambda_cls": 0.5}, feats, recipe, seed=0)
    assert method.hparams["position_a"] == 2048.0 and method.hparams["lambda_cls"] == 0.5


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


def test_a_class_defined_again_replaces_its_registration(clean_registry):
    """Re-running a notebook cell that defines and registers a head raised 'already
    registered' until the kernel was restarted; another class under the name still does, and
    the new definition is checked afresh (not served by the old one's passed checks)."""

    def define(by_position: bool):
        class Head(fb.FewShotMethod):
            def encode(self, features):
                return features.mean(1)

            def match(self, support, support_labels, query, way, **_):
                if by_position:  # queries come in class order: a cheat the contract catches
                    b, nq = query.shape[:2]
                    slot = torch.arange(nq) * way // nq
                    logits = torch.nn.functional.one_hot(slot, way).to(query.dtype)
                    return fb.MethodOutput(logits.expand(b, -1, -1) + 0 * query[..., :1])
                ones = torch.nn.functional.one_hot(support_labels, way).to(support.dtype)
                protos = ones.transpose(1, 2) @ support / ones.sum(1)[..., None]
                return fb.MethodOutput(-torch.cdist(query, protos))

        return Head

    fair, cheat = define(False), define(True)
    fb.register_method("test-redefined")(fair)
    fb.create_method("test-redefined", feature_dim=4, seq_len=2)
    fb.register_method("test-redefined")(cheat)
    assert fb.method_info("test-redefined").cls is cheat
    with pytest.raises(registry.PluginContractError, match="query_order"):
        fb.create_method("test-redefined", feature_dim=4, seq_len=2)

    class Other(fair):
        pass

    with pytest.raises(ValueError, match="already registered"):
        fb.register_method("test-redefined")(Other)


def test_a_dataset_sharing_anothers_settings_takes_its_method_presets():
    """A Kinetics variant registered with settings_of="kinetics100" built HyRSM with its
    defaults (position 10/1, lambda_cls 0.15) instead of its Kinetics settings (2048/0.01,
    0.4); a dataset's own entry still wins (SGTM's synth-planted over synth)."""
    from fsarbench.data import datasets
    from fsarbench.registry import method_config

    datasets.register_dataset("kinetics-mine", lambda **k: None, settings_of="kinetics100")
    try:
        mine = method_config("hyrsm", "kinetics-mine")
        kinetics = method_config("hyrsm", "kinetics100")
        assert (mine.position_a, mine.position_b, mine.lambda_cls) == (2048.0, 0.01, 0.4)
        assert mine == kinetics != method_config("hyrsm", "ucf101")
    finally:
        datasets.DATASETS.pop("kinetics-mine", None)
        datasets.SETTINGS_OF.pop("kinetics-mine", None)
    planted = method_config("sgtm-otam", "synth-planted")
    assert (
        planted.saliency_rectify
        == "softplus"
        != method_config("sgtm-otam", "synth").saliency_rectify
    )


def test_legacy_hyper_parameters_are_checked_at_registration():
    import dataclasses

    import fsarbench as fb
    from fsarbench.config import ConfigError
    from fsarbench.registry import register_method

    class Typo(fb.FewShotMethod):
        @dataclasses.dataclass
        class Config:
            temperature: float = 1.0

        legacy_hparams = {"temprature": 2.0}

        def encode(self, features):
            return features

        def match(self, support, support_labels, query, way, **_):
            raise NotImplementedError

    with pytest.raises(ConfigError, match="Typo.legacy_hparams"):
        register_method("legacy-typo")(Typo)
