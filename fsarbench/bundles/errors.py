"""Errors of result bundles: every refusal names what differs and what to do next."""

from __future__ import annotations

__all__ = [
    "BundleDataMissingError",
    "BundleError",
    "BundleFormatError",
    "BundleVerificationError",
]


class BundleError(ValueError):
    """A result bundle that cannot be written, read or added."""


class BundleFormatError(BundleError):
    """A file that is not a readable bundle of a supported format version (truncated,
    corrupt, edited member, unknown version)."""


class BundleVerificationError(BundleError):
    """A bundle whose episodes or numbers differ from what its predictions give on the
    official manifests; ``differences`` lists each one (record, field, expected, found)."""

    def __init__(self, message: str, differences: list[str] | None = None) -> None:
        super().__init__(message)
        self.differences = list(differences or [])


class BundleDataMissingError(BundleError):
    """This machine lacks what a bundle's episodes are drawn from (the dataset's published
    test list, the generated ``synth``): the bundle cannot be verified here, which says
    nothing of its numbers (it was reported as differences between them and their
    predictions). The command exits with :attr:`exit_code` 3."""

    exit_code = 3
