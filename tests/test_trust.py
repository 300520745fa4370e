"""Numbers that cannot be wrong silently: non-finite logits and losses, stale reuse of cells,
models and partial evaluations, superseded records, and training runs that cannot be confused."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from test_runner import OPTS, provider
from test_train_cmd import ARGS, FakeProvider

import fsarbench as fb
from fsarbench import provenance
from fsarbench.cli.main import main
from fsarbench.experiments import runner as runner_mod
from fsarbench.experiments.cells import Cell
from fsarbench.experiments.runner import RunOptions, run_cells
from fsarbench.guards import NonFiniteFeaturesError, NonFiniteLogitsError, NonFiniteLossError
from fsarbench.methods import FewShotMethod, MethodOutput, TrainingStage
from fsarbench.training import frozen_recipe, train
from fsarbench.training.trainer import RunMismatchError


class NaNForSomeQueries(FewShotMethod):
    """Prototype logits, NaN for queries whose first feature is negative."""

    method_name = "nan-head"

    def encode(self, features):
        return features.mean(1)

    def match(self, support, support_labels, query, way, **_):
        protos = torch.stack([support[:, support_labels[0] == c].mean(1) for c in range(way)], 1)
        logits = -torch.cdist(query, protos)
        nan = query[..., :1] < 0
        return MethodOutput(logits.masked_fill(nan, float("nan")))


def _skip_contract(monkeypatch) -> None:
    """Evaluate without the plugin contract, which refuses NaN logits before the evaluator's
    own guard (what these tests check) sees them."""
    import importlib

    evaluate_mod = importlib.import_module("fsarbench.evaluate")
    monkeypatch.setattr(evaluate_mod, "check_built_method", lambda method: None)


def _manifest(n_classes=6, per=5, episodes=40):
    classes = np.repeat(np.arange(n_classes), per)
    return classes, fb.make_manifest(classes, way=5, shot=1, queries=2, episodes=episodes, seed=3)


def test_nonfinite_logits_are_an_error_naming_episodes_and_queries(monkeypatch):
    _skip_contract(monkeypatch)  # the evaluator's own NaN guard is under test
    classes, manifest = _manifest()
    feats = torch.randn(len(classes), 4, 8, generator=torch.Generator().manual_seed(0))
    head = NaNForSomeQueries(feature_dim=8, seq_len=4)
    with pytest.raises(NonFiniteLogitsError, match=r"nan-head returned NaN/inf logits .*episode"):
        fb.evaluate(head, feats, manifest, progress=False)


def test_count_wrong_policy_counts_and_records_them(monkeypatch):
    _skip_contract(monkeypatch)  # the evaluator's own NaN guard is under test
    classes, manifest = _manifest()
    feats = torch.randn(len(classes), 4, 8, generator=torch.Generator().manual_seed(0))
    head = NaNForSomeQueries(feature_dim=8, seq_len=4)
    res = fb.evaluate(head, feats, manifest, progress=False, nonfinite="count_wrong")
    bad = (feats[manifest.query.ravel()].mean(1)[:, 0] < 0).numpy()
    assert res.extra["nonfinite_queries"] == bad.sum() > 0
    correct = res.records["correct"]
    assert not correct[bad].any()  # every NaN query counted wrong, never as class 0
    assert (res.records["predicted_label"][bad] == -1).all()
    assert (res.records["predicted_class"][bad] == -1).all()
    with pytest.raises(ValueError, match="non-finite policy"):
        fb.evaluate(head, feats, manifest, progress=False, nonfinite="ignore")


def test_logits_alike_for_every_class_are_no_prediction():
    """Features alike for every video (or ones whose cosine overflowed) scored every class
    alike: argmax took label 0 each time and eval printed a confident '20.00 ± 0.00'."""
    from fsarbench.guards import ConstantLogitsError

    classes, manifest = _manifest()
    alike = torch.ones(len(classes), 4, 8)
    head = fb.create_method("protonet", feature_dim=8, seq_len=4)
    with pytest.raises(ConstantLogitsError, match="scored every class alike for every query"):
        fb.evaluate(head, alike, manifest, progress=False)


def test_infinite_logits_are_non_finite_not_alike():
    """Logits overflowed to inf for every class compared equal (inf == inf) and were refused
    as 'scored every class alike', past --nonfinite count_wrong and naming another cause."""
    from fsarbench.guards import (
        NONFINITE,
        ConstantLogitsError,
        NonFiniteLogitsError,
        predict_labels,
    )

    inf = torch.full((2, 3, 5), float("inf"))
    with pytest.raises(NonFiniteLogitsError):
        predict_labels(inf, first_episode=0)
    assert (predict_labels(inf, first_episode=0, policy="count_wrong") == NONFINITE).all()
    mixed = torch.zeros(2, 3, 5)  # finite rows alike, the others inf: still no prediction
    mixed[0, 0] = float("inf")
    with pytest.raises(ConstantLogitsError):
        predict_labels(mixed, first_episode=0, policy="count_wrong")


def test_an_episode_scored_alike_is_refused_whatever_the_batch():
    """Refused only when every query of a whole batch was alike: at --batch-episodes 1 an
    eval with some all-zero classes was refused, at 500 it printed 62.83."""
    from fsarbench.guards import ConstantLogitsError, predict_labels

    logits = torch.randn(4, 3, 5, generator=torch.Generator().manual_seed(0))
    logits[2] = 0.5  # episode 2: every query scored every class alike
    with pytest.raises(ConstantLogitsError, match=r"every query of episode\(s\) 12: "):
        predict_labels(logits, first_episode=10)
    logits[2, 1] = torch.arange(5.0)  # one query of it has a prediction: the episode stands
    assert predict_labels(logits, first_episode=10).shape == (4, 3)


@pytest.mark.parametrize("where", ["query", "support"])
def test_a_zero_frame_is_counted_and_named(where, caplog):
    """One all-zero frame (padding) made every cosine with it 0 and nothing said so. It is
    no error (black frames through random weights give zero features), but it is named and
    counted in the result."""
    classes, manifest = _manifest()
    feats = torch.randn(len(classes), 4, 8, generator=torch.Generator().manual_seed(0))
    bad = int((manifest.query if where == "query" else manifest.support)[0, 0])
    feats[bad, 2] = 0
    head = fb.create_method("protonet", feature_dim=8, seq_len=4)
    result = fb.evaluate(head, feats, manifest, progress=False)
    assert result.extra["zero_frame_videos"] == 1
    said = f"1 video(s) have frames whose features are all zero (pool indices {bad})"
    assert said in caplog.text
    feats[bad, 2] = 1e-30  # tiny is a direction
    assert fb.evaluate(head, feats, manifest, progress=False).extra["zero_frame_videos"] == 0


def test_zero_frames_are_found_in_every_layout():
    from fsarbench.guards import zero_frame_videos

    feats = torch.randn(7, 3, 5, generator=torch.Generator().manual_seed(2))
    assert zero_frame_videos(feats, np.arange(7)).tolist() == []
    assert zero_frame_videos(feats.half(), np.arange(7)).tolist() == []
    assert zero_frame_videos(feats[:0], np.arange(0)).tolist() == []
    feats[[1, 4, 6], 0, :] = 0.0
    feats[4, 2] = -0.0  # negative zero is zero
    assert zero_frame_videos(feats, np.arange(10, 17)).tolist() == [11, 14, 16]
    assert zero_frame_videos(feats.half(), np.arange(7)).tolist() == [1, 4, 6]
    views = torch.stack([feats, torch.ones_like(feats)], 1)  # [n, V, T, D]
    assert zero_frame_videos(views, np.arange(7)).tolist() == [1, 4, 6]
    vectors = torch.ones(3, 6)
    vectors[2] = 0  # video-level features [n, D]: a zero vector
    assert zero_frame_videos(vectors, np.arange(3)).tolist() == [2]
    feats[:, :, 0] = 0.0  # a dimension that is always zero is no zero frame
    feats[[1, 4, 6]] = 1.0
    assert zero_frame_videos(feats, np.arange(7)).tolist() == []


def test_nonfinite_logits_through_a_pair_table_are_caught():
    classes, manifest = _manifest(episodes=200)
    feats = torch.randn(len(classes), 4, 8, generator=torch.Generator().manual_seed(1))
    feats[int(manifest.query[0, 0])] = 1e30  # finite, but its squared distances overflow
    head = fb.create_method("protonet", feature_dim=8, seq_len=4, metric="sqeuclidean")
    assert head.pairwise(1)  # 30 videos: the pair-table path
    with pytest.raises(NonFiniteLogitsError, match="episode 0 query 0"):
        fb.evaluate(head, feats, manifest, progress=False)


def test_nonfinite_features_are_caught_before_any_method_sees_them():
    classes, manifest = _manifest(episodes=200)
    feats = torch.randn(len(classes), 4, 8, generator=torch.Generator().manual_seed(1))
    bad = int(manifest.query[0, 0])
    feats[bad] = float("nan")
    head = fb.create_method("protonet", feature_dim=8, seq_len=4)
    with pytest.raises(NonFiniteFeaturesError, match=rf"pool index {bad}\)"):
        fb.evaluate(head, feats, manifest, progress=False)


class NaNLoss(FewShotMethod):
    method_name = "nan-loss"

    def __init__(self, **kw):
        super().__init__(**kw)
        self.w = torch.nn.Parameter(torch.ones(()))

    def encode(self, features):
        return features.mean(1) * self.w

    def match(self, support, support_labels, query, way, **_):
        return MethodOutput(query[..., :way] * 0, {"aux": self.w * float("nan")})

    def training_stages(self):
        return [TrainingStage("main", lambda: [self.w], lambda b: self(b).losses)]


def test_nonfinite_loss_stops_training_naming_step_and_term(tmp_path):
    data = provider("toy")
    recipe = frozen_recipe("protonet", {"steps": 3, "adapter": "none", "val_episodes": 0})
    with pytest.raises(NonFiniteLossError, match=r"stage 'main' step 1: aux=nan"):
        train(NaNLoss(feature_dim=16, seq_len=4), data.splits["train"], None, recipe)


class NaNGradient(NaNLoss):
    """A finite loss whose gradient is NaN at its 2nd step (``sqrt`` at 0, times 0)."""

    method_name = "nan-gradient"
    calls = 0

    def match(self, support, support_labels, query, way, **_):
        type(self).calls += 1
        aux = (self.w - 1) ** 2 + (0 * torch.sqrt(self.w * 0) if self.calls == 2 else 0)
        return MethodOutput(query[..., :way] * 0, {"aux": aux})


@pytest.mark.parametrize("grad_clip", [0.0, 1.0])
def test_a_nonfinite_gradient_stops_training_before_the_weights_take_it(tmp_path, grad_clip):
    """Only the loss was checked: a NaN gradient under a finite loss went into the weights,
    and a last-step one was saved as the model (blamed on the method at test time)."""
    from fsarbench.guards import NonFiniteGradientError

    data = provider("toy")
    recipe = frozen_recipe(
        "protonet", {"steps": 2, "adapter": "none", "val_episodes": 0, "grad_clip": grad_clip}
    )
    method = NaNGradient(feature_dim=16, seq_len=4)
    NaNGradient.calls = 0
    with pytest.raises(NonFiniteGradientError, match=r"stage 'main' step 2 \(a finite loss"):
        train(method, data.splits["train"], None, recipe, out_dir=tmp_path, progress=False)
    assert torch.isfinite(method.w).all()
    assert not (tmp_path / "best.pt").exists()


def test_training_refuses_nonfinite_input_frames():
    """Training read its episodes' features unchecked: NaN inputs trained on until the loss
    went NaN, and a method whose loss masks them trained on them silently."""
    data = provider("toy")
    train_split = data.splits["train"]
    feats = train_split.store.features.clone()
    feats[3, 1] = float("nan")
    broken = type(train_split)(fb.InMemoryFeatureStore(feats), train_split.classes, "toy")
    recipe = frozen_recipe("otam", {"steps": 30, "adapter": "none", "val_episodes": 0})
    method = fb.create_method("otam", feature_dim=feats.shape[-1], seq_len=feats.shape[-2])
    with pytest.raises(NonFiniteFeaturesError, match=r"pool index 3\b"):
        train(method, broken, None, recipe, progress=False)


class NaNWhileValidating(NaNForSomeQueries):
    """Trains with a finite loss; its logits are NaN for some (validation) queries."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self.w = torch.nn.Parameter(torch.ones(()))

    def training_stages(self):
        return [TrainingStage("main", lambda: [self.w], lambda b: {"w": (self.w - 1) ** 2})]


def test_nonfinite_logits_while_validating_name_the_val_split_not_the_test_policy(monkeypatch):
    """NaN validation logits gave the test-time advice 'pass --nonfinite count_wrong', which
    a run already given it could not follow, and episode numbers read as test episodes."""
    _skip_contract(monkeypatch)  # the evaluator's own NaN guard is under test
    data = provider("toy")
    recipe = frozen_recipe("protonet", {"steps": 2, "adapter": "none", "val_episodes": 20})
    with pytest.raises(NonFiniteLogitsError) as err:
        train(
            NaNWhileValidating(feature_dim=16, seq_len=4),
            data.splits["train"],
            data.splits["val"],
            recipe,
            progress=False,
        )
    message = str(err.value)
    assert message.startswith("while validating (val split episodes, which choose the")
    assert "--nonfinite applies to test episodes only" in message
    assert "or pass --nonfinite count_wrong" not in message


CELLS = [Cell("protonet", "toy", 5, 1, label="protonet")]


def _count_evaluations(monkeypatch) -> dict:
    count = {"n": 0}
    original = runner_mod.evaluate

    def counting(*a, **k):
        count["n"] += 1
        return original(*a, **k)

    monkeypatch.setattr(runner_mod, "evaluate", counting)
    return count


def test_changed_method_code_reruns_the_cell_and_says_so(tmp_path, monkeypatch, caplog):
    first = run_cells(CELLS, provider, RunOptions(tmp_path, **OPTS))[0]
    assert first.code_digest and first.provenance["code"]["packages"]["fsarbench_baselines"]
    count = _count_evaluations(monkeypatch)
    run_cells(CELLS, provider, RunOptions(tmp_path, **OPTS))
    assert count["n"] == 0  # same code: reused
    real = provenance.package_digest
    monkeypatch.setattr(
        runner_mod,
        "code_parts",
        lambda m: {"harness": "h", "packages": {p: real(p) + "x" for p in ["fsarbench_baselines"]}},
    )
    second = run_cells(CELLS, provider, RunOptions(tmp_path, **OPTS))[0]
    assert count["n"] == 1 and second.code_digest != first.code_digest
    assert "re-running" in caplog.text and "code.packages.fsarbench_baselines" in caplog.text
    assert [r.code_digest for r in fb.load_records(tmp_path)] == [second.code_digest]


def test_reuse_stale_accepts_and_records_it(tmp_path, monkeypatch):
    run_cells(CELLS, provider, RunOptions(tmp_path, **OPTS))
    monkeypatch.setattr(runner_mod, "code_parts", lambda m: {"harness": "changed"})
    count = _count_evaluations(monkeypatch)
    rec = run_cells(CELLS, provider, RunOptions(tmp_path, reuse_stale=True, **OPTS))[0]
    assert count["n"] == 0
    assert any(d.startswith("code.harness") for d in rec.stale_accepted)
    stored = json.loads(next((tmp_path / "records").glob("*.json")).read_text())
    assert stored["stale_accepted"] == rec.stale_accepted


def test_changed_default_supersedes_the_old_record(tmp_path):
    run_cells(CELLS, provider, RunOptions(tmp_path, **OPTS))
    changed = {**OPTS, "recipe_overrides": {**OPTS["recipe_overrides"], "lr": 5e-4}}
    run_cells(CELLS, provider, RunOptions(tmp_path, **changed))
    records = fb.load_records(tmp_path)
    assert len(records) == 1 and records[0].recipe["lr"] == 5e-4
    summary = (tmp_path / "summary.csv").read_text().strip().splitlines()
    assert len(summary) == 2  # header + the one current row
    assert len(list((tmp_path / "superseded").glob("*.json"))) == 1


def test_a_reused_cell_supersedes_a_record_of_its_setting_left_by_another_config(tmp_path):
    import shutil

    run_cells(CELLS, provider, RunOptions(tmp_path / "a", **OPTS))
    changed = {**OPTS, "recipe_overrides": {**OPTS["recipe_overrides"], "lr": 5e-4}}
    run_cells(CELLS, provider, RunOptions(tmp_path / "b", **changed))
    # both configs' records in one folder (concurrent runs, or a kill before superseding)
    for record in (tmp_path / "b" / "records").iterdir():
        shutil.copy(record, tmp_path / "a" / "records")
    assert len(fb.load_records(tmp_path / "a")) == 2
    run_cells(CELLS, provider, RunOptions(tmp_path / "a", **changed))  # reuses its record
    assert [r.recipe["lr"] for r in fb.load_records(tmp_path / "a")] == [5e-4]


def test_a_record_in_a_shard_folder_is_superseded_too_and_summarised_once(tmp_path):
    import shutil

    run_cells(CELLS, provider, RunOptions(tmp_path / "ref", **OPTS))
    shutil.copytree(tmp_path / "ref", tmp_path / "out" / "shard0")  # --out out/shard$i
    fb.write_summary(tmp_path / "out")
    assert len((tmp_path / "out" / "summary.csv").read_text().strip().splitlines()) == 2
    changed = {**OPTS, "recipe_overrides": {**OPTS["recipe_overrides"], "lr": 5e-4}}
    run_cells(CELLS, provider, RunOptions(tmp_path / "out", **changed))
    records = fb.load_records(tmp_path / "out")
    assert [r.recipe["lr"] for r in records] == [5e-4]
    assert len(list((tmp_path / "out" / "superseded").glob("*.json"))) == 1


def test_two_concurrent_runs_with_other_configs_leave_one_number(tmp_path, monkeypatch):
    """replace_older looked only at the records present when the runner started: two runs
    with other recipes writing into one --out at once left two numbers for one setting."""
    run_cells(CELLS, provider, RunOptions(tmp_path, **OPTS))
    monkeypatch.setattr(runner_mod, "load_records", lambda *a, **k: [])  # started before it
    changed = {**OPTS, "recipe_overrides": {**OPTS["recipe_overrides"], "lr": 5e-4}}
    run_cells(CELLS, provider, RunOptions(tmp_path, **changed))
    assert [r.recipe["lr"] for r in fb.load_records(tmp_path)] == [5e-4]
    assert len(list((tmp_path / "superseded").glob("*.json"))) == 1


def test_unreadable_record_files_are_left_out_and_their_cell_runs_again(
    tmp_path, monkeypatch, caplog
):
    first = run_cells(CELLS, provider, RunOptions(tmp_path, **OPTS))[0]
    queries = tmp_path / "records" / f"{first.cell}.queries.csv.gz"
    queries.write_bytes(queries.read_bytes()[:40])  # truncated
    count = _count_evaluations(monkeypatch)
    run_cells(CELLS, provider, RunOptions(tmp_path, **OPTS))
    assert count["n"] == 1 and "per-query rows are missing, unreadable" in caplog.text
    record = tmp_path / "records" / f"{first.cell}.json"
    record.write_text(record.read_text()[:300])  # truncated JSON
    assert fb.load_records(tmp_path) == [] and f"record {record} cannot be read" in caplog.text
    run_cells(CELLS, provider, RunOptions(tmp_path, **OPTS))
    assert count["n"] == 2 and len(fb.load_records(tmp_path)) == 1


def test_a_hand_edited_accuracy_is_not_served_and_a_rejected_record_warns_once(
    tmp_path, monkeypatch, caplog
):
    first = run_cells(CELLS, provider, RunOptions(tmp_path, **OPTS))[0]
    record = tmp_path / "records" / f"{first.cell}.json"
    data = json.loads(record.read_text())
    record.write_text(json.dumps({**data, "accuracy": data["accuracy"] + 10}))
    count = _count_evaluations(monkeypatch)
    again = run_cells(CELLS, provider, RunOptions(tmp_path, **OPTS))[0]
    assert count["n"] == 1 and again.accuracy == pytest.approx(first.accuracy)
    assert caplog.text.count("re-running") == 1  # not once more from the locked re-check


def test_a_record_made_as_asked_again_is_no_longer_marked_stale(tmp_path, monkeypatch):
    run_cells(CELLS, provider, RunOptions(tmp_path, **OPTS))
    real = runner_mod.code_parts
    monkeypatch.setattr(runner_mod, "code_parts", lambda m: {"harness": "changed"})
    run_cells(CELLS, provider, RunOptions(tmp_path, reuse_stale=True, **OPTS))
    assert fb.load_records(tmp_path)[0].stale_accepted
    monkeypatch.setattr(runner_mod, "code_parts", real)
    run_cells(CELLS, provider, RunOptions(tmp_path, **OPTS))
    assert fb.load_records(tmp_path)[0].stale_accepted == []


def test_more_episodes_reruns_instead_of_serving_the_smaller_record(tmp_path):
    run_cells(CELLS, provider, RunOptions(tmp_path, **OPTS))
    rec = run_cells(CELLS, provider, RunOptions(tmp_path, **{**OPTS, "episodes": 300}))[0]
    assert rec.episodes == 300 and len(fb.load_records(tmp_path)) == 1


def test_partial_evaluation_of_other_code_is_discarded(tmp_path):
    classes, manifest = _manifest()
    feats = torch.randn(len(classes), 4, 8, generator=torch.Generator().manual_seed(0))
    head = fb.create_method("protonet", feature_dim=8, seq_len=4)
    path = tmp_path / "p.npz"
    fb.evaluate(head, feats, manifest, progress=False, partial_path=path, partial_tag="a")
    data = dict(np.load(path))
    data["predicted"] = np.zeros_like(data["predicted"])  # a different "result" under tag a
    np.savez(path, **data)
    reused = fb.evaluate(head, feats, manifest, progress=False, partial_path=path, partial_tag="a")
    fresh = fb.evaluate(head, feats, manifest, progress=False, partial_path=path, partial_tag="b")
    assert (reused.records["predicted_label"] == 0).all()
    assert not (fresh.records["predicted_label"] == 0).all()


def test_train_refuses_another_runs_folder_naming_fields(tmp_path, monkeypatch, capsys):
    import fsarbench.experiments.features as features_mod

    monkeypatch.setattr(features_mod, "FrozenFeatureProvider", FakeProvider)
    out = str(tmp_path / "run")
    recipe = [a for a in ARGS if a != "--no-progress"]  # "--recipe", KEY=VALUE ...
    base = ["train", "protonet", "--dataset", "toy", "--out", out, "--no-progress"]
    assert main([*base, *recipe]) == 0
    assert main([*base, *recipe]) == 0  # the same run: resumed (finished), not refused
    other = [*base, "--seed", "3", *recipe, "lr=0.01"]
    assert main(other) == 2
    err = capsys.readouterr().err
    assert "recipe.lr: 0.001 -> 0.01" in err and "seed: 0 -> 3" in err and "--overwrite" in err
    assert main([*other[: -len(recipe) - 1], "--overwrite", *recipe, "lr=0.01"]) == 0
    ckpt = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    assert ckpt["fingerprint"]["recipe"]["lr"] == 0.01 and ckpt["fingerprint"]["seed"] == 3


def test_resume_without_fingerprint_is_refused(tmp_path):
    data = provider("toy")
    recipe = frozen_recipe("protonet", {"steps": 2, "val_episodes": 0})
    head = fb.create_method("protonet", feature_dim=16, seq_len=4)
    train(head, data.splits["train"], None, recipe, out_dir=tmp_path)
    last = torch.load(tmp_path / "last.pt", weights_only=False)
    del last["fingerprint"]  # an older run: no print
    torch.save(last, tmp_path / "last.pt")
    with pytest.raises(RunMismatchError, match="fingerprint|method: None -> 'protonet'"):
        train(
            head,
            data.splits["train"],
            None,
            recipe,
            out_dir=tmp_path,
            fingerprint={"method": "protonet"},
        )


def test_code_digest_ignores_docstrings_and_comments(tmp_path):
    a, b, c = tmp_path / "a.py", tmp_path / "b.py", tmp_path / "c.py"
    a.write_text('"""Doc."""\nx = 1  # one\n')
    b.write_text('"""Other doc."""\n\nx = 1\n')
    c.write_text("x = 2\n")
    digest = [provenance.source_digest([p], tmp_path.parent) for p in (a, b, c)]
    # names differ per file, so compare contents under one name
    for p in (b, c):
        p.rename(tmp_path / "x.py")
        digest.append(provenance.source_digest([tmp_path / "x.py"], tmp_path))
        (tmp_path / "x.py").unlink()
    a.rename(tmp_path / "x.py")
    ref = provenance.source_digest([tmp_path / "x.py"], tmp_path)
    assert digest[3] == ref and digest[4] != ref


_MESSAGES = """
import logging
import warnings
log = logging.getLogger(__name__)
def f(x):
    if x < 0:
        raise ValueError(f"MSG {x}")
    log.warning("%s: MSG", x)
    warnings.warn("MSG")
    return x * FACTOR
"""


def _message_free_digest(tmp_path, msg: str, factor: str) -> str:
    f = tmp_path / "m.py"
    f.write_text(_MESSAGES.replace("MSG", msg).replace("FACTOR", factor))
    return provenance.source_digest([f], tmp_path, messages=False)


def test_message_free_digest_ignores_errors_and_log_lines_not_code(tmp_path):
    ref = _message_free_digest(tmp_path, "negative", "2")
    assert _message_free_digest(tmp_path, "x must be positive; try --root", "2") == ref
    assert _message_free_digest(tmp_path, "negative", "3") != ref
    # with messages the reworded error is other code
    f = tmp_path / "m.py"
    f.write_text(_MESSAGES.replace("MSG", "negative").replace("FACTOR", "2"))
    plain = provenance.source_digest([f], tmp_path)
    f.write_text(_MESSAGES.replace("MSG", "other").replace("FACTOR", "2"))
    assert provenance.source_digest([f], tmp_path) != plain


def test_harness_and_pipeline_digests_keep_what_records_carried():
    """The message-free digests of the code released with :data:`CARRIED_DIGESTS` map to the
    digests its records, models and caches carry; nothing else is mapped."""
    carried = provenance.CARRIED_DIGESTS
    assert all(len(k) == 16 and len(v) == 16 and k != v for k, v in carried.items())
    root = provenance._package_root()
    for modules, digest in (
        (provenance.HARNESS_NUMERIC, provenance.harness_digest()),
        (provenance.PIPELINE_MODULES, provenance.pipeline_digest()),
    ):
        free = provenance.source_digest([root / m for m in modules], root, messages=False)
        assert digest == carried.get(free, free)


#: The digests the current records, models and caches carry. A change to the harness or the
#: pipeline either computes every number as before (then add its message-free digest to
#: CARRIED_DIGESTS, and nothing re-runs) or changes this on purpose (users' folders re-run).
RELEASED_DIGESTS = {"harness": "2815c7d05867b240", "pipeline": "4ce1508a4570f818"}


def test_the_code_carries_the_released_digests():
    """The mapping test above holds for any map: a session-31 entry keyed by a digest the
    committed code no longer had carried nothing, and every user's records and models were
    made again, while the change log said nothing re-runs."""
    now = {"harness": provenance.harness_digest(), "pipeline": provenance.pipeline_digest()}
    assert now == RELEASED_DIGESTS
    packages = {p: provenance.package_digest(p) for p in RELEASED_PACKAGE_DIGESTS}
    assert packages == RELEASED_PACKAGE_DIGESTS


#: The built-in method packages' digests their records and models carry (every method of a
#: package shares it): a change either carries its digest (CARRIED_DIGESTS, nothing re-runs;
#: a refusal of bad settings, as session 36's clip-fsar prompt check) or changes this (session
#: 38: OTAM's frame products under half-precision autocast, so its records re-run once).
RELEASED_PACKAGE_DIGESTS = {
    "fsarbench_baselines": "437e3bf88f3ef7ee",
    "fsarbench_sgtm": "4412656b741a14ce",
}


@pytest.fixture(scope="module")
def tiny_synth(tmp_path_factory):
    from finetune_fixtures import TINY_SYNTH

    from fsarbench.data.datasets import get_dataset

    ds = get_dataset("synth", root=tmp_path_factory.mktemp("synth"), config=TINY_SYNTH)
    ds.videos("test")
    return ds


def test_finetune_split_records_missing_and_unreadable_videos(tiny_synth):
    from fsarbench.training.clip_data import UnusableSplitError, usable_split

    records = tiny_synth.videos("test")
    missing, broken = records[0], records[5]
    missing.path.rename(missing.path.with_suffix(".gone"))
    original = broken.path.read_bytes()
    broken.path.write_bytes(b"not a video")
    try:
        kw = dict(dataset="synth", flip_ok=True, way=3, shot=1, queries=1)
        split, skipped = usable_split(records, "test", **kw)
        assert len(split.records) == len(records) - 2
        assert skipped[0] == f"test/{missing.video_id}: missing"
        assert skipped[1].startswith(f"test/{broken.video_id}: ") and len(skipped[1]) > 20
        with pytest.raises(UnusableSplitError, match="policy 'error'"):
            usable_split(records, "test", **kw, on_bad="error")
        with pytest.raises(UnusableSplitError, match="cannot serve 40-way") as err:
            usable_split(records, "test", **{**kw, "way": 40})
        assert "leaving out 1 missing and 1 unreadable videos:" in str(err.value)
        # clips longer than every video: the message says so, and what to change
        with pytest.raises(UnusableSplitError) as err:
            usable_split(records, "test", **kw, min_frames=1000)
        assert re.search(
            f"leaving out 1 missing, 1 unreadable and {len(records) - 2} too short videos "
            r"\(at most [1-9]\d* frames; clips need 1000: lower --option frames",
            str(err.value),
        ), str(err.value)
    finally:
        missing.path.with_suffix(".gone").rename(missing.path)
        broken.path.write_bytes(original)


def test_finetune_clips_fail_loudly_instead_of_zeros(tiny_synth):
    from fsarbench.data.decode import VideoDecodeError
    from fsarbench.training.clip_data import ClipSplit, ClipStore
    from fsarbench.training.finetune_recipe import FinetuneOptions

    records = tiny_synth.videos("test")
    broken = records[2]
    original = broken.path.read_bytes()
    broken.path.write_bytes(b"junk")
    try:
        store = ClipStore(ClipSplit(records, "synth"), FinetuneOptions(frames=2, workers=0))
        with pytest.raises(VideoDecodeError):
            store.get(np.array([2]))
    finally:
        broken.path.write_bytes(original)


def test_the_code_a_record_names_covers_the_run_harness_and_the_finetune_pipeline():
    """A change to how a run makes models (experiments/), to autocast or to the distributed
    evaluator makes records stale; so does a change to decoding/transforms for a model that
    decodes videos itself (the finetune track), which has no feature-cache key to carry it."""
    from fsarbench.training.finetune import build_video_method
    from fsarbench.training.finetune_recipe import FinetuneOptions

    root = Path(provenance.__file__).parent
    for entry in ("experiments/tracks.py", "experiments/runner.py", "autocast.py", "distributed"):
        assert entry in provenance.HARNESS_NUMERIC and (root / entry).exists()
    frozen = fb.create_method("protonet", feature_dim=8, seq_len=4)
    assert "pipeline" not in provenance.code_parts(frozen)
    options = FinetuneOptions(backbone="resnet18", weights="none", crop=32, resize=36)
    video = build_video_method("protonet", options, torch.device("cpu"), seed=0)
    parts = provenance.code_parts(video)
    assert parts["pipeline"] == provenance.pipeline_digest()
    assert provenance.stale_code({**parts, "pipeline": "0" * 16}) == ["pipeline"]
    assert provenance.stale_code(parts) == []


def test_the_harness_digest_covers_a_records_statistics_and_not_the_comparisons():
    """``stats`` as a whole was hashed: a change to the paired bootstrap, which no record
    stores, made every record and model stale and retrained all of ``run --all``."""
    import ast

    root = Path(provenance.__file__).parent
    files = provenance._python_files([root / m for m in provenance.HARNESS_NUMERIC])
    hashed = {str(f.relative_to(root)) for f in files}
    for module in ("evaluate.py", "results.py"):
        tree = ast.parse((root / module).read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(
                "fsarbench.stats"
            ):
                assert node.module.replace("fsarbench.", "").replace(".", "/") + ".py" in hashed
    assert "stats/intervals.py" in hashed
    assert not {"stats/paired.py", "stats/hierarchical.py", "stats/multiple.py"} & hashed


def test_the_plan_counts_the_steps_of_every_training_stage():
    from types import SimpleNamespace

    from fsarbench.experiments.plan import _frames

    recipe = frozen_recipe("sgtm-otam", dataset="synth")
    sgtm = fb.create_method("sgtm-otam", feature_dim=64, seq_len=8, num_train_classes=10)
    plain = fb.create_method("otam", feature_dim=64, seq_len=8)
    unit = SimpleNamespace(track="frozen")
    assert _frames(unit, recipe, None, plain)[0] == recipe.steps
    assert _frames(unit, recipe, None, sgtm)[0] == recipe.steps + round(recipe.steps * 0.2 / 0.8)


def test_selected_weights_missing_or_replaced_are_never_evaluated(tmp_path, monkeypatch, capsys):
    """best.pt was loaded unchecked on resume: another run's copy printed its number under
    this run's settings, and a deleted one was replaced by the last step's weights."""
    import shutil

    import fsarbench.experiments.features as features_mod

    monkeypatch.setattr(features_mod, "FrozenFeatureProvider", FakeProvider)
    recipe = [a for a in ARGS if a != "--no-progress"]

    def train_into(name: str, *extra: str) -> int:
        out = str(tmp_path / name)
        return main(["train", "protonet", "--dataset", "toy", "--out", out, *extra, *recipe])

    assert train_into("a") == 0 and train_into("b", "--seed", "3") == 0
    shutil.copyfile(tmp_path / "b" / "best.pt", tmp_path / "a" / "best.pt")
    capsys.readouterr()
    assert train_into("a") == 2
    assert "best.pt is not the step" in capsys.readouterr().err
    (tmp_path / "a" / "best.pt").unlink()
    assert train_into("a") == 2
    assert "best.pt is missing, but its run selected step" in capsys.readouterr().err
    (tmp_path / "a" / "best.pt").write_bytes(b"truncated")
    assert train_into("a") == 2
    assert "the selected weights cannot be read" in capsys.readouterr().err


def test_a_run_retrains_a_model_whose_selected_weights_were_replaced(tmp_path, caplog):
    """The runner trains such a unit again (a finished unit's best.pt is what it evaluates)."""
    import logging

    first = run_cells(CELLS, provider, RunOptions(tmp_path, **OPTS))[0]
    (best,) = tmp_path.glob("models/*/best.pt")
    best.write_bytes(b"truncated")
    with caplog.at_level(logging.WARNING):
        second = run_cells(CELLS, provider, RunOptions(tmp_path, **{**OPTS, "episodes": 250}))[0]
    assert "retraining" in caplog.text and "cannot be read" in caplog.text
    assert (first.episodes, second.episodes) == (200, 250)


def test_a_decoding_change_marks_frozen_records_stale_where_shown(tmp_path, monkeypatch):
    """Frozen records named no pipeline code (their caches did): after a change to decoding
    or transforms, tables and the leaderboard showed old records unmarked beside new ones."""
    from fsarbench import results

    (record,) = run_cells(CELLS, provider, RunOptions(tmp_path, **OPTS))
    assert record.provenance["code"]["pipeline"] == provenance.pipeline_digest()
    assert results.stale_reasons(record) == []
    monkeypatch.setattr(provenance, "pipeline_digest", lambda: "another pipeline")
    assert results.stale_reasons(record) == ["code:pipeline"]


def test_frozen_records_say_why_each_video_was_left_out(tmp_path, monkeypatch):
    """Frozen-track records named the videos left out without the extraction's error (the
    finetune track's gave it); the cause is listed, and knowing it re-runs nothing."""
    import dataclasses

    def damaged(causes: dict[str, str]):
        def get(name: str, protocol: str = "seed"):
            return dataclasses.replace(provider(name), skipped=["test/v9"], causes=causes)

        return get

    (first,) = run_cells(CELLS, damaged({}), RunOptions(tmp_path, **OPTS))
    assert first.skipped_videos == ["test/v9"]
    count = _count_evaluations(monkeypatch)
    (again,) = run_cells(
        CELLS, damaged({"test/v9": "corrupt: moov atom not found"}), RunOptions(tmp_path, **OPTS)
    )
    assert count["n"] == 0 and again.cell == first.cell  # the same model and record
    (fresh,) = run_cells(
        CELLS,
        damaged({"test/v9": "corrupt: moov atom not found"}),
        RunOptions(tmp_path / "fresh", **OPTS),
    )
    assert fresh.skipped_videos == ["test/v9: corrupt: moov atom not found"]
    assert (fresh.accuracy, fresh.cell, fresh.config_hash) == (
        first.accuracy,
        first.cell,
        first.config_hash,
    )


def test_a_run_says_how_much_of_a_dataset_it_left_out(tmp_path, caplog):
    """A dataset with 94% of its videos missing printed 100.00 ± 0.00 with one INFO line."""
    import dataclasses
    import logging

    def mostly_missing(name: str, protocol: str = "seed"):
        data = provider(name)
        lost = [f"test/gone{i}" for i in range(90)] + ["train/gone"]
        return dataclasses.replace(data, skipped=lost)

    with caplog.at_level(logging.WARNING):
        run_cells(CELLS, mostly_missing, RunOptions(tmp_path, **OPTS))
    assert "toy: left out 91 listed video(s) (train 1 of 41, test 90 of 120)" in caplog.text


@pytest.mark.parametrize("world", [1, 2])
def test_a_recorded_eval_removes_its_partial_files_of_other_process_counts(tmp_path, world):
    """Partial files of a resume under another world size, and a killed rank's cut write,
    stayed in OUT/partial after the evaluation was recorded."""
    import os
    import time

    from fsarbench.cli.eval_cmd import _remove_other_layouts

    folder = tmp_path / "partial"
    folder.mkdir()
    partial = folder / "eval-abc.npz"
    names = ["eval-abc.npz", "eval-abc.rank0of2.npz", "eval-abc.rank1of2.npz"]
    names += ["eval-abc.rank2of3.npz", "eval-other.npz", ".eval-abc.rank1of2.npz.x1.tmp"]
    for name in names:
        (folder / name).write_bytes(b"x")
    old = time.time() - 3600
    os.utime(folder / ".eval-abc.rank1of2.npz.x1.tmp", (old, old))
    _remove_other_layouts(partial, world)
    left = sorted(p.name for p in folder.iterdir())
    own = ["eval-abc.npz"] if world == 1 else ["eval-abc.rank0of2.npz", "eval-abc.rank1of2.npz"]
    assert left == sorted([*own, "eval-other.npz"])  # another evaluation's file is kept


_FROZEN_PLUGIN = '''
import fsarbench as fb


@fb.register_method("lab-frozen")
class LabFrozen(fb.FewShotMethod):
    """A user's head whose file is edited while a command runs."""
'''


def test_code_digests_are_those_of_the_code_at_the_command_s_start(tmp_path, monkeypatch):
    """Digests were computed at the first record (after hours of extraction): a method
    edited meanwhile had its numbers, computed by the code already imported, labelled with
    the edited code's digest, and the next run reused them as the edited code's."""
    import argparse
    import sys

    from fsarbench import registry
    from fsarbench.cli.main import _run_command

    (tmp_path / "lab_frozen_pkg.py").write_text(_FROZEN_PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path))
    registry.list_methods()
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    monkeypatch.delitem(sys.modules, "lab_frozen_pkg", raising=False)
    __import__("lab_frozen_pkg")
    provenance.package_digest.cache_clear()
    before = provenance.package_digest("lab_frozen_pkg")
    provenance.package_digest.cache_clear()
    seen = {}

    def command(args):  # the edit lands while the command extracts
        path = tmp_path / "lab_frozen_pkg.py"
        path.write_text(path.read_text() + "\n\ndef helper():\n    return 2\n")
        seen["digest"] = provenance.package_digest("lab_frozen_pkg")
        return 0

    try:
        assert _run_command(argparse.Namespace(command="eval", func=command, verbose=False)) == 0
        assert seen["digest"] == before
    finally:
        provenance.package_digest.cache_clear()
    assert provenance.package_digest("lab_frozen_pkg") != before  # a later command sees the edit
    provenance.package_digest.cache_clear()
