"""Code digests and provenance keys: what decides whether a stored number may be reused.

A *code digest* hashes the source of the modules a number passes through: the method's own
package (every top-level package of its modules, a plugin's too) and the harness modules on
the numeric path (episodes, evaluation, pair tables, statistics, training). Sources are hashed
as their syntax trees without docstrings, so comments, docstrings and formatting do not make a
result stale; any change to what the code does does. fsarbench's own harness and pipeline
digests also leave out the text of errors and log lines (:func:`_strip_messages`), so a
reworded message or hint re-runs nothing; a method package's digest keeps them.

A *provenance* is the dict of everything that can change a number — config hash, protocol,
data (split md5s, skipped videos), weights, code digest. Records, trained models and partial
evaluations store theirs; :func:`provenance_diff` names the fields that differ, so a stale entry
is re-run (or refused) with a message saying why.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import importlib.util
import inspect
import logging
import re
import sys
import uuid
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from torch import nn

from fsarbench.io import stable_hash

log = logging.getLogger(__name__)

__all__ = [
    "HARNESS_NUMERIC",
    "PIPELINE_MODULES",
    "source_digest",
    "package_digest",
    "harness_digest",
    "pipeline_digest",
    "method_packages",
    "code_digest",
    "code_parts",
    "stale_code",
    "provenance_diff",
    "training_fingerprint",
    "StaleError",
    "freeze_code_digests",
]

#: Harness modules (relative to the ``fsarbench`` package) every evaluated number passes through.
HARNESS_NUMERIC = (
    "autocast.py",
    "distributed",
    "episodes.py",
    "evaluate.py",
    "guards.py",
    "methods.py",
    "pairs.py",
    "registry.py",
    "state.py",
    # a record's accuracy and CI; comparisons (paired tests, bootstraps, Holm) are computed
    # from per-query rows whenever tables are drawn, so changing them re-runs nothing
    "stats/intervals.py",
    "training",
    # how a run turns cells into trained models and evaluations (seeds, splits, features)
    "experiments/cells.py",
    "experiments/features.py",
    "experiments/runner.py",
    "experiments/tracks.py",
    "experiments/units.py",
)

#: Harness modules that turn a video into features (part of every feature-cache key).
PIPELINE_MODULES = ("data", "features")

#: Frameworks whose code is identified by their version, not hashed (too large to read).
FRAMEWORKS = frozenset({"torch", "torchvision", "timm", "open_clip", "transformers", "builtins"})


class StaleError(RuntimeError):
    """A stored result, model or cache was made by other code, config or data."""


def _strip_docstrings(tree: ast.AST) -> ast.AST:
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (
            isinstance(body, list)
            and body
            and isinstance(body[0], ast.Expr)
            and isinstance(body[0].value, ast.Constant)
            and isinstance(body[0].value.value, str)
        ):
            node.body = body[1:] or [ast.Pass()]
    return tree


#: Method names of logger calls whose arguments are messages (``log.warning(...)``).
_LOG_CALLS = frozenset({"debug", "info", "warning", "warn", "error", "exception", "critical"})
#: Names a module's logger goes by (``log = logging.getLogger(__name__)``), and ``logging``
#: and ``warnings`` themselves.
_LOGGER_NAMES = frozenset({"log", "logger", "_log", "LOG", "logging", "warnings"})


def _strip_messages(tree: ast.AST) -> ast.AST:
    """Empty the arguments of every ``raise E(...)`` and of every logger or
    ``warnings.warn`` call: text a user reads, which computes no number (a raise ends the
    path; a log line is written, not used), so rewording an error or a hint leaves the
    digest, and every record and model it names, as it was."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call):
            node.exc.args, node.exc.keywords = [], []
        elif isinstance(node, ast.Call) and _is_message_call(node.func):
            node.args, node.keywords = [], []
    return tree


def _is_message_call(func: ast.expr) -> bool:
    return (
        isinstance(func, ast.Attribute)
        and func.attr in _LOG_CALLS
        and isinstance(func.value, ast.Name)
        and func.value.id in _LOGGER_NAMES
    )


def _file_digest(path: Path, messages: bool = True) -> str:
    """sha256 of ``path``'s syntax tree without docstrings (and, with ``messages=False``,
    without error and log messages: :func:`_strip_messages`); of its text when it does not
    parse."""
    text = path.read_text(encoding="utf-8")
    try:
        tree = _strip_docstrings(ast.parse(text))
        canonical = ast.dump(tree if messages else _strip_messages(tree))
    except SyntaxError:
        canonical = text
    return hashlib.sha256(canonical.encode()).hexdigest()


def _python_files(paths: Iterable[Path]) -> list[Path]:
    files: list[Path] = []
    for p in paths:
        if p.is_dir():
            files += [f for f in p.rglob("*.py") if "__pycache__" not in f.parts]
        elif p.suffix == ".py" and p.exists():
            files.append(p)
    return sorted(set(files))


def source_digest(paths: Iterable[Path], root: Path | None = None, *, messages: bool = True) -> str:
    """16 hex digits over the ``*.py`` files at or under ``paths`` (names relative to ``root``
    and their docstring-free syntax trees; ``messages=False`` leaves error and log messages
    out as well: :func:`_strip_messages`)."""
    paths = list(paths)
    files = _python_files(paths)
    h = hashlib.sha256()
    for f in files:
        name = _relative_name(f, root, paths) if root is not None else f.name
        h.update(name.encode() + b"\0" + _file_digest(f, messages).encode() + b"\n")
    return h.hexdigest()[:16]


def _relative_name(f: Path, root: Path, paths: list[Path]) -> str:
    """``f`` relative to ``root``, else to the first of ``paths`` holding it, numbered (a
    namespace package spread over several folders: ``relative_to(root)`` failed for files
    of the others and stopped ``run`` before any work)."""
    if f.is_relative_to(root):
        return str(f.relative_to(root))
    for i, p in enumerate(paths):
        if p.is_dir() and f.is_relative_to(p):
            return f"{i}/{f.relative_to(p)}"
    return str(f)


def _package_root() -> Path:
    return Path(__file__).resolve().parent


#: Message-free digests of harness or pipeline code -> the digest its records, models and
#: feature caches carry. Each entry is code that computes every number as the code of the
#: carried digest did (a later change of messages alone keeps it); any other change gives a
#: new message-free digest, used as it is, and re-runs what it names. docs/changes.md says
#: why each entry computes the same numbers.
CARRIED_DIGESTS = {
    # session 28: the released harness and pipeline, when messages left the digests
    "ef53fe84b9283909": "2815c7d05867b240",
    "0d93515ea4a12e6a": "45d399cf0f55f5c7",
    # session 28: checks that refuse what gave a wrong number or crashed, and change no
    # number of valid input: a plugin ending the process at import fails to load; NaN
    # logits while validating name the val split; manifests with negative class ids,
    # repeated video ids or mistyped spec fields are refused; ranks of one sharded
    # evaluation given other inputs, or leaving queries unpredicted, are refused; a copy
    # of the support labels instead of a read-only view (a torch warning at 1 episode);
    # 'weights=None' is spelled 'none' (other spellings name other records), a plan's
    # outline names tiny features; unreadable text or image weights files, and NaN/inf
    # features at extraction, are named errors (NaN features were cached); logits alike
    # for every class of every query of a batch are refused (label 0 was taken each time);
    # a finetune cell's config names its train/val and test files (a replaced video left
    # its record served as current): its records are evaluated once more, its models kept;
    # a finetune micro_batch that does not divide episodes_per_step is refused with the recipe
    "d09618e64347838e": "2815c7d05867b240",
    "ac382c15c96a62e8": "45d399cf0f55f5c7",
    # session 29: frozen-track records list why each video was left out (the extraction's
    # error, as finetune records did); the identities still hash the ids alone; a finetune
    # split left unusable says how many videos were missing, unreadable or too short; a
    # test split too small for any shot says so (it advised --shots up to 0); split lists
    # spelling a test class apart in train (Fencing/fencing), a layout template naming no
    # video, and two listed videos resolved to one file are refused; a run marks the
    # folder's tables and report out of date before it first changes a record; method
    # names that are no file name of their own are refused, a record file holding another
    # method's record is never served, and evaluate checks a method built directly (the
    # plugin contract, now with inputs_untouched) before its first number, again once its
    # weights changed, and refuses features of another [T, D] than a user's method was built
    # for; complex or bool logits are refused by name (they crashed in torch's argmax); one
    # Manifest.regenerates for every "are these the spec's draws" check (three copies before)
    "031a44e474d9498c": "2815c7d05867b240",
    "c50b7cfdc42e07c0": "45d399cf0f55f5c7",
    # session 30: a frozen model's folder and training fingerprint leave out the test split's
    # cache key (a touched test video retrained every frozen model; the records are made
    # again, the models reused); pair tables are kept per model and test features; a new
    # feature cache's file is allocated on disk (a full disk gave SIGBUS, now a named error);
    # a method whose Config is no dataclass is refused at registration; a plugin inside a
    # built-in method (the recipe's adapter, SGTM's matcher) is checked again once trained;
    # training warns when it changed no weight or its loss did not go down, and validation
    # on fewer classes than the training way says so; eval records keep their episode batch;
    # a user's class defined again (a notebook cell run twice) replaces its registration;
    # a 4-D tensor in a features file is refused (tokens [N, T, P, D] were read as views);
    # a large pool's pair table shows its progress, built before the evaluation's bar
    "3d2e525995265452": "2815c7d05867b240",
    "5a2bcc0769d071aa": "45d399cf0f55f5c7",
    # session 31: test frames that are all zero (padding, an extraction that wrote nothing)
    # are counted and named (no error: black frames through random weights are zero too);
    # training batches are checked for NaN/inf; records say which step val selected, at what
    # accuracy, and the loss trend; eval's sharded evaluator saves its finished batches
    # every minute and on any stop, as evaluate() did
    "0d40edd91161cc4e": "2815c7d05867b240",
    # session 32: checks, messages and logs only: NaN/inf features are named by video id
    # and cache folder (each video once); torchrun's WORLD_SIZE/RANK/LOCAL_RANK and
    # LOCAL_WORLD_SIZE are refused by name when not whole numbers (blank: unset);
    # gather_when_done's group has store keys of its own (a second call hung); summary.csv
    # is rebuilt under a lock, and a failure to write it no longer stops the cells; a
    # resumed training or evaluation logs it; a numpy features file's error says how to
    # save one; a folder where a checkpoint is written is refused before the first step;
    # a damaged video's message names the video met once, and claims no full decode
    # where none ran
    "e738341d03400db7": "2815c7d05867b240",
    "efe637702dd733c6": "45d399cf0f55f5c7",
    # session 33: what a feature cache was extracted with (library versions, device) is
    # kept in its index and copied into records' compute, outside every identity; a reused
    # cache of other versions is named; splits sharing a class or a video are refused on
    # the run, train and plan paths (a registered dataset's test split held its train
    # classes and was trained and tested); sampler docstrings name SlowFast's bounds; a
    # dataset registered with settings_of takes a head's presets of that dataset (none of
    # the built-in datasets' presets changes); FSAR_SYNTH_WORKERS=0 is refused (taken as 1);
    # made_with lives in made_with.json (a keyless cache's identity is its index's bytes),
    # credited only to extractions that wrote, with features stored before marked unknown;
    # methods may check class names before any work (check_class_names; clip-fsar's split
    # tags), and checkpoints predating a hyper-parameter load with its legacy value; a
    # recipe may give its early stages a learning rate of their own (unset: none changes);
    # one helper lists a dataset's splits apart (listed once); legacy_hparams checked at
    # registration; an early rate on a one-stage method is named
    "1b195fdb2a578812": "2815c7d05867b240",
    "bc9e21ffbaa55929": "45d399cf0f55f5c7",
    # session 34: recipes may set milestone_factors (a multistep's relative rates),
    # warmup_start (the warm-up's first factor) and train_shot (the shot of the training
    # episodes, whatever shot the model is for: CLIP-FSAR's 5-shot configs train on 1-shot
    # tasks); unset, no recipe's identity or number changes; records' train_shot is the
    # shot trained on (equal to the unit's shot unless train_shot is set); a clip-rn50
    # backbone preset and RN50 text tower (no existing backbone or tower changes); the
    # finetune track's bn: train normalises support and query sets apart (the default
    # option changed, so finetune records re-run by their identity; bn: frozen unchanged)
    "e2181d90b6b2dcf1": "2815c7d05867b240",
    "cb42cc3ebfec41a3": "45d399cf0f55f5c7",
    # session 35: HyRSM's colour jitter of training query clips (a protocol and finetune
    # option, color_jitter, left out of protocol and recipe dicts while off: no other
    # identity changes; the frozen track's views are never jittered); uint8 -> float
    # normalisation split into normalise/standardise (the same arithmetic); eval of a
    # finetune checkpoint records its options as train does; Recipe.decay_exempt (weight
    # decay exemptions, omitted from the recipe dict while 'none'; make_optimizer's one
    # group unchanged without it)
    "63b3240605b46d8c": "2815c7d05867b240",
    "db59f2a52c06b2bf": "45d399cf0f55f5c7",
    # session 36: the runner names a train/eval record it evaluates again (an import and a
    # log line's arguments); bn: train runs each episode's support then query set in turn
    # (only the running statistics of micro_batch > 1 change: every recipe's default is 1);
    # training rows and summaries name data-parallel process counts, a resume under another
    # count is said; all-inf logits are non-finite, not constant; a finished run's reload
    # is said as such; FinetuneOptions spells random weights 'none' in any case; a frozen
    # test/train class whose files exist but none decodes is refused; fsarbench_baselines:
    # clip-fsar refuses a prompt without one {} slot (package digests are carried as the
    # harness's); pipeline: two listed videos that are one file (a link) are refused; PyAV
    # frames convert to RGB on one swscale thread (the same pixels: a forked decode worker
    # hung in swscale's slice-thread teardown); Kinetics' train_256 layout finds .webm/.mkv
    # files too (reported missing)
    "d72a567074ff8ee4": "2815c7d05867b240",
    "5cee6d51d67b79c1": "f18a4d781fc32163",
    "e77e256a2af044e4": "45d399cf0f55f5c7",
    # session 37: checks and records only: a frozen val class whose files exist but none decodes
    # is refused where validation episodes are drawn (val_manifest_for; validation over the other
    # classes before); a plugin refused at registration is left out alone (it stopped every
    # command), user code registering a built-in name (or its case twin) is refused whatever the
    # order, and a name two plugins were refused for stays refused; a partial evaluation resumes
    # only under its method's hyper-parameters and code (resume_tag; a head without weights
    # resumed another configuration's batches, and an interrupted eval resumed under new code);
    # a failed partial save warns and the evaluation goes on; logits alike for every class of
    # every query of one episode are refused whatever the episode batch (per batch before); a
    # manifest's meta must be an object with a whole first_episode; a run logs a supersede only
    # when it moved the record (another run may have); pipeline: upper-case video
    # extensions (.MP4) are found after the lower-case ones (reported missing); "auto" layouts
    # record the layout detected per split; timm and open_clip weights are read offline when one
    # connection to the Hub fails (huggingface_hub retried each file for about 50 s); a
    # torchvision hub file is checked against the sha256 prefix in its name (any file there was
    # keyed as the ImageNet weights); a complete cache in another key's folder is refused; an
    # extraction whose first batch the writer refused credits nothing; NaN errors name video ids;
    # a SIGTERM after a decode worker's loop ends it without a traceback;
    # fsarbench_baselines: clip-fsar checks its prompt where it checks class names, at planning
    "4848275e22179bfb": "2815c7d05867b240",
    "b34857f98400f32f": "f18a4d781fc32163",
    "9cf624d300ba7cc6": "45d399cf0f55f5c7",
    # session 38: checks and records only: a NaN gradient under a finite loss stops training
    # before the step (it went into the weights); the loss trend leaves out the DDP process
    # count; train() and finetune() without a fingerprint name their data; --recipe refuses
    # octal, hex and binary YAML integers, momentum 1 and weight decay above 1; a finetune
    # record and training name a precision other than fp32 (the CPU's keep their form); the
    # ranks read rank 0's test cache without retrying its failures; the process group waits
    # up to 12 hours; a sharded eval resumed under another batch size keeps its own rows;
    # user code cannot register a built-in class under its name with other presets, and a
    # hyper-parameter that is not JSON is refused at registration, and a plugin instance that
    # cannot be copied is refused (its checks were skipped); pipeline: the probe cache
    # is saved every 30 s and on interrupts; extract_split can take an earlier extraction's
    # failures as they are
    "c1957b0d7d61732f": "2815c7d05867b240",
    "fda5bc8c1bb56b6d": "45d399cf0f55f5c7",
    # session 39: checks only: a plugin whose query logits depend on the episode's other
    # queries is refused (every built-in head passes); multistep milestones at 0 or 1, or
    # repeated, are refused; make_manifest refuses the negative seed its loader refused and
    # takes numpy integers (the pipeline is not carried: caches are extracted again, since a
    # file cut short near its end, read by PyAV after decord refused it, may sit in them)
    # fsarbench_baselines: official checkpoints saved by HyRSM's training script (every key
    # under head.) load; nothing evaluated changes
    "65f3242d4d288ac9": "2815c7d05867b240",
    "52d155eec0351a3d": "437e3bf88f3ef7ee",
}


def _fsarbench_digest(modules: Iterable[str]) -> str:
    """Message-free digest of fsarbench ``modules``, or the digest it carried before."""
    root = _package_root()
    digest = source_digest([root / m for m in modules], root, messages=False)
    return CARRIED_DIGESTS.get(digest, digest)


@functools.lru_cache(maxsize=1)
def harness_digest() -> str:
    """Digest of :data:`HARNESS_NUMERIC` (error and log messages left out)."""
    return _fsarbench_digest(HARNESS_NUMERIC)


@functools.lru_cache(maxsize=1)
def pipeline_digest() -> str:
    """Digest of :data:`PIPELINE_MODULES` (decoding, sampling, transforms, backbones; error
    and log messages left out)."""
    return _fsarbench_digest(PIPELINE_MODULES)


@functools.cache
def package_digest(package: str) -> str:
    """Digest of top-level package (or single module) ``package``'s source and of the other
    files it ships (a ``defaults.json``, ``prompts.yaml`` or ``init.pt`` the method reads:
    editing one left its records current). A package of Python files alone keeps the digest
    of its source."""
    paths = _package_paths(package)
    if not paths:
        return "unknown"
    root = paths[0] if paths[0].is_dir() else paths[0].parent
    digest = source_digest(paths, root)
    data = _data_files(paths)
    if data:
        h = hashlib.sha256(digest.encode())
        for f in data:
            h.update(_relative_name(f, root, paths).encode() + b"\0" + _bytes_digest(f) + b"\n")
        digest = h.hexdigest()[:16]
    # a built-in method package changed where no number of a valid setting changes (a
    # check that refuses a bad one) keeps its records and models, as the harness does
    return CARRIED_DIGESTS.get(digest, digest)


def _data_files(paths: list[Path]) -> list[Path]:
    """The files other than Python source under package folders ``paths``, sorted: byte
    code, ``__pycache__``, hidden files and what editors, patches and logs leave behind
    (``x.py~``, ``#x.py#``, ``*.orig``, ``*.rej``, ``*.swp``, ``*.bak``, ``*.log``) apart, as
    such a file made every record of its plugin stale."""
    found = set()
    for folder in (p for p in paths if p.is_dir()):
        for f in folder.rglob("*"):
            parts = f.relative_to(folder).parts
            hidden = any(part.startswith(".") or part == "__pycache__" for part in parts)
            if f.is_file() and not hidden and not _junk(f.name):
                found.add(f)
    return sorted(found)


_NOT_DATA = {".py", ".pyc", ".pyo", ".orig", ".rej", ".swp", ".bak", ".log", ".tmp"}


def _junk(name: str) -> bool:
    return Path(name).suffix in _NOT_DATA or name.endswith("~") or name.startswith("#")


def _bytes_digest(f: Path) -> bytes:
    h = hashlib.sha256()
    with open(f, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest().encode()


def _package_paths(package: str) -> list[Path]:
    """The folders of package ``package`` (several for a namespace package), or its file
    for a single module; empty when it is not found or not Python source."""
    spec = _find_spec(package)
    if spec is None:
        return []
    if spec.submodule_search_locations:
        return [Path(p) for p in spec.submodule_search_locations]
    if spec.origin and spec.origin.endswith(".py"):
        return [Path(spec.origin)]
    return []


def method_packages(model: nn.Module) -> list[str]:
    """Top-level packages of the code behind ``model``: the module of every class in it and
    of their base classes, and the local modules those import helpers from (a plugin
    scoring through ``from myhelp import score`` kept serving its records after ``myhelp``
    changed). Frameworks, the standard library, installed third-party packages
    (site-packages) and the harness, which has its own digest, are left out."""
    tops, helpers = _direct_packages(model)
    return _with_local_imports({t for t in tops | {h for h in helpers if _local(h)}})


def _with_local_imports(tops: set[str]) -> list[str]:
    """``tops`` that are own code, and the local packages these import, at any depth,
    anywhere in their source."""
    found = {t for t in tops if _own_code(t)}
    todo = sorted(found)
    while todo:
        for top in _source_imports(todo.pop()):
            if top not in found and _own_code(top) and _local(top):
                found.add(top)
                todo.append(top)
    return sorted(found)


def freeze_code_digests() -> None:
    """Compute the harness's, the pipeline's and every registered method package's digest
    now, at a command's start, from the code on disk then. They were computed at the first
    record or model (after hours of extraction or probing): a method edited meanwhile had
    its numbers, computed by the code already imported, labelled with the edited code's
    digest, and the next run reused them as the edited code's. A module imported later,
    and edited in between, is labelled with the older digest: its records re-run."""
    from fsarbench.registry import list_methods, method_info

    harness_digest()
    pipeline_digest()
    _FROZEN_MAIN[:] = [_main_source_digest()]
    tops = {method_info(name).cls.__module__.split(".")[0] for name in list_methods()}
    for package in _with_local_imports(tops):
        package_digest(package)


def _direct_packages(model: nn.Module) -> tuple[set[str], set[str]]:
    """Top-level packages of the modules of ``model``'s classes (and their bases), and of
    what those modules' globals hold (imported modules, functions and classes)."""
    modules = {base.__module__ for m in model.modules() for base in type(m).__mro__}
    tops = {name.split(".")[0] for name in modules}
    helpers = {h.split(".")[0] for name in modules for h in _imported_names(sys.modules.get(name))}
    return tops, helpers


@functools.cache
def _source_imports(package: str) -> frozenset[str]:
    """Top-level names every ``import``/``from ... import`` in ``package``'s source names,
    inside functions too: a helper's helper, a lazy import or an imported constant changed
    a method's numbers while its records stayed current."""
    names = set()
    for f in _python_files(_package_paths(package)):
        try:
            tree = ast.parse(f.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError, OSError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names.update(a.name.split(".")[0] for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return frozenset(names)


def _find_spec(name: str):
    try:
        return importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None


def _imported_names(module: Any) -> set[str]:
    """Modules whose names ``module``'s globals hold: imported modules, and the defining
    modules of imported functions and classes."""
    names = set()
    for value in vars(module).values() if module is not None else ():
        if inspect.ismodule(value):
            names.add(value.__name__)
        elif (inspect.isfunction(value) or inspect.isclass(value)) and isinstance(
            getattr(value, "__module__", None), str
        ):
            names.add(value.__module__)
    return names


def _own_code(top: str) -> bool:
    """Not a framework, the harness, ``__main__`` or the standard library."""
    return (
        top not in FRAMEWORKS
        and top not in {"fsarbench", "__main__"}
        and top not in sys.stdlib_module_names
        and not top.startswith("_")
    )


@functools.lru_cache(maxsize=256)
def _local(top: str) -> bool:
    """Whether ``top`` is source outside any installed site (a checkout, ``PYTHONPATH``,
    an editable install): the code a user edits between runs."""
    spec = _find_spec(top)
    where = spec.origin or next(iter(spec.submodule_search_locations or []), "") if spec else ""
    return bool(where) and not any(p in where for p in ("site-packages", "dist-packages"))


def installed_helpers(model: nn.Module) -> dict[str, str]:
    """``{import name: "distribution==version"}`` of the installed (site-packages) packages
    the code behind ``model`` imports, other than frameworks and fsarbench's own
    dependencies: a plugin's helper installed with ``pip install .`` (not editable) changed
    its numbers while its records stayed current, since installed code is not hashed."""
    tops, helpers = _direct_packages(model)
    names = tops | helpers
    for package in method_packages(model):
        names |= _source_imports(package)
    found = {}
    for top in sorted(names):
        if _own_code(top) and not _local(top):
            dist = _distribution_of(top)
            if dist is not None and _canonical(dist[0]) not in _environment_distributions():
                found[top] = f"{dist[0]}=={dist[1]}"
    return found


def _distribution_of(top: str) -> tuple[str, str] | None:
    """The (name, version) of the installed distribution providing import name ``top``."""
    import importlib.metadata as metadata

    for dist in _import_names().get(top, ()):
        try:
            return dist, metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return None


@functools.cache
def _import_names() -> Mapping[str, list[str]]:
    import importlib.metadata as metadata

    return metadata.packages_distributions()


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


@functools.cache
def _environment_distributions() -> frozenset[str]:
    """fsarbench and every distribution it requires, at any depth (extras included): the
    environment a record's compute section names, not a method's own code."""
    import importlib.metadata as metadata

    seen, todo = set(), ["fsarbench"]
    while todo:
        name = _canonical(todo.pop())
        if name in seen:
            continue
        seen.add(name)
        try:
            requires = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            continue
        todo += [m.group(0) for r in requires if (m := re.match(r"[A-Za-z0-9._-]+", r))]
    return frozenset(seen)


def code_parts(model: nn.Module) -> dict[str, Any]:
    """``{"harness": digest, "packages": {package: digest}}`` of the code behind ``model``;
    a model that decodes videos itself (the finetune track's backbone inside it) also names
    ``"pipeline"``: :func:`pipeline_digest` (the frozen track has it in its feature-cache
    keys)."""
    parts = {
        "harness": harness_digest(),
        "packages": {p: package_digest(p) for p in method_packages(model)},
    }
    if any(base.__module__ == "__main__" for m in model.modules() for base in type(m).__mro__):
        parts["main"] = main_digest()  # a script's or notebook's method: no package names it
    installed = installed_helpers(model)
    if installed:  # absent otherwise: the code parts of earlier records stay as they were
        parts["installed"] = installed
    if any(type(m).__module__.startswith(_PIPELINE_PREFIXES) for m in model.modules()):
        parts["pipeline"] = pipeline_digest()
    return parts


def main_digest() -> str:
    """Digest of the source of every function and class defined in ``__main__`` (a script
    or notebook that defines a method and calls fsarbench): such a method's records and
    models named no code of it, so after an edit a re-run reused the old numbers. Taken at
    each command's start (:func:`freeze_code_digests`: a notebook cell edited between two
    commands is new code), else when asked. Where the source cannot be read (``python -c``,
    ``exec``), a token of this process alone: its records are made again by every run."""
    return _FROZEN_MAIN[0] if _FROZEN_MAIN else _main_source_digest()


_FROZEN_MAIN: list[str] = []  # main_digest at the running command's start
_PROCESS_TOKEN = uuid.uuid4().hex[:8]


def _main_source_digest() -> str:
    main = sys.modules.get("__main__")
    sources = []
    for name, value in sorted(vars(main).items() if main is not None else ()):
        if not (inspect.isfunction(value) or inspect.isclass(value)):
            continue
        if getattr(value, "__module__", None) != "__main__":
            continue
        try:
            sources.append(f"{name}\0{inspect.getsource(value)}")
        except (OSError, TypeError):
            log.warning(
                "the source of %s in __main__ cannot be read: the records and models of "
                "methods defined there are made again by every run (define them in a "
                "module or a script file to have them reused)",
                name,
            )
            return f"unreadable-{_PROCESS_TOKEN}"
    return hashlib.sha256("\n".join(sources).encode()).hexdigest()[:16]


_PIPELINE_PREFIXES = tuple(f"fsarbench.{m}" for m in PIPELINE_MODULES) + (
    "fsarbench.training.video_method",
)


def code_digest(model: nn.Module) -> str:
    """16 hex digits naming the code that computes ``model``'s numbers: the harness's numeric
    modules and every package the model's modules come from."""
    return stable_hash(code_parts(model))


#: Suffix of a stale reason whose package is not importable (rather than changed).
NOT_INSTALLED = " (not installed)"


def not_installed_advice(reasons: list[str]) -> str:
    """What to do when some of ``reasons`` (:func:`stale_code`'s, maybe ``code:``-prefixed)
    name packages that are not importable: re-running, the advice for changed code, would
    fail on an unknown method. ``""`` when none does."""
    missing = sorted({r.split(":")[-1][: -len(NOT_INSTALLED)] for r in reasons
                      if r.endswith(NOT_INSTALLED)})  # fmt: skip
    if not missing:
        return ""
    return (
        f"{', '.join(missing)} cannot be imported here: install the method package(s) "
        "(pip install -e FOLDER, in fsarbench's environment) to read their records as current"
    )


def stale_code(parts: Mapping[str, Any]) -> list[str]:
    """Which of stored ``code_parts`` no longer match the code installed now; ``["unreadable"]``
    for parts of another shape (an outside bundle's hand-made provenance crashed every
    report of the folder it was added to)."""
    if not isinstance(parts, Mapping):
        return ["unreadable"]
    packages, installed = parts.get("packages") or {}, parts.get("installed") or {}
    if not isinstance(packages, Mapping) or not isinstance(installed, Mapping):
        return ["unreadable"]
    out = []
    if parts.get("harness") not in (None, harness_digest()):
        out.append("harness")
    if parts.get("pipeline") not in (None, pipeline_digest()):
        out.append("pipeline")
    for package, digest in packages.items():
        now = package_digest(package)
        if now == "unknown":  # not importable here: a reader without the plugin installed
            out.append(f"{package}{NOT_INSTALLED}")
        elif now != digest:
            out.append(package)
    for top, version in installed.items():
        dist = _distribution_of(top)
        if dist is None or f"{dist[0]}=={dist[1]}" != version:
            out.append(top)
    return out


def provenance_diff(stored: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """``"field: stored -> current"`` for each differing field (nested dicts flattened)."""
    a, b = _flatten(stored), _flatten(current)
    out = []
    for key in sorted(set(a) | set(b)):
        if a.get(key) != b.get(key):
            out.append(f"{key}: {_short(a.get(key))} -> {_short(b.get(key))}")
    return out


def _flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        name = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(_flatten(v, name + "."))
        else:
            out[name] = v
    return out


def _short(value: Any, width: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= width else text[: width - 3] + "..."


def training_fingerprint(
    *,
    method: str,
    model: nn.Module,
    hparams: Mapping[str, Any],
    recipe: Mapping[str, Any],
    seed: int,
    dataset: str,
    track: str,
    data: Mapping[str, Any],
) -> dict[str, Any]:
    """What makes one training run (stored in its checkpoints; see
    :func:`fsarbench.training.trainer.load_resume`)."""
    return {
        "method": method,
        "hparams": dict(hparams),
        "recipe": dict(recipe),
        "seed": seed,
        "dataset": dataset,
        "track": track,
        "data": dict(data),
        "code_digest": code_digest(model),
    }
