"""``python -m fsarbench verify``: check a result bundle against the official episodes."""

from __future__ import annotations

import argparse

from fsarbench.cli.common import add_splits_dir_argument
from fsarbench.stats.rounding import fixed


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "verify",
        help="check a result bundle: official episodes, predictions, every accuracy and CI",
        description="Regenerate the official episode manifest of every record in BUNDLE, "
        "check its hash, that the per-query predictions cover exactly its episodes and "
        "queries with its labels, and recompute every accuracy and 95% CI from them. Exits "
        "non-zero, naming each difference, when anything differs. See docs/bundles.md.",
    )
    p.add_argument("bundle", metavar="BUNDLE", help="bundle file written by 'fsarbench bundle'")
    add_splits_dir_argument(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from fsarbench.bundles import verify_bundle
    from fsarbench.bundles.pools import skipped_test_videos
    from fsarbench.report.records import system_of

    verified = verify_bundle(args.bundle, splits_dir=args.splits_dir)
    for v in verified.records:
        r, left_out = v.record, len(skipped_test_videos(v.record))
        # the training seed (three seeds read as three "seed 0" lines: the episode seed)
        seeds = [f"training seed {r.train_seed}"] if r.train_seed is not None else []
        seeds += [f"episode seed {r.seed}"] if r.seed or not seeds else []
        print(  # the system: a run's record and an eval variant of one setting looked alike
            f"ok  {system_of(r)}: {r.dataset} {r.way}-way {r.shot}-shot {', '.join(seeds)} "
            f"[{r.track}, {r.protocol}]: {fixed(v.result.accuracy)} ± {fixed(v.result.ci95)} "
            f"recomputed from {v.result.episodes} episodes (manifest {v.manifest.hash}"
            + (f"; {left_out} test videos left out by its authors)" if left_out else ")")
        )
    for note in verified.notes:
        print(f"note: {note}")
    print(f"verified: {args.bundle} ({len(verified.records)} records of {verified.bundle.method})")
    return 0
