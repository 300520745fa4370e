from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import fsarbench as fb
from fsarbench.cli.main import main
from fsarbench.testing.contract import CONTRACT_CHECKS


def test_help_lists_commands(capsys):
    assert main([]) == 2
    out = capsys.readouterr().out
    for cmd in ("list", "eval", "run"):
        assert cmd in out


def test_list_methods(capsys):
    assert main(["list", "methods"]) == 0
    assert "protonet" in capsys.readouterr().out


def test_eval_command_writes_record(tmp_path, capsys):
    pool = np.repeat(np.arange(6), 4)
    torch.save(torch.rand(len(pool), 4, 8), tmp_path / "f.pt")
    fb.make_manifest(pool, way=3, shot=1, episodes=30, dataset="toy").save(tmp_path / "m.json")
    rc = main(
        [
            "eval",
            "protonet",
            "--features",
            str(tmp_path / "f.pt"),
            "--manifest",
            str(tmp_path / "m.json"),
            "--out",
            str(tmp_path / "runs"),
            "--dataset",
            "toy",
        ]
    )
    assert rc == 0
    assert "± is the 95% CI half-width" in capsys.readouterr().out
    (record,) = fb.load_records(tmp_path / "runs")
    assert 1 <= record.compute["batch_episodes"] <= 30  # every record says (run's did)


def test_eval_without_a_checkpoint_evaluates_one_model_every_time(tmp_path, capsys):
    """An untrained method's weights were drawn from torch's global state: two runs (and
    the ranks of one torchrun) evaluated different models under one record id."""
    pool = np.repeat(np.arange(6), 4)
    torch.save(torch.rand(len(pool), 4, 8), tmp_path / "f.pt")
    fb.make_manifest(pool, way=3, shot=1, episodes=60, dataset="toy").save(tmp_path / "m.json")
    args = ["eval", "hyrsm", "--features", str(tmp_path / "f.pt")]
    args += ["--manifest", str(tmp_path / "m.json"), "--hparams", '{"heads": 2}']
    outs = []
    for seed in (1, 2):
        torch.manual_seed(seed)  # whatever state the process is in
        assert main(args) == 0
        outs.append(capsys.readouterr().out.split("±")[0].split()[-1])
    assert outs[0] == outs[1]


def test_errors_are_one_line_with_exit_2(tmp_path, capsys):
    rc = main(["eval", "protonett", "--features", "x.pt", "--manifest", "m.json"])
    assert rc == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "does not exist" in err
    torch.save(torch.rand(3, 4, 8), tmp_path / "f.pt")
    fb.make_manifest([0, 1, 2], way=3, shot=1, queries=0, episodes=1).save(tmp_path / "m.json")
    rc = main(
        [
            "eval",
            "protonett",
            "--features",
            str(tmp_path / "f.pt"),
            "--manifest",
            str(tmp_path / "m.json"),
        ]
    )
    assert rc == 2 and "closest first): protonet" in capsys.readouterr().err


def test_run_requires_a_selection(capsys):
    assert main(["run"]) == 2
    assert "--all, --table N or --method" in capsys.readouterr().err


def test_module_entry_point():
    out = subprocess.run(
        [sys.executable, "-m", "fsarbench", "--help"], capture_output=True, text=True, check=True
    )
    assert "few-shot action recognition" in out.stdout


def test_building_the_parser_imports_no_reporting_library():
    """scipy, pandas and matplotlib are imported where a number or figure is made: at module
    level they cost every command about 3 s before it parsed its arguments."""
    code = (
        "import sys; from fsarbench.cli.main import build_parser; build_parser(); "
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'scipy', 'pandas', 'matplotlib'}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_eval_rebuilds_a_checkpoint_with_the_hyperparameters_it_was_trained_with(tmp_path):
    # HyRSM's Kinetics positional encoder is not in its state dict: a checkpoint evaluated
    # without its stored hyper-parameters would silently run with the defaults.
    import argparse

    from fsarbench.cli.eval_cmd import build_method

    trained = fb.create_method("hyrsm", feature_dim=16, seq_len=4, dataset="kinetics100")
    path = tmp_path / "best.pt"
    torch.save(
        {"method": trained.state_dict(), "recipe": {"adapter": "none"}, "hparams": trained.hparams},
        path,
    )

    def build(hparams: str) -> fb.FewShotMethod:
        args = argparse.Namespace(
            method="hyrsm",
            num_train_classes=None,
            dataset="custom",
            hparams=hparams,
            checkpoint=str(path),
        )
        return build_method(args, (4, 16))

    assert build("{}").hparams == trained.hparams
    assert build('{"position_b": 0.5}').config.position_b == 0.5


def test_check_method_reports_each_contract_property(capsys):
    from fsarbench.cli.main import main

    assert main(["check-method", "protonet"]) == 0
    out = capsys.readouterr().out
    assert (
        "pass support_order_invariance" in out
        and f"{len(CONTRACT_CHECKS)}/{len(CONTRACT_CHECKS)} checks passed" in out
    )


def test_check_method_names_a_failing_property(capsys, monkeypatch):
    from fsarbench.cli.main import main
    from fsarbench.testing import contract

    def broken(name):
        raise AssertionError("logits of shape [2, 5] expected")

    monkeypatch.setitem(contract.CONTRACT_CHECKS, "shapes", broken)
    assert main(["check-method", "protonet"]) == 1
    assert "FAIL shapes: logits of shape [2, 5] expected" in capsys.readouterr().out


def test_a_method_without_docstring_is_not_described_by_the_base_class():
    import fsarbench as fb
    from fsarbench.registry import _REGISTRY, method_info, register_method

    class Plain(fb.FewShotMethod):
        pass

    register_method("plain-undocumented")(Plain)
    try:
        assert method_info("plain-undocumented").description == "(no class docstring)"
    finally:
        _REGISTRY.pop("plain-undocumented", None)


def test_progress_is_plain_lines_when_stderr_is_not_a_terminal(monkeypatch, capsys):
    from fsarbench.progress import PlainProgress, progress_bar

    monkeypatch.setenv("FSAR_PROGRESS_EVERY", "0")
    monkeypatch.delenv("FSAR_PROGRESS", raising=False)  # CI turns progress off
    bar = progress_bar(total=3, desc="train", unit="step")  # pytest's stderr is no terminal
    assert isinstance(bar, PlainProgress)
    for _ in range(3):
        bar.update(1)
    bar.close()
    lines = capsys.readouterr().err.strip().splitlines()
    # one line per update (every=0); closing adds none: it printed the last line twice
    assert len(lines) == 3 and "\r" not in "".join(lines)
    assert lines[-1].split(" ", 1)[1].startswith("train: 3/3 step (")
    assert "left" not in lines[-1] and "left)" in lines[0]  # 2 of 3 steps to go, then done


def test_plain_progress_rates_only_this_process_work_and_says_what_is_left(monkeypatch):
    """A resumed bar counted the steps done before the resume into its rate: 900 of 1,000
    steps resumed, one step in 10 s printed '90.10 step/s' and no time left to wait."""
    import io

    from fsarbench import progress

    clock = iter([0.0, 10.0, 10.0, 20.0, 20.0])
    monkeypatch.setattr(progress.time, "perf_counter", lambda: next(clock))
    out = io.StringIO()
    bar = progress.PlainProgress(total=1000, initial=900, unit="step", every=5, stream=out)
    bar.update(1)  # t=10: 901/1000, 0.10 step/s, 99 steps left
    bar.update(9)  # t=20: 910/1000, 0.50 step/s, 90 left: 180 s = 3 min
    lines = out.getvalue().splitlines()
    assert "901/1000 step (10 s, 0.10 step/s, about 16 min left)" in lines[0]
    assert "910/1000 step (20 s, 0.50 step/s, about 3 min left)" in lines[1]


def test_splits_dir_is_accepted_before_and_after_the_action(capsys):
    from pathlib import Path

    from fsarbench.cli.main import main

    shared = Path(__file__).resolve().parents[2] / "shared" / "splits"
    if not shared.is_dir():
        pytest.skip("../shared/splits is not beside this checkout")
    for argv in (
        ["splits", "verify", "--splits-dir", str(shared), "--variant", "ucf101"],
        ["splits", "--splits-dir", str(shared), "verify", "--variant", "ucf101"],
    ):
        assert main(argv) == 0
        assert f"checked under {shared}: OK" in capsys.readouterr().out


def test_list_backbones_and_protocols(capsys):
    assert main(["list", "backbones"]) == 0
    out = capsys.readouterr().out.split()
    assert {"resnet18", "resnet50", "timm:<model>"} <= set(out)
    assert main(["list", "protocols"]) == 0
    assert [line.split()[0] for line in capsys.readouterr().out.splitlines()] == [
        "seed",
        "trx",
        "hyrsm",
        "clip-fsar",
    ]


def test_list_datasets_which_help_and_errors_point_to(capsys):
    """train's --dataset help and an eval error pointed to a 'data list' command that does
    not exist."""
    from fsarbench.data.datasets import list_datasets

    assert main(["list", "datasets"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == list_datasets()
    assert any(line.startswith("synth ") and "not flipped" in line for line in lines)
    assert "'data list'" not in (Path(__file__).parents[1] / "docs" / "reference.md").read_text()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["run", "--table", "6", "--track", "finetune", "--option", "protocol=trx"], "--protocol"),
        (["run", "--table", "6", "--plan", "--throughput", "0"], "--throughput must be"),
        (["run", "--table", "6", "--option", "crop=64"], "--track finetune only"),
        (["run", "--table", "6", "--shard", "2/2"], "0 <= I < N"),
        (["run", "--table", "6", "--track", "finetune", "--option", "crops=64"], "'crop'"),
        (["eval", "otam", "--features", "x.pt"], "go together"),
    ],
)
def test_bad_run_and_eval_arguments_are_named_errors(argv, message, capsys, tmp_path):
    assert main([*argv, "--out", str(tmp_path)]) == 2
    assert message in capsys.readouterr().err


def test_sigterm_ends_a_command_like_ctrl_c_so_finished_work_is_saved():
    import os
    import signal

    from fsarbench.interrupts import interrupt_requested, interrupts_recorded

    if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        pytest.skip("a SIGTERM handler is already installed in this process")
    with pytest.raises(KeyboardInterrupt, match="signal 15"), interrupts_recorded():
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            __import__("time").sleep(5)  # the handler interrupts this
        finally:
            assert interrupt_requested()
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # restored after the command
    assert not interrupt_requested()  # cleared with the command


@pytest.mark.parametrize("signum", ["SIGINT", "SIGTERM"])
def test_an_interrupt_pandas_reports_as_a_parse_error_still_ends_the_run(
    signum, tmp_path, capsys, monkeypatch
):
    """pandas' C parser turns a Ctrl-C inside its gzip read into ParserError; reading a
    record's per-query rows took that for a damaged file (the cell was left out of the
    tables, or re-evaluated) and the run went on to exit 0. An interrupt ends it (130)."""
    import os
    import signal

    import pandas as pd

    from fsarbench.cli import list_cmd
    from fsarbench.report.records import QueryRowsError, _read_query_rows
    from fsarbench.results import queries_match

    sig = getattr(signal, signum)
    if signal.getsignal(sig) not in (signal.SIG_DFL, signal.default_int_handler):
        pytest.skip(f"a {signum} handler is already installed in this process")

    def interrupted_parse(*args, **kwargs):
        try:
            os.kill(os.getpid(), sig)
            __import__("time").sleep(5)  # the handler interrupts this
        except KeyboardInterrupt:
            raise pd.errors.ParserError("Calling read(nbytes) on source failed") from None

    monkeypatch.setattr(pd, "read_csv", interrupted_parse)
    record = _demo_record(tmp_path)

    def read_rows(args) -> int:
        if args.what == "methods":
            _read_query_rows(tmp_path, record)
        else:
            queries_match(tmp_path, record)
        return 0

    monkeypatch.setattr(list_cmd, "run", read_rows)
    for what in ("methods", "datasets"):
        assert main(["list", what]) == 130
        assert "interrupted; list recorded nothing" in capsys.readouterr().err
    monkeypatch.setattr(
        pd,
        "read_csv",
        lambda *a, **k: (_ for _ in ()).throw(pd.errors.ParserError("a damaged file")),
    )
    with pytest.raises(QueryRowsError, match="unreadable"):  # no interrupt: a damaged file
        _read_query_rows(tmp_path, record)
    assert queries_match(tmp_path, record) is False


def _demo_record(folder):
    """One written record with its per-query rows under ``folder``."""
    from fsarbench.report.demo import DemoSystem, write_demo_records
    from fsarbench.results import load_records

    write_demo_records(folder, [DemoSystem("otam")], settings=[(5, 1)], episodes=20)
    return load_records(folder)[0]


def test_an_error_that_a_sigterm_caused_ends_as_the_interruption(monkeypatch, capsys):
    """Under torchrun a SIGTERM reaches every rank: a rank blocked in a collective when its
    peer has already left fails with the peer's closed connection, not the signal. After a
    SIGTERM such an error ends the command as the interruption (exit 130), not an error."""
    import os
    import signal

    from fsarbench.cli import list_cmd

    if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        pytest.skip("a SIGTERM handler is already installed in this process")

    def left_collective(args) -> int:
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            __import__("time").sleep(5)  # the handler interrupts this
        finally:
            raise RuntimeError("[gloo] Connection closed by peer")

    monkeypatch.setattr(list_cmd, "run", left_collective)
    assert main(["list", "methods"]) == 130
    err = capsys.readouterr().err
    assert "interrupted; list recorded nothing" in err and "error:" not in err
    monkeypatch.setattr(list_cmd, "run", lambda args: int(f"{args.what}"))  # no signal now
    assert main(["list", "methods"]) == 2 and "error:" in capsys.readouterr().err


def test_a_nested_command_leaves_its_callers_interrupt_recorded():
    """main() inside main() (tests, in-process jobs) or on another thread: only the block
    that installed the handlers clears the record, so an interrupt is not forgotten."""
    import signal
    import threading

    import fsarbench.interrupts as intr

    if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        pytest.skip("a SIGTERM handler is already installed in this process")
    with intr.interrupts_recorded():
        intr._REQUESTED.set()  # what the handler does on Ctrl-C or SIGTERM
        with intr.interrupts_recorded():
            assert intr.interrupt_requested()
        thread = threading.Thread(target=lambda: intr.interrupts_recorded().__enter__())
        thread.start()
        thread.join()
        assert intr.interrupt_requested()
    assert not intr.interrupt_requested()


def test_no_help_text_shows_a_doubled_percent_sign():
    """argparse %-formats the help of arguments but not a parser's description: 'eval --help'
    and 'table --help' printed "accuracy ± 95%% CI"."""
    import argparse

    from fsarbench.cli.main import build_parser

    parser = build_parser()
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    for name, command in sub.choices.items():
        assert "%%" not in command.format_help(), name


@pytest.mark.parametrize(
    "argv",
    [
        ["eval", "protonet", "--dataset", "synth", "--out", "{file}"],
        ["run", "--method", "protonet", "--out", "{file}"],
        ["train", "protonet", "--out", "{file}"],
        ["report", "--out", "{file}"],
        ["figures", "--out", "{file}"],
        ["merge", "--out", "{file}"],
        ["bundle", "--method", "protonet", "--out", "{folder}"],
    ],
)
def test_an_out_of_the_wrong_kind_is_refused_before_any_work(argv, tmp_path, capsys):
    """'--out results.csv' ran a whole evaluation, then stopped with NotADirectoryError and
    lost its result; 'bundle --out FOLDER' stopped with IsADirectoryError."""
    file = tmp_path / "results.csv"
    file.write_text("a user's file\n")
    argv = [a.format(file=file, folder=tmp_path) for a in argv]
    with pytest.raises(SystemExit) as stop:
        main(argv)
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert "is a file, not a folder" in err or "is a folder, not a file" in err
    assert file.read_text() == "a user's file\n"


def test_verify_names_a_folder_given_for_a_bundle(tmp_path, capsys):
    assert main(["verify", str(tmp_path)]) == 2
    assert "is a folder, not a bundle file" in capsys.readouterr().err


def test_bootstrap_takes_enough_resamples_for_a_95_percent_interval(capsys):
    """'compare --bootstrap 1' printed '+4.52 [+3.16, +3.16]': an interval of one resample
    that excluded its own estimate."""
    with pytest.raises(SystemExit):
        main(["compare", "a", "b", "--bootstrap", "39"])
    assert "at least 40 (each 2.5% tail" in capsys.readouterr().err


def test_check_method_names_bad_hparams_once(capsys):
    """A mistyped --hparams failed all 12 checks with the same ConfigError, 12 times."""
    assert main(["check-method", "protonet", "--hparams", '{"prototype": true}']) == 1
    out = capsys.readouterr().out
    assert out.count("unknown key 'prototype'") == 1 and "(no check ran)" in out


def test_a_flag_of_overrides_given_twice_keeps_both():
    """'--recipe steps=2 ... --recipe lr=0.001' planned 30 steps: the second flag replaced
    the first; a key set in both is still refused."""
    from fsarbench.cli.common import parse_overrides
    from fsarbench.cli.main import build_parser

    parse = build_parser().parse_args
    args = parse(["run", "--recipe", "steps=2", "--recipe", "lr=0.001", "--option", "crop=64"])
    assert parse_overrides(args.recipe, "--recipe") == {"steps": 2, "lr": 0.001}
    args = parse(["train", "otam", "--dataset", "synth", "--option", "a=1", "--option", "b=2"])
    assert args.option == ["a=1", "b=2"]
    twice = parse(["run", "--recipe", "steps=2", "--recipe", "steps=3"])
    with pytest.raises(ValueError, match="sets 'steps' twice"):
        parse_overrides(twice.recipe, "--recipe")


def test_a_disk_that_refuses_a_write_is_an_error_not_a_traceback(monkeypatch, capsys):
    """A read-only cache mount ended 'extract' with a raw OSError traceback."""
    import errno

    import fsarbench.cli.list_cmd as list_cmd

    def read_only(args):
        raise OSError(errno.EROFS, "Read-only file system", "/mnt/cache/.lock")

    monkeypatch.setattr(list_cmd, "run", read_only)
    assert main(["list", "methods"]) == 2
    assert "error: Read-only file system: /mnt/cache/.lock" in capsys.readouterr().err


def test_only_commands_that_resume_say_a_re_run_resumes(monkeypatch, capsys):
    """eval said 'finished work is saved and a re-run resumes from it' after a Ctrl-C, and
    its re-run started again from the first batch."""
    from fsarbench.cli import eval_cmd
    from fsarbench.cli import main as main_mod

    def interrupted(args) -> int:
        raise KeyboardInterrupt

    monkeypatch.setattr(eval_cmd, "run", interrupted)
    assert main(["eval", "protonet", "--features", "f.pt", "--manifest", "m.json"]) == 130
    assert "interrupted; eval recorded nothing: run it again" in capsys.readouterr().err
    assert {"run", "train", "extract"} == main_mod.RESUMING


def test_refusals_fsarbench_raises_itself_get_no_traceback_hint(monkeypatch, capsys):
    """'compare foo otam' ended '(run with -v for the traceback)' after a plain refusal
    ("no records for 'foo'"): the hint is for errors raised inside a library."""
    from fsarbench.cli import list_cmd
    from fsarbench.report import compare

    def refused(args):
        return compare.compare_systems(".", [], "a", "b", test="bogus")  # fsarbench refuses

    monkeypatch.setattr(list_cmd, "run", refused)
    assert main(["list", "methods"]) == 2
    err = capsys.readouterr().err
    assert "error: test must be one of" in err and "traceback" not in err

    def library(args):
        return int("not a number")  # raised by the interpreter, called from this module

    monkeypatch.setattr(list_cmd, "run", library)
    assert main(["list", "methods"]) == 2
    assert "(run with -v for the traceback)" in capsys.readouterr().err

    def bug(args):  # a ValueError of int() inside fsarbench's code, not a refusal it raised
        exec("int('not a number')", {"__name__": "fsarbench.some_module"})

    monkeypatch.setattr(list_cmd, "run", bug)
    assert main(["list", "methods"]) == 2
    assert "(run with -v for the traceback)" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--test-episodes", "50"], "apply to --track finetune only"),  # was ignored silently
        (["--shots", "3"], "apply to --track finetune only"),
        (["--track", "finetune", "--shots", "1"], "give both"),
        (["--track", "finetune", "--test-episodes", "5", "--shots", "0"], "at least 1"),
        (["--track", "finetune", "--test-episodes", "2000000"], "at most 1,000,000"),
        (["--track", "finetune", "--test-episodes", "-4"], "at least 1"),  # was "no test"
    ],
)
def test_train_test_settings_are_checked_before_training(extra, message, tmp_path, capsys):
    """``train --test-episodes 5 --shots 0`` trained the whole model and then failed at test
    time; 2,000,000 episodes passed the limit run and eval keep; -4 meant no test."""
    argv = ["train", "otam", "--dataset", "synth", "--out", str(tmp_path / "t"), *extra]
    try:
        code = main(argv)
    except SystemExit as stop:  # argparse's own refusals
        code = stop.code
    assert code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "t").exists()


@pytest.mark.parametrize("command", ["run", "train", "eval", "extract"])
@pytest.mark.parametrize(
    ("device", "message"),
    [("cdua", "unknown device 'cdua'"), ("cpu:1", "the CPU is one device")],
)
def test_a_bad_device_is_refused_when_parsed(command, device, message, capsys):
    """``run --device cdua`` printed torch's list of 20 device types, ``run --device cuda``
    without a GPU torch's driver message from inside the run; eval alone named it."""
    from fsarbench.cli.main import build_parser

    argv = {"run": ["run"], "train": ["train", "otam", "--dataset", "synth"]}.get(
        command, [command, "otam"] if command == "eval" else [command, "synth"]
    )
    with pytest.raises(SystemExit):
        build_parser().parse_args([*argv, "--device", device])
    assert message in capsys.readouterr().err
    for fine in ("cpu", "cpu:0", "mps"):  # mps: torch's to judge, as before
        assert build_parser().parse_args([*argv, "--device", fine]).device == fine


def test_cuda_without_a_gpu_is_refused_when_parsed(monkeypatch):
    import argparse

    import torch

    from fsarbench.cli.common import device_name

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(argparse.ArgumentTypeError, match="sees no CUDA GPU"):
        device_name("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert device_name("cuda:1") == "cuda:1"
    with pytest.raises(argparse.ArgumentTypeError, match=r"2 GPU\(s\) here \(cuda:0 to cuda:1\)"):
        device_name("cuda:5")


def test_an_output_folder_that_cannot_be_written_is_refused_when_parsed(tmp_path, monkeypatch):
    """``eval --out`` on a read-only mount ran every episode, then failed at its first write
    and never printed the accuracy."""
    import argparse
    import os
    import re

    from fsarbench.cli.common import folder_path, writable_folder

    assert writable_folder(str(tmp_path / "new" / "out")) == tmp_path / "new" / "out"
    real = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: Path(p) != tmp_path and real(p, mode))
    with pytest.raises(argparse.ArgumentTypeError, match="cannot be created: .* not writable"):
        writable_folder(str(tmp_path / "new" / "out"))
    with pytest.raises(
        argparse.ArgumentTypeError, match=f"{re.escape(str(tmp_path))} is not writable"
    ):
        writable_folder(str(tmp_path))
    assert folder_path(str(tmp_path)) == tmp_path  # read, not written (run --plan): fine
    assert main(["run", "--method", "otam", "--dataset", "synth", "--out", str(tmp_path)]) == 2


def test_a_failed_rename_names_the_path_in_the_way(capsys):
    """A folder where summary.csv belongs was reported by the temporary file's name only."""
    import argparse

    from fsarbench.cli.main import _run_command

    def fails(args):
        raise IsADirectoryError(
            21, "Is a directory", "/r/.summary.csv.x.tmp", None, "/r/summary.csv"
        )

    assert _run_command(argparse.Namespace(command=None, func=fails, verbose=False)) == 2
    assert "error: Is a directory: /r/summary.csv" in capsys.readouterr().err


def test_a_torchrun_process_stopped_for_another_says_where_the_cause_is(monkeypatch, capsys):
    """torchrun stops every process when one fails; each printed only 'interrupted ...
    resumes', beside the failed one's error, as if someone had pressed Ctrl-C."""
    from fsarbench.cli import extract_cmd

    def interrupted(args) -> int:
        raise KeyboardInterrupt

    monkeypatch.setattr(extract_cmd, "run", interrupted)
    argv = ["extract", "synth", "--split", "test"]
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert main(argv) == 130
    assert "if another process failed, its error says why" in capsys.readouterr().err
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert main(argv) == 130
    assert "torchrun" not in capsys.readouterr().err


def test_a_finetune_crop_without_resize_is_named():
    """The docs' `--option crop=112` read as a lower resolution; the finetune presets keep
    their 256 resize, so it trained on a fifth of each frame."""
    from fsarbench.cli.common import crop_alone_note

    assert "resize=128 crop=112" in crop_alone_note({"crop": 112})
    assert crop_alone_note({"crop": 112, "resize": 128}) == ""
    assert crop_alone_note({"frames": 4}) == ""


def test_commands_that_found_nothing_say_so(tmp_path, capsys):
    """'list methods --pattern sgtm' printed nothing (the pattern needs 'sgtm*'), 'table 1
    --source runs' with no results printed an empty table, and 'bundle' of a missing folder
    listed the methods there as [] - each exiting as if it had worked."""
    assert main(["list", "methods", "--pattern", "sgtm"]) == 2
    assert "fnmatch pattern, e.g. 'sgtm*'" in capsys.readouterr().err
    assert main(["list", "methods", "--pattern", "sgtm*"]) == 0
    assert "sgtm-otam " in capsys.readouterr().out
    missing = tmp_path / "nothing"
    assert main(["table", "1", "--source", "runs", "--runs", str(missing)]) == 2
    assert "no records under" in capsys.readouterr().err
    assert main(["bundle", "--runs", str(missing), "--method", "otam"]) == 2
    assert f"results folder {missing} does not exist" in capsys.readouterr().err
