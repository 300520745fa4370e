"""``python -m fsarbench check-method NAME``: the method contract on any installed method."""

from __future__ import annotations

import argparse
import traceback

from fsarbench.cli.common import UsageError, at_least
from fsarbench.data.datasets import list_datasets
from fsarbench.registry import list_methods


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "check-method",
        help="run the method contract on an installed method and say what to fix",
        description="Run every check of fsarbench.testing.contract on NAME (scaffolded or "
        "written by hand) and print pass/fail per property with the reason. Exit status 1 "
        "when any check fails.",
    )
    p.add_argument("names", nargs="*", metavar="NAME", help="method name(s); default: all")
    p.add_argument(
        "--hparams",
        default="{}",
        help="JSON of hyper-parameters to check the method(s) at, over their CONTRACT_HPARAMS "
        "(as a run with them does), e.g. '{\"lam\": 0.5}'",
    )
    p.add_argument(
        "--feature-dim",
        type=at_least(1),
        default=None,
        help="check at this feature size D, the method built as a run builds it (without its "
        "CONTRACT_HPARAMS); default: the contract's small size",
    )
    p.add_argument(
        "--seq-len", type=at_least(1), default=None, help="frames T (with --feature-dim)"
    )
    p.add_argument(
        "--dataset",
        default=None,
        choices=list_datasets(),
        help="apply the method's per-dataset presets (with --feature-dim)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from fsarbench.cli.common import parse_hparams
    from fsarbench.config import ConfigError
    from fsarbench.registry import method_config, method_info
    from fsarbench.testing.contract import CONTRACT_CHECKS, contract_hparams

    hparams = parse_hparams(args.hparams)
    if args.feature_dim is None and (args.seq_len is not None or args.dataset is not None):
        raise UsageError("--seq-len and --dataset need --feature-dim (a run's size)")
    setting = {"feature_dim": args.feature_dim, "seq_len": args.seq_len, "dataset": args.dataset}

    names = args.names or list_methods(variants=False)
    for name in names:
        method_info(name)  # an unknown name fails here, naming the nearest registered ones
    failed = 0
    for name in names:
        print(f"{name}:")
        try:  # one bad --hparams failed every check with the same message
            method_config(name, args.dataset, **hparams)
        except ConfigError as err:
            failed += len(CONTRACT_CHECKS)
            print(f"  FAIL --hparams: {err} (no check ran)")
            continue
        for check_name, check in CONTRACT_CHECKS.items():
            try:
                with contract_hparams(hparams, **setting):
                    check(name)
            except AssertionError as err:
                failed += 1
                print(f"  FAIL {check_name}: {err}")
            except Exception as err:  # a raw error of the method: show where
                failed += 1
                where = traceback.extract_tb(err.__traceback__)[-1]
                print(
                    f"  FAIL {check_name}: {type(err).__name__}: {err} "
                    f"(at {where.filename}:{where.lineno})"
                )
            else:
                print(f"  pass {check_name}")
    total = len(names) * len(CONTRACT_CHECKS)
    print(f"{total - failed}/{total} checks passed")
    return 1 if failed else 0
