"""``python -m fsarbench list methods``."""

from __future__ import annotations

import argparse

from fsarbench.registry import list_methods, method_info


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "list",
        help="list registered methods (and other registries)",
        description="List what fsarbench knows about.",
    )
    p.add_argument("what", choices=["methods"], help="which registry to list")
    p.add_argument("--pattern", default=None, help="fnmatch filter, e.g. 'sgtm*'")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    for name in list_methods(args.pattern):
        entry = method_info(name)
        presets = (
            f"  [{', '.join(f'{k}={v}' for k, v in entry.presets.items())}]"
            if entry.presets
            else ""
        )
        print(f"{name:<24} {entry.description}{presets}")
    return 0
