"""Inputs a review of configuration and input handling found accepted, ignored or failing
late (2026-12-06): each now stops with a named error before any work, or is kept as it was."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from fsarbench.cli.main import main
from fsarbench.config import ConfigError, load_yaml
from fsarbench.experiments.cells import Cell
from fsarbench.experiments.grids import add_grid_file
from fsarbench.training.finetune_recipe import FinetuneOptions
from fsarbench.training.recipe import Recipe

SPLITS = Path(__file__).resolve().parents[2] / "shared" / "splits"


@pytest.fixture(autouse=True)
def _own_user_grids(monkeypatch):
    """Grids added here stay out of the other tests' process-wide registry."""
    import fsarbench.experiments.grids as grids

    monkeypatch.setattr(grids, "_USER_GRIDS", {})


def _run_plan(tmp_path, *argv: str) -> int:
    return main(["run", *argv, "--plan", "--episodes", "200", "--out", str(tmp_path / "o")])


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (["--table", "1", "--method", "protnet"], "--method protnet selects no cell"),
        (["--table", "3", "--dataset", "synth"], "they offer --dataset synth-planted"),
        (["--table", "1", "--shots", "2"], "they offer --shots 1 3 5"),
        (["--table", "main", "--ways", "7"], "--ways 7 selects no cell"),
        (["--table", "1", "--method", "otam", "protnet"], "--method protnet selects no cell"),
        # the flag at fault is named, not the first one checked
        (["--table", "main", "--method", "otam", "--ways", "50"], "--ways 50 selects no cell"),
        (["--table", "3", "--method", "sgtm-otam", "--shots", "3"], "--shots 3 selects no cell"),
    ],
)
def test_grid_filters_that_select_nothing_are_refused(tmp_path, capsys, argv, said):
    """A misspelled --method (or a shot the grid lacks) ran 0 cells and exited 0."""
    assert _run_plan(tmp_path, *argv) == 2
    assert said in capsys.readouterr().err


def test_grid_filters_that_select_cells_still_plan(tmp_path, capsys):
    assert _run_plan(tmp_path, "--all", "--dataset", "synth", "--method", "otam") == 0


@pytest.mark.parametrize("field", ["train_sampler", "test_sampler", "norm"])
def test_finetune_options_name_unknown_samplers_and_norms(field):
    """An unknown sampler passed --plan and stopped the run in a decode worker."""
    with pytest.raises(ConfigError, match="unknown name 'foo'"):
        FinetuneOptions(**{field: "foo"})


def _grid_file(tmp_path, text: str) -> Path:
    path = tmp_path / "grids.yaml"
    path.write_text(text)
    return path


GRID = "grids:\n  {name}:\n    datasets: [synth]\n    methods: [protonet]\n"


def test_user_grids_are_never_read_as_paper_tables(tmp_path):
    """A grid named table_mine stopped the run after training ('_mine' read as a number); one
    named table1 replaced the built-in grid and was rendered as the paper's Table 1."""
    from fsarbench.cli.run_cmd import paper_table_number

    add_grid_file(_grid_file(tmp_path, GRID.format(name="table_mine")))
    assert (
        paper_table_number(Cell("protonet", "synth", 5, 1, tags=(("grid", "table_mine"),))) is None
    )
    assert paper_table_number(Cell("otam", "synth", 5, 1, tags=(("grid", "table1"),))) == 1
    with pytest.raises(ConfigError, match="would replace the built-in grids"):
        add_grid_file(_grid_file(tmp_path, GRID.format(name="table1")))


@pytest.mark.parametrize(
    ("extra", "said"),
    [
        ("standard_shots: {default: [2]}\n", "'standard_shots' applies to the built-in"),
        ("all: [mine]\n", "'all' applies to the built-in"),
        ("    ways: []\n", "ways is empty"),
        ("    shots: []\n", "shots is empty"),
    ],
)
def test_grid_file_keys_that_were_ignored_are_refused(tmp_path, extra, said):
    text = GRID.format(name="mine")
    text = text + extra if extra.startswith(" ") else extra + text
    with pytest.raises(ConfigError, match=said):
        add_grid_file(_grid_file(tmp_path, text))


def test_a_key_written_twice_is_refused_and_merges_still_override():
    with pytest.raises(Exception, match="key 'shots' is written twice"):
        load_yaml("shots: [1]\nways: [5]\nshots: [5]\n")
    merged = load_yaml("base: &b {steps: 30, adapter: linear}\nmine:\n  <<: *b\n  adapter: none\n")
    assert merged["mine"] == {"steps": 30, "adapter": "none"}


@pytest.mark.parametrize(
    ("body", "said"),
    [
        ("grids:\n  mine: foo\n", "expected a mapping of GridSpec keys"),
        ("grids:\n  mine:\n    datasets: [synth]\n    methods: [[protonet]]\n", "does not fit"),
        ("- a\n- b\n", "expected a mapping of keys"),
    ],
)
def test_non_mappings_where_sections_belong_are_named(tmp_path, body, said):
    """These ended in a raw AttributeError."""
    with pytest.raises(ConfigError, match=said):
        add_grid_file(_grid_file(tmp_path, body))


def test_recipe_values_nan_inf_and_absurd_validation_episodes_are_refused():
    """val_episodes=1e9 hung the run while its episodes were drawn; NaN passed every range
    check (it compares false with both bounds)."""
    with pytest.raises(ConfigError, match="val_episodes"):
        Recipe(val_episodes=10**9)
    for field in ("lr", "weight_decay", "momentum", "grad_clip"):
        with pytest.raises(ConfigError, match="not a finite number"):
            Recipe(**{field: float("nan")})


@pytest.mark.parametrize(
    "argv",
    [
        ["run", "--plan", "--train-seeds", "0", str(2**70)],
        ["run", "--plan", "--seed", "-1"],
        ["train", "protonet", "--dataset", "synth", "--seed", str(2**64)],
    ],
)
def test_seeds_out_of_range_stop_before_any_work(argv, capsys):
    """A seed above 2**63 stopped `run` after its earlier training seeds had trained."""
    with pytest.raises(SystemExit):
        main(argv)
    assert "must be in 0..2**63-1" in capsys.readouterr().err


@pytest.mark.skipif(not SPLITS.is_dir(), reason="needs the published split lists")
def test_splits_verify_names_a_missing_list_of_a_partly_present_source(tmp_path, capsys):
    """It printed OK (and skipped the leakage check) with one Kinetics list deleted."""
    shutil.copytree(SPLITS, tmp_path / "s")
    (tmp_path / "s" / "trx" / "kinetics_CMN" / "testlist03.txt").unlink()
    assert main(["splits", "verify", "--splits-dir", str(tmp_path / "s")]) == 1
    out = capsys.readouterr()
    assert "testlist03.txt is missing" in out.err and "problem(s)" in out.out


@pytest.mark.skipif(not SPLITS.is_dir(), reason="needs the published split lists")
def test_splits_import_keeps_a_published_list_over_a_modified_copy(tmp_path, capsys):
    shutil.copytree(SPLITS, tmp_path / "s")
    published = tmp_path / "s" / "trx" / "kinetics_CMN" / "testlist03.txt"
    original = published.read_bytes()
    src = tmp_path / "src" / "kinetics_CMN"
    src.mkdir(parents=True)
    (src / "testlist03.txt").write_bytes(original + original.splitlines(keepends=True)[0])
    assert (
        main(["splits", "import", str(tmp_path / "src"), "--splits-dir", str(tmp_path / "s")]) == 0
    )
    assert published.read_bytes() == original
    assert "kept the published trx/kinetics_CMN/testlist03.txt" in capsys.readouterr().out
    empty = tmp_path / "empty"
    assert main(["splits", "import", str(tmp_path / "src"), "--splits-dir", str(empty)]) == 0
    assert "MODIFIED" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("override", "said"),
    [
        ({"momentum": 0.1}, "momentum applies only with optimizer sgd"),
        ({"milestones": [0.1]}, "milestones applies only with schedule multistep"),
    ],
)
def test_recipe_overrides_without_effect_are_refused(override, said):
    """momentum under Adam (or milestones under a cosine schedule) changed no number, yet was
    noted as a recipe change and gave the cell a new record."""
    from fsarbench.training import frozen_recipe
    from fsarbench.training.finetune import finetune_recipe

    with pytest.raises(ConfigError, match=said):
        frozen_recipe("protonet", override, dataset="synth")
    with pytest.raises(ConfigError, match=said):
        finetune_recipe(
            "protonet", "synth", {"recipe": {"optimizer": "adam", "schedule": "cosine", **override}}
        )
    with_setting = {"optimizer": "sgd", "schedule": "multistep", **override}
    assert frozen_recipe("protonet", with_setting, dataset="synth").optimizer == "sgd"


def test_eval_names_mixed_precision_in_its_record_and_refuses_zero_classes(capsys):
    """``eval --amp`` (CUDA) was not part of the record's id: its number overwrote the float32
    evaluation's record of the same setting. ``--num-train-classes 0`` was accepted."""
    from fsarbench.cli.eval_cmd import _with_checkpoint

    base = {"features": {"cache": "k"}, "checkpoint_md5": "m"}
    assert _with_checkpoint({**base, "autocast": "off"}) == {"cache": "k", "checkpoint_md5": "m"}
    mixed = _with_checkpoint({**base, "autocast": "bfloat16"})
    assert mixed == {"cache": "k", "checkpoint_md5": "m", "eval_autocast": "bfloat16"}
    with pytest.raises(SystemExit):
        main(["eval", "protonet", "--num-train-classes", "0"])
    assert "must be at least 1" in capsys.readouterr().err


def test_base_60_override_values_are_refused(tmp_path, capsys):
    """YAML 1.1 read `--recipe steps=1:30` as 90 steps."""
    assert _run_plan(tmp_path, "--method", "protonet", "--recipe", "steps=1:30") == 2
    assert "base-60 number (90)" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("value", "read"),
    [("010", "an octal number (8)"), ("0x10", "a hexadecimal number (16)"),
     ("-0b11", "a binary number (-3)"), ("0_10", "an octal number (8)")],
)  # fmt: skip
def test_other_base_override_values_are_refused(value, read):
    """YAML 1.1 read `--recipe steps=010` as 8 steps, `0x10` as 16 and `0b11` as 3."""
    from fsarbench.cli.common import UsageError, parse_overrides

    with pytest.raises(UsageError, match=re.escape(f"reads {value!r} as {read}; write the")):
        parse_overrides([f"steps={value}"], "--recipe")
    assert parse_overrides(["steps=10", "lr=0.01", "seed=0", "n=1_000"], "--recipe") == {
        "steps": 10, "lr": 0.01, "seed": 0, "n": 1000,
    }  # fmt: skip


def test_grid_hyper_parameters_are_kept_as_the_method_reads_them(tmp_path):
    """`lambda_recon: 1e-1` (text to PyYAML) named its cells apart from the same 0.1."""
    from fsarbench.experiments.grids import expand_grid

    entry = "      - {method: sgtm-otam, hparams: {lambda_recon: %s}}\n"
    for name, value in (("a", "1e-1"), ("b", "0.1")):
        text = f"grids:\n  {name}:\n    datasets: [synth]\n    methods:\n" + entry % value
        add_grid_file(_grid_file(tmp_path, text))
    names = {c.name for g in ("a", "b") for c in expand_grid(g, ["synth"], shots=[1])}
    assert names == {"sgtm-otam[lambda_recon=0.1]"}


def test_a_grid_entry_that_writes_a_default_out_is_the_plain_method(tmp_path, caplog):
    """``{method: protonet, hparams: {temperature: 10.0}}`` (the default) was named
    ``protonet[temperature=10.0]``, trained a second model with ``protonet``'s config hash and
    added a duplicate summary row; ``eval`` names such a checkpoint ``protonet``."""
    from fsarbench.experiments.grids import expand_grid
    from fsarbench.registry import method_config

    default = method_config("protonet", "synth").temperature
    body = (
        "grids:\n  mine:\n    datasets: [synth]\n    shots: [1]\n    methods:\n"
        "      - protonet\n"
        f"      - {{method: protonet, hparams: {{temperature: {int(default)}}}, label: P}}\n"
        f"      - {{method: protonet, hparams: {{temperature: {default + 1}}}}}\n"
    )
    add_grid_file(_grid_file(tmp_path, body))
    with caplog.at_level("INFO", logger="fsarbench.experiments.grids"):
        cells = expand_grid("mine", [])
    assert [c.name for c in cells] == [
        "protonet",
        "protonet",
        f"protonet[temperature={default + 1}]",
    ]
    assert [c.label for c in cells][:2] == ["protonet", "P"]
    assert f"temperature={default} is the method's default there" in caplog.text


def test_a_grid_entry_naming_a_derived_default_is_kept_as_asked(tmp_path):
    """CLIP-FSAR takes its text tower from its frame features, so its default is not what it
    runs with: ``text_tower: ViT-B-16`` (the default) was dropped and the entry ran the
    derived tower, the same number as an entry asking for another one."""
    from fsarbench.experiments.grids import expand_grid
    from fsarbench.registry import method_config

    default = method_config("clip-fsar", "synth").text_tower
    body = (
        "grids:\n  mine:\n    datasets: [synth]\n    shots: [1]\n    methods:\n"
        f"      - {{method: clip-fsar, hparams: {{text_tower: {default}}}, label: T}}\n"
    )
    add_grid_file(_grid_file(tmp_path, body))
    assert [c.name for c in expand_grid("mine", [])] == [f"clip-fsar[text_tower={default}]"]


def test_videos_without_split_lists_are_named_not_sent_to_the_layout_advice(
    tmp_path, monkeypatch, capsys
):
    """With HMDB51's videos under --root but no split lists, 'run' said "No real dataset
    found ... put the videos under --root: hmdb51/<class>/<id>.avi", where they were."""
    (tmp_path / "data" / "hmdb51" / "brush_hair").mkdir(parents=True)
    (tmp_path / "data" / "hmdb51" / "brush_hair" / "a.avi").write_bytes(b"x")
    monkeypatch.setenv("FSAR_SPLITS", str(tmp_path / "no-splits"))
    (tmp_path / "no-splits").mkdir()
    argv = ["--table", "1", "--method", "otam", "--root", str(tmp_path / "data")]
    assert _run_plan(tmp_path, *argv) == 0
    out = capsys.readouterr().out
    assert "the videos of hmdb51 (videos at " in out and "split list for hmdb51/test" in out
    assert "Pass --splits-dir DIR" in out and "No real dataset found" not in out
    assert "kinetics100 (" not in out  # the data root itself is no dataset's folder
    argv[-1] = str(tmp_path / "data" / "hmdb51")  # --root the dataset's own folder
    assert _run_plan(tmp_path, *argv) == 0
    assert "the videos of hmdb51 (videos at " in capsys.readouterr().out


def test_run_checks_option_values_against_each_method_s_recipe_on_its_dataset(tmp_path, capsys):
    """--option resize=100 was refused on synth by the bare defaults' crop of 224 (train
    accepts it), and crop=1000 was told 'at most 256' where synth's limit is 64."""
    argv = ["--track", "finetune", "--table", "main", "--method", "protonet", "--dataset"]
    argv += ["synth", "--shots", "1", "--ways", "5"]
    assert _run_plan(tmp_path, *argv, "--option", "resize=100", "weights=none") == 0
    assert _run_plan(tmp_path, *argv, "--option", "crop=1000", "weights=none") == 2
    assert "resize = 64; set crop to at most 64" in capsys.readouterr().err
    assert _run_plan(tmp_path, *argv, "--option", "cropp=3") == 2
    assert "unknown key 'cropp' in --option. Did you mean 'crop'?" in capsys.readouterr().err


def test_grids_a_filter_empties_are_named(tmp_path, caplog):
    """'run --table figure4 3 4 --dataset synth' ran Figure 4's grid and said nothing of
    Tables 3 and 4 (their stand-in is synth-planted)."""
    with caplog.at_level("WARNING", logger="fsarbench.run"):
        assert _run_plan(tmp_path, "--table", "figure4", "3", "4", "--dataset", "synth") == 0
    assert "grid(s) table3, table4 select no cell with these filters" in caplog.text


def test_the_stand_in_banner_is_said_only_when_synth_stands_in_by_default(
    tmp_path, monkeypatch, capsys
):
    """'run --dataset synth' printed "No real dataset found, so ... 'synth' stands in" at
    every run, although the user had asked for synth."""
    monkeypatch.setenv("FSAR_DATA", str(tmp_path / "empty"))
    (tmp_path / "empty").mkdir()
    argv = ["--method", "otam", "--shots", "1"]
    assert _run_plan(tmp_path, *argv) == 0
    assert "No real dataset found" in capsys.readouterr().out
    assert _run_plan(tmp_path, *argv, "--dataset", "synth") == 0
    assert "No real dataset found" not in capsys.readouterr().out


def test_videos_whose_split_lists_are_refused_are_named(tmp_path, monkeypatch, capsys):
    """A CRLF re-save (or a header, a missing list) of a dataset's split list left it out
    of 'run --all' without a word; alone, synth stood in and the user was told to lay out
    videos that were laid out."""
    from data_fixtures import require_shared_splits

    splits = tmp_path / "splits"
    shutil.copytree(require_shared_splits(), splits)
    for copy in ("trx/hmdb_ARN/testlist03.txt", "hyrsm/hmdb51/test_few_shot.txt"):
        path = splits / copy
        if path.exists():
            path.write_bytes(path.read_bytes().replace(b"\n", b"\r\n"))
    (tmp_path / "data" / "hmdb51" / "brush_hair").mkdir(parents=True)
    (tmp_path / "data" / "hmdb51" / "brush_hair" / "a.avi").write_bytes(b"x")
    monkeypatch.setenv("FSAR_SPLITS", str(splits))
    argv = ["--table", "1", "--method", "otam", "--root", str(tmp_path / "data")]
    assert _run_plan(tmp_path, *argv) == 0
    out = capsys.readouterr().out
    assert "the videos of hmdb51 (videos at " in out and "CRLF" in out
    assert "No real dataset found" not in out


def test_fsar_data_set_to_a_datasets_own_folder_is_not_planned_then_refused(tmp_path, monkeypatch):
    """The planner read FSAR_DATA as --root (the dataset's own folder accepted), the cells as
    FSAR_DATA/<folder>: 18 hmdb51 cells were planned, then refused ('is --root right?')."""
    from data_fixtures import require_shared_splits

    from fsarbench.experiments.grids import available_datasets

    splits = require_shared_splits()
    first = (splits / "trx" / "hmdb_ARN" / "testlist03.txt").read_text().split()[0]
    video = tmp_path / "hmdb51" / f"{first}.avi"
    video.parent.mkdir(parents=True)
    video.write_bytes(b"x")
    monkeypatch.setenv("FSAR_SPLITS", str(splits))
    monkeypatch.setenv("FSAR_DATA", str(tmp_path))  # the data root: found
    assert available_datasets() == ["hmdb51"]
    monkeypatch.setenv("FSAR_DATA", str(tmp_path / "hmdb51"))  # the dataset's own folder
    assert "hmdb51" not in available_datasets()
    assert available_datasets(str(tmp_path / "hmdb51")) == ["hmdb51"]  # as --root: found


@pytest.mark.parametrize(
    ("field", "value", "said"),
    [("momentum", 1.0, "must be below 1"), ("weight_decay", 1e9, "weight_decay")],
)
def test_a_momentum_of_one_and_an_absurd_weight_decay_are_refused(field, value, said):
    """SGD with momentum 1 never forgets a gradient (it diverged), and a weight decay of 1e9
    trained every weight to 0; both were recorded as ordinary recipes."""
    from fsarbench.training import Recipe

    with pytest.raises(ConfigError, match=said):
        Recipe(optimizer="sgd", **{field: value})
    Recipe(optimizer="sgd", momentum=0.99, weight_decay=1.0)
