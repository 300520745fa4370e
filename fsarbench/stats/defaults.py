"""Defaults shared by every statistic a command prints."""

#: Bootstrap resamples behind every CI of a difference and every bootstrap p, in every command
#: (compare, leaderboard, report, figures): one default, so their intervals are the same.
DEFAULT_BOOTSTRAP = 2000
