"""Where a "±" over episodes says nothing: an accuracy at (or next to) 0 or 100%.

The published convention, ``1.96 * std / sqrt(n)`` over per-episode accuracies
(:mod:`fsarbench.stats.intervals`), gives ``100.00 ± 0.00`` when every episode is perfect
(std 0): arithmetic, not a 95% interval, and it covers the truth far less than 95% of the
time at a few hundred episodes. fsarbench keeps the convention (every published number used
it) and says so beside such a number, with a bound that holds: when all ``E`` episodes are
perfect, the probability that an episode has any wrong query is below ``3 / E`` at 95%
confidence (the rule of three: ``(1 - 3/E)^E <= e^-3 < 0.05``), and the error rate per query
is at most that probability, whatever the correlation between an episode's queries.
"""

from __future__ import annotations

import math

__all__ = ["interval_caveat", "caveat_line"]


def interval_caveat(accuracy: float, ci95: float, std: float, episodes: int, seeds: int = 1) -> str:
    """Why ``accuracy ± ci95`` (percent, over ``episodes``) is not a 95% interval, or ``""``.

    Args:
        accuracy: mean per-episode accuracy in percent (mean over training seeds).
        ci95: the printed half-width in percent.
        std: std of the per-episode accuracies in percent (one record's; unused with seeds).
        episodes: number of episodes behind each record.
        seeds: training seeds pooled into ``ci95`` (then only an interval past 0 or 100% is
            named: the per-episode spread of a pooled row is not one record's).
    """
    if episodes < 2 or ci95 != ci95:  # one episode: the half-width is already NaN
        return ""
    if seeds == 1 and std <= 1e-9:  # equal values can average to a std of 1e-17, not 0
        bound = _round_up(300 / episodes)  # printed rounded down, it undercut the rule
        said = f"below {bound:g}% at 95% confidence (rule of three over episodes)"
        if bound >= 100:
            said = f"not bounded by {episodes} episodes"
        if accuracy >= 100 - 1e-9:
            return (
                f"every one of its {episodes} episodes was perfect, so '± 0' is arithmetic, "
                f"not a 95% interval; the error rate is {said}"
            )
        if accuracy <= 1e-9:
            return (
                f"no query of its {episodes} episodes was right, so '± 0' is not a 95% "
                f"interval; the accuracy is {said.replace(' over episodes', '')}"
            )
        return (
            f"every one of its {episodes} episodes scored the same, so '± 0' is arithmetic, "
            "not a 95% interval: run more episodes"
        )
    if accuracy + ci95 > 100 or accuracy - ci95 < 0:
        edge = "100" if accuracy + ci95 > 100 else "0"
        over = f"pooled over {seeds} training seeds " if seeds > 1 else ""
        few = "seeds and episodes" if seeds > 1 else f"episodes ({episodes})"
        return (
            f"its '±' {over}runs past {edge}%: too few {few} this close to the bound for "
            "it to mean 95%; run more"
        )
    return ""


def _round_up(x: float) -> float:
    """``x > 0`` rounded up to two significant digits (4.918 -> 5.0, 0.04918 -> 0.05)."""
    step = 10.0 ** (math.floor(math.log10(x)) - 1)
    return round(math.ceil(x / step - 1e-9) * step, 12)


def caveat_line(result) -> str:
    """``"(every one of its 40 episodes was perfect, ...)"`` for a printed result line of
    ``result`` (an :class:`~fsarbench.evaluate.EvalResult` or a
    :class:`~fsarbench.results.ResultRecord`: accuracy, ci95, std, episodes); ``""`` when
    its ``±`` means what it says."""
    caveat = interval_caveat(result.accuracy, result.ci95, result.std, result.episodes)
    return f"({caveat})" if caveat else ""
