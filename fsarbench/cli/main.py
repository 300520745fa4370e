"""Command-line entry point. Each sub-command lives in its own module of this package and
exposes ``register(subparsers)``; they are discovered, so adding one touches no other file."""

from __future__ import annotations

import argparse
import importlib
import linecache
import logging
import pkgutil
import sys
from collections.abc import Sequence

import fsarbench
from fsarbench.env_settings import check_environment, folder_setting_of
from fsarbench.interrupts import interrupt_requested, interrupts_recorded
from fsarbench.provenance import freeze_code_digests

__all__ = ["main", "build_parser"]

#: Commands whose records, models or caches carry code digests (frozen at their start).
_COMPUTING = frozenset({"run", "train", "eval", "extract"})


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m fsarbench",
        description="fsarbench: few-shot action recognition benchmark and reproduction suite.",
        epilog="Run 'python -m fsarbench COMMAND --help' for the options of one command.",
    )
    parser.add_argument("--version", action="version", version=fsarbench.code_version())
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    package = importlib.import_module("fsarbench.cli")
    for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda m: m.name):
        if info.name in ("main", "common") or info.name.startswith("_"):
            continue
        module = importlib.import_module(f"fsarbench.cli.{info.name}")
        register = getattr(module, "register", None)
        if register is not None:
            register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(argv) if argv is not None else sys.argv[1:]  # for launchers
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    with interrupts_recorded():
        return _run_command(args)


def _run_command(args: argparse.Namespace) -> int:
    """``args.func(args)``, with an interrupt ending it as exit status 130 and a named error
    of the project (or of bad input) as status 2 with its message."""
    try:
        check_environment()  # a mistyped FSAR_* value stops here, not hours in
        if args.command in _COMPUTING:
            freeze_code_digests()  # the code on disk now, not after hours of extraction
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return _interrupted(args)
    except (
        fsarbench.ConfigError,
        fsarbench.ManifestError,
        fsarbench.UnknownMethodError,
        OSError,  # a missing file, a read-only or full disk: named, not a traceback
        ValueError,
        KeyError,
        RuntimeError,
        FloatingPointError,
    ) as err:
        if interrupt_requested():  # e.g. another rank, ended by the same signal, left a collective
            return _interrupted(args)
        if args.verbose:
            raise
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        if isinstance(err, OSError) and err.filename and err.strerror:
            where = err.filename2 or err.filename  # a rename's target is the path in the way
            message = f"{err.strerror}: {where}{folder_setting_of(where)}"
        hint = "" if _named(err) else "\n(run with -v for the traceback)"
        print(f"error: {message}{hint}", file=sys.stderr)
        return getattr(err, "exit_code", 2)  # 3: a bundle that cannot be verified here


def _named(err: BaseException) -> bool:
    """Whether ``err`` is one of fsarbench's refusals (a ``BundleVerificationError`` listing
    its differences, or a ``ValueError`` or ``FileNotFoundError`` fsarbench raised itself,
    e.g. "'A' and 'B' share no setting"), whose message is the whole story: the traceback
    hint made an expected refusal read as a crash. An error raised inside a library keeps
    the hint."""
    module = type(err).__module__
    if module.startswith(("fsarbench.", "fsarbench_")) and type(err).__name__.endswith("Error"):
        return True
    tb = err.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    if type(err) not in (ValueError, FileNotFoundError) or tb is None:
        return False
    # a 'raise' line of fsarbench's own: a TypeError or KeyError of a bug there, or a
    # ValueError that int() raised inside it, keeps the hint
    raiser = tb.tb_frame.f_globals.get("__name__", "")
    line = linecache.getline(tb.tb_frame.f_code.co_filename, tb.tb_lineno).strip()
    return raiser.startswith(("fsarbench.", "fsarbench_")) and line.startswith("raise ")


#: Commands whose finished work survives an interrupt and whose re-run resumes from it: run
#: (records, models, partial evaluations), train (checkpoints), extract (the cache's entries).
RESUMING = frozenset({"run", "train", "extract"})
#: Commands that resume only with ``--out`` (eval keeps its finished batches there).
RESUMING_WITH_OUT = frozenset({"eval"})


def _torchrun() -> bool:
    """Whether this process is one of several torchrun started."""
    from fsarbench.env_settings import env_number

    return (env_number("WORLD_SIZE", 1, kind=int, what="set by torchrun") or 1) > 1


def _interrupted(args: argparse.Namespace) -> int:
    """The end of a command stopped by Ctrl-C or SIGTERM: exit status 130. Only
    :data:`RESUMING` commands (and :data:`RESUMING_WITH_OUT` ones given ``--out``) say a
    re-run resumes (eval said so and started again from its first batch)."""
    command = args.command
    # torchrun stops every process when one fails: its error, not this, says what happened
    peers = " (under torchrun: if another process failed, its error says why)" * _torchrun()
    if command in RESUMING or (command in RESUMING_WITH_OUT and getattr(args, "out", None)):
        print(
            f"interrupted; finished work is saved and a re-run resumes from it{peers}",
            file=sys.stderr,
        )
    else:
        print(f"interrupted; {command or 'the command'} recorded nothing: run it again "
              "(it starts from the beginning)", file=sys.stderr)  # fmt: skip
    return 130
