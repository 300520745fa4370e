"""Process settings that must precede torch's first allocation (imported first by the package).

``THP_MEM_ALLOC_ENABLE=1`` makes PyTorch's CPU allocator request transparent huge pages for
tensors of 2 MiB and more. The evaluator's gathers and GEMM outputs are such tensors; in 4 KiB
pages, filling a fresh 157 MiB pool state cost ~5x a copy into memory already mapped on this
VM. It only takes effect when fsarbench is imported before torch (``python -m fsarbench``,
``python -m benchmarks``); a value the user set is left alone (``0`` turns it off).

glibc's ``malloc`` gives every block above a (dynamic) threshold its own ``mmap`` and returns
it to the kernel when freed, and it trims freed memory at the top of the heap: a training
step's temporaries (TRX's ``[N, tuples, 1152]`` keys and their gradients, 10-20 MiB each) were
then page-faulted in afresh, zeroed by the kernel, at every step. :func:`keep_freed_memory`
serves blocks up to glibc's largest threshold (32 MiB) from the heap and keeps freed heap
memory for reuse; the values computed are the same, only where memory comes from changes
(``docs/speed.md``, "Page faults"). A process keeps its peak heap size until it exits. It is
skipped where the user set any ``MALLOC_*_`` tuning variable of glibc, or
``FSAR_MALLOC=default``; another value of ``FSAR_MALLOC`` than ``reuse`` is warned about.
"""

from __future__ import annotations

import ctypes
import os
import warnings

os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")

# mallopt parameters (malloc.h) and the values set
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3
MMAP_THRESHOLD = 32 << 20  # glibc's ceiling for M_MMAP_THRESHOLD on 64-bit
TRIM_THRESHOLD = (1 << 31) - 1  # mallopt takes an int: never trim below 2 GiB free
TOP_PAD = 64 << 20  # grow the heap in steps of 64 MiB (fewer brk calls)
_USER_TUNING = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_")
#: FSAR_MALLOC values: unset, "" or "reuse" set the allocator; "default" leaves it alone
FSAR_MALLOC_VALUES = ("", "reuse", "default")


def _glibc() -> bool:
    try:
        return os.confstr("CS_GNU_LIBC_VERSION").startswith("glibc")
    except (ValueError, OSError, AttributeError):  # not a glibc system
        return False


def keep_freed_memory() -> bool:
    """Set glibc's malloc to reuse freed memory (see the module docstring); returns whether
    it was set (``False`` off glibc, or when the user chose the allocator's settings)."""
    choice = os.environ.get("FSAR_MALLOC", "")
    if choice not in FSAR_MALLOC_VALUES:
        warnings.warn(
            f"FSAR_MALLOC={choice!r} is not one of {FSAR_MALLOC_VALUES[1:]}: glibc's malloc is "
            "set to reuse freed memory as by default; FSAR_MALLOC=default leaves it alone",
            stacklevel=2,
        )
    if choice == "default":
        return False
    if any(name in os.environ for name in _USER_TUNING):
        return False
    if not _glibc():
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    settings = (
        (_M_MMAP_THRESHOLD, MMAP_THRESHOLD),
        (_M_TRIM_THRESHOLD, TRIM_THRESHOLD),
        (_M_TOP_PAD, TOP_PAD),
    )
    return all(mallopt(param, value) == 1 for param, value in settings)


MALLOC_TUNED = keep_freed_memory()
