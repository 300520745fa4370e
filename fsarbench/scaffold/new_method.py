"""Scaffold an installable third-party method package (``python -m fsarbench new-method``).

The package registers its method through the ``fsarbench.methods`` entry point, ships a method
skeleton with the encode/match split and a typed ``Config``, and a test running fsarbench's
contract suite. Templates live in ``fsarbench/scaffold/templates/*.tmpl``.
"""

from __future__ import annotations

import importlib.util
import keyword
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from string import Template

from fsarbench.registry import ENTRY_POINT_GROUP, list_methods

__all__ = ["Scaffold", "ScaffoldWrite", "scaffold_names", "write_scaffold"]

#: A whole method name (used with ``fullmatch``: ``$`` let a trailing newline through).
NAME_PATTERN = re.compile(r"[a-z][a-z0-9_-]*")

#: template file -> path in the new package (``$module`` is substituted).
FILES = {
    "pyproject.toml.tmpl": "pyproject.toml",
    "README.md.tmpl": "README.md",
    "init.py.tmpl": "src/$module/__init__.py",
    "method.py.tmpl": "src/$module/method.py",
    "test_contract.py.tmpl": "tests/test_contract.py",
}


@dataclass(frozen=True)
class Scaffold:
    """The names a new method package uses."""

    name: str  # registered method name, e.g. "my-head"
    module: str  # import name, e.g. "my_head"
    class_name: str  # e.g. "MyHead"
    dist: str  # distribution name, e.g. "fsarbench-my-head"

    def substitutions(self) -> dict[str, str]:
        return {
            "name": self.name,
            "module": self.module,
            "class_name": self.class_name,
            "dist": self.dist,
        }


def scaffold_names(name: str) -> Scaffold:
    """Validate ``name`` and derive the module, class and distribution names.

    Raises:
        ValueError: a malformed name, a name already registered, or a module name that would
            shadow an importable module.
    """
    if not NAME_PATTERN.fullmatch(name):
        raise ValueError(
            f"method name {name!r} must be lower case letters, digits, '-' or '_', "
            "starting with a letter (e.g. 'my-head')"
        )
    module = name.replace("-", "_")
    if keyword.iskeyword(module):
        raise ValueError(f"{module!r} is a Python keyword; choose another name")
    if name in list_methods():
        raise ValueError(f"a method named {name!r} is already registered; choose another name")
    if importlib.util.find_spec(module) is not None:
        raise ValueError(
            f"a module named {module!r} is already importable here; choose another "
            "name so the new package does not shadow it"
        )
    class_name = "".join(part.capitalize() for part in re.split(r"[-_]", name) if part)
    return Scaffold(name, module, class_name, f"fsarbench-{name}")


def _template(fname: str) -> str:
    return resources.files("fsarbench.scaffold").joinpath("templates", fname).read_text("utf-8")


@dataclass
class ScaffoldWrite:
    """What :func:`write_scaffold` did in ``root``: the files it wrote (``written``), and
    those already there that it left alone, as the template writes them (``unchanged``) or
    not (``kept``); ``unregistered`` says what to add to a kept ``pyproject.toml`` that does
    not register the method (``""`` when there is nothing to add)."""

    root: Path
    written: list[Path] = field(default_factory=list)
    kept: list[Path] = field(default_factory=list)
    unchanged: list[Path] = field(default_factory=list)
    unregistered: str = ""


def write_scaffold(
    name: str, directory: str | Path | None = None, *, force: bool = False
) -> ScaffoldWrite:
    """Write the package for method ``name`` into ``directory`` (default ``./<name>``).

    Refuses a non-empty ``directory`` unless ``force``; even then only the files that are
    missing are written: a file already there (a project's README, an edited ``method.py``)
    is never overwritten, and is listed in the result.
    """
    names = scaffold_names(name)
    root = Path(directory) if directory is not None else Path(name)
    if root.exists() and any(root.iterdir()) and not force:
        raise ValueError(
            f"{root} exists and is not empty; pick another --dir, or give --force to add the "
            "scaffold's missing files there (files already there are kept as they are)"
        )
    subs = names.substitutions()
    done = ScaffoldWrite(root)
    for fname, target in FILES.items():
        path = root / Template(target).substitute(subs)
        text = Template(_template(fname)).substitute(subs)
        if path.exists():
            (done.unchanged if _holds(path, text) else done.kept).append(path)
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        done.written.append(path)
    pyproject = root / "pyproject.toml"
    if pyproject in done.kept and not _registers(pyproject, names.name):
        done.unregistered = _unregistered_note(pyproject, names)
    return done


def _holds(path: Path, text: str) -> bool:
    """Whether file ``path`` already reads ``text``."""
    return path.is_file() and path.read_text(encoding="utf-8", errors="replace") == text


def _registers(pyproject: Path, name: str) -> bool:
    """Whether ``pyproject`` names method ``name`` among its ``fsarbench.methods`` entry
    points (on Python 3.10, without ``tomllib``: whether it mentions both)."""
    text = pyproject.read_text(encoding="utf-8", errors="replace") if pyproject.is_file() else ""
    try:
        import tomllib
    except ModuleNotFoundError:
        return ENTRY_POINT_GROUP in text and name in text
    try:
        project = tomllib.loads(text).get("project", {})
    except tomllib.TOMLDecodeError:
        return False
    return name in project.get("entry-points", {}).get(ENTRY_POINT_GROUP, {})


def _unregistered_note(pyproject: Path, names: Scaffold) -> str:
    """What to add to a kept ``pyproject`` for fsarbench to find the new method."""
    return (
        f"{pyproject} was kept and does not register {names.name!r}: fsarbench will not find "
        f"the method until it holds these lines (and packages src/{names.module}):\n"
        f'  [project.entry-points."{ENTRY_POINT_GROUP}"]\n'
        f'  "{names.name}" = "{names.module}.method:{names.class_name}"'
    )
