"""The paper's protocol end to end on this machine (slow: about an hour on 2 cores, see
docs/protocol.md): every grid of ``run --all`` on the finetune track with a small backbone, its plan
first."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pandas as pd
import pytest

COMMAND = ["run", "--all", "--track", "finetune", "--option", "backbone=resnet18"]
COMMAND += ["weights=none", "crop=64", "--episodes", "500"]


def _fsarbench(args: list[str], tmp_path) -> str:
    env = {**os.environ, "FSAR_CACHE": str(tmp_path / "cache")}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "fsarbench",
            *args,
            "--out",
            str(tmp_path / "runs"),
            "--no-progress",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=4 * 3600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


@pytest.mark.slow
def test_run_all_finetune_on_synth(tmp_path):
    plan = _fsarbench([*COMMAND, "--plan"], tmp_path)
    units, cells = map(int, re.search(r"(\d+) model\(s\) to train for (\d+) cell", plan).groups())
    assert not (tmp_path / "runs" / "models").exists()
    out = _fsarbench(COMMAND, tmp_path)
    summary = pd.read_csv(tmp_path / "runs" / "summary.csv")
    assert len(summary) == cells and set(summary["track"]) == {"finetune"}
    assert len(list((tmp_path / "runs" / "models").iterdir())) == units
    assert f"{units} model(s) trained" in out
    for n in range(1, 7):
        table = (tmp_path / "runs" / "tables" / f"paper_table{n}.md").read_text()
        assert "run cells: finetune track" in table
