"""Errors of the dissemination policy.

PolicyError
├── DirectoryError        the community directory is invalid (message names the key path)
└── BundleRejected        the submission as a whole cannot be evaluated (e.g. the same
                          id and modified with different content)
"""

from __future__ import annotations

__all__ = ["BundleRejected", "DirectoryError", "PolicyError"]


class PolicyError(Exception):
    """Root of the policy package's errors."""

    def __init__(self, msg: str) -> None:
        super().__init__(msg)


class DirectoryError(PolicyError):
    """The community directory does not validate."""


class BundleRejected(PolicyError):
    """The bundle cannot be evaluated at all; nothing of it is delivered."""
