"""Benchmarks: ``python -m benchmarks [NAME ...]`` runs every ``bench_*.py`` module here."""

import fsarbench  # noqa: F401  (first: its process settings precede torch's first allocation)
