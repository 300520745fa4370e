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
    p.add_argument(
        "what", choices=["methods", "backbones", "protocols"], help="which registry to list"
    )
    p.add_argument("--pattern", default=None, help="fnmatch filter, e.g. 'sgtm*'")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.what == "backbones":
        from fsarbench.features.backbones import list_backbones

        for name in list_backbones():
            print(name)
        print("timm:<model>  any timm model (weights from the local Hugging Face cache or a path)")
        return 0
    if args.what == "protocols":
        from fsarbench.data.protocols import list_protocols, protocol_description

        for name in list_protocols():
            print(f"{name:<8} {protocol_description(name)}")
        return 0
    for name in list_methods(args.pattern):
        entry = method_info(name)
        presets = (
            f"  [{', '.join(f'{k}={v}' for k, v in entry.presets.items())}]"
            if entry.presets
            else ""
        )
        print(f"{name:<24} {entry.description}{presets}")
    return 0
