"""The package's allocator setting (fsarbench._env): on by default on glibc, off when the
user asks for glibc's defaults or tunes malloc through its own variables."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from fsarbench import _env

GLIBC = _env._glibc()


def _run(**env: str) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("MALLOC_", "FSAR_MALLOC"))}
    # the module alone (importing the package would import torch: seconds per case)
    code = f"import runpy; print(runpy.run_path({_env.__file__!r})['MALLOC_TUNED'])"
    out = subprocess.run(
        [sys.executable, "-c", code], env={**base, **env}, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    return out


def _tuned(**env: str) -> str:
    return _run(**env).stdout.strip()


@pytest.mark.skipif(not GLIBC, reason="glibc's mallopt only")
def test_set_by_default_on_glibc() -> None:
    assert _tuned() == "True"
    assert _tuned(FSAR_MALLOC="reuse") == "True"


@pytest.mark.skipif(not GLIBC, reason="glibc's mallopt only")
def test_an_unknown_choice_is_warned_about_and_the_default_kept() -> None:
    out = _run(FSAR_MALLOC="off")
    assert out.stdout.strip() == "True"
    assert "FSAR_MALLOC='off' is not one of ('reuse', 'default')" in out.stderr


@pytest.mark.parametrize(
    "env",
    [{"FSAR_MALLOC": "default"}, {"MALLOC_TRIM_THRESHOLD_": "0"}, {"MALLOC_MMAP_THRESHOLD_": "1"}],
)
def test_left_alone_when_the_user_chooses(env: dict[str, str]) -> None:
    assert _tuned(**env) == "False"


def test_values_within_glibc_limits() -> None:
    assert _env.MMAP_THRESHOLD <= 32 << 20  # glibc refuses larger thresholds on 64-bit
    assert _env.TRIM_THRESHOLD < 1 << 31 and _env.TOP_PAD < 1 << 31  # mallopt takes an int
