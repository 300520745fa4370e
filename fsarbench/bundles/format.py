"""The bundle file: one zip holding a method's records and their per-query predictions.

Layout (format version :data:`BUNDLE_VERSION`)::

    bundle.json              format, version, method, fsarbench version, members' sha256
    records/<cell>.json      one ResultRecord each, as ``run`` wrote it
    queries/<cell>.npz       its per-query columns (episode, query, true_label, true_class,
                             predicted_label, predicted_class, correct), ``[E*Nq]`` each

Nothing in it is code: verifying a bundle needs only fsarbench and the official split lists.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import logging
import re
import time
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fsarbench.bundles.errors import BundleError, BundleFormatError
from fsarbench.evaluate import RECORD_FIELDS
from fsarbench.interrupts import raise_if_interrupted
from fsarbench.io import atomic_write_bytes
from fsarbench.provenance import not_installed_advice
from fsarbench.results import (
    OUTSIDE_TAG,
    ResultRecord,
    load_record,
    query_rows_problem,
    rows_give_record,
    stale_reasons,
)
from fsarbench.version import code_version

__all__ = [
    "BUNDLE_FORMAT",
    "BUNDLE_VERSION",
    "Bundle",
    "BundledRecord",
    "write_bundle",
    "read_bundle",
    "pack_bundle",
    "bundle_members",
    "method_slug",
]

log = logging.getLogger(__name__)

BUNDLE_FORMAT = "fsarbench-result-bundle"
BUNDLE_VERSION = 1
INDEX = "bundle.json"
_EPOCH = (1980, 1, 1, 0, 0, 0)  # member dates say nothing: the index has "created"


@dataclass
class BundledRecord:
    """One record and its per-query columns (``RECORD_FIELDS``, ``[E*Nq]`` each)."""

    record: ResultRecord
    queries: dict[str, np.ndarray]


@dataclass
class Bundle:
    """A read bundle: ``method``, its records, and the index (``bundle.json``)."""

    method: str
    records: list[BundledRecord]
    index: dict
    sha256: str = ""


def _npz_bytes(columns: dict[str, np.ndarray]) -> bytes:
    buf = io.BytesIO()
    np.savez_compressed(buf, **columns)
    return buf.getvalue()


def _method_records(runs: Path, method: str) -> list[tuple[Path, ResultRecord]]:
    if not runs.is_dir():  # said "no records of method 'otam' ...; methods there: []"
        raise BundleError(
            f"results folder {runs} does not exist: pass --runs with the folder 'run --out' wrote"
        )
    found = [(p, load_record(p)) for p in sorted(runs.rglob("records/*.json"))]
    mine = [(p, r) for p, r in found if r.method == method and not r.tags.get(OUTSIDE_TAG)]
    if not mine and any(r.method == method for _, r in found):
        raise BundleError(
            f"the records of {method!r} under {runs} are outside results (added from a bundle "
            "with 'leaderboard --add'), not this folder's runs; bundles are made by the lab "
            "that ran the method (the original bundle is kept under external/)"
        )
    if not mine:
        have = sorted({r.method for _, r in found})
        raise BundleError(f"no records of method {method!r} under {runs}; methods there: {have}")
    official = [(p, r) for p, r in mine if _has_official_episodes(r)]
    if not official:
        raise BundleError(
            f"none of the records of {method!r} under {runs} is on a registered dataset (the "
            "warnings above name them): a bundle holds records whose episodes verify draws again"
        )
    return official


def _has_official_episodes(record: ResultRecord) -> bool:
    """Whether ``verify`` can draw ``record``'s episodes again: a registered dataset's. An
    eval of a features file with the user's own manifest (dataset 'custom') was packed and
    then refused the whole bundle at 'verify'; it is left out with a warning."""
    from fsarbench.data.datasets import list_datasets

    if record.dataset in list_datasets():
        return True
    log.warning(
        "left out of the bundle: %s: dataset %r is no registered dataset (an eval of a "
        "features file with its own manifest?), so its official episodes cannot be drawn "
        "again and 'verify' would refuse the bundle",
        record.cell,
        record.dataset,
    )
    return False


def _queries_of(path: Path, record: ResultRecord) -> dict[str, np.ndarray]:
    import pandas as pd

    qpath = path.with_name(f"{record.cell}.queries.csv.gz")
    if not qpath.is_file():
        raise BundleError(
            f"record {record.cell} has no per-query predictions ({qpath} is missing); re-run "
            "that cell so its predictions are recorded"
        )
    try:
        frame = pd.read_csv(qpath)
    except (OSError, EOFError, ValueError, zlib.error) as err:  # cut, not gzip, unparsable
        raise_if_interrupted()
        raise BundleError(
            f"the per-query rows {qpath} of {record.cell} are unreadable "
            f"({type(err).__name__}: {err}); re-run that cell"
        ) from None
    missing = [c for c in RECORD_FIELDS if c not in frame.columns]
    if missing:
        raise BundleError(f"{qpath} lacks the columns {missing}; re-run that cell")
    problem = query_rows_problem(frame, record)  # a blank `correct` became True here
    if problem:
        raise BundleError(
            f"the per-query rows {qpath} are not {record.cell}'s: {problem}; re-run that cell"
        )
    if not rows_give_record(frame.groupby("episode")["correct"].mean().to_numpy(float), record):
        raise BundleError(  # verify would refuse it; a hand-edited number was packed silently
            f"record {record.cell} says {record.accuracy}% ± {record.ci95}, which its "
            f"per-query rows {qpath} do not give (the record was edited); re-run that cell"
        )
    frame = frame.sort_values(["episode", "query"], kind="stable")
    return {c: frame[c].to_numpy(bool if c == "correct" else np.int64) for c in RECORD_FIELDS}


def bundle_members(runs: str | Path, method: str) -> dict[str, bytes]:
    """``{member name: bytes}`` of every record of ``method`` under ``runs`` (all datasets,
    ways, shots, seeds, protocols) and its per-query predictions."""
    members: dict[str, bytes] = {}
    for path, record in _method_records(Path(runs), method):
        stale = stale_reasons(record)
        missing = not_installed_advice(stale)
        if missing:  # re-running, the advice below, fails on an unknown method
            raise BundleError(f"record {record.cell} under {runs}: {missing}")
        if stale:  # ranked elsewhere as current: the folder itself marks it ‡stale
            raise BundleError(
                f"record {record.cell} under {runs} is stale ({', '.join(stale)}: made by other "
                "code than is installed, or kept with --reuse-stale); re-run its cell with "
                "'python -m fsarbench run' (it re-evaluates stale cells), then bundle"
            )
        name = f"records/{record.cell}.json"
        if name in members:
            raise BundleError(
                f"two records of cell {record.cell} under {runs}; merge or remove one first"
            )
        members[name] = json.dumps(dataclasses.asdict(record), indent=1, sort_keys=True).encode()
        members[f"queries/{record.cell}.npz"] = _npz_bytes(_queries_of(path, record))
    return members


def pack_bundle(method: str, members: dict[str, bytes], *, version: int = BUNDLE_VERSION) -> bytes:
    """The zip bytes of a bundle of ``members`` (its index lists each member's sha256)."""
    index = {
        "format": BUNDLE_FORMAT,
        "version": version,
        "method": method,
        "fsarbench": code_version(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "members": {n: hashlib.sha256(b).hexdigest() for n, b in sorted(members.items())},
    }
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        items = [(INDEX, json.dumps(index, indent=1, sort_keys=True).encode())]
        for name, data in [*items, *sorted(members.items())]:
            info = zipfile.ZipInfo(name, date_time=_EPOCH)
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, data)
    return buf.getvalue()


def write_bundle(runs: str | Path, method: str, out: str | Path | None = None) -> Path:
    """Write the bundle of ``method``'s records under ``runs`` to ``out`` (default
    ``<runs>/bundles/<method>.zip``) atomically; returns its path."""
    members = bundle_members(runs, method)
    path = Path(out) if out is not None else Path(runs) / "bundles" / f"{method_slug(method)}.zip"
    atomic_write_bytes(path, pack_bundle(method, members))
    return path


def method_slug(method: str) -> str:
    """A file-system-safe name for ``method`` (bundle and outside-results folders)."""
    return re.sub(r"[^A-Za-z0-9_.+-]", "-", method)


# -- reading ---------------------------------------------------------------------------------
def _read_members(path: Path) -> dict[str, bytes]:
    try:
        with zipfile.ZipFile(path) as zf:
            return {name: zf.read(name) for name in zf.namelist()}
    except (zipfile.BadZipFile, EOFError, OSError, ValueError) as err:
        raise BundleFormatError(
            f"{path} is not a readable fsarbench bundle (truncated or corrupt: {err}); ask for "
            "the file again or re-create it with 'python -m fsarbench bundle'"
        ) from None


def _check_index(path: Path, members: dict[str, bytes]) -> dict:
    if INDEX not in members:
        raise BundleFormatError(f"{path} has no {INDEX}: not an fsarbench bundle")
    try:
        index = json.loads(members[INDEX])
    except ValueError as err:
        raise BundleFormatError(f"{path}: {INDEX} is not valid JSON ({err})") from None
    if not isinstance(index, dict) or index.get("format") != BUNDLE_FORMAT:
        raise BundleFormatError(f"{path}: field format is not {BUNDLE_FORMAT!r}")
    if index.get("version") != BUNDLE_VERSION:
        raise BundleFormatError(
            f"{path}: field version is {index.get('version')!r}, this fsarbench reads bundle "
            f"format version {BUNDLE_VERSION}; re-create the bundle with this fsarbench "
            f"({code_version()}) or verify it with the version that wrote it "
            f"({index.get('fsarbench')})"
        )
    listed, present = dict(index.get("members") or {}), set(members) - {INDEX}
    if set(listed) != present:
        raise BundleFormatError(
            f"{path}: members differ from its index: missing {sorted(set(listed) - present)}, "
            f"unlisted {sorted(present - set(listed))}"
        )
    for name, digest in sorted(listed.items()):
        if hashlib.sha256(members[name]).hexdigest() != digest:
            raise BundleFormatError(
                f"{path}: member {name} was changed after the bundle was written (its sha256 "
                f"differs from the index's {digest[:12]}...)"
            )
    return index


_TYPES = {"int": int, "float": (int, float), "str": str, "dict": dict, "list": list}


def _field_problems(fields: dict) -> list[str]:
    """Fields of a record JSON that are missing or of the wrong JSON type."""
    problems = []
    for f in dataclasses.fields(ResultRecord):
        if f.name not in fields:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                problems.append(f"{f.name} missing")
            continue
        value, kind = fields[f.name], str(f.type)
        if value is None and kind.endswith("| None"):
            continue
        wanted = _TYPES.get(kind.split("[")[0].split(" ")[0], object)
        if not isinstance(value, wanted) or (wanted is not str and isinstance(value, str)):
            problems.append(f"{f.name} is {value!r}, not {kind}")
    return problems


def _parse_record(name: str, data: bytes) -> ResultRecord:
    try:
        fields = json.loads(data)
    except ValueError as err:
        raise BundleFormatError(f"member {name} is not JSON: {err}") from None
    problems = _field_problems(fields) if isinstance(fields, dict) else ["not a JSON object"]
    if problems:
        raise BundleFormatError(f"member {name} is not a result record: {'; '.join(problems)}")
    names = {f.name for f in dataclasses.fields(ResultRecord)}
    return ResultRecord(**{k: v for k, v in fields.items() if k in names})


def _parse_queries(name: str, data: bytes) -> dict[str, np.ndarray]:
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            columns = {c: np.asarray(npz[c]) for c in RECORD_FIELDS}
    except (ValueError, KeyError, OSError, EOFError, zipfile.BadZipFile) as err:
        raise BundleFormatError(
            f"member {name} does not hold the per-query columns {list(RECORD_FIELDS)}: {err}"
        ) from None
    shapes = {c: a.shape for c, a in columns.items()}
    if len(set(shapes.values())) != 1 or columns["episode"].ndim != 1:
        raise BundleFormatError(f"member {name}: columns of unequal shapes {shapes}")
    kinds = {c: a.dtype.kind for c, a in columns.items()}
    wrong = {
        c: str(columns[c].dtype) for c, k in kinds.items() if k != ("b" if c == "correct" else "i")
    }
    if wrong:
        raise BundleFormatError(
            f"member {name}: columns of the wrong type {wrong} (labels and classes are "
            "integers, correct is boolean)"
        )
    return columns


#: Characters a name printed in Markdown/HTML tables cannot hold: a bundle's method named
#: ``mine | 99.99 ± 0.01 | ... <!--`` drew a fake leading row in leaderboard.md.
_UNPRINTABLE = re.compile(r"[|<>`\x00-\x1f\x7f]")


def _printable_name(path: Path, what: str, name: str) -> str:
    if _UNPRINTABLE.search(name):
        raise BundleFormatError(
            f"{path}: {what} {name!r} holds a character no table can print as it is "
            "(|, <, >, ` or a control character); names are method names such as "
            "'my-head' or 'my-head[k=v]'"
        )
    return name


def _folder_name(path: Path, method: str) -> str:
    """``method`` when its file-system name (:func:`method_slug`) is one plain folder name:
    a bundle's method ``..`` made ``leaderboard --add`` replace the results folder itself."""
    slug = method_slug(method)
    if not method or slug.startswith("."):
        raise BundleFormatError(
            f"{path}: its method {method!r} is not a method name (empty, or starting with "
            "'.', it names no folder of its own); names are method names such as 'my-head'"
        )
    return method


def _printable_tags(path: Path, where: str, tags: dict) -> None:
    """Text tags name a record's system in tables (``variant_label``): held to the rules
    of names (a newline in one split a table's header into two rows)."""
    for key, value in tags.items():
        if isinstance(value, str):
            _printable_name(path, f"{where}'s tag {key!r}", value)


def read_bundle(path: str | Path) -> Bundle:
    """Read and integrity-check a bundle (format, version, members' sha256); the numbers
    are checked by :func:`fsarbench.bundles.verify.verify_bundle`."""
    path = Path(path)
    if path.is_dir():
        raise FileNotFoundError(f"{path} is a folder, not a bundle file (a .zip 'bundle' wrote)")
    if not path.is_file():
        raise FileNotFoundError(f"bundle {path} does not exist")
    members = _read_members(path)
    index = _check_index(path, members)
    method = _printable_name(path, "its method", str(index.get("method", "")))
    _folder_name(path, method)
    records = []
    for name in sorted(n for n in members if n.startswith("records/")):
        record = _parse_record(name, members[name])
        for field in ("method", "dataset", "split_variant", "track", "protocol"):
            _printable_name(path, f"{name}'s {field}", str(getattr(record, field)))
        _printable_tags(path, name, record.tags)
        stem = name[len("records/") : -len(".json")]
        qname = f"queries/{stem}.npz"
        if qname not in members:
            raise BundleFormatError(f"{path}: record member {name} has no {qname}")
        if record.cell != stem:
            raise BundleFormatError(
                f"{path}: member {name} holds a record whose fields name cell {record.cell} "
                "(method, dataset, track, way, shot, seed or config hash were edited)"
            )
        records.append(BundledRecord(record, _parse_queries(qname, members[qname])))
    if not records:
        raise BundleFormatError(f"{path} holds no records")
    return Bundle(method, records, index, hashlib.sha256(path.read_bytes()).hexdigest())
