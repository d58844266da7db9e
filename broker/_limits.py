"""Per-organisation submission rate limits: a token bucket per key, and the router's use of it.

``RateLimiter`` is a token bucket written as GCRA (one "theoretical arrival time" per key
instead of a token count and a refill timer): ``rate`` tokens a second, at most ``burst``
at once. It does no I/O and reads the clock it is given, so any front can use it:

- ``acquire(key)`` takes a token if one is there and returns ``0.0``; otherwise it takes
  nothing and returns the seconds until one will be there (an HTTP front answers
  ``429 Too Many Requests`` with ``Retry-After``);
- ``reserve(key)`` always takes the next token, now or later, and returns how long to wait
  for it (the router holds the submission that long: delayed, never dropped).

``SubmissionLimiter`` is the router's: one bucket per organisation (``limits.*``, with
``limits.per_org`` overrides). The router fetches an organisation's submissions one at a
time from that organisation's own consumer and waits for the token of the one in hand
before handing it to a worker, so a submission over the rate is held back, never dropped,
and what waits is that organisation's next submission alone. Limits hold per broker
process: with N processes on the shared consumers an organisation gets up to N times its
rate.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from ._config import LimitSettings

__all__ = ["RateLimiter", "SubmissionLimiter"]


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


class SubmissionLimiter:
    """The router's per-organisation limits on ``atlas.submit.<org>``."""

    def __init__(self, limits: LimitSettings, *, clock: Callable[[], float] = time.monotonic):
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

    @property
    def enabled(self) -> bool:
        return self._default is not None or any(v is not None for v in self._per_org.values())

    def retry_after(self, org: str) -> float:
        """For a front that refuses instead (HTTP 429): 0 = go, else seconds to wait.

        Give the front its own instance: the router counts again what the front lets in.
        """
        limiter = self._per_org.get(org, self._default)
        return 0.0 if limiter is None else limiter.acquire(org)

    def reserve(self, org: str) -> float:
        """Take ``org``'s next token for the submission in hand: the seconds to wait for it."""
        limiter = self._per_org.get(org, self._default)
        return 0.0 if limiter is None else limiter.reserve(org)
