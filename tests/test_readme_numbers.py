"""The counts the README and the user guide state about `make run` are the ones the code
produces: models and cells from `run --all --plan` (the same selection `run --all` trains and
evaluates), and the synth training budget from the frozen recipe file."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import pytest

from fsarbench.cli.main import main
from fsarbench.training.recipe import frozen_recipe

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
GUIDE = (ROOT / "docs" / "user-guide.md").read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def plan_counts(tmp_path_factory) -> tuple[int, int]:
    out = tmp_path_factory.mktemp("plan")
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        assert main(["run", "--all", "--plan", "--out", str(out)]) == 0
    found = re.search(r"^(\d+) model\(s\) to train for (\d+) cell\(s\):", buffer.getvalue(), re.M)
    assert found, buffer.getvalue()[-2000:]
    return int(found.group(1)), int(found.group(2))


def test_readme_states_the_models_and_cells_make_run_has(plan_counts):
    models, cells = plan_counts
    stated = re.search(r"trains (\d+) models .*?evaluates\s+(\d+) cells", README, re.S)
    assert stated, "README lost its make-run counts"
    assert (int(stated.group(1)), int(stated.group(2))) == (models, cells)


def test_user_guide_measured_run_matches_the_plan(plan_counts):
    models, cells = plan_counts
    assert f"{cells} cells × 10,000 test episodes" in GUIDE
    assert f"**{models} trained models**" in GUIDE


def test_user_guide_states_the_synth_training_budget():
    recipe = frozen_recipe("otam", dataset="synth")
    stated = re.search(r"frozen recipe is (\d+) updates of (\d+) episodes", GUIDE)
    assert stated
    assert (int(stated.group(1)), int(stated.group(2))) == (
        recipe.steps,
        recipe.episodes_per_step,
    )
