"""Every ``python -m fsarbench`` / ``torchrun ... -m fsarbench`` command line of the README and
of every page under ``docs/`` parses with the real CLI, names methods and datasets that exist,
and (slow) the synth-sized ones run as written; the README stays short and its links resolve;
``docs/reference.md`` equals the CLI's own help."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from fsarbench.cli.main import build_parser
from fsarbench.data.datasets import list_datasets
from fsarbench.registry import list_methods

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))
#: Pages whose command lines are checked (the reference page is help text, not examples).
PAGES = [README, *(p for p in DOCS if p.name != "reference.md")]
#: Names the README creates before using them (the scaffold walk-through).
SCAFFOLDED = {"my-head"}
#: Placeholders of the README's summary table and prose, and what stands in for them.
PLACEHOLDERS = {
    "METHOD": "otam",
    "NAME": "my-head",
    "DATASET": "synth",
    "D": "synth",
    "N": "5",
    "A": "otam",
    "B": "protonet",
    "F": "feats.pt",
    "M": "manifest.json",
    "DIR": "/tmp/dir",
    "R": "/tmp/data",
    "E": "100",
    "K": "1",
    "$i/$n": "0/2",
    "$SLURM_JOB_ID": "1",
    "$HEAD:29500": "localhost:29500",
    "OUT/best.pt": "best.pt",
    "CACHE_FOLDER": "/tmp/cache",
    "OUT/models/UNIT/best.pt": "best.pt",
    "SGTM_BEST.pt": "a.pt",
    "OTAM_BEST.pt": "b.pt",
    "VIDEO_ID": "v0",
}
INLINE = re.compile(r"(?<!`)`([^`]+)`(?!`)")


def _code_commands(text: str) -> list[str]:
    out, in_code, pending = [], False, ""
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            in_code = not in_code
            continue
        if not in_code:
            continue
        line = pending + line.strip()
        if line.endswith("\\"):
            pending = line[:-1] + " "
            continue
        pending = ""
        line = re.sub(r"\s+#.*$", "", line)
        if "-m fsarbench " in line + " " and not line.startswith(("#", "import", ">>>")):
            out.append(line)
    return out


def _inline_commands(text: str) -> list[str]:
    prose = re.sub(r"```.*?```", "", text, flags=re.DOTALL)
    spans = [" ".join(s.split()) for s in INLINE.findall(prose)]
    commands = [s for s in spans if re.match(r"^(python|torchrun)\b.*-m fsarbench( |$)", s)]
    return [c for c in commands if not c.endswith("-m fsarbench ...")]  # prose, not a command


def readme_commands() -> list[str]:
    commands: list[str] = []
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        commands += _code_commands(text) + _inline_commands(text)
    return list(dict.fromkeys(commands))


def argv_of(command: str) -> list[str]:
    """The fsarbench arguments of a README command, placeholders filled in."""
    command = re.sub(r"\s*/\s*`?--[a-z-]+.*$", "", command) if " / " in command else command
    command = re.sub(r"\[[^\]]*\]", "", command)  # optional parts
    command = re.sub(r"(\S+?)\\\|\S+", r"\1", command)  # a\|b -> a
    tokens = shlex.split(command)
    start = tokens.index("-m") + 2
    return [PLACEHOLDERS.get(t, t) for t in tokens[start:]]


COMMANDS = readme_commands()


def test_the_readme_is_short_and_its_links_resolve():
    text = README.read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 200, "move detail into docs/ and link it"
    for page in [README, *DOCS]:
        for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", page.read_text(encoding="utf-8")):
            assert (page.parent / target).resolve().exists(), f"{page.name} links to {target}"


def test_the_reference_page_is_the_clis_own_help():
    from fsarbench.cli._reference import render_reference

    page = ROOT / "docs" / "reference.md"
    assert page.read_text(encoding="utf-8") == render_reference(), "run `make docs`"


def test_the_readme_has_commands():
    assert len(COMMANDS) > 40
    assert any("--track finetune" in c and " run " in c for c in COMMANDS)


@pytest.mark.parametrize("command", COMMANDS)
def test_readme_command_parses_and_names_what_exists(command):
    argv = argv_of(command)
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exit_:
        pytest.fail(f"README command does not parse ({exit_}): {command}")
    methods = set(list_methods()) | SCAFFOLDED
    named = getattr(args, "method", None)
    for name in [named] if isinstance(named, str) else named or []:
        if args.command != "new-method":
            assert name in methods, f"unknown method {name!r} in: {command}"
    datasets = getattr(args, "dataset", None)
    for name in [datasets] if isinstance(datasets, str) else datasets or []:
        if name != "custom":
            assert name in list_datasets(), f"unknown dataset {name!r} in: {command}"


def _cheap(command: str) -> bool:
    argv = argv_of(command)
    return argv[:1] in (["list"], ["protocols"]) or (
        argv[:1] == ["table"] and "--source" in argv and "published" in argv
    )


@pytest.mark.parametrize("command", [c for c in COMMANDS if _cheap(c)])
def test_read_only_readme_commands_run(command, tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "fsarbench", *argv_of(command)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr


def _scaffolded_only(argv: list[str]) -> bool:
    """Names a method that exists only after the documented scaffold step (``new-method
    my-head`` + ``pip install -e my-head``, tested end to end in tests/test_scaffold.py)."""
    known = set(list_methods())
    methods = argv[argv.index("--method") + 1 :] if "--method" in argv else []
    methods = methods[: next((i for i, a in enumerate(methods) if a.startswith("-")), None)]
    if argv[:1] == ["train"] and len(argv) > 1:
        methods.append(argv[1])
    return any(m not in known for m in methods)


def _needs_imagenet_weights(argv: list[str]) -> bool:
    """A finetune-track command with the default (ImageNet) weights, on a machine whose torch
    hub cache does not hold them (no network: the download fails, by design with a message)."""
    import torch

    if "--track" not in argv or argv[argv.index("--track") + 1] != "finetune":
        return False
    if any(a.startswith("weights=") for a in argv):
        return False
    hub = Path(torch.hub.get_dir()) / "checkpoints"
    return not any(hub.glob("resnet*.pth"))


def _synth_sized(command: str) -> bool:
    argv = argv_of(command)
    return (
        command.startswith("python ")
        and argv[:1] in (["run"], ["train"])
        and "synth" in argv
        and "--all" not in argv
        and not _scaffolded_only(argv)
    )


@pytest.mark.slow
@pytest.mark.parametrize("command", [c for c in COMMANDS if _synth_sized(c)])
def test_synth_sized_readme_commands_run_as_written(command, tmp_path):
    argv = argv_of(command)
    if _needs_imagenet_weights(argv):
        pytest.skip(
            "the finetune track's default backbone needs ImageNet weights, which cannot be "
            "downloaded here (the offline error is tested in tests/test_backbones.py)"
        )
    env = {**os.environ, "FSARBENCH_RUNS": str(tmp_path / "runs")}
    proc = subprocess.run(
        [sys.executable, "-m", "fsarbench", *argv_of(command), "--no-progress"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=3000,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
