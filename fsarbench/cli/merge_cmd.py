"""``python -m fsarbench merge``: one summary from the records of every shard.

``run --shard I/N`` on several machines writes records under a shared results folder (or
under per-machine sub-folders copied into it); this rebuilds ``summary.csv`` and the Markdown
tables from every ``records/*.json`` found below ``--out``. Each shard leaves its plan under
``shards/`` (:mod:`fsarbench.experiments.shard_plans`): a shard of N that is not there, did not
finish, or planned cells that have no record is named in a warning.

Shards launched with other test flags (``--episodes``, ``--seed``) or on data that lost other
test videos put numbers over different test episodes side by side. ``merge`` refuses such a
set (:class:`~fsarbench.report.episode_protocol.MixedEpisodesError`, naming the folders and
cells of each protocol) unless ``--allow-mixed-episodes`` is given; then the tables it writes
name which cells used which episodes.
"""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path

from fsarbench.cli.common import writable_folder
from fsarbench.experiments.shard_plans import shard_gaps
from fsarbench.results import (
    OUTSIDE_TAG,
    ResultRecord,
    load_record,
    load_records,
    newest_per_cell,
    write_summary,
)

#: Cell ids named per group in the error (the folders name them all).
EXAMPLES = 3


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "merge",
        help="rebuild summary.csv and tables from every shard's records",
        description="Read every records/*.json below --out (shards of 'run --shard I/N', in "
        "the folder itself or in sub-folders) and rebuild --out/summary.csv and --out/tables. "
        "Refuses records evaluated on different test episodes (other --episodes or --seed, "
        "queries per class, or other test videos) unless --allow-mixed-episodes is given.",
    )
    p.add_argument(
        "--out", type=writable_folder, required=True, help="results folder shared by the shards"
    )
    p.add_argument(
        "--allow-mixed-episodes",
        action="store_true",
        help="merge records evaluated on different test episodes anyway; the tables then "
        "name which cells used which (default: refuse, naming the shards that differ)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from fsarbench.experiments.summary_tables import write_summary_tables
    from fsarbench.report.records import given_copies, records_given_by_rows

    if not args.out.is_dir():
        raise FileNotFoundError(f"no results folder {args.out}")
    unreadable: list[str] = []
    found = load_records(args.out, unreadable=unreadable)
    # outside results (bundles under external/) are not this folder's runs, and one of the
    # same cell as an own record must not win the de-duplication below and hide the own one
    own = [r for r in found if not r.tags.get(OUTSIDE_TAG)]
    if not own:
        what = f" (only {len(found)} outside record(s) from bundles)" if found else ""
        raise FileNotFoundError(f"no records/*.json of this folder's runs below {args.out}{what}")
    kept, damaged = given_copies(args.out, own)
    records, twice = newest_per_cell(kept)
    for cell in twice:
        print(f"note: cell {cell} is recorded by more than one shard; the newest copy is used")
    for note in [*damaged, *unreadable]:
        print(f"note: {note}")
    check_episodes(args.out, records, allow=args.allow_mixed_episodes)
    for line in mixed_configurations(args.out, records):
        print(f"warning: {line}")
    gaps = shard_gaps(args.out, records)
    for line in gaps:
        print(f"warning: {line}")
    summary = write_summary(args.out, records)
    tables = write_summary_tables(args.out, records)
    _, refused = records_given_by_rows(args.out, records)  # checked (and cached) above
    lost = len(refused) + len(unreadable)  # an unreadable file was named on stderr alone
    left = f" ({lost} left out, named above)" if lost else ""
    left += "; shards missing or unfinished, named above" if gaps else ""
    print(
        f"{len(records) - len(refused)} record(s){left} -> {summary} and {len(tables)} "
        f"table(s) under {args.out / 'tables'}"
    )
    return 0


def check_episodes(out: Path, records: list[ResultRecord], *, allow: bool) -> None:
    """Refuse ``records`` that mix test episodes, naming where each kind lies; with
    ``allow``, print the same as a warning and go on (the tables carry notes).

    Raises:
        MixedEpisodesError: the records mix test episodes and ``allow`` is false.
    """
    from fsarbench.report.episode_protocol import MixedEpisodesError, protocol_mismatches

    mismatches = protocol_mismatches(records)
    if not mismatches:
        return
    folders = _record_folders(out)
    parts = []
    for m in mismatches:
        lines = [f"{m.text}:"]
        for label, recs in m.groups.items():
            lines.append(f"  {label}: {_where(recs, folders)}")
        parts.append("\n".join(lines))
    found = "\n".join(parts)
    if allow:
        print(
            f"warning: merging records over different test episodes (--allow-mixed-episodes); "
            f"the tables name which cells used which.\n{found}"
        )
        return
    raise MixedEpisodesError(
        f"mixed test episodes: the records below {out} were evaluated on different ones, so their "
        f"numbers would sit side by side in one table as if of one protocol:\n{found}\n"
        "Re-run the odd shard(s) (the fewer records above) with the same flags as the others "
        "(--episodes, --seed; on the same data), moving their old records out of this folder "
        "first, or merge each "
        "protocol in a folder of its own; --allow-mixed-episodes merges them anyway, with "
        "every table naming which cells used which episodes."
    )


def mixed_configurations(out: Path, records: list[ResultRecord]) -> list[str]:
    """A line per method and setting recorded under several configurations (shards run with
    another ``--recipe`` or hyper-parameters, or other defaults): what differs and where each
    lies. They were merged without a word, as ``name @<label>`` rows no note explained."""
    from fsarbench.results import record_config_hash

    groups: dict[tuple, dict[str, list[ResultRecord]]] = {}
    for r in records:  # training seeds of one configuration are one configuration
        setting = (r.method, r.dataset, r.track, r.protocol, r.way, r.shot, r.seed, r.episodes)
        config = record_config_hash(r.hparams, r.recipe, r.features, None, r.track)
        groups.setdefault(setting, {}).setdefault(config, []).append(r)
    folders = _record_folders(out) if any(len(g) > 1 for g in groups.values()) else {}
    lines = []
    for (method, dataset, *_, way, shot, _seed, _episodes), configs in sorted(groups.items()):
        if len(configs) < 2:
            continue
        differ = _differing_fields([recs[0] for recs in configs.values()])
        each = "; ".join(
            f"config {h[:8]} ({_where(recs, folders)})" for h, recs in sorted(configs.items())
        )
        lines.append(
            f"{method} {dataset} {way}-way {shot}-shot is recorded under {len(configs)} "
            f"configurations, differing in {', '.join(differ) or 'fields not shown'}: {each}; "
            "the tables show each as its own row"
        )
    return lines


def _differing_fields(records: list[ResultRecord]) -> list[str]:
    """``section.field`` names whose values differ between ``records`` (hyper-parameters,
    recipe, features)."""
    flat = [
        {
            f"{section}.{key}": repr(value)
            for section in ("hparams", "recipe", "features")
            for key, value in (getattr(r, section) or {}).items()
        }
        for r in records
    ]
    keys = sorted(set().union(*flat))
    return [k for k in keys if len({f.get(k) for f in flat}) > 1]


def _record_folders(out: Path) -> dict[tuple[str, str], set[str]]:
    """``{(cell, created): folders}``: where below ``out`` each record lies (relative to it;
    ``"--out itself"`` for its own ``records/``), to name the shards in an error."""
    where: dict[tuple[str, str], set[str]] = {}
    for path in sorted(out.rglob("records/*.json")):
        try:
            record = load_record(path)
        except ValueError:
            continue
        folder = path.parent.parent.relative_to(out).as_posix()
        folder = "--out itself" if folder == "." else folder
        where.setdefault((record.cell, record.created), set()).add(folder)
    return where


def _where(records: list[ResultRecord], folders: dict[tuple[str, str], set[str]]) -> str:
    """``"12 record(s) in shard0 (8), shard1 (4); e.g. otam__ssv2__..."``."""
    counts = Counter(f for r in records for f in folders.get((r.cell, r.created), {"?"}))
    places = ", ".join(f if len(counts) == 1 else f"{f} ({n})" for f, n in sorted(counts.items()))
    cells = sorted(r.cell for r in records)
    more = f", +{len(cells) - EXAMPLES} more" if len(cells) > EXAMPLES else ""
    return f"{len(records)} record(s) in {places}; e.g. {', '.join(cells[:EXAMPLES])}{more}"
