"""What a user's own method or bundle can get wrong, refused before it becomes a number:
logits of the wrong shape, names that shadow built-ins, outside results posing as own runs."""

from __future__ import annotations

import dataclasses
import re

import numpy as np
import pytest
import torch

import fsarbench as fb
from fsarbench.guards import LogitsShapeError
from fsarbench.methods import FewShotMethod, MethodOutput
from fsarbench.registry import PluginContractError, mark_checked


class ReshapedLogits(FewShotMethod):
    """Prototype logits ``[B, Nq, way]`` passed through ``reshape`` (a plugin's mistake)."""

    method_name = "reshaped-logits"

    def __init__(self, *, reshape, **kwargs) -> None:
        super().__init__(**kwargs)
        self.reshape = reshape

    def encode(self, features):
        return features.mean(1)

    def match(self, support, support_labels, query, way, **_):
        logits = -torch.cdist(query, support)  # [B, Nq, Ns]: per support video
        if self.reshape != "per-support":
            ones = torch.nn.functional.one_hot(support_labels, way).to(query.dtype)
            logits = logits @ ones / ones.sum(1, keepdim=True)  # [B, Nq, way]
            logits = self.reshape(logits)
        return MethodOutput(logits)


def _episodes(shot: int, queries: int = 1):
    classes = np.repeat(np.arange(8), 8)
    manifest = fb.make_manifest(classes, way=5, shot=shot, queries=queries, episodes=40, seed=1)
    feats = torch.randn(len(classes), 4, 8, generator=torch.Generator().manual_seed(0))
    return feats, manifest


@pytest.mark.parametrize(
    ("reshape", "shot"),
    [
        (lambda x: x[:1], 1),  # episode 0 only: numpy would broadcast it to every episode
        (lambda x: x.transpose(1, 2), 1),  # [B, way, Nq] (2 queries per class below)
        (lambda x: x[..., :-1], 1),  # way - 1 columns
        (lambda x: x[..., 0], 1),  # [B, Nq]
        ("per-support", 5),  # [B, Nq, way * shot]: argmax beyond way
    ],
)
def test_logits_of_another_shape_are_refused(reshape, shot):
    feats, manifest = _episodes(shot, queries=2)
    head = ReshapedLogits(reshape=reshape, feature_dim=8, seq_len=4)
    # built directly: the contract's shape check on a copy of it, before any episode
    with pytest.raises(PluginContractError, match=r"shapes: .*logits must be"):
        fb.evaluate(head, feats, manifest, progress=False, batch_episodes=16)
    mark_checked(head)  # past the contract: the evaluator's own check of each batch
    with pytest.raises(LogitsShapeError, match=r"reshaped-logits returned logits of shape"):
        fb.evaluate(head, feats, manifest, progress=False, batch_episodes=16)


def test_logits_of_the_right_shape_pass():
    feats, manifest = _episodes(1)
    head = ReshapedLogits(reshape=lambda x: x, feature_dim=8, seq_len=4)
    proto = fb.create_method("protonet", feature_dim=8, seq_len=4, metric="sqeuclidean")
    ours = fb.evaluate(head, feats, manifest, progress=False, batch_episodes=16)
    assert ours.accuracy == pytest.approx(
        fb.evaluate(proto, feats, manifest, progress=False).accuracy
    )


class FakeOTAM(FewShotMethod):
    """A plugin's head that registers under a built-in's name."""


class OtherPlugin(FewShotMethod):
    """A second plugin's head under the same outside name."""


def _entry_points(monkeypatch, specs):
    """The registry as a fresh session would load it from ``specs``: (name, class) pairs."""
    from importlib.metadata import EntryPoint

    from fsarbench import registry

    registry.list_methods()
    eps = []
    for name, cls in specs:
        ep = EntryPoint(name, f"{cls.__module__}:{cls.__qualname__}", registry.ENTRY_POINT_GROUP)
        eps.append(ep)
    builtin = {n: e for n, e in registry._REGISTRY.items() if n not in dict(specs)}
    monkeypatch.setattr(registry, "_REGISTRY", builtin)
    monkeypatch.setattr(registry, "_ENTRY_POINT_ERRORS", {})
    monkeypatch.setattr(registry, "_REFUSED_NAMES", set())
    monkeypatch.setattr(registry, "_ENTRY_POINTS_LOADED", False)
    monkeypatch.setattr(registry, "entry_points", lambda group: eps)
    return registry


@pytest.mark.parametrize("plugin_first", [True, False])
def test_a_plugin_cannot_take_a_builtin_name(monkeypatch, caplog, plugin_first):
    from fsarbench_baselines.otam import OTAM

    specs = [("otam", FakeOTAM), ("otam", OTAM)]
    registry = _entry_points(monkeypatch, specs if plugin_first else specs[::-1])
    assert registry.method_info("otam").cls is OTAM
    assert "rename the plugin's entry point" in caplog.text
    assert "entry point test_trust_plugins:FakeOTAM is not used" in caplog.text


def test_two_plugins_with_one_name_are_both_refused(monkeypatch, caplog):
    registry = _entry_points(monkeypatch, [("lab-head", FakeOTAM), ("lab-head", OtherPlugin)])
    with pytest.raises(registry.UnknownMethodError, match="two plugins register 'lab-head'"):
        registry.method_info("lab-head")
    assert "refused" in caplog.text


def test_three_plugins_with_one_name_are_all_refused(monkeypatch, caplog):
    """After the first two refused each other the third found the name free and took it."""
    specs = [("lab-head", FakeOTAM), ("lab-head", OtherPlugin), ("lab-head", ThirdPlugin)]
    registry = _entry_points(monkeypatch, specs)
    with pytest.raises(registry.UnknownMethodError, match="lab-head"):
        registry.method_info("lab-head")


class ThirdPlugin(FewShotMethod):
    """A third plugin's head under the same outside name."""


class BadSignature(FewShotMethod):
    """A plugin whose match forgot support_labels and way (a scaffold edited wrongly)."""

    def match(self, support, query):
        raise AssertionError("never called")


@pytest.mark.parametrize(
    ("name", "cls", "says"),
    [
        ("aaa-bad", BadSignature, "must take (self, support"),
        ("ProtoNet", OtherPlugin, "differs only in case"),
        ("my head", OtherPlugin, "is not allowed"),
    ],
)
def test_a_plugin_refused_at_registration_leaves_the_others_and_the_cli(
    monkeypatch, caplog, name, cls, says
):
    """Refused at registration (outside the guarded load), one plugin stopped every command,
    check-method and list included, with a traceback, and the plugins after it never loaded."""
    registry = _entry_points(monkeypatch, [(name, cls), ("zzz-good", FakeOTAM)])
    assert "zzz-good" in registry.list_methods() and "protonet" in registry.list_methods()
    assert says in registry._ENTRY_POINT_ERRORS[name]
    assert f"fsarbench method plugin {name!r}" in caplog.text
    with pytest.raises(registry.UnknownMethodError, match="failed to load"):
        registry.method_info(name)


@pytest.fixture
def unloaded_registry(monkeypatch):
    """The registry as a fresh process has it before any registry call: nothing loaded."""
    import sys

    from fsarbench import registry

    monkeypatch.setattr(registry, "_REGISTRY", {})
    monkeypatch.setattr(registry, "_ENTRY_POINT_ERRORS", {})
    monkeypatch.setattr(registry, "_REFUSED_NAMES", set())
    monkeypatch.setattr(registry, "_ENTRY_POINTS_LOADED", False)
    monkeypatch.delitem(sys.modules, "fsarbench_sgtm.variants")  # imported afresh: registers
    return registry


@pytest.mark.parametrize("name", ["protonet", "ProtoNet", "OTAM"])
def test_user_code_cannot_take_a_builtin_name_before_the_registry_loaded(unloaded_registry, name):
    """Registered before any registry call, 'protonet' passed (and the built-in was built
    under it), 'ProtoNet'/'OTAM' left trx, protonet and every sgtm-* unknown for the process."""
    registry = unloaded_registry
    with pytest.raises(ValueError, match="built-in method; rename yours|differs only in case"):
        registry.register_method(name)(OtherPlugin)
    assert {"protonet", "otam", "trx", "sgtm-otam"} <= set(registry.list_methods())
    assert registry.method_info(name.lower()).cls is not OtherPlugin


def test_user_code_cannot_register_a_builtin_class_under_its_name_with_other_presets(
    unloaded_registry,
):
    """``register_method("protonet", metric="sqeuclidean")(ProtoNet)`` before any registry
    call took the name: the built-in entry point was then skipped (the same class), and the
    script's numbers were filed and ranked as the reference protonet's."""
    from fsarbench_baselines.protonet import ProtoNet

    registry = unloaded_registry
    with pytest.raises(ValueError, match="built-in method; rename yours"):
        registry.register_method("protonet", metric="sqeuclidean")(ProtoNet)
    assert registry.method_info("protonet").presets == {}
    registry.register_method("my-protonet", metric="sqeuclidean")(ProtoNet)  # its own name
    assert registry.method_info("my-protonet").presets == {"metric": "sqeuclidean"}


def _pool_manifest(tmp_path, n=30):
    classes = np.repeat(np.arange(6), n // 6)
    ids = [f"dsA/vid{i}" for i in range(n)]
    manifest = fb.make_manifest(
        classes, way=5, shot=1, queries=1, episodes=20, seed=0, dataset="dsA", video_ids=ids
    )
    return manifest.save(tmp_path / "m.json"), ids


@pytest.mark.parametrize(
    ("saved", "message"),
    [
        (lambda ids: torch.rand(50, 4, 8), r"drawn over 30 videos and the features file holds 50"),
        (
            lambda ids: {
                "features": torch.rand(50, 4, 8),
                "video_ids": [f"b{i}" for i in range(50)],
            },
            r"drawn over 30 videos and the features file holds 50",
        ),
        (
            lambda ids: {"features": torch.rand(30, 4, 8), "video_ids": ids[::-1]},
            r"30 of the manifest's 30 videos are not those of the features file .*'dsA/vid0'",
        ),
    ],
)
def test_eval_refuses_features_of_another_pool(tmp_path, capsys, saved, message):
    from fsarbench.cli.main import main

    manifest, ids = _pool_manifest(tmp_path)
    torch.save(saved(ids), tmp_path / "f.pt")
    argv = ["eval", "protonet", "--features", str(tmp_path / "f.pt"), "--manifest", str(manifest)]
    assert main([*argv, "--out", str(tmp_path / "out")]) == 2
    assert re.search(message, capsys.readouterr().err)
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").rglob("*.json"))
    torch.save({"features": torch.rand(30, 4, 8), "video_ids": ids}, tmp_path / "ok.pt")
    ok = ["eval", "protonet", "--features", str(tmp_path / "ok.pt"), "--manifest", str(manifest)]
    assert main([*ok, "--out", str(tmp_path / "out")]) == 0


def test_eval_of_a_second_checkpoint_keeps_the_first_record(tmp_path):
    """Weights without a training seed are told apart by the file's md5; trainer checkpoints
    by their seed (so that several seeds pool as one system's seeds)."""
    from fsarbench.cli.main import main
    from fsarbench.report.records import load_entries

    manifest, ids = _pool_manifest(tmp_path)
    torch.save({"features": torch.rand(30, 4, 8), "video_ids": ids}, tmp_path / "f.pt")
    base = ["eval", "hyrsm", "--features", str(tmp_path / "f.pt"), "--manifest", str(manifest)]
    states = []
    for i in range(2):  # plain weights of two initialisations
        torch.manual_seed(i)
        states.append(fb.create_method("hyrsm", feature_dim=8, seq_len=4).state_dict())
        torch.save(states[i], tmp_path / f"w{i}.pt")
    for seed in (0, 1):
        payload = {"method": states[0], "recipe": {}, "hparams": {}, "fingerprint": {"seed": seed}}
        torch.save(payload, tmp_path / f"seed{seed}.pt")
    out = tmp_path / "out"
    for name in ("w0.pt", "w1.pt", "seed0.pt", "seed1.pt"):
        assert main([*base, "--checkpoint", str(tmp_path / name), "--out", str(out)]) == 0
    records = fb.load_records(out)
    assert len(records) == 4
    assert sorted(r.train_seed for r in records if r.train_seed is not None) == [0, 1]
    md5s = {r.features.get("checkpoint_md5") for r in records if r.train_seed is None}
    assert len(md5s) == 2 and None not in md5s
    seeded = [e for e in load_entries(out) if len(e.records) == 2]
    assert len(seeded) == 1 and sorted(r.train_seed for r in seeded[0].records) == [0, 1]


class PositionCheat(FewShotMethod):
    """Scores by query position (queries come in class order), ignoring the features."""

    def encode(self, features):
        return features.mean(1)

    def match(self, support, support_labels, query, way, **_):
        b, nq = query.shape[:2]
        position = torch.arange(nq, device=query.device) * way // nq
        logits = torch.nn.functional.one_hot(position, way).to(query.dtype)
        return MethodOutput(logits.expand(b, -1, -1) + 0 * query.sum(-1, keepdim=True))


class MeanPrototypes(FewShotMethod):
    """A well-behaved plugin: negative distances to class-mean prototypes."""

    def encode(self, features):
        return features.mean(1)

    def match(self, support, support_labels, query, way, **_):
        ones = torch.nn.functional.one_hot(support_labels, way).to(support.dtype)
        protos = ones.transpose(1, 2) @ support / ones.sum(1)[..., None]
        return MethodOutput(-torch.cdist(query, protos))


def test_an_installed_plugin_is_checked_before_its_first_number(monkeypatch):
    from fsarbench import registry

    monkeypatch.setattr(registry, "_PLUGINS_CHECKED", set())
    registry = _entry_points(monkeypatch, [("cheat", PositionCheat), ("protos", MeanPrototypes)])
    with pytest.raises(registry.PluginContractError, match=r"'cheat' .*query_order_equivariance"):
        fb.create_method("cheat", feature_dim=8, seq_len=4)
    with pytest.raises(registry.PluginContractError, match="check-method cheat"):
        fb.create_method("cheat", feature_dim=8, seq_len=4)  # refused every time
    assert fb.create_method("protos", feature_dim=8, seq_len=4).method_name == "protos"


class CheatsWhenAsked(MeanPrototypes):
    """Well-behaved at its defaults; adds a query-position term when ``pos_bias > 0``."""

    @dataclasses.dataclass
    class Config:
        pos_bias: float = 0.0

    def match(self, support, support_labels, query, way, **kw):
        out = super().match(support, support_labels, query, way, **kw)
        nq = query.shape[1]
        position = torch.arange(nq, device=query.device) * way // nq
        bias = torch.nn.functional.one_hot(position, way).to(query.dtype)
        return MethodOutput(out.logits + self.config.pos_bias * bias)


class FalseSupportMeans(MeanPrototypes):
    """Claims to use class means only, but weighs the first support video of each class."""

    support_means = True

    def match(self, support, support_labels, query, way, **_):
        first = torch.stack(
            [support[:, (support_labels[0] == c).nonzero()[0, 0]] for c in range(way)], 1
        )
        return MethodOutput(-torch.cdist(query, first))


def test_plugins_are_checked_at_the_run_s_hyper_parameters_and_claims(monkeypatch):
    """The checks ran at the defaults only (a head cheating at pos_bias=3 printed 100.00)
    and skipped the claims the evaluator computes through (support_means, pair tables)."""
    from fsarbench import registry

    monkeypatch.setattr(registry, "_PLUGINS_CHECKED", set())
    registry = _entry_points(
        monkeypatch, [("asked", CheatsWhenAsked), ("means", FalseSupportMeans)]
    )
    assert fb.create_method("asked", feature_dim=8, seq_len=4).config.pos_bias == 0.0
    with pytest.raises(
        registry.PluginContractError, match=r"with hyper-parameters \{'pos_bias': 3.0\} fails"
    ):
        fb.create_method("asked", feature_dim=8, seq_len=4, pos_bias=3.0)
    with pytest.raises(registry.PluginContractError, match=r"'means' .*support_means"):
        fb.create_method("means", feature_dim=8, seq_len=4)


_MODULE_PLUGIN = """
import fsarbench as fb
from test_trust_plugins import MeanPrototypes, PositionCheat

fb.register_method("{name}")(PositionCheat if "{kind}" == "cheat" else MeanPrototypes)
"""


def _module_entry_point(monkeypatch, tmp_path, module: str, name: str, kind: str):
    """An entry point naming a module whose import registers ``name`` (the ``sgtm`` way)."""
    from importlib.metadata import EntryPoint

    (tmp_path / f"{module}.py").write_text(_MODULE_PLUGIN.format(name=name, kind=kind))
    monkeypatch.syspath_prepend(str(tmp_path))
    return EntryPoint(module, module, "fsarbench.methods")


def test_a_plugin_module_is_checked_like_a_plugin_class(monkeypatch, tmp_path):
    """A module entry point's methods were filed as source "code" and skipped the checks:
    a head scoring by query position reached 100% on noise."""
    from fsarbench import registry

    registry.list_methods()
    ep = _module_entry_point(monkeypatch, tmp_path, "lab_cheat_plugin", "lab-cheat", "cheat")
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    monkeypatch.setattr(registry, "_ENTRY_POINTS_LOADED", False)
    monkeypatch.setattr(registry, "_PLUGINS_CHECKED", set())
    monkeypatch.setattr(registry, "entry_points", lambda group: [ep])
    assert registry.method_info("lab-cheat").source == "entry point lab_cheat_plugin"
    with pytest.raises(registry.PluginContractError, match="query_order_equivariance"):
        fb.create_method("lab-cheat", feature_dim=8, seq_len=4)


def test_a_plugin_module_cannot_take_a_builtin_name(monkeypatch, tmp_path, caplog):
    """A module plugin registering 'sgtm-otam', found before fsarbench's own sgtm module,
    kept the name and the built-in SGTM variants failed to load."""
    import sys

    from fsarbench import registry

    registry.list_methods()
    builtin_cls = registry.method_info("sgtm-otam").cls
    ep = _module_entry_point(monkeypatch, tmp_path, "lab_sgtm_plugin", "sgtm-otam", "protos")
    (sgtm_ep,) = [e for e in registry.entry_points(group="fsarbench.methods") if e.name == "sgtm"]
    kept = {n: e for n, e in registry._REGISTRY.items() if not n.startswith("sgtm")}
    monkeypatch.setattr(registry, "_REGISTRY", kept)
    monkeypatch.setattr(registry, "_ENTRY_POINT_ERRORS", {})
    monkeypatch.setattr(registry, "_ENTRY_POINTS_LOADED", False)
    monkeypatch.setattr(registry, "entry_points", lambda group: [ep, sgtm_ep])
    monkeypatch.delitem(sys.modules, "fsarbench_sgtm.variants")  # imported afresh: registers
    assert registry.method_info("sgtm-otam").cls.__name__ == builtin_cls.__name__
    assert "built-in method; rename yours" in registry._ENTRY_POINT_ERRORS["lab_sgtm_plugin"]
    assert "lab_sgtm_plugin" in caplog.text


def test_a_plugin_ending_the_process_at_import_is_a_plugin_that_failed_to_load(
    monkeypatch, tmp_path, caplog
):
    """A script-style plugin module (argparse at import) raised SystemExit and ended every
    fsarbench command, 'verify' and 'leaderboard' too, with only its own usage line."""
    from importlib.metadata import EntryPoint

    from fsarbench import registry

    registry.list_methods()
    (tmp_path / "lab_exit_plugin.py").write_text("import sys\nsys.exit(2)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    ep = EntryPoint("exit-head", "lab_exit_plugin", "fsarbench.methods")
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    monkeypatch.setattr(registry, "_ENTRY_POINT_ERRORS", {})
    monkeypatch.setattr(registry, "_ENTRY_POINTS_LOADED", False)
    monkeypatch.setattr(registry, "entry_points", lambda group: [ep])
    assert "otam" in registry.list_methods()
    assert registry._ENTRY_POINT_ERRORS["exit-head"] == "SystemExit: 2"
    assert "could not load fsarbench method plugin 'exit-head'" in caplog.text


class ShotNormalised(FewShotMethod):
    """Distances scaled by the spread of each class's support: NaN with one shot."""

    def encode(self, features):
        return features.mean(1)

    def match(self, support, support_labels, query, way, **_):
        ones = torch.nn.functional.one_hot(support_labels, way).to(support.dtype)
        protos = ones.transpose(1, 2) @ support / ones.sum(1)[..., None]
        deviation = support - ones @ protos  # [B, Ns, D]
        var = ones.transpose(1, 2) @ deviation.pow(2) / (ones.sum(1)[..., None] - 1)  # 0/0
        return MethodOutput(-torch.cdist(query, protos) / var.mean(-1).sqrt()[:, None])


def test_the_shape_check_tries_one_shot_and_one_query(monkeypatch):
    """The contract tried 5-way 2-shot with 2 queries only: a head NaN at 1-shot passed."""
    from fsarbench import registry
    from fsarbench.testing.contract import CONTRACT_CHECKS

    registry.list_methods()
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    registry.register_method("shot-normalised")(ShotNormalised)
    with pytest.raises(AssertionError, match="5-way 1-shot, 1 query/class: logits must be finite"):
        CONTRACT_CHECKS["shapes"]("shot-normalised")


def test_the_plugin_check_leaves_the_callers_random_state_alone(monkeypatch):
    """The first build of a plugin ran its checks, which seed torch: SGTM builds its matcher
    (possibly a plugin) between its own layers, so the first model built in a process got
    the same initial weights whatever its training seed."""
    import random

    from fsarbench import registry

    registry.list_methods()
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    monkeypatch.setattr(registry, "_PLUGINS_CHECKED", set())
    registry.register_method("mean-prototypes")(MeanPrototypes)

    def build_then_draw() -> tuple:
        torch.manual_seed(7)
        np.random.seed(7)
        random.seed(7)
        fb.create_method("mean-prototypes", feature_dim=8, seq_len=4)
        return torch.rand(3).tolist(), np.random.rand(), random.random()

    first = build_then_draw()  # runs the checks
    assert any("mean-prototypes" in key for key in registry._PLUGINS_CHECKED)
    assert build_then_draw() == first  # checked already: nothing run


def test_a_plugin_s_base_class_and_helper_modules_are_in_its_code_digest(monkeypatch, tmp_path):
    """Only the modules defining the model's classes were hashed: a plugin whose base class
    or scoring helper lived in another module kept serving its records after they changed."""
    import importlib

    from fsarbench.provenance import code_digest, method_packages, package_digest

    (tmp_path / "lab_helper.py").write_text("def score(q, p):\n    return -(q - p).abs()\n")
    (tmp_path / "lab_base.py").write_text(
        "from fsarbench.methods import FewShotMethod\n\nclass Base(FewShotMethod):\n    pass\n"
    )
    (tmp_path / "lab_head.py").write_text(
        "from lab_base import Base\nfrom lab_helper import score\n\n"
        "class Head(Base):\n    def encode(self, features):\n        return features.mean(1)\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    head = importlib.import_module("lab_head").Head(feature_dim=4, seq_len=2)
    assert method_packages(head) == ["lab_base", "lab_head", "lab_helper"]
    before = code_digest(head)
    (tmp_path / "lab_helper.py").write_text("def score(q, p):\n    return -(q - p) ** 2\n")
    package_digest.cache_clear()  # digests are kept per process; a new run reads them anew
    assert code_digest(head) != before


def test_helpers_of_helpers_lazy_imports_and_constants_are_in_the_code_digest(
    monkeypatch, tmp_path
):
    """Only modules whose functions or classes the method's module held were hashed: a
    helper's own helper, a module imported inside a function and an imported constant each
    changed the numbers while the records stayed current."""
    import importlib

    from fsarbench.provenance import _source_imports, method_packages, package_digest

    (tmp_path / "lab_core.py").write_text("def core(x):\n    return x\n")
    (tmp_path / "lab_scale.py").write_text(
        "from lab_core import core\n\ndef scale(x):\n    return core(x)\n"
    )
    (tmp_path / "lab_consts.py").write_text("SHIFT = 1.0\n")
    (tmp_path / "lab_lazy.py").write_text("def late(x):\n    return x\n")
    (tmp_path / "lab_head2.py").write_text(
        "from fsarbench.methods import FewShotMethod\nfrom lab_scale import scale\n"
        "from lab_consts import SHIFT\n\n"
        "class Head(FewShotMethod):\n    def encode(self, features):\n"
        "        from lab_lazy import late\n\n"
        "        return late(scale(features.mean(1))) + SHIFT\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    head = importlib.import_module("lab_head2").Head(feature_dim=4, seq_len=2)
    packages = method_packages(head)
    assert packages == ["lab_consts", "lab_core", "lab_head2", "lab_lazy", "lab_scale"]
    package_digest.cache_clear()
    _source_imports.cache_clear()


def test_an_installed_helper_package_is_named_by_its_version(monkeypatch, tmp_path):
    """A plugin scoring through a helper installed with ``pip install .`` (site-packages, not
    hashed) kept serving its records after the helper's new version flipped its logits."""
    import importlib

    from fsarbench import provenance

    (tmp_path / "lab_installed.py").write_text("SIGN = 1.0\n")
    (tmp_path / "lab_head3.py").write_text(
        "from fsarbench.methods import FewShotMethod\nfrom lab_installed import SIGN\n\n"
        "class Head(FewShotMethod):\n    def encode(self, features):\n"
        "        return SIGN * features.mean(1)\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    version = {"lab_installed": "0.1.0"}
    local = provenance._local
    monkeypatch.setattr(provenance, "_local", lambda top: top != "lab_installed" and local(top))
    monkeypatch.setattr(
        provenance,
        "_distribution_of",
        lambda top: ("lab-installed", version[top]) if top in version else None,
    )
    head = importlib.import_module("lab_head3").Head(feature_dim=4, seq_len=2)
    assert provenance.installed_helpers(head) == {"lab_installed": "lab-installed==0.1.0"}
    parts, digest = provenance.code_parts(head), provenance.code_digest(head)
    assert provenance.stale_code(parts) == []
    version["lab_installed"] = "0.2.0"
    assert provenance.stale_code(parts) == ["lab_installed"]
    assert provenance.code_digest(head) != digest


def test_fsarbench_s_own_dependencies_are_not_a_method_s_installed_helpers():
    """SGTM imports ``tabulate`` and the heads ``typing_extensions`` (through torch): both
    are fsarbench's environment, so the built-in methods' code parts are as before."""
    from fsarbench import provenance

    for name in ("sgtm-otam", "trx", "otam"):
        method = fb.create_method(name, feature_dim=64, seq_len=8, num_train_classes=5)
        assert "installed" not in provenance.code_parts(method)
    assert {"torch", "tabulate", "typing-extensions"} <= provenance._environment_distributions()


def test_a_namespace_package_over_two_folders_is_hashed(monkeypatch, tmp_path):
    """Files of the second folder were named relative to the first: ``run`` stopped with
    "is not in the subpath of" before any work."""
    from fsarbench.provenance import package_digest

    for folder, sub in (("ns1", "heads"), ("ns2", "utils")):
        (tmp_path / folder / "lab_ns" / sub).mkdir(parents=True)
        (tmp_path / folder / "lab_ns" / sub / "__init__.py").write_text(f"X = {sub!r}\n")
    monkeypatch.syspath_prepend(str(tmp_path / "ns2"))
    monkeypatch.syspath_prepend(str(tmp_path / "ns1"))
    package_digest.cache_clear()
    first = package_digest("lab_ns")
    assert len(first) == 16
    (tmp_path / "ns2" / "lab_ns" / "utils" / "__init__.py").write_text("X = 'changed'\n")
    package_digest.cache_clear()
    assert package_digest("lab_ns") != first
    package_digest.cache_clear()


class WideProjection(MeanPrototypes):
    """A plugin whose projection width must not exceed the feature size (a hyper-parameter
    tied to the real features: 256 of ResNet-18's 512, more than the contract's 64)."""

    @dataclasses.dataclass
    class Config:
        width: int = 16

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        if self.config.width > self.feature_dim:
            raise ValueError(f"width {self.config.width} > feature_dim {self.feature_dim}")
        self.proj = torch.nn.Linear(self.feature_dim, self.config.width)

    def encode(self, features):
        return self.proj(features).mean(1)


def test_plugins_are_checked_at_the_size_they_are_built_for(monkeypatch, capsys):
    """The checks built a plugin at the contract's 64 features whatever the run's size: a
    valid `width=256` for 512-d features was refused as failing every check."""
    from fsarbench import registry
    from fsarbench.cli.main import main

    monkeypatch.setattr(registry, "_PLUGINS_CHECKED", set())
    registry = _entry_points(monkeypatch, [("wide", WideProjection), ("asked", CheatsWhenAsked)])
    method = fb.create_method("wide", feature_dim=512, seq_len=8, width=256)
    assert method.proj.out_features == 256
    with pytest.raises(registry.PluginContractError, match="--feature-dim 512 --seq-len 8'"):
        fb.create_method("asked", feature_dim=512, seq_len=8, pos_bias=3.0)
    hp = '{"width": 256}'
    assert main(["check-method", "wide", "--hparams", hp, "--feature-dim", "512"]) == 0
    assert main(["check-method", "wide", "--hparams", hp]) == 1  # at the contract's 64
    assert "width 256 > feature_dim 64" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--feature-dim", "0"], "--feature-dim: must be at least 1"),
        (["--feature-dim", "8", "--seq-len", "-1"], "--seq-len: must be at least 1"),
        (["--feature-dim", "8", "--dataset", "sinth"], "invalid choice: 'sinth'"),
    ],
)
def test_check_method_refuses_impossible_sizes_and_unknown_datasets(argv, message, capsys):
    from fsarbench.cli.main import main

    with pytest.raises(SystemExit):
        main(["check-method", "protonet", *argv])
    assert message in capsys.readouterr().err


def test_files_a_method_package_ships_are_in_its_digest(monkeypatch, tmp_path):
    """Only ``*.py`` files were hashed: a head reading its settings from a ``defaults.json``
    in its package kept serving its records (69.40) after the file changed (54.88 fresh).
    A package of Python files alone keeps the digest of its source, as before."""
    from fsarbench.provenance import package_digest, source_digest

    pkg = tmp_path / "lab_data_head"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("TEMPERATURE = 1.0\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    package_digest.cache_clear()
    assert package_digest("lab_data_head") == source_digest([pkg], pkg)
    (pkg / "defaults.json").write_text('{"temperature": 10.0}')
    (pkg / "__pycache__").mkdir()
    (pkg / "__pycache__" / "x.cpython-311.pyc").write_bytes(b"byte code")
    package_digest.cache_clear()
    with_json = package_digest("lab_data_head")
    (pkg / "__pycache__" / "x.cpython-311.pyc").write_bytes(b"other byte code")
    package_digest.cache_clear()
    assert package_digest("lab_data_head") == with_json  # byte code is not the method
    for junk in ("__init__.py~", "#__init__.py#", "run.log", "__init__.py.orig"):
        (pkg / junk).write_text("an editor's or a run's leftover")
    package_digest.cache_clear()
    assert package_digest("lab_data_head") == with_json  # nor are editor backups and logs
    (pkg / "defaults.json").write_text('{"temperature": 0.01}')
    package_digest.cache_clear()
    assert package_digest("lab_data_head") != with_json
    package_digest.cache_clear()


class _SubtractsInPlace(MeanPrototypes):
    """Prototypes of its features after ``features.sub_(0.3)``: every call shifts them."""

    def encode(self, features):
        return features.sub_(0.3).mean(1)


def test_a_method_built_directly_passes_the_contract_before_evaluate_prints_a_number():
    """fb.evaluate of a class instantiated directly (a notebook's way) ran no check: a head
    scoring queries by position printed 100.00 ± 0.00 on pure noise."""
    feats, manifest = _episodes(1, queries=2)
    with pytest.raises(PluginContractError, match=r"PositionCheat \(not registered\).*query_order"):
        fb.evaluate(PositionCheat(feature_dim=8, seq_len=4), feats, manifest, progress=False)
    before = feats.clone()
    with pytest.raises(PluginContractError, match=r"inputs_untouched: .*wrote into its input"):
        fb.evaluate(_SubtractsInPlace(feature_dim=8, seq_len=4), feats, manifest, progress=False)
    assert torch.equal(feats, before)  # refused on a copy, before touching the caller's tensor
    proto = fb.create_method("protonet", feature_dim=8, seq_len=4)
    assert fb.evaluate(proto, feats, manifest, progress=False).accuracy > 0


@pytest.mark.parametrize("name", ["x/y", "../evil", "my head", "a:b", "", "otam[k=1]"])
def test_method_names_that_are_no_file_name_of_their_own_are_refused(name):
    """'x/y' and 'x-y' wrote one record file: run served x/y's number as x-y's."""
    with pytest.raises(ValueError, match="is not allowed: use letters, digits"):
        fb.register_method(name)(ReshapedLogits)


def test_a_method_name_differing_only_in_case_from_a_registered_one_is_refused():
    with pytest.raises(ValueError, match="differs only in case from the registered 'protonet'"):
        fb.register_method("ProtoNet")(ReshapedLogits)


class _NoisyOnceTrained(FewShotMethod):
    """Eval-mode noise scaled by a weight that is 0 at initialisation: the checks made at
    creation pass, the trained model is not deterministic."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.noise = torch.nn.Parameter(torch.zeros(()))

    def encode(self, features):
        return features.mean(1)

    def match(self, support, support_labels, query, way, **_):
        ones = torch.nn.functional.one_hot(support_labels, way).to(query.dtype)
        protos = ones.transpose(1, 2) @ support / ones.sum(1).unsqueeze(-1)
        logits = -torch.cdist(query, protos)
        return MethodOutput(logits + self.noise * torch.randn_like(logits))


def test_a_trained_instance_is_checked_again_before_it_is_evaluated():
    feats, manifest = _episodes(1)
    head = _NoisyOnceTrained(feature_dim=8, seq_len=4)
    fb.evaluate(head, feats, manifest, progress=False)  # noise 0: passes
    with torch.no_grad():
        head.noise.add_(0.5)  # as an optimiser step would
    with pytest.raises(PluginContractError, match=r"eval_determinism"):
        fb.evaluate(head, feats, manifest, progress=False)


def test_a_trained_instance_fails_naming_its_weights_and_one_that_cannot_be_copied_is_refused():
    """A trained instance's failure said to run check-method, which builds the method afresh
    and passed; an instance holding a lock skipped its checks with a log line (noise behind
    a trained weight printed 69.40 where a copyable twin was refused)."""
    import threading

    feats, manifest = _episodes(1)
    head = _NoisyOnceTrained(feature_dim=8, seq_len=4)
    with torch.no_grad():
        head.noise.add_(0.5)
    with pytest.raises(PluginContractError, match=r"with the weights it holds now \(trained\)"):
        fb.evaluate(head, feats, manifest, progress=False)
    head.lock = threading.Lock()
    with pytest.raises(PluginContractError, match=r"cannot be copied \(TypeError.*__deepcopy__"):
        fb.evaluate(head, feats, manifest, progress=False)


def test_a_plugin_behind_the_recipes_adapter_is_checked_again_once_trained():
    """``run`` wraps heads in the built-in AdaptedMethod (the default recipe's linear_ln
    adapter): the wrapper was skipped as built in, so the trained plugin inside it was never
    checked again."""
    from fsarbench.training import AdaptedMethod, FrameAdapter

    feats, manifest = _episodes(1)
    head = _NoisyOnceTrained(feature_dim=8, seq_len=4)
    wrapped = AdaptedMethod(head, FrameAdapter(8), 8)
    fb.evaluate(wrapped, feats, manifest, progress=False)  # noise 0: passes
    with torch.no_grad():
        head.noise.add_(0.5)
    with pytest.raises(PluginContractError, match=r"_NoisyOnceTrained.*eval_determinism"):
        fb.evaluate(wrapped, feats, manifest, progress=False)


def test_features_of_another_layout_than_the_method_was_built_for_are_refused():
    """[N, D, T] features given to a head built for [T, D] printed 24.30 (92.20 in the right
    layout); T=16 frames to a head built for 8 passed the same way."""
    from fsarbench.evaluate import FeatureShapeError

    feats, manifest = _episodes(1)  # [N, T=4, D=8]
    proto = MeanPrototypes(feature_dim=8, seq_len=4)  # a user's head (built-ins map their input)
    fb.evaluate(proto, feats, manifest, progress=False)
    with pytest.raises(FeatureShapeError, match=r"T=4 frames x D=8 dims, and these are T=8 x D=4"):
        fb.evaluate(proto, feats.transpose(1, 2), manifest, progress=False)
    with pytest.raises(FeatureShapeError, match=r"build the method with seq_len=8, feature_dim=8"):
        fb.evaluate(proto, torch.cat([feats, feats], 1), manifest, progress=False)


@pytest.mark.parametrize("dtype", [torch.complex64, torch.bool])
def test_logits_that_are_not_real_scores_are_refused(dtype):
    """Complex logits passed the contract and crashed in torch's argmax; bool ones too."""
    from fsarbench.guards import predict_labels

    logits = torch.zeros(2, 3, 5, dtype=dtype)
    with pytest.raises(LogitsShapeError, match=rf"returned {dtype} logits"):
        predict_labels(logits, first_episode=0, shape=(2, 3, 5))

    class Cast(MeanPrototypes):
        def match(self, *args, **kwargs):
            return MethodOutput(super().match(*args, **kwargs).logits.to(dtype))

    feats, manifest = _episodes(1)
    with pytest.raises(PluginContractError, match=r"shapes: .*logits must be real scores"):
        fb.evaluate(Cast(feature_dim=8, seq_len=4), feats, manifest, progress=False)


def test_check_method_sizes_without_a_feature_dim_are_a_usage_error(capsys):
    """``check-method otam --seq-len 3`` exited 1, as if a contract check had failed."""
    from fsarbench.cli.main import main

    assert main(["check-method", "otam", "--seq-len", "3"]) == 2
    assert "--seq-len and --dataset need --feature-dim" in capsys.readouterr().err


def test_a_hyper_parameter_that_is_not_json_is_refused_at_registration(monkeypatch):
    """A function default passed registration and check-method, then stopped run after its
    feature extraction with a raw traceback from the record's hash."""
    import dataclasses

    from fsarbench import registry

    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))

    class Activated(OtherPlugin):
        @dataclasses.dataclass
        class Config:
            act: object = torch.tanh

    with pytest.raises(TypeError, match=r"hyper-parameter act=<built-in method tanh.* not a JSON"):
        registry.register_method("activated")(Activated)
    assert "activated" not in registry._REGISTRY


SCRIPT_METHOD = """
import fsarbench as fb
from fsarbench.provenance import code_parts, freeze_code_digests
from fsarbench_baselines.protonet import ProtoNet


def score(x):
    return x * {scale}


@fb.register_method("script-head")
class ScriptHead(ProtoNet):
    pass


freeze_code_digests()
print(code_parts(fb.create_method("script-head", feature_dim=8, seq_len=4))["main"])
"""


def test_a_method_defined_in_a_script_names_its_code(tmp_path):
    """A method defined in a script (or notebook) had no code digest (``__main__`` was left
    out): after an edit, a re-run into the same folder reused its records and models."""
    import subprocess
    import sys

    script = tmp_path / "mine.py"

    def digest(scale: int) -> str:
        script.write_text(SCRIPT_METHOD.format(scale=scale))
        done = subprocess.run(
            [sys.executable, str(script)], capture_output=True, text=True, check=True
        )
        return done.stdout.strip().splitlines()[-1]

    first = digest(2)
    assert len(first) == 16 and digest(2) == first
    assert digest(3) != first  # a helper function of the script changed


class PositionAtOneQuery(FewShotMethod):
    """Cosine to prototypes, plus a term by query position when there are ``way`` queries
    (the evaluator's 1 query per class, in class order): 87.96 and first on the board."""

    def encode(self, features):
        return features.mean(1)

    def match(self, support, support_labels, query, way, **_):
        ones = torch.nn.functional.one_hot(support_labels, way).to(query.dtype)
        protos = ones.transpose(1, 2) @ support / ones.sum(1)[..., None]
        logits = torch.nn.functional.normalize(query, dim=-1) @ torch.nn.functional.normalize(
            protos, dim=-1
        ).transpose(1, 2)
        if query.shape[1] == way:
            logits = logits + 1.5 * torch.eye(way, dtype=logits.dtype)
        return MethodOutput(logits)


class TopTwoPairs(FewShotMethod):
    """The mean of each class's two best pair scores, claimed pairwise at every shot: it is
    the class mean of the pair scores only up to 2 shots (65.06 through a 5-shot pair table
    against 72.26 from its match)."""

    def encode(self, features):
        return features.mean(1)

    def pair_logits(self, query, support):
        return -torch.cdist(query, support)

    def match(self, support, support_labels, query, way, **_):
        scores = self.pair_logits(query, support)  # [B, Nq, Ns]
        per_class = torch.stack(
            [scores.masked_fill(support_labels[:, None] != c, -1e9) for c in range(way)], -1
        )  # [B, Nq, Ns, way]
        best = min(2, support.shape[1] // way)  # the shot, up to 2
        return MethodOutput(per_class.topk(best, dim=2).values.mean(2))

    def pairwise(self, shot: int) -> bool:
        return True


class SinkhornOverQueries(FewShotMethod):
    """Transductive: balances the query-to-class assignment over the episode's queries
    (Sinkhorn rows and columns), which reads every other query's features. Equivariant in
    query order and passing every other check, it scored ~4 points above its inductive
    self on the same episodes."""

    def encode(self, features):
        return features.mean(1)

    def match(self, support, support_labels, query, way, **_):
        ones = torch.nn.functional.one_hot(support_labels, way).to(query.dtype)
        protos = ones.transpose(1, 2) @ support / ones.sum(1)[..., None]
        plan = torch.softmax(-torch.cdist(query, protos), -1)
        for _ in range(3):
            plan = plan / plan.sum(1, keepdim=True)  # each class takes an equal share
            plan = plan / plan.sum(2, keepdim=True)
        return MethodOutput(plan.log())


@pytest.mark.parametrize(
    ("cls", "check", "message"),
    [
        (PositionAtOneQuery, "query_order_equivariance", r"\(1 per class\)"),
        (TopTwoPairs, "pairwise_logits", r"3-shot logits != class means of pair_logits"),
        (SinkhornOverQueries, "queries_scored_alone", r"other queries changed.*transductive"),
    ],
)
def test_claims_and_equivariance_are_checked_at_the_evaluators_settings(
    monkeypatch, cls, check, message
):
    """The checks ran at 2 queries per class and at 1-2 shots only: a head reading query
    positions at 1 query per class, or pairwise at small shots alone, passed every check."""
    from fsarbench import registry
    from fsarbench.testing.contract import CONTRACT_CHECKS

    registry.list_methods()
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    registry.register_method("claim-head")(cls)
    with pytest.raises(AssertionError, match=message):
        CONTRACT_CHECKS[check]("claim-head")
