"""The command reference page (``docs/reference.md``), generated from the CLI itself so it
cannot drift: ``python -m fsarbench.cli._reference > docs/reference.md`` (``make docs``), and a
test compares the committed page with this output."""

from __future__ import annotations

import argparse
import os
from contextlib import contextmanager

from fsarbench.cli.main import build_parser

__all__ = ["render_reference"]

#: Help text is wrapped at this width whatever the terminal, so the page is reproducible.
WIDTH = 100


@contextmanager
def _fixed_width(columns: int):
    previous = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = str(columns)
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("COLUMNS", None)
        else:
            os.environ["COLUMNS"] = previous


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:  # argparse exposes sub-parsers only through its actions
        if isinstance(action, argparse._SubParsersAction):
            return dict(sorted(action.choices.items()))
    return {}


def render_reference() -> str:
    """Markdown: the top-level usage, then every sub-command's ``--help``, in name order."""
    with _fixed_width(WIDTH):
        parser = build_parser()
        parts = [
            "# Command reference\n",
            "Generated from the CLI by `make docs` (`python -m fsarbench.cli._reference`); a test"
            " keeps it equal to the CLI. Back to the [README](../README.md).\n",
            "```text\n" + parser.format_help().rstrip() + "\n```\n",
        ]
        for name, sub in _subcommands(parser).items():
            parts.append(f"## `{name}`\n")
            parts.append("```text\n" + sub.format_help().rstrip() + "\n```\n")
    return "\n".join(parts)


if __name__ == "__main__":
    print(render_reference(), end="")
