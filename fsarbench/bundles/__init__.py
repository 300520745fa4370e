"""Verifiable result bundles: a method's records and per-query predictions in one file,
checked against the official episodes before they join a leaderboard (see docs/bundles.md)."""

from fsarbench.bundles.errors import (
    BundleDataMissingError,
    BundleError,
    BundleFormatError,
    BundleVerificationError,
)
from fsarbench.bundles.format import BUNDLE_VERSION, Bundle, read_bundle, write_bundle
from fsarbench.bundles.verify import VerifiedBundle, verify_bundle

__all__ = [
    "BUNDLE_VERSION",
    "Bundle",
    "BundleDataMissingError",
    "BundleError",
    "BundleFormatError",
    "BundleVerificationError",
    "VerifiedBundle",
    "read_bundle",
    "verify_bundle",
    "write_bundle",
]
