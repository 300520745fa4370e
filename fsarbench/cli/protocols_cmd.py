"""``python -m fsarbench protocols``: the frame-sampling and augmentation protocols."""

from __future__ import annotations

import argparse

from fsarbench.data.datasets import list_datasets
from fsarbench.data.protocols import get_protocol, list_protocols, protocol_description


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "protocols",
        help="show the protocols (frame sampling, transforms, flip, colour jitter, "
        "normalisation per dataset)",
        description="Show each protocol that --protocol selects on run, train, extract and "
        "eval, resolved for every dataset.",
    )
    p.add_argument("name", nargs="?", default=None, help="one protocol (default: all)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    names = [args.name] if args.name else list_protocols()
    for name in names:
        get_protocol(name, "synth")  # unknown names fail with the nearest one
        print(f"{name}: {protocol_description(name)}")
        head = f"  {'dataset':<18} {'train frames':<15} {'test frames':<15} {'transforms':<24}"
        print(f"{head} {'flip':<5} {'jitter':<6} norm")
        for dataset in list_datasets():
            p = get_protocol(name, dataset)
            transforms = f"{p.train_transform}/{p.test_transform}"
            print(
                f"  {dataset:<18} {p.train_sampler:<15} {p.test_sampler:<15} {transforms:<24} "
                f"{_role_text(p.flip):<5} {_role_text(p.color_jitter):<6} {p.norm}"
            )
        print()
    print(
        "jitter: HyRSM's colour jitter of training clips (finetune track; the frozen track's "
        "training views are not jittered)"
    )
    return 0


def _role_text(value: bool | str) -> str:
    """A flip's or colour jitter's ``yes``, ``no`` or ``query`` (training queries only)."""
    return value if isinstance(value, str) else ("yes" if value else "no")
