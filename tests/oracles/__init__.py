"""Slow, literal re-statements of the specs (tests/ only): loops exactly as the specs read."""
