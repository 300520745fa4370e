"""new-method: the scaffolded package registers, passes the contract and reaches the leaderboard."""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
from importlib.metadata import EntryPoint
from pathlib import Path

import pytest

import fsarbench.registry as registry
from fsarbench.cli.main import main
from fsarbench.episodes import make_manifest
from fsarbench.evaluate import evaluate
from fsarbench.report.demo import DemoSystem, demo_features, write_demo_records
from fsarbench.report.leaderboard import build_leaderboard
from fsarbench.report.records import load_entries
from fsarbench.results import make_record, save_result
from fsarbench.scaffold.new_method import scaffold_names, write_scaffold
from fsarbench.testing.contract import run_contract

NAME = "scaffold-probe-head"
MODULE = "scaffold_probe_head"


def test_names_and_refusals(tmp_path) -> None:
    s = scaffold_names("my-head")
    assert (s.module, s.class_name, s.dist) == ("my_head", "MyHead", "fsarbench-my-head")
    with pytest.raises(ValueError, match="lower case"):
        scaffold_names("My Head")
    with pytest.raises(ValueError, match="already registered"):
        scaffold_names("protonet")
    with pytest.raises(ValueError, match="already importable"):
        scaffold_names("numpy")
    with pytest.raises(ValueError, match="lower case"):  # `$` matched before the newline
        scaffold_names("nl-head\n")
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "keep.txt").write_text("mine")
    with pytest.raises(ValueError, match="not empty"):
        write_scaffold("my-head", tmp_path / "x")


def test_scaffold_files(tmp_path, capsys) -> None:
    assert main(["new-method", NAME, "--dir", str(tmp_path / "pkg")]) == 0
    root = tmp_path / "pkg"
    py = (root / "pyproject.toml").read_text()
    assert '[project.entry-points."fsarbench.methods"]' in py
    assert f'"{NAME}" = "{MODULE}.method:ScaffoldProbeHead"' in py
    method = (root / "src" / MODULE / "method.py").read_text()
    for piece in ("def encode(", "def match(", "class Config:", "@dataclass"):
        assert piece in method
    assert "run" in capsys.readouterr().out
    assert "CONTRACT_CHECKS" in (root / "tests" / "test_contract.py").read_text()
    for f in root.rglob("*.py"):
        compile(f.read_text(), str(f), "exec")


def test_force_adds_missing_files_and_keeps_those_there(tmp_path, capsys) -> None:
    """``--force`` wrote every template over the folder: a project's README.md and
    pyproject.toml, or the user's edited method.py on a second run, were lost."""
    root = tmp_path / "proj"
    root.mkdir()
    (root / "README.md").write_text("my project readme\n")
    (root / "pyproject.toml").write_text('[project]\nname = "mine"\n')
    assert main(["new-method", NAME, "--dir", str(root), "--force"]) == 0
    out = capsys.readouterr().out
    assert (root / "README.md").read_text() == "my project readme\n"
    assert (root / "pyproject.toml").read_text() == '[project]\nname = "mine"\n'
    assert f"kept  {root / 'README.md'} (already there and differs" in out
    method = root / "src" / MODULE / "method.py"
    assert f"wrote {method}" in out and "def match(" in method.read_text()
    # the kept pyproject.toml does not register the method: say what to add
    assert f"does not register {NAME!r}" in out
    assert f'"{NAME}" = "{MODULE}.method:ScaffoldProbeHead"' in out

    method.write_text("# my method\n")
    done = write_scaffold(NAME, root, force=True)
    assert method.read_text() == "# my method\n"
    assert (done.written, set(done.kept)) == (
        [],
        {root / "README.md", root / "pyproject.toml", method},
    )
    assert root / "tests" / "test_contract.py" in done.unchanged


def test_force_into_a_scaffold_of_its_own_says_nothing_of_registration(tmp_path) -> None:
    """A deleted file comes back from the template; the rest are as written, and the
    scaffold's own pyproject.toml registers the method (no note)."""
    write_scaffold(NAME, tmp_path / "pkg")
    (tmp_path / "pkg" / "README.md").unlink()
    done = write_scaffold(NAME, tmp_path / "pkg", force=True)
    assert done.written == [tmp_path / "pkg" / "README.md"]
    assert len(done.unchanged) == 4 and not done.kept and not done.unregistered


def _ruff() -> str | None:
    """The ruff next to this interpreter (the venv's), else the one on PATH."""
    here = Path(sys.executable).parent / "ruff"
    return str(here) if here.is_file() else shutil.which("ruff")


@pytest.mark.parametrize("name", [NAME, "a-rather-long-name-for-a-method-package"])
def test_scaffold_is_lint_clean(tmp_path, name) -> None:
    """The generated files passed neither fsarbench's own lint selection (an unused
    ``import torch``, import groups) nor ``ruff format`` (hand-wrapped signatures)."""
    ruff = _ruff()
    if ruff is None:
        pytest.skip("ruff is not installed")
    root = tmp_path / "pkg"
    write_scaffold(name, root)
    assert "line-length = 100" in (root / "pyproject.toml").read_text()
    for argv in (
        ["check", "--select", "E,F,W,I,B,UP,SIM", "--line-length", "100"],
        ["format", "--check", "--diff", "--line-length", "100"],
    ):
        done = subprocess.run(
            [ruff, *argv, "--no-cache", str(root)], capture_output=True, text=True, cwd=root
        )
        assert done.returncode == 0, done.stdout + done.stderr


def _record_for(name: str, run_dir: Path) -> None:
    """Evaluate ``name`` with fsarbench.evaluate on random features; save its record."""
    from fsarbench.registry import create_method

    feats, labels = demo_features()
    manifest = make_manifest(
        labels, way=5, shot=1, queries=1, episodes=150, seed=0, dataset="synth", split="test"
    )
    method = create_method(name, feature_dim=feats.shape[-1], seq_len=feats.shape[1])
    result = evaluate(method, feats, manifest, progress=False)
    record = make_record(
        result,
        method=name,
        dataset="synth",
        split_variant="synth",
        manifest=manifest,
        tags={"synthetic": True},
    )
    save_result(run_dir, record, result)


def test_scaffold_via_simulated_entry_point(tmp_path, monkeypatch) -> None:
    """Fast path: no pip; the package's entry point is handed to the registry directly."""
    write_scaffold(NAME, tmp_path / "pkg")
    monkeypatch.syspath_prepend(str(tmp_path / "pkg" / "src"))
    ep = EntryPoint(NAME, f"{MODULE}.method:ScaffoldProbeHead", registry.ENTRY_POINT_GROUP)
    registry.list_methods()  # the installed plugins first, as in a real session
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    monkeypatch.setattr(registry, "_ENTRY_POINTS_LOADED", False)
    monkeypatch.setattr(registry, "entry_points", lambda group: [ep])
    try:
        assert NAME in registry.list_methods()
        run_contract(NAME)
        runs = tmp_path / "runs"
        _record_for(NAME, runs)
        write_demo_records(runs, [DemoSystem("protonet")], settings=[(5, 1)], episodes=150)
        board = build_leaderboard(runs, load_entries(runs))
        assert {s.entry.system for st in board.values() for s in st} == {NAME, "protonet"}
    finally:
        sys.modules.pop(f"{MODULE}.method", None)
        sys.modules.pop(MODULE, None)


_CHECK = textwrap.dedent("""
    import sys
    from pathlib import Path
    import fsarbench as fb
    from fsarbench.testing.contract import run_contract
    name, runs = sys.argv[1], Path(sys.argv[2])
    assert name in fb.list_methods(), fb.list_methods()
    assert fb.method_info(name).source.startswith("entry point")
    run_contract(name)
    from fsarbench.report.demo import demo_features
    feats, labels = demo_features()
    m = fb.make_manifest(labels, way=5, shot=1, queries=1, episodes=100, seed=0,
                         dataset="synth", split="test")
    method = fb.create_method(name, feature_dim=feats.shape[-1], seq_len=feats.shape[1])
    result = fb.evaluate(method, feats, m, progress=False)
    rec = fb.make_record(result, method=name, dataset="synth", split_variant="synth",
                         manifest=m)
    fb.save_result(runs, rec, result)
    print("OK", result.accuracy)
""")


@pytest.mark.slow
def test_scaffold_installs_registers_and_ranks(tmp_path) -> None:
    """pip install -e the scaffold into this venv, use it from a fresh process, uninstall."""
    root = tmp_path / "pkg"
    write_scaffold(NAME, root)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run(
        [*pip, "install", "--no-deps", "--no-build-isolation", "-e", str(root)], check=True
    )
    try:
        runs = tmp_path / "runs"
        out = subprocess.run(
            [sys.executable, "-c", _CHECK, NAME, str(runs)],
            check=True,
            capture_output=True,
            text=True,
        )
        assert "OK" in out.stdout
        write_demo_records(runs, [DemoSystem("protonet")], settings=[(5, 1)], episodes=100)
        assert main(["leaderboard", "--runs", str(runs)]) == 0
        assert NAME in (runs / "leaderboard.md").read_text()
    finally:
        subprocess.run([*pip, "uninstall", "-y", f"fsarbench-{NAME}"], check=True)
    listed = subprocess.run([*pip, "list"], capture_output=True, text=True).stdout
    assert f"fsarbench-{NAME}" not in listed
