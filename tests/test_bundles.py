"""Result bundles: bundle -> verify -> leaderboard --add round trip on a tiny synth, and every
kind of tampering refused with a message naming what differs."""

from __future__ import annotations

import dataclasses
import io
import json
import shutil
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from data_fixtures import require_shared_splits

import fsarbench as fb
from fsarbench.bundles import (
    BundleDataMissingError,
    BundleError,
    BundleFormatError,
    BundleVerificationError,
    verify_bundle,
)
from fsarbench.bundles.format import bundle_members, pack_bundle, write_bundle
from fsarbench.bundles.outside import add_bundle
from fsarbench.bundles.pools import official_pool
from fsarbench.cli.main import main
from fsarbench.data.datasets import get_dataset
from fsarbench.data.synth import SynthConfig, SynthDataset
from fsarbench.episodes import make_manifest
from fsarbench.evaluate import summarise_predictions
from fsarbench.experiments.cells import Cell
from fsarbench.experiments.runner import DatasetFeatures, RunOptions, run_cells
from fsarbench.report.published import load_table
from fsarbench.report.records import load_entries
from fsarbench.report.render import render
from fsarbench.report.tables import build_table
from fsarbench.results import make_record, save_result
from fsarbench.training import SplitFeatures

TINY = SynthConfig(videos_per_class=4, size=16, min_frames=4, max_frames=5)
OPTS = dict(
    episodes=120, progress=False, recipe_overrides={"steps": 2, "val_every": 2, "val_episodes": 8}
)
SETTINGS = [(5, 1), (5, 2)]


def _provider(ds: SynthDataset, skipped: str) -> Callable[[str], DatasetFeatures]:
    """Features of the tiny synth as ``run`` sees them: class-centred random features, the
    synth's split md5s, and one test video left out (as a failed extraction is)."""

    def provider(name: str) -> DatasetFeatures:
        g = torch.Generator().manual_seed(3)
        splits, names = {}, {}
        for split in ("train", "val", "test"):
            videos = [v for v in ds.videos(split) if f"{split}/{v.video_id}" != skipped]
            classes = np.array([v.class_index for v in videos])
            centres = torch.randn(int(classes.max()) + 1, 8, generator=g)
            f = centres[torch.as_tensor(classes)][:, None].expand(-1, 3, -1)
            f = (f + 1.5 * torch.randn(len(classes), 3, 8, generator=g)).contiguous()
            splits[split] = SplitFeatures(fb.InMemoryFeatureStore(f), classes, ds.variant)
            names[split] = ds.class_names(split)
        info = {"backbone": "toy", "split_md5": ds.split_md5s()}
        return DatasetFeatures(name, ds.variant, splits, names, info, [skipped])

    return provider


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """A lab's runs folder (otam) and ours (protonet), same settings, same tiny synth."""
    root = tmp_path_factory.mktemp("bundles")
    ds = SynthDataset(root=root / "synth", config=TINY)
    provider = _provider(ds, f"test/{ds.videos('test')[0].video_id}")
    out = {"synth": root / "synth"}
    for name, method in (("lab", "otam"), ("ours", "protonet")):
        cells = [Cell(method, "synth", w, s) for w, s in SETTINGS]
        run_cells(cells, provider, RunOptions(root / name, **OPTS))
        out[name] = root / name
    return out


@pytest.fixture(autouse=True)
def synth_cache(runs, monkeypatch):
    monkeypatch.setenv("FSAR_SYNTH", str(runs["synth"]))


@pytest.fixture(scope="module")
def bundle(runs) -> Path:
    path = runs["lab"].parent / "otam.zip"
    assert main(["bundle", "--runs", str(runs["lab"]), "--method", "otam", "--out", str(path)]) == 0
    return path


def test_round_trip_verifies_and_ranks_as_outside(runs, bundle, tmp_path, capsys):
    assert main(["verify", str(bundle)]) == 0
    out = capsys.readouterr().out
    lab = pd.read_csv(runs["lab"] / "summary.csv")
    for _, row in lab.iterrows():  # every recorded number is printed as recomputed
        assert f"{row.accuracy:.2f} ± {row.ci95:.2f} recomputed from 120 episodes" in out
    assert out.count("1 test videos left out by its authors") == 2  # the fixture's one
    assert out.count("ok  otam: synth 5-way") == 2  # named: a variant's line looked alike
    assert out.count("-shot training seed 0 [") == 2  # not the episode seed, 0 for every seed
    assert "verified:" in out and "2 records of otam" in out

    ours = tmp_path / "ours"
    shutil.copytree(runs["ours"], ours)
    assert main(["leaderboard", "--runs", str(ours), "--add", str(bundle)]) == 0
    assert len(list((ours / "external" / "otam" / "records").glob("*.json"))) == 2
    md = (ours / "leaderboard.md").read_text()
    assert md.count("otam †outside") == 2 and "†outside: an outside result" in md
    board = pd.read_csv(ours / "leaderboard.csv")
    assert len(board) == 4 and set(board.method) == {"otam", "protonet"}
    assert board.set_index("method").outside.groupby(level=0).all().to_dict() == {
        "otam": True,
        "protonet": False,
    }
    # the outside rows carry the lab's numbers and were compared with ours (paired)
    lab_acc = dict(zip(zip(lab.way, lab.shot), lab.accuracy.round(2)))
    for _, row in board[board.method == "otam"].iterrows():
        assert row.accuracy == pytest.approx(lab_acc[(row.way, row.shot)])
    assert board.groupby(["way", "shot"]).diff_vs_leader.count().tolist() == [1, 1]


def test_paper_tables_leave_outside_results_out(runs, bundle, tmp_path):
    ours = tmp_path / "ours"
    shutil.copytree(runs["ours"], ours)
    add_bundle(ours, bundle)
    entries = load_entries(ours)
    assert {e.system: e.outside for e in entries} == {"otam †outside": True, "protonet": False}
    rows = render(build_table(load_table(1), entries, source="runs"), "csv", None)
    assert "protonet,run (synth)" in rows and "OTAM" not in rows  # not our OTAM reproduction


def _members(path: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as zf:
        return {n: zf.read(n) for n in zf.namelist() if n != "bundle.json"}


def _edit_record(field: str, change: Callable) -> Callable[[dict[str, bytes]], None]:
    def edit(members: dict[str, bytes]) -> None:
        name = sorted(n for n in members if n.startswith("records/"))[0]
        data = json.loads(members[name])
        data[field] = change(data[field])
        members[name] = json.dumps(data).encode()

    return edit


def _edit_queries(column: str, episode: int, query: int, change: Callable):
    def edit(members: dict[str, bytes]) -> None:
        name = sorted(n for n in members if n.startswith("queries/"))[0]
        with np.load(io.BytesIO(members[name])) as npz:
            cols = {k: npz[k].copy() for k in npz.files}
        row = np.flatnonzero((cols["episode"] == episode) & (cols["query"] == query))[0]
        cols[column][row] = change(cols[column][row])
        buf = io.BytesIO()
        np.savez_compressed(buf, **cols)
        members[name] = buf.getvalue()

    return edit


TAMPERING = {
    "accuracy": (
        _edit_record("accuracy", lambda a: a + 0.01),
        r"field accuracy: the predictions give \d+\.\d{6}, the record says",
    ),
    "ci95": (_edit_record("ci95", lambda c: c - 0.02), r"field ci95: the predictions give"),
    "prediction": (
        _edit_queries("predicted_label", 3, 0, lambda p: (p + 1) % 5),
        r"episode 3 query 0: field predicted_class: the predictions give",
    ),
    "query label": (
        _edit_queries("true_label", 4, 2, lambda t: (t + 1) % 5),
        r"episode 4 query 2: field true_label: manifest \d, bundle \d",
    ),
    "manifest hash": (
        _edit_record("manifest_hash", lambda h: "0" * 16),
        r"field manifest_hash: the official manifest's hash is [0-9a-f]{16}, the record says "
        r"0{16}",
    ),
    "skipped videos": (
        _edit_record("skipped_videos", lambda s: []),
        r"field manifest_hash: the official manifest's hash is",
    ),
    "episodes beyond the cap": (  # drew a billion episodes until memory ran out
        _edit_record("episodes", lambda e: 1_000_000_000),
        r"field episodes: 1000000000 is outside 1\.\.1000000",
    ),
    "episodes beyond the rows": (
        _edit_record("episodes", lambda e: 2 * e),
        r"per-query rows: its \d+ episodes x 5 way x \d+ queries are \d+ rows, the bundle has",
    ),
    "hyper-parameters": (  # the cell's name keeps its config hash: the hash must be its own
        _edit_record("hparams", lambda h: {**h, "temperature": 5.0}),
        r"field config_hash: its hyper-parameters, recipe, features, training seed and track "
        r"give [0-9a-f]+, the record says",
    ),
}


def _tampered(bundle: Path, tmp_path: Path, edit) -> Path:
    """``bundle`` with ``edit`` applied to its members, re-packed consistently (so only the
    numbers, not the checksums, can give the edit away)."""
    members = _members(bundle)
    edit(members)
    path = tmp_path / "tampered.zip"
    path.write_bytes(pack_bundle("otam", members))
    return path


def _system_tag(members: dict[str, bytes]) -> None:
    for name in [n for n in members if n.startswith("records/")]:
        data = json.loads(members[name])
        data["tags"] = {**data["tags"], "system": "protonet"}
        members[name] = json.dumps(data).encode()


def test_a_bundle_cannot_pose_as_or_pool_with_own_runs(bundle, runs, tmp_path):
    """A bundle's records tagged with another system's name, or an own run of the bundle's
    method after it was added: the outside entries stay apart from this folder's own."""
    posing = _tampered(bundle, tmp_path, _system_tag)
    ours = tmp_path / "ours"
    shutil.copytree(runs["ours"], ours)
    before = {(e.system, e.setting.shot): e.accuracy for e in load_entries(ours)}
    add_bundle(ours, posing)
    after = {(e.system, e.setting.shot): e.accuracy for e in load_entries(ours)}
    assert {k: v for k, v in after.items() if k[0] == "protonet"} == before
    assert {k[0] for k in after} == {"protonet", "otam †outside"}

    lab = tmp_path / "lab"  # the lab's own otam runs, then the bundle of them: not pooled
    shutil.copytree(runs["lab"], lab)
    shutil.copytree(ours / "external", lab / "external")
    entries = load_entries(lab)
    assert sorted((e.system, len(e.records)) for e in entries) == [
        ("otam", 1),
        ("otam", 1),
        ("otam †outside", 1),
        ("otam †outside", 1),
    ]


@pytest.mark.parametrize("case", sorted(TAMPERING))
def test_tampered_bundle_refused_naming_the_difference(case, bundle, runs, tmp_path, capsys):
    edit, pattern = TAMPERING[case]
    bad = _tampered(bundle, tmp_path, edit)
    with pytest.raises(BundleVerificationError, match=pattern) as err:
        verify_bundle(bad)
    assert err.value.differences
    assert all(d.startswith("otam__synth__frozen__5w") for d in err.value.differences)
    assert main(["verify", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "refused" in err
    assert "run with -v" not in err  # a named refusal, not a crash to trace
    ours = tmp_path / "ours"
    shutil.copytree(runs["ours"], ours)
    assert main(["leaderboard", "--runs", str(ours), "--add", str(bad)]) == 2
    assert not (ours / "external").exists()


def _truncated(bundle: Path, path: Path) -> None:
    path.write_bytes(bundle.read_bytes()[: bundle.stat().st_size // 2])


def _version_2(bundle: Path, path: Path) -> None:
    path.write_bytes(pack_bundle("otam", _members(bundle), version=2))


def _unlisted_edit(bundle: Path, path: Path) -> None:
    """A record edited in place, its checksum in the index left as it was."""
    with zipfile.ZipFile(bundle) as src, zipfile.ZipFile(path, "w") as dst:
        for name in src.namelist():
            data = src.read(name)
            if name.startswith("records/"):
                data = data.replace(b'"accuracy": ', b'"accuracy": 1')
            dst.writestr(name, data)


def _text_accuracy(bundle: Path, path: Path) -> None:
    members = _members(bundle)
    _edit_record("accuracy", str)(members)
    path.write_bytes(pack_bundle("otam", members))


@pytest.mark.parametrize(
    "make, pattern",
    [
        (_truncated, r"not a readable fsarbench bundle \(truncated or corrupt"),
        (_version_2, r"field version is 2, this fsarbench reads bundle format version 1"),
        (_unlisted_edit, r"member records/otam__.*\.json was changed after the bundle"),
        (_text_accuracy, r"not a result record: accuracy is '\d+\.\d+', not float"),
    ],
)
def test_corrupt_or_foreign_file_refused(make, pattern, bundle, tmp_path, capsys):
    bad = tmp_path / "bad.zip"
    make(bundle, bad)
    with pytest.raises(BundleFormatError, match=pattern):
        verify_bundle(bad)
    assert main(["verify", str(bad)]) == 2
    assert "error:" in capsys.readouterr().err


def test_add_refuses_a_name_clash(runs, bundle):
    with pytest.raises(BundleError, match="already has its own records of 'otam'"):
        add_bundle(runs["lab"], bundle)


def _other_manifest(data: dict) -> None:
    data["manifest_hash"] = "f" * 16  # as if our run had drawn other episodes


def _other_left_out_video(data: dict) -> None:
    data["skipped_videos"] = ["test/some_other_video: unreadable"]  # same classes: same hash


def _other_test_list(data: dict) -> None:
    data["features"]["split_md5"]["test"] = "e" * 32  # same class layout, other videos


@pytest.mark.parametrize(
    "edit, pattern",
    [
        (_other_manifest, r"manifest hash \w{16} vs f{16}"),
        (_other_left_out_video, r"left-out test videos \S+ vs some_other_video\)"),
        (_other_test_list, r"test list md5 \w{32} vs e{32}\)"),
    ],
)
def test_add_refuses_other_episodes(edit, pattern, runs, bundle, tmp_path):
    """Equal manifest hashes alone do not make episodes paired: a bundle that left out
    another test video, or was made on another test list, was accepted and paired."""
    ours = tmp_path / "ours"
    shutil.copytree(runs["ours"], ours)
    for path in sorted((ours / "records").glob("*.json")):
        data = json.loads(path.read_text())
        edit(data)
        path.write_text(json.dumps(data))
    with pytest.raises(BundleError, match=r"differ from those of protonet in this folder \("):
        add_bundle(ours, bundle)
    with pytest.raises(BundleError, match=pattern):
        add_bundle(ours, bundle)
    assert not (ours / "external").exists()


def test_adding_again_replaces_the_outside_records(runs, bundle, tmp_path):
    ours = tmp_path / "ours"
    shutil.copytree(runs["ours"], ours)
    for _ in range(2):
        folder = add_bundle(ours, bundle)
    records = fb.load_records(ours)
    assert sum(r.method == "otam" for r in records) == 2
    assert all(r.tags["outside"]["bundle"] == "otam.zip" for r in records if r.method == "otam")
    assert sorted(p.name for p in (ours / "external").iterdir()) == ["otam"]
    assert (folder / "otam.zip").read_bytes() == bundle.read_bytes()


def test_published_dataset_needs_its_split_list(runs, bundle, tmp_path):
    record = verify_bundle(bundle).records[0].record
    ucf = dataclasses.replace(record, dataset="ucf101", split_variant="ucf101")
    with pytest.raises(
        BundleDataMissingError, match=r"cannot verify .* ucf101 test list, and this machine"
    ) as err:
        official_pool(ucf, tmp_path)
    assert not isinstance(err.value, BundleVerificationError)  # says nothing of its numbers
    assert "--splits-dir" in str(err.value)


def test_synth_of_other_data_cannot_be_verified_here(runs, bundle, tmp_path, monkeypatch, capsys):
    """Without the lab's synth the bundle was 'refused: 1 difference(s) between its records
    and what their predictions give', with a refused bundle's exit status."""
    monkeypatch.setenv("FSAR_SYNTH", str(tmp_path))
    with pytest.raises(BundleDataMissingError, match="no generated synth under .* test md5"):
        verify_bundle(bundle)
    assert main(["verify", str(bundle)]) == 3
    err = capsys.readouterr().err
    assert "cannot verify" in err and "difference" not in err


def _ucf_bundle(lab: Path, splits: Path) -> Path:
    """A lab's bundle on UCF101's published test list (one video missing on their side):
    60%-correct predictions over the official 5-way 1-shot, 2-query manifest."""
    ds = get_dataset("ucf101", splits_dir=splits)
    split, names = ds.split("test"), ds.class_names("test")
    missing = split.entries[5].video_id
    classes = [names.index(e.class_name) for e in split.entries if e.video_id != missing]
    m = make_manifest(
        classes, way=5, shot=1, queries=2, episodes=40, seed=1, dataset=ds.variant,
        split="test", class_names=names,
    )  # fmt: skip
    rng = np.random.default_rng(0)
    wrong = rng.integers(0, 5, m.query.shape)
    predicted = np.where(rng.random(m.query.shape) < 0.6, m.query_labels, wrong)
    result = summarise_predictions(predicted, m, "t", 0.0)
    record = make_record(
        result,
        method="labnet",
        dataset="ucf101",
        split_variant=ds.variant,
        manifest=m,
        features={"split_md5": {"test": split.md5}},
        class_names=names,
        skipped_videos=[f"test/{missing}: missing"],
    )
    save_result(lab, record, result)
    return write_bundle(lab, "labnet")


def test_published_dataset_verifies_against_the_users_split_list(tmp_path, capsys):
    splits = require_shared_splits()
    path = _ucf_bundle(tmp_path / "lab", splits)
    (record,) = verify_bundle(path, splits_dir=splits).records
    assert record.record.accuracy == round(record.result.accuracy, 6)
    assert main(["verify", str(path), "--splits-dir", str(splits)]) == 0
    out = capsys.readouterr().out  # the training seed, and the episode seed where not 0
    assert "ucf101 5-way 1-shot episode seed 1 [" in out
    edited = tmp_path / "edited"
    shutil.copytree(splits / "trx" / "ucf_ARN", edited / "trx" / "ucf_ARN")
    test_list = next((edited / "trx" / "ucf_ARN").glob("test*"))
    test_list.write_text("".join(test_list.read_text().splitlines(True)[1:]))
    with pytest.raises(BundleDataMissingError, match=r"no unmodified copy of it: .*modified"):
        verify_bundle(path, splits_dir=edited)
    with pytest.raises(BundleDataMissingError, match=r"ucf101/test not found.*--splits-dir"):
        verify_bundle(path, splits_dir=tmp_path / "empty")


def test_outside_records_are_not_bundled_again(runs, bundle, tmp_path):
    """A folder that added a lab's bundle re-packed those records as its own results."""
    ours = tmp_path / "ours"
    shutil.copytree(runs["ours"], ours)
    add_bundle(ours, bundle)
    with pytest.raises(BundleError, match="'otam' under .* are outside results"):
        write_bundle(ours, "otam")
    assert main(["bundle", "--runs", str(ours), "--method", "otam"]) == 2


def test_two_names_with_one_folder_name_do_not_replace_each_other(runs, bundle, tmp_path):
    """'lab head' and 'lab-head' share the folder external/lab-head: adding one replaced
    the other's records."""
    ours = tmp_path / "ours"
    shutil.copytree(runs["ours"], ours)
    folder = add_bundle(ours, bundle)
    for path in (folder / "records").glob("*.json"):  # as if 'otam' had been another name
        path.write_text(path.read_text().replace('"method": "otam"', '"method": "otam?"'))
    assert {r.method for r in fb.load_records(folder)} == {"otam?"}
    with pytest.raises(BundleError, match="already holds the outside results of 'otam\\?'"):
        add_bundle(ours, bundle)
    assert {r.method for r in fb.load_records(folder)} == {"otam?"}


def test_a_bundle_refuses_rows_that_are_not_the_records(runs, tmp_path):
    """A blank `correct` in a record's per-query rows was packed as a correct query."""
    import gzip

    lab = tmp_path / "lab"
    shutil.copytree(runs["lab"], lab)
    rows = sorted((lab / "records").glob("otam__*.queries.csv.gz"))[0]
    lines = gzip.decompress(rows.read_bytes()).decode().splitlines()
    header = lines[0].split(",")
    cells = lines[1].split(",")
    cells[header.index("correct")] = ""
    lines[1] = ",".join(cells)
    rows.write_bytes(gzip.compress(("\n".join(lines) + "\n").encode()))
    with pytest.raises(BundleError, match="blank or not True/False; re-run that cell"):
        write_bundle(lab, "otam")


@pytest.mark.parametrize("how", ["code", "reuse-stale"])
def test_a_bundle_refuses_records_its_folder_marks_stale(runs, tmp_path, how):
    """A record made by other code (or kept with --reuse-stale) was bundled and then ranked
    as a current outside result, while its own folder marked it ‡stale."""
    lab = tmp_path / "lab"
    shutil.copytree(runs["lab"], lab)
    path = sorted((lab / "records").glob("otam__*.json"))[0]
    data = json.loads(path.read_text())
    if how == "code":
        data["provenance"]["code"]["packages"]["fsarbench_baselines"] = "0" * 16
    else:
        data["stale_accepted"] = ["code.harness: 0123 -> 4567"]  # as --reuse-stale writes
    path.write_text(json.dumps(data))
    with pytest.raises(BundleError, match=r"is stale \((code:fsarbench_baselines|accepted-stale)"):
        write_bundle(lab, "otam")


def test_a_bundle_refuses_a_hand_edited_record(runs, tmp_path):
    """'bundle' packed a record whose accuracy was edited by hand, exit 0; only a later
    'verify' refused it."""
    lab = tmp_path / "lab"
    shutil.copytree(runs["lab"], lab)
    record = sorted((lab / "records").glob("otam__*.json"))[0]
    data = json.loads(record.read_text())
    record.write_text(json.dumps({**data, "accuracy": data["accuracy"] + 3.0}))
    with pytest.raises(BundleError, match="which its per-query rows .* do not give"):
        write_bundle(lab, "otam")


def test_a_bundle_naming_its_method_with_table_markup_is_refused(bundle, tmp_path, capsys):
    """A bundle's method 'mine | 99.99 ± 0.01 | ... <!--' verified and drew a fake leading
    row in leaderboard.md, hiding its real number in an HTML comment."""
    bad = tmp_path / "spoof.zip"
    bad.write_bytes(pack_bundle("mine | 99.99 ± 0.01 | leader |<!--", _members(bundle)))
    with pytest.raises(BundleFormatError, match="holds a character no table can print"):
        verify_bundle(bad)
    assert main(["verify", str(bad)]) == 2


@pytest.mark.parametrize("name", ["..", ".", ".hidden", ""])
def test_a_bundle_whose_method_names_no_folder_of_its_own_is_refused(name, bundle, runs, tmp_path):
    """A bundle of method '..' verified, and 'leaderboard --add' replaced the runs folder
    itself (runs/external/..), deleting everything in it."""
    bad = tmp_path / "dots.zip"
    bad.write_bytes(pack_bundle(name, _members(bundle)))
    with pytest.raises(BundleFormatError, match="is not a method name"):
        verify_bundle(bad)
    ours = tmp_path / "ours"
    ours.mkdir()
    (ours / "notes.txt").write_text("mine")
    assert main(["leaderboard", "--runs", str(ours), "--add", str(bad)]) == 2
    assert (ours / "notes.txt").read_text() == "mine"


def _label(text: str):
    def edit(members: dict[str, bytes]) -> None:
        for name in [n for n in members if n.startswith("records/")]:
            data = json.loads(members[name])
            data["tags"] = {**data["tags"], "variant_label": text}
            members[name] = json.dumps(data).encode()

    return edit


def test_a_bundle_s_text_tags_are_held_to_the_rules_of_names(bundle, tmp_path):
    """A variant label with a newline and table markup split compare's header in two."""
    bad = _tampered(bundle, tmp_path, _label("paper] | 91.20 ± 0.50 |\n| 1 | SOTA [x"))
    with pytest.raises(BundleFormatError, match="tag 'variant_label' .* no table can print"):
        verify_bundle(bad)


def test_added_variants_are_named_as_not_ranked(bundle, runs, tmp_path, capsys):
    """A labelled bundle was 'verified and added', then absent from the ranking unsaid."""
    labelled = _tampered(bundle, tmp_path, _label("paper"))
    ours = tmp_path / "ours"
    shutil.copytree(runs["ours"], ours)
    assert main(["leaderboard", "--runs", str(ours), "--add", str(labelled)]) == 0
    out = capsys.readouterr().out
    assert "not ranked: otam [paper] †outside from tampered.zip (variants" in out
    assert main(["leaderboard", "--runs", str(ours)]) == 0
    assert "not ranked" not in capsys.readouterr().out


def _copied_under_seed_1(members: dict[str, bytes]) -> None:
    """Every record filed once more as training seed 1 (its own config hash and name)."""
    from fsarbench.results import ResultRecord, record_config_hash

    for name in [n for n in list(members) if n.startswith("records/")]:
        data = json.loads(members[name])
        data["train_seed"] = 1
        data["config_hash"] = record_config_hash(
            data["hparams"], data["recipe"], data["features"], 1, data["track"]
        )
        fields = {f.name for f in dataclasses.fields(ResultRecord)}
        cell = ResultRecord(**{k: v for k, v in data.items() if k in fields}).cell
        members[f"records/{cell}.json"] = json.dumps(data).encode()
        stem = name[len("records/") : -len(".json")]
        members[f"queries/{cell}.npz"] = members[f"queries/{stem}.npz"]


def test_one_evaluation_filed_under_two_training_seeds_is_named(bundle, tmp_path, capsys):
    """Copies of one record under other training seeds verified and showed '± 0.00 (n=3)'
    as if three models had been trained: the seeds' identical predictions are named."""
    twice = _tampered(bundle, tmp_path, _copied_under_seed_1)
    verified = verify_bundle(twice)
    assert len(verified.notes) == len(SETTINGS)
    assert "training seeds 0, 1 predict the same label for every query" in verified.notes[0]
    assert main(["verify", str(twice)]) == 0
    assert "note: synth" in capsys.readouterr().out
    assert verify_bundle(bundle).notes == []


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_unreadable_per_query_rows_are_named_by_bundle(runs, tmp_path, damage):
    """A truncated rows file ended 'bundle' in an EOFError traceback; a garbage one in an
    error that named no file."""
    lab = tmp_path / "lab"
    shutil.copytree(runs["lab"], lab)
    rows = sorted((lab / "records").glob("otam__*.queries.csv.gz"))[0]
    data = rows.read_bytes()
    rows.write_bytes(data[:300] if damage == "truncated" else b"garbage")
    with pytest.raises(BundleError, match=f"per-query rows {rows} .* are unreadable .*re-run"):
        write_bundle(lab, "otam")


def test_records_of_an_unregistered_dataset_are_left_out_of_a_bundle(runs, tmp_path, caplog):
    """An eval of a features file with its own manifest (dataset 'custom') was packed, and
    'verify' then refused the whole bundle with a bare "unknown dataset 'custom'"."""
    lab = tmp_path / "lab"
    shutil.copytree(runs["lab"], lab)
    first, *rest = sorted((lab / "records").glob("otam__*.json"))
    data = json.loads(first.read_text())
    data["dataset"] = "custom"
    first.write_text(json.dumps(data))
    members = bundle_members(lab, "otam")
    assert len([n for n in members if n.startswith("records/")]) == len(rest)
    assert "left out of the bundle" in caplog.text and "'custom' is no registered" in caplog.text
    for other in rest:
        other.unlink()
    with pytest.raises(BundleError, match="none of the records of 'otam' .* registered dataset"):
        bundle_members(lab, "otam")


def _custom_dataset(members: dict[str, bytes]) -> None:
    """The first record (and its rows) as an eval of a features file would name it."""
    name = sorted(n for n in members if n.startswith("records/"))[0]
    data = json.loads(members.pop(name))
    data["dataset"] = "custom"
    cell = name.removeprefix("records/").removesuffix(".json")
    new = cell.replace("__synth__", "__custom__")
    members[f"records/{new}.json"] = json.dumps(data).encode()
    members[f"queries/{new}.npz"] = members.pop(f"queries/{cell}.npz")


def test_verify_names_a_record_of_an_unregistered_dataset(bundle, tmp_path):
    """verify stopped at a bare "unknown dataset 'custom'" without naming the record."""
    bad = _tampered(bundle, tmp_path, _custom_dataset)
    with pytest.raises(BundleVerificationError, match="'custom' is no registered dataset"):
        verify_bundle(bad)


@pytest.mark.parametrize("code", ["abc", {"packages": "x"}, {"installed": [1]}])
def test_a_bundle_with_hand_made_code_provenance_is_read_as_stale_not_a_crash(
    bundle, runs, tmp_path, capsys, code
):
    """provenance.code is the lab's statement: as a string (or with a string for its
    packages) verify crashed, and once added, every report of the folder crashed."""

    def edit(members: dict[str, bytes]) -> None:
        _edit_record("provenance", lambda p: {**p, "code": code})(members)

    tampered = _tampered(bundle, tmp_path, edit)
    assert main(["verify", str(tampered)]) == 0
    assert "‡stale" in capsys.readouterr().out
    ours = tmp_path / "ours"
    shutil.copytree(runs["ours"], ours)
    assert main(["leaderboard", "--runs", str(ours), "--add", str(tampered)]) == 0
    assert main(["report", "--runs", str(ours)]) == 0


def test_a_run_of_the_same_cell_keeps_the_outside_result(bundle, runs, tmp_path):
    """The folder's own run of a cell an added bundle also holds moved the outside record to
    superseded/ without a word: it left every table, and adding it again was refused."""
    from fsarbench.results import OUTSIDE_TAG, load_record, supersede_older_copies

    ours = tmp_path / "ours"
    shutil.copytree(runs["ours"], ours)
    add_bundle(ours, bundle)
    outside = sorted((ours / "external").rglob("records/*.json"))
    record = load_record(outside[0])
    own = dataclasses.replace(
        record,
        tags={k: v for k, v in record.tags.items() if k != OUTSIDE_TAG},
        created="2099-01-01T00:00:00.000000+0000",
    )
    assert supersede_older_copies(ours, own) == 0
    assert all(p.exists() for p in outside)
    assert not (ours / "superseded").exists()


def test_an_edited_outside_record_says_to_add_its_bundle_again(bundle, runs, tmp_path):
    """Its rows no longer gave it, and the advice was to re-run the cell: impossible for a
    lab's result."""
    ours = tmp_path / "ours"
    shutil.copytree(runs["ours"], ours)
    add_bundle(ours, bundle)
    path = sorted((ours / "external").rglob("records/*.json"))[0]
    data = json.loads(path.read_text())
    data["accuracy"] += 10
    path.write_text(json.dumps(data))
    left_out: list[str] = []
    load_entries(ours, left_out=left_out, verify_rows=True)
    (reason,) = [r for r in left_out if path.stem in r]
    assert "outside result, which cannot be re-run here" in reason
    assert f"add its bundle ({bundle.name}" in reason and "re-run the cell" not in reason
