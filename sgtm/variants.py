"""Registers the SGTM variants (filled in by the SGTM implementation)."""
