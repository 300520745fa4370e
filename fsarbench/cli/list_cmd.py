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
        "what",
        choices=["methods", "datasets", "backbones", "protocols"],
        help="which registry to list",
    )
    p.add_argument("--pattern", default=None, help="fnmatch filter, e.g. 'sgtm*'")
    p.set_defaults(func=run)


def _print_backbones() -> None:
    """One row per registered backbone: input size, normalisation, feature dimension."""
    from fsarbench.features.backbones import backbone_spec, list_backbones

    print(f"{'name':<16} {'input':>5}  {'normalisation':<42} {'dim':>5}  description")
    for name in list_backbones():
        s = backbone_spec(name)
        mean = "/".join(f"{m:.3f}" for m in s.mean)
        std = "/".join(f"{v:.3f}" for v in s.std)
        norm = f"{s.norm} {mean} {std}" if s.norm else "protocol's (--protocol)"
        print(f"{name:<16} {s.input_size:>5}  {norm:<42} {s.feature_dim:>5}  {s.description}")
    print("timm:<model>  any timm model (weights from the local Hugging Face cache or a path)")


def _print_datasets() -> None:
    """One row per registered dataset: whether it is generated, may be flipped, and whose
    settings it shares."""
    from fsarbench.data.datasets import (
        dataset_flip_ok,
        is_synthetic,
        list_datasets,
        settings_dataset,
    )

    for name in list_datasets():
        notes = ["generated" if is_synthetic(name) else "published split lists"]
        notes += [] if dataset_flip_ok(name) else ["not flipped (flip_ok=False)"]
        shared = settings_dataset(name)
        notes += [f"settings of {shared}"] if shared != name else []
        print(f"{name:<20} {'; '.join(notes)}")


def run(args: argparse.Namespace) -> int:
    if args.what == "datasets":
        _print_datasets()
        return 0
    if args.what == "backbones":
        _print_backbones()
        return 0
    if args.what == "protocols":
        from fsarbench.data.protocols import list_protocols, protocol_description

        for name in list_protocols():
            print(f"{name:<8} {protocol_description(name)}")
        return 0
    names = list_methods(args.pattern)
    if not names and args.pattern:  # printed nothing and exited 0 for 'sgtm' (not 'sgtm*')
        raise ValueError(
            f"no method matches {args.pattern!r}: --pattern is an fnmatch pattern, e.g. "
            f"'{args.pattern}*' or '*{args.pattern}*'; all methods: 'python -m fsarbench list "
            "methods'"
        )
    for name in names:
        entry = method_info(name)
        presets = (
            f"  [{', '.join(f'{k}={v}' for k, v in entry.presets.items())}]"
            if entry.presets
            else ""
        )
        print(f"{name:<24} {entry.description}{presets}")
    return 0
