"""Packaging: every package folder is listed, and no top-level import name can be shadowed."""

from __future__ import annotations

from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[1]


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_every_package_folder_is_listed():
    listed = set(_pyproject()["tool"]["setuptools"]["packages"])
    found = {
        ".".join(p.parent.relative_to(ROOT).parts)
        for p in (ROOT / "fsarbench").rglob("__init__.py")
    }
    assert found <= listed, f"add to pyproject [tool.setuptools] packages: {sorted(found - listed)}"


def test_plugin_folders_install_under_prefixed_names():
    cfg = _pyproject()["tool"]["setuptools"]
    assert cfg["package-dir"] == {
        "fsarbench_baselines": "baselines",
        "fsarbench_sgtm": "sgtm",
        "fsarbench_splits": "splits",
    }
    assert not {"baselines", "sgtm", "splits"} & set(cfg["packages"])


def test_entry_points_resolve():
    from importlib.metadata import entry_points

    eps = {ep.name: ep for ep in entry_points(group="fsarbench.methods")}
    assert {"protonet", "otam", "bimhm", "trx", "hyrsm", "sgtm"} <= set(eps)
    for ep in eps.values():
        ep.load()
