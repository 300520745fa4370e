"""How tables, the leaderboard, the report and ``compare`` print a number: rounded half-up
on its decimal value.

``f"{72.845:.2f}"`` prints ``72.84``: the binary float nearest 72.845 lies just below it, so
an exact tie (72,845 right of 100,000 queries) fell whichever way its binary value happened
to lie (``72.895`` prints ``72.89`` although both half-up and half-even give 72.90). Records
keep accuracies to 6 decimals; :func:`fixed` rounds that decimal value half-up, as papers
print numbers.
"""

from __future__ import annotations

import math
from decimal import ROUND_HALF_UP, Decimal

__all__ = ["fixed", "rounded", "difference"]

#: Places a value is read to before rounding (records keep 6; a mean over seeds has float
#: noise below them, e.g. 72.84499999999999 for 72.845).
_READ_PLACES = 6


def _decimal(x: float, decimals: int) -> Decimal:
    """``x`` as the decimal it stands for: its 6-place value where it lies within float noise
    of one (72.84499999999999 is 72.845), else its shortest repr (0.3449997 stays below
    0.345 and prints 0.34), rounded half-up to ``decimals`` places."""
    snapped = round(x, _READ_PLACES)
    near = abs(x - snapped) <= 1e-9 * max(1.0, abs(x))
    exact = Decimal(f"{snapped:.{_READ_PLACES}f}") if near else Decimal(repr(x))
    value = exact.quantize(Decimal(1).scaleb(-decimals), rounding=ROUND_HALF_UP)
    return value.copy_abs() if value == 0 else value  # -0.004 printed "-0.00"


def fixed(x: float, decimals: int = 2, *, sign: bool = False) -> str:
    """``x`` with ``decimals`` places, half-up (``fixed(72.845) == "72.85"``); ``sign``
    writes ``+`` before positive numbers. NaN and infinities print as ``format`` does."""
    spec = f"{'+' if sign else ''}.{decimals}f"
    if not math.isfinite(x):
        return format(x, spec)
    return format(_decimal(x, decimals), spec)


def rounded(x: float, decimals: int = 2) -> float:
    """The value :func:`fixed` prints, as a float (for ranking by printed value and CSV)."""
    return x if not math.isfinite(x) else float(_decimal(x, decimals))


def difference(diff: float, low: float, high: float) -> str:
    """``"+1.23 [+0.40, +2.05]"``: a difference and its interval, signed."""
    return f"{fixed(diff, sign=True)} [{fixed(low, sign=True)}, {fixed(high, sign=True)}]"
