"""Replay protection for opened packages: the port and its in-memory implementation."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

__all__ = ["MemoryReplayGuard", "ReplayGuard"]


@runtime_checkable
class ReplayGuard(Protocol):
    """Remembers the package ids (jti) already opened, at least until they expire."""

    def seen(self, jti: str, exp: int) -> bool:
        """True when ``jti`` was added before."""

    def add(self, jti: str, exp: int) -> None:
        """Remember ``jti``; it may be forgotten once ``exp`` (plus leeway) is past."""


class MemoryReplayGuard:
    """A process-local :class:`ReplayGuard` (tests, single-process tools)."""

    __slots__ = ("_expiry",)

    def __init__(self) -> None:
        self._expiry: dict[str, int] = {}

    def seen(self, jti: str, exp: int) -> bool:
        return jti in self._expiry

    def add(self, jti: str, exp: int) -> None:
        self._expiry[jti] = max(exp, self._expiry.get(jti, exp))

    def prune(self, before: int) -> int:
        """Forget ids whose exp is earlier than ``before`` (pass ``now - leeway``)."""
        stale = [jti for jti, exp in self._expiry.items() if exp < before]
        for jti in stale:
            del self._expiry[jti]
        return len(stale)

    def __len__(self) -> int:
        return len(self._expiry)
