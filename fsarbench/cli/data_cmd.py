"""``python -m fsarbench data check DATASET --root DIR``: is the data on disk usable?"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tabulate import tabulate

from fsarbench.cli.common import at_least
from fsarbench.data.datasets import get_dataset, is_synthetic, list_datasets
from fsarbench.data.health import check_split, health_csv, health_json, protocol_problems
from fsarbench.data.layouts import LAYOUTS
from fsarbench.io import atomic_write_json, atomic_write_text


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("data", help="check a dataset on disk")
    actions = p.add_subparsers(dest="data_action", metavar="ACTION")
    c = actions.add_parser(
        "check",
        help="per split and class: found, missing, unreadable, too short",
        description="Exit status 1 when the dataset cannot serve the episode settings.",
    )
    c.add_argument("dataset", choices=list_datasets())
    c.add_argument("--root", type=Path, default=None, help="data root (default $FSAR_DATA/...)")
    c.add_argument("--splits-dir", type=Path, default=None)
    c.add_argument(
        "--layout",
        default="auto",
        choices=["auto", "template", *LAYOUTS],
        help="how videos are laid out under the root (default: %(default)s: guessed)",
    )
    c.add_argument("--template", default=None, help='e.g. "{class_dir}/{video_id}.mp4"')
    c.add_argument("--allow-modified", action="store_true")
    c.add_argument(
        "--split",
        action="append",
        choices=["train", "val", "test"],
        default=None,
        help="splits to check (repeatable; default all three)",
    )
    c.add_argument("--frames", type=at_least(1), default=8, help="T: shorter videos are too short")
    c.add_argument(
        "--way", type=at_least(2), default=5, help="largest way you will run (default: 5)"
    )
    c.add_argument("--shot", type=at_least(1), default=5, help="largest shot you will run")
    c.add_argument("--queries", type=at_least(1), default=1, help="queries per class (default: 1)")
    c.add_argument(
        "--min-videos-policy",
        choices=["error", "drop"],
        default="error",
        help="a class with too few videos for the episodes: an error, or left out and "
        "named (default: %(default)s)",
    )
    depth = c.add_mutually_exclusive_group()
    depth.add_argument("--no-probe", action="store_true", help="only check that files exist")
    depth.add_argument(
        "--full",
        action="store_true",
        help="decode every frame of every video (slow): the default probe decodes the first "
        "and last frames and misses a file damaged in its middle",
    )
    c.add_argument("--jobs", type=at_least(1), default=2, help="threads opening files")
    c.add_argument("--report", type=Path, default=None, help="write a .json or .csv report")
    c.set_defaults(func=run_check)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


def _open(args: argparse.Namespace):
    if is_synthetic(args.dataset):
        return get_dataset(args.dataset, root=args.root)
    layout = "template" if args.template else args.layout
    return get_dataset(
        args.dataset,
        root=args.root,
        splits_dir=args.splits_dir,
        layout=layout,
        template=args.template,
        allow_modified=args.allow_modified,
    )


#: Missing video ids printed per class; ``--report FILE`` lists every one.
MISSING_SHOWN = 10


def _check_root(ds) -> None:
    """A data root that does not exist is named (every listed video was printed as missing:
    360 KB for HMDB51, the root never named)."""
    root = getattr(ds, "root", None)
    if root is not None and not Path(root).is_dir():
        raise FileNotFoundError(
            f"data root {root} of {ds.name} does not exist: pass --root DIR (the folder that "
            f"holds the dataset's videos, or its parent) or set FSAR_DATA"
        )


def _none_found(split: str, videos: list) -> str | None:
    """A line for a split none of whose listed videos is found, naming where the first was
    looked for (a wrong --root or layout), else ``None``."""
    if not videos or any(v.path.exists() for v in videos):
        return None
    return (
        f"none of the {len(videos)} listed {split} videos was found; the first was looked for "
        f"at {videos[0].path}: check --root (and --layout/--template)"
    )


def run_check(args: argparse.Namespace) -> int:
    ds = _open(args)
    _check_root(ds)
    health, problems, none_found = [], [], {}
    for split in args.split or ["train", "val", "test"]:
        videos = ds.videos(split)
        line = _none_found(split, videos)
        if line:
            none_found[split] = line
        rows = check_split(
            videos,
            split,
            frames=args.frames,
            probe=not args.no_probe,
            jobs=args.jobs,
            full=args.full,
        )
        health += rows
        problems += protocol_problems(
            rows, way=args.way, shot=args.shot, queries=args.queries, policy=args.min_videos_policy
        )
    table = [
        {
            "split": h.split,
            "class": h.class_name,
            "listed": h.listed,
            "found": h.found,
            "missing": len(h.missing),
            "unreadable": len(h.unreadable),
            "too short": len(h.too_short),
            "usable": h.usable,
        }
        for h in health
    ]
    _say_sources(ds)
    print(tabulate(table, headers="keys"))
    for line in none_found.values():
        print(line)
    for h in health:
        if h.missing and h.split not in none_found:
            shown = ", ".join(h.missing[:MISSING_SHOWN])
            more = len(h.missing) - MISSING_SHOWN
            where = f"{args.report} lists" if args.report else "--report FILE lists"
            tail = f" ... and {more} more ({where} them all)" if more > 0 else ""
            print(f"missing {h.split}/{h.class_name}: {shown}{tail}")
        for vid, cause in h.unreadable.items():
            print(f"unreadable {h.split}/{h.class_name}/{vid}: {cause}")
        for vid, frames in h.too_short.items():
            print(
                f"too short {h.split}/{h.class_name}/{vid}: {frames} frame(s), need {args.frames}"
            )
    settings = {
        k: getattr(args, k)
        for k in ("dataset", "frames", "way", "shot", "queries", "min_videos_policy")
    }
    settings["root"] = str(getattr(ds, "root", None) or getattr(ds, "path", ""))
    _write_report(args.report, health, problems, settings)
    for p in problems:
        print(f"cannot serve: {p}", file=sys.stderr)
    print(
        f"OK: the dataset can serve these settings{_left_out_note(health)}"
        if not problems
        else f"{len(problems)} problem(s): the dataset cannot serve these settings"
    )
    return 1 if problems else 0


def _left_out_note(health) -> str:
    """What an OK hides: the listed videos a run leaves out (exit status 0 with unreadable
    videos listed read as a clean dataset)."""
    counts = {
        "missing": sum(len(h.missing) for h in health),
        "unreadable": sum(len(h.unreadable) for h in health),
        "too short": sum(len(h.too_short) for h in health),
    }
    if not any(counts.values()):
        return ""
    parts = ", ".join(f"{n} {what}" for what, n in counts.items() if n)
    repeat = (
        " (the finetune track's --option short=repeat keeps the too-short ones, their frames "
        "repeated)"
        if counts["too short"]
        else ""
    )
    return (
        f", without {sum(counts.values())} listed video(s) ({parts}): runs leave them out and "
        "their records name them (train --track finetune --bad-videos error stops instead)" + repeat
    )


def _say_sources(ds) -> None:
    """Which data root and split-list files are checked (a user with two copies of the lists
    could not tell which one was read)."""
    provenance = ds.provenance() if hasattr(ds, "provenance") else {}
    # a published dataset's splits are list files; a generated one's, the md5s it wrote
    splits = [p for p in (provenance.get("splits") or {}).values() if isinstance(p, dict)]
    lists = sorted({str(p.get("file") or "") for p in splits} - {""})
    root = getattr(ds, "root", None) or getattr(ds, "path", "")
    print(
        f"{ds.name}: videos under {root}"
        + _layout_words(provenance)
        + (f"; split lists {', '.join(lists)}" if lists else "")
    )


def _layout_words(provenance: dict) -> str:
    """``" (layout ucf101)"``: the layout the files were found under (``auto``'s choice per
    split when they differ), or nothing for a generated dataset."""
    detected = provenance.get("detected_layouts") or {}
    chosen = set(detected.values())
    if len(chosen) == 1:
        return f" (layout {chosen.pop()}, detected)"
    if chosen:
        return " (layouts detected: " + ", ".join(f"{s} {n}" for s, n in detected.items()) + ")"
    layout = provenance.get("layout")
    return f" (layout {layout})" if layout and layout != "auto" else ""


def _write_report(path: Path | None, health, problems, settings) -> None:
    if path is None:
        return
    if path.suffix == ".csv":
        atomic_write_text(path, health_csv(health))
    else:
        atomic_write_json(path, health_json(health, problems, settings))
    print(f"report written to {path}")
