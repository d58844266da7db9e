"""Per-organisation submission rate limits: a token bucket per key, and the router's use of it.

``RateLimiter`` is a token bucket written as GCRA (one "theoretical arrival time" per key
instead of a token count and a refill timer): ``rate`` tokens a second, at most ``burst``
at once. It does no I/O and reads the clock it is given, so any front can use it:

- ``acquire(key)`` takes a token if one is there and returns ``0.0``; otherwise it takes
  nothing and returns the seconds until one will be there (an HTTP front answers
  ``429 Too Many Requests`` with ``Retry-After``);
- ``reserve(key)`` always takes the next token, now or later, and returns how long to wait
  for it (the router naks the submission with that delay: delayed, never dropped).

``SubmissionLimiter`` is the router's: one bucket per organisation (``limits.*``, with
``limits.per_org`` overrides), and a slot kept per deferred message so that the message,
when JetStream redelivers it, passes without taking a second token. Limits hold per broker
process: with N processes on the shared consumer an organisation gets up to N times its rate.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from ._config import LimitSettings

__all__ = ["RateLimiter", "SubmissionLimiter"]

_EARLY = 0.05
"""A deferred message redelivered this much before its slot still passes."""
_SLOT_HORIZON = 600.0
"""Slots of deferred messages that never came back (another process took them) are forgotten."""


class RateLimiter:
    """A token bucket per key: ``rate`` tokens per second, ``burst`` at most at once."""

    def __init__(
        self,
        rate: float,
        burst: int,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_keys: int = 100_000,
    ) -> None:
        if not (rate > 0 and math.isfinite(rate)):
            raise ValueError(f"rate must be a positive number of tokens per second, not {rate}")
        if burst < 1:
            raise ValueError(f"burst must be at least 1, not {burst}")
        self.rate = rate
        self.burst = burst
        self._interval = 1.0 / rate
        self._tolerance = (burst - 1) * self._interval
        self._clock = clock
        self._max_keys = max_keys
        self._tat: dict[str, float] = {}

    def acquire(self, key: str, now: float | None = None) -> float:
        """Take a token now: ``0.0``; none there: the seconds until one is (nothing taken)."""
        now = self._clock() if now is None else now
        tat = max(self._tat.get(key, now), now)
        wait = tat - self._tolerance - now
        if wait > 0:
            return wait
        self._store(key, tat + self._interval, now)
        return 0.0

    def reserve(self, key: str, now: float | None = None) -> float:
        """Take the next token, now or later; returns the seconds to wait for it (0 = now)."""
        now = self._clock() if now is None else now
        tat = max(self._tat.get(key, now), now)
        self._store(key, tat + self._interval, now)
        return max(0.0, tat - self._tolerance - now)

    def _store(self, key: str, tat: float, now: float) -> None:
        self._tat[key] = tat
        if len(self._tat) > self._max_keys:
            # A key whose bucket has refilled carries no state worth keeping.
            self._tat = {k: v for k, v in self._tat.items() if v > now}


@dataclass(frozen=True, slots=True)
class Decision:
    delay: float
    """0: route it now; otherwise nak it with this delay (seconds)."""
    deferred_before: bool
    """The message was already deferred once and now comes back for its slot."""


class SubmissionLimiter:
    """The router's per-organisation limits on ``atlas.submit.<org>``."""

    def __init__(self, limits: LimitSettings, *, clock: Callable[[], float] = time.monotonic):
        self._clock = clock
        self._default = (
            RateLimiter(limits.submissions_per_second, limits.burst, clock=clock)
            if limits.submissions_per_second > 0
            else None
        )
        self._per_org = {
            org: RateLimiter(rate.submissions_per_second, rate.burst, clock=clock)
            if rate.submissions_per_second > 0
            else None
            for org, rate in limits.per_org.items()
        }
        self._slots: dict[int, float] = {}

    @property
    def enabled(self) -> bool:
        return self._default is not None or any(v is not None for v in self._per_org.values())

    @property
    def deferred(self) -> int:
        """Messages this process deferred that have not come back yet."""
        return len(self._slots)

    def retry_after(self, org: str) -> float:
        """For a front that refuses instead (HTTP 429): 0 = go, else seconds to wait.

        Give the front its own instance: the router counts again what the front lets in.
        """
        limiter = self._per_org.get(org, self._default)
        return 0.0 if limiter is None else limiter.acquire(org)

    def check(self, org: str, seq: int) -> Decision:
        """Whether the submission at stream sequence ``seq`` from ``org`` may be routed now."""
        limiter = self._per_org.get(org, self._default)
        if limiter is None:
            return Decision(0.0, False)
        now = self._clock()
        slot = self._slots.pop(seq, None)
        if slot is not None:
            if slot <= now + _EARLY:
                return Decision(0.0, True)
            self._slots[seq] = slot  # back early (a reconnect): wait for the same slot
            return Decision(slot - now, True)
        wait = limiter.reserve(org, now)
        if wait <= 0:
            return Decision(0.0, False)
        self._slots[seq] = now + wait
        if len(self._slots) > 10_000:
            self._slots = {s: t for s, t in self._slots.items() if t > now - _SLOT_HORIZON}
        return Decision(wait, False)

    def forget(self, seq: int) -> None:
        """The message was acked or abandoned: drop its slot."""
        self._slots.pop(seq, None)
