"""A bad value in an environment variable stops a command at its start, naming the variable
(FSAR_LOCK_TIMEOUT=abc was read at the first contended lock, hours into a shared run, and
ended it with "could not convert string to float: 'abc'")."""

from __future__ import annotations

import pytest

from fsarbench.cli.main import main
from fsarbench.distributed.env import dist_env
from fsarbench.env_settings import EnvSettingError, check_environment, env_number
from fsarbench.locks import lock_timeout
from fsarbench.progress import progress_every, progress_on

BAD = [
    ("FSAR_LOCK_TIMEOUT", "abc"),
    ("FSAR_LOCK_TIMEOUT", "nan"),
    ("FSAR_PROGRESS_EVERY", "abc"),
    ("FSAR_PROGRESS_EVERY", "-5"),
    ("FSAR_PROGRESS_EVERY", "nan"),
    ("FSAR_PROGRESS", "2"),
    ("FSAR_PROGRESS", "maybe"),
    ("WORLD_SIZE", "abc"),
    ("RANK", "1.5"),
    ("LOCAL_WORLD_SIZE", "x"),
    ("LOCAL_RANK", "x"),
    ("FSAR_SYNTH_WORKERS", "abc"),
    ("FSAR_SYNTH_WORKERS", "0"),
]


@pytest.mark.parametrize(("name", "value"), BAD)
def test_a_bad_value_is_refused_by_name_before_any_work(name, value, monkeypatch, tmp_path, capsys):
    monkeypatch.setenv(name, value)
    with pytest.raises(ValueError, match=name):
        check_environment()
    out = tmp_path / "runs"
    argv = ["run", "--method", "protonet", "--dataset", "synth", "--episodes", "20"]
    assert main([*argv, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"{name}={value!r}" in err and "run with -v" not in err
    assert not out.exists()  # nothing was started


def test_good_values_are_read_as_documented(monkeypatch):
    for name in ("FSAR_LOCK_TIMEOUT", "FSAR_PROGRESS_EVERY", "FSAR_PROGRESS", "WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    assert lock_timeout() == -1.0 and progress_every() == 30.0 and progress_on()
    monkeypatch.setenv("FSAR_LOCK_TIMEOUT", "0.2")
    monkeypatch.setenv("FSAR_PROGRESS_EVERY", "0")
    monkeypatch.setenv("FSAR_PROGRESS", "0")
    assert lock_timeout() == 0.2 and progress_every() == 0.0 and not progress_on()
    monkeypatch.setenv("FSAR_LOCK_TIMEOUT", " ")
    assert lock_timeout() == -1.0  # blank is unset
    check_environment()
    assert dist_env({"WORLD_SIZE": "2", "RANK": "1"}).rank == 1


def test_env_number_bounds(monkeypatch):
    monkeypatch.setenv("X_TEST", "3")
    assert env_number("X_TEST", 1, kind=int, minimum=1, what="w") == 3
    with pytest.raises(EnvSettingError, match=r"X_TEST='3' is not a whole number > 3 \(w\)"):
        env_number("X_TEST", 1, kind=int, above=3, what="w")
    monkeypatch.setenv("X_TEST", "2.5")
    with pytest.raises(EnvSettingError, match="not a whole number >= 1"):
        env_number("X_TEST", 1, kind=int, minimum=1, what="w")


def test_what_worked_before_still_works(monkeypatch):
    """The first version refused FSAR_LOCK_TIMEOUT=inf, FSAR_PROGRESS=false (which meant on),
    a blank WORLD_SIZE and a stray RANK=1, and checked FSAR_CACHE for every command."""
    monkeypatch.setenv("FSAR_LOCK_TIMEOUT", "inf")
    monkeypatch.setenv("FSAR_PROGRESS_EVERY", "inf")
    monkeypatch.setenv("WORLD_SIZE", "")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("FSAR_CACHE", "/proc/no/such/folder")
    check_environment()
    assert lock_timeout() == float("inf") and progress_every() == float("inf")
    for off in ("0", "false", "No", "OFF"):
        monkeypatch.setenv("FSAR_PROGRESS", off)
        assert not progress_on()
    for on in ("1", "true", "Yes", "on"):
        monkeypatch.setenv("FSAR_PROGRESS", on)
        assert progress_on()
    assert dist_env({"WORLD_SIZE": "", "RANK": ""}).world_size == 1


def test_a_failed_write_under_a_set_folder_names_the_setting(monkeypatch, tmp_path):
    from fsarbench.env_settings import folder_setting_of

    monkeypatch.setenv("FSAR_CACHE", str(tmp_path / "c"))
    assert "under FSAR_CACHE=" in folder_setting_of(tmp_path / "c" / "features" / "x")
    assert folder_setting_of(tmp_path / "elsewhere") == ""
    monkeypatch.delenv("FSAR_CACHE")
    assert folder_setting_of(tmp_path / "c") == ""
