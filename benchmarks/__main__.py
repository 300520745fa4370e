"""Run every benchmark module (``bench_*.py``) of this folder, or those named on the command
line; each prints its own table of measured times and ratios.

``--device cuda`` (or ``FSAR_BENCH_DEVICE=cuda``) runs the benchmarks that have a device
variant (extraction, finetune) on that device; the others measure the CPU paths and say so.
"""

from __future__ import annotations

import importlib
import os
import pkgutil
import sys
import time

import benchmarks


def main(argv: list[str]) -> int:
    if "--device" in argv:
        at = argv.index("--device")
        if at + 1 >= len(argv):
            print("--device needs a value: cpu or cuda[:N]", file=sys.stderr)
            return 2
        os.environ["FSAR_BENCH_DEVICE"] = argv[at + 1]
        argv = argv[:at] + argv[at + 2 :]
    names = sorted(
        m.name for m in pkgutil.iter_modules(benchmarks.__path__) if m.name.startswith("bench_")
    )
    chosen = [n for n in names if not argv or any(a in n for a in argv)]
    for name in chosen:
        print(f"\n=== {name} ===", flush=True)
        t0 = time.perf_counter()
        importlib.import_module(f"benchmarks.{name}").main()
        print(f"({name}: {time.perf_counter() - t0:.1f} s)", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
