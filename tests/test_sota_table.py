"""``table sota``: the comparison table of published CLIP-era and late ResNet-era results."""

from __future__ import annotations

import csv
import io
import re
import shutil
import typing

import pytest
import yaml

from fsarbench.episodes import make_manifest
from fsarbench.evaluate import evaluate
from fsarbench.registry import create_method
from fsarbench.report.comparison import (
    ComparisonError,
    ComparisonRow,
    available_comparisons,
    build_comparison,
    load_comparison,
    parse_comparison,
)
from fsarbench.report.demo import DemoSystem, demo_features, write_demo_records
from fsarbench.report.published import load_dataset_aliases, load_table, published_dir
from fsarbench.report.records import load_entries
from fsarbench.report.render import render
from fsarbench.results import make_record, save_result

KNOWN = list(load_dataset_aliases())
SOTA_TEXT = (published_dir() / "sota.yaml").read_text(encoding="utf-8")


def _parse(data: dict) -> None:
    parse_comparison(yaml.safe_dump(data, sort_keys=False), "broken", known_datasets=KNOWN)


def _sota_data() -> dict:
    return yaml.safe_load(SOTA_TEXT)


def _row_index(method: str, backbone: str) -> int:
    rows = yaml.safe_load(SOTA_TEXT)["rows"]
    return next(i for i, r in enumerate(rows) if (r["method"], r["backbone"]) == (method, backbone))


def _ref_number(key: str) -> int:
    """The number a reference gets under the table: references are numbered by first use."""
    order = list(dict.fromkeys(r.ref for r in load_comparison("sota").rows))
    return order.index(key) + 1


def test_sota_loads_and_every_row_is_labelled_and_cited() -> None:
    spec = load_comparison("sota")
    assert "sota" in available_comparisons()
    assert {d.key for d in spec.datasets} <= set(KNOWN) and spec.shots == [1, 5]
    tracks = typing.get_args(typing.get_type_hints(ComparisonRow)["track"])
    assert len(spec.rows) >= 6
    for row in spec.rows:
        ref = spec.references[row.ref]
        assert ref.read_from.strip() and ref.title.strip() and ref.kind
        assert "shared/" not in ref.read_from  # a path of this project's workspace, not users'
        assert row.backbone.strip() and row.track in tracks and row.text in ("yes", "no", "n/s")
        assert row.frames is None or row.frames >= 1
        for key, by_shot in row.values.items():
            assert key in {d.key for d in spec.datasets}
            assert set(by_shot) <= {1, 5}
            assert all(0.0 <= v <= 100.0 for v in by_shot.values())
    assert set(spec.references) == {r.ref for r in spec.rows}  # no unused reference


def _published(number: int, name: str) -> dict[tuple[str, int], float]:
    table = load_table(number)
    row = next(r for r in table.rows if r.name == name)
    return {(c.dataset, c.shot): v for c, v in zip(table.columns, row.values) if v is not None}


@pytest.mark.parametrize(
    "sota_row, seed_row",
    [
        ("MoLo", "MoLo [35]"),
        ("HyRSM", "HyRSM [36]"),
        ("SloshNet", "SloshNet [39]"),
        ("SGTM+Bi-MHM", "Ours+Bi-MHM"),
    ],
)
def test_rows_quoted_from_the_seed_paper_equal_its_tables(sota_row: str, seed_row: str) -> None:
    """Rows read from SGTM's Tables 1-2 hold exactly those tables' 1- and 5-shot numbers."""
    row = next(r for r in load_comparison("sota").rows if r.method == sota_row)
    seed = {**_published(1, seed_row), **_published(2, seed_row)}
    ours = {(k, s): v for k, by in row.values.items() for s, v in by.items()}
    assert ours == {k: v for k, v in seed.items() if k[1] in (1, 5)}


def test_known_values_as_read() -> None:
    rows = {(r.method, r.backbone): r for r in load_comparison("sota").rows}
    spm = rows[("CLIP-SPM", "CLIP ViT-B/16")]
    assert spm.values["ssv2_full"] == {1: 66.7, 5: 77.3} and spm.frames == 8
    ts = rows[("TS-FSAR", "CLIP ViT-B/16")]
    assert ts.values["ssv2_small"] == {1: 60.5, 5: 70.3} and ts.track == "adapter"
    otter = rows[("Otter", "ResNet-50 (ImageNet)")]
    assert otter.values["hmdb51"] == {1: 88.1, 5: 89.8} and otter.frames == 8
    assert rows[("SA-CT", "ViT-B (ImageNet)")].values["kinetics"] == {5: 91.2}
    assert rows[("CLIP-FSAR", "CLIP ViT-B/16")].values == {"ssv2_full": {1: 61.9}}
    assert rows[("STRM", "n/s")].values["ucf101"] == {5: 96.8}


def test_unknown_key_is_rejected_with_the_nearest_name() -> None:
    data = _sota_data()
    data["rows"][0]["backbon"] = data["rows"][0].pop("backbone")
    with pytest.raises(ComparisonError, match=r"unknown key 'backbon'.*Did you mean 'backbone'"):
        _parse(data)


def _set(path: list, value):
    def mutate(data: dict) -> dict:
        node = data
        for key in path[:-1]:
            node = node[key]
        if value is _DROP:
            del node[path[-1]]
        else:
            node[path[-1]] = value
        return data

    return mutate


_DROP = object()


@pytest.mark.parametrize(
    "mutate, message",
    [
        (_set(["rows", 0, "values", "kinetics", 5], 101.0), r"not an accuracy in \[0, 100\]"),
        (_set(["rows", 0, "values", "kinetics", 5], -1.0), r"not an accuracy in \[0, 100\]"),
        (_set(["rows", 0, "values", "kinetics400"], {5: 80.0}), "'kinetics400' is not a column"),
        (_set(["rows", 0, "values", "kinetics", 3], 80.0), "shot 3 is not a column"),
        (_set(["rows", 0, "values"], {}), "no values"),
        (_set(["rows", 0, "ref"], "nowhere2024"), "'nowhere2024' is not under references"),
        (_set(["rows", 0, "frames"], _DROP), r"missing key\(s\) 'frames'"),
        (_set(["rows", 0, "frames"], 0), "frames = 0"),
        (_set(["rows", 0, "track"], "full"), "'full' is not one of"),
        (_set(["rows", 0, "text"], True), "is not one of"),
        (_set(["rows", 0, "backbone"], " "), "backbone is empty"),
        (_set(["references", "strm2022", "kind"], "blog"), "'blog' is not one of"),
        (_set(["references", "strm2022", "read_from"], _DROP), r"missing key\(s\) 'read_from'"),
        (_set(["datasets", 0, "key"], "epic"), "'epic' is not in datasets.yaml"),
        (
            _set(["rows", _row_index("CLIP-SPM", "CLIP ViT-B/16"), "backbone"], "CLIP RN50"),
            "a second row for CLIP-SPM",
        ),
    ],
)
def test_bad_rows_are_rejected_with_a_message(mutate, message: str) -> None:
    with pytest.raises(ComparisonError, match=message):
        _parse(mutate(_sota_data()))


def test_malformed_yaml_gives_a_named_error(tmp_path) -> None:
    with pytest.raises(ComparisonError, match="broken.yaml is not valid YAML"):
        parse_comparison("rows: [\n  - {method: x", "broken", known_datasets=KNOWN)
    with pytest.raises(ComparisonError, match="expected a mapping"):
        parse_comparison("- just\n- a list\n", "broken", known_datasets=KNOWN)
    twice = SOTA_TEXT.replace("decimals: 1\n", "decimals: 1\ndecimals: 2\n", 1)
    with pytest.raises(ComparisonError, match=r"key 'decimals' is written twice \(lines"):
        parse_comparison(twice, "broken", known_datasets=KNOWN)
    with pytest.raises(ComparisonError, match=r"no comparison table 'nope'.*available: sota"):
        load_comparison("nope")
    folder = tmp_path / "published"
    shutil.copytree(published_dir(), folder)
    (folder / "mine.yaml").write_text("kind: comparison\nrows: [\n", encoding="utf-8")
    with pytest.raises(ComparisonError, match=r"mine\.yaml is not valid YAML"):
        load_comparison("nope", folder)  # listing the tables read the broken file raw


def test_renders_in_all_three_formats() -> None:
    table = build_comparison(load_comparison("sota"), [], source="published")
    md = render(table, "md")
    assert "| CLIP-SPM " in md and "References:" in md
    spm_ref = _ref_number("clipspm2025")
    assert re.search(rf"\[{spm_ref}\] .*arXiv:2512\.19036.*\[official-readme\]", md)
    assert "**75.1**" in md and "**66.7**" not in md  # best SSv2-Full 1-shot: TS-FSAR
    rows = list(csv.DictReader(io.StringIO(render(table, "csv"))))
    spm = [r for r in rows if r["row"] == "CLIP-SPM" and r["dataset"] == "ssv2_full"]
    assert {r["citation"] for r in spm} == {"clipspm2025"}
    assert {r["value"] for r in spm} >= {"66.7", "62.3"}
    fsar = [r for r in rows if r["row"] == "CLIP-FSAR" and r["value"]]
    assert [(r["dataset"], r["shot"], r["value"]) for r in fsar] == [("ssv2_full", "1", "61.9")]
    fsar_ref, mei_ref = _ref_number("clipfsar2023"), _ref_number("clipmei2025")
    assert f"| [{fsar_ref}]† " in md and f"| [{mei_ref}] " in md  # CLIP-FSAR's is second-hand
    tex = render(table, "latex")
    assert f"[{fsar_ref}]\\dag{{}}" in tex and "†" not in tex
    assert r"\textbf{75.1}" in tex and r"SEQ\_LEN 8" in tex
    assert not re.search(r"\\\\\s*\[", tex)  # "\\ [1]" would read [1] as a spacing argument


def test_latex_names_the_packages_it_uses() -> None:
    tex = render(build_comparison(load_comparison("sota"), [], source="published"), "latex")
    needs = {r"\toprule": "booktabs", r"\resizebox": "graphicx", r"\cmidrule": "booktabs"}
    header = tex.splitlines()[0]
    assert header.startswith("% requires")
    for command, package in needs.items():
        assert command in tex and package in header, (command, header)


def _clip_record(run_dir, *, episodes: int = 100) -> None:
    """A frozen-track record whose features name their backbone and frame count, as the
    runner writes them."""
    feats, labels = demo_features(seed=0)
    for shot in (1, 5):
        manifest = make_manifest(
            labels,
            way=5,
            shot=shot,
            queries=1,
            episodes=episodes,
            seed=0,
            dataset="synth",
            split="test",
        )
        method = create_method("protonet", feature_dim=feats.shape[-1], seq_len=feats.shape[1])
        result = evaluate(method, feats, manifest, progress=False)
        record = make_record(
            result,
            method="clip-proto",
            dataset="synth",
            split_variant="synth",
            manifest=manifest,
            features={"backbone": "clip-vit-b16", "num_frames": 8},
            tags={"synthetic": True},
        )
        save_result(run_dir, record, result)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    out = tmp_path_factory.mktemp("sota-runs")
    write_demo_records(out, [DemoSystem("sgtm-otam"), DemoSystem("otam", noise=3.0)], episodes=100)
    _clip_record(out)
    return out


def test_run_rows_sit_beside_published_rows(runs) -> None:
    table = build_comparison(load_comparison("sota"), load_entries(runs))
    names = [(r.labels[0], r.source) for r in table.rows]
    at = names.index(("SGTM+OTAM", "published"))
    assert names[at + 1] == ("sgtm-otam", "run (synth)")  # our run of the mapped method
    assert ("otam", "run (synth)") in names  # mapped by Table 1, still shown here
    rows = {r.labels[0]: r for r in table.rows if r.source.startswith("run")}
    clip = rows["clip-proto"]
    assert clip.labels[1:7] == ["this run", "clip-vit-b16", "8", "frozen", "n/r", ""]
    assert rows["sgtm-otam"].labels[2:5] == ["n/r", "n/r", "frozen"]  # demo records say none
    assert re.fullmatch(r"\d+\.\d\d ± \d+\.\d\d", clip.cells[0].text)  # Kinetics 1-shot
    assert all(c.text == "-" for c in clip.cells[2:])  # synth stands in under Kinetics only
    assert any("synthetic" in n for n in table.notes) and table.references
    only_runs = build_comparison(load_comparison("sota"), load_entries(runs), source="runs")
    assert all(r.source.startswith("run") for r in only_runs.rows)
    assert not only_runs.references


def test_table_sota_cli(runs, tmp_path, capsys) -> None:
    from fsarbench.cli.main import main

    out = tmp_path / "sota.csv"
    assert main(["table", "sota", "--runs", str(runs), "--format", "csv", "--out", str(out)]) == 0
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    assert {r["table"] for r in rows} == {"sota"}
    assert any(r["row"] == "clip-proto" and r["source"] == "run (synth)" for r in rows)
    assert main(["table", "sota", "--source", "published", "--format", "latex"]) == 0
    assert r"\label{tab:fsarbench-tablesota}" in capsys.readouterr().out
    assert main(["table", "2", "--source", "published"]) == 0  # paper tables unchanged
    assert "MoLo [35]" in capsys.readouterr().out
    assert main(["table", "nope"]) != 0
    assert "no comparison table 'nope'" in capsys.readouterr().err


def test_the_docs_example_row_validates() -> None:
    """The "Adding a row" example of docs/sota.md is a valid addition to sota.yaml."""
    docs = (published_dir().parents[1] / "docs" / "sota.md").read_text(encoding="utf-8")
    example = yaml.safe_load(re.search(r"```yaml\n(.*?)```", docs, re.DOTALL).group(1))
    data = _sota_data()
    data["references"].update(example["references"])
    data["rows"] += example["rows"]
    spec = parse_comparison(yaml.safe_dump(data), "sota", known_datasets=KNOWN)
    assert spec.rows[-1].values == {"kinetics": {1: 90.0, 5: 95.0}, "ssv2_full": {1: 60.0}}


def test_a_stale_run_row_carries_its_mark_once(tmp_path) -> None:
    """Run rows are relabelled with system names after their cells are made: a stale row
    showed '‡stale' in its label and again in every cell."""
    from fsarbench.report.records import STALE_MARK, group_entries
    from fsarbench.results import load_records

    write_demo_records(tmp_path, [DemoSystem("sgtm-otam")], episodes=100)
    records = load_records(tmp_path)
    for r in records:
        r.provenance["code"] = {"harness": "0" * 16}
    table = build_comparison(load_comparison("sota"), group_entries(records))
    (row,) = [r for r in table.rows if r.source.startswith("run")]
    assert row.labels[0] == f"sgtm-otam {STALE_MARK}"
    filled = [c.text for c in row.cells if c.entry is not None]
    assert filled and not any(STALE_MARK in text for text in filled)


def test_run_rows_name_the_weights_frames_and_text_tower_they_ran_with():
    """A random, tiny or checkpoint tower printed as plain 'clip-vit-b16' under the
    published CLIP ViT-B/16 row; finetune rows showed n/r and clip-fsar's text tower n/r."""
    from types import SimpleNamespace

    from fsarbench.report.comparison import _backbone_label, _frames_label, _text_label

    def record(features=None, recipe=None, hparams=None):
        return SimpleNamespace(features=features or {}, recipe=recipe or {}, hparams=hparams)

    frozen = record({"backbone": "clip-vit-b16", "weights": "none", "tiny": True})
    assert _backbone_label(frozen) == "clip-vit-b16 (weights none, tiny)"
    assert _backbone_label(record({"backbone": "clip-vit-b16", "weights": "pretrained"})) == (
        "clip-vit-b16"
    )
    checkpoint = record({"backbone": "r50", "weights": "/x/w.pt"})
    assert _backbone_label(checkpoint) == "r50 (weights w.pt)"
    tuned = record(recipe={"options": {"backbone": "resnet50", "weights": "imagenet", "frames": 8}})
    assert (_backbone_label(tuned), _frames_label(tuned)) == ("resnet50", "8")
    text = record(hparams={"text_tower": "ViT-B-16", "text_weights": "openai"})
    assert _text_label(text) == "ViT-B-16 (openai)" and _text_label(record()) is None
