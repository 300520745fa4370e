"""``python -m fsarbench new-method NAME``: scaffold an installable method package."""

from __future__ import annotations

import argparse

from fsarbench.scaffold.new_method import write_scaffold


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "new-method",
        help="scaffold an installable package for a new few-shot head",
        description="Write a package registering method NAME through the fsarbench.methods "
        "entry point: pyproject.toml, a method skeleton (encode/match, typed Config) and a "
        "test running the contract suite.",
    )
    p.add_argument("name", help="method name, e.g. my-head")
    p.add_argument("--dir", default=None, help="target folder (default: ./NAME)")
    p.add_argument(
        "--force",
        action="store_true",
        help="write into a non-empty folder: add the scaffold's missing files and keep every "
        "file already there as it is (each is listed; delete one and re-run to get the "
        "template's)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    done = write_scaffold(args.name, args.dir, force=args.force)
    for f in done.written:
        print(f"wrote {f}")
    for f in done.unchanged:
        print(f"kept  {f} (already as the scaffold writes it)")
    for f in done.kept:
        print(f"kept  {f} (already there and differs from the scaffold's: left as it is)")
    if done.unregistered:
        print(f"\nnote: {done.unregistered}")
    root = done.root
    print(
        f"\nNext (one edit, three commands):\n"
        f"  edit   {root}/src/{args.name.replace('-', '_')}/method.py   (encode + match)\n"
        f"  pip install -e {root}\n"
        f"  python -m fsarbench run --method {args.name} --dataset synth\n"
        f"  python -m fsarbench leaderboard\n"
        f"Check it with: pytest {root}/tests"
    )
    return 0
