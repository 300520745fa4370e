"""Scaffold an installable third-party method package (``python -m fsarbench new-method``).

The package registers its method through the ``fsarbench.methods`` entry point, ships a method
skeleton with the encode/match split and a typed ``Config``, and a test running fsarbench's
contract suite. Templates live in ``fsarbench/scaffold/templates/*.tmpl``.
"""

from __future__ import annotations

import importlib.util
import keyword
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from string import Template

from fsarbench.registry import list_methods

__all__ = ["Scaffold", "scaffold_names", "write_scaffold"]

NAME_PATTERN = re.compile(r"^[a-z][a-z0-9_-]*$")

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
    if not NAME_PATTERN.match(name):
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


def write_scaffold(
    name: str, directory: str | Path | None = None, *, force: bool = False
) -> list[Path]:
    """Write the package for method ``name`` into ``directory`` (default ``./<name>``).

    Returns the files written. Refuses a non-empty ``directory`` unless ``force``.
    """
    names = scaffold_names(name)
    root = Path(directory) if directory is not None else Path(name)
    if root.exists() and any(root.iterdir()) and not force:
        raise ValueError(f"{root} exists and is not empty; pick another --dir (or --force)")
    subs = names.substitutions()
    written = []
    for fname, target in FILES.items():
        path = root / Template(target).substitute(subs)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(Template(_template(fname)).substitute(subs), encoding="utf-8")
        written.append(path)
    return written
