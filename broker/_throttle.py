"""At most one log entry per key and interval for what anyone can send unsigned (pure).

Junk on an organisation's own subjects (a submission or an acknowledgement that no valid
signature vouches for) must still be answered: acked so that it is not redelivered forever,
logged through structlog each time, and visible in the dissemination log. But the log keeps
every entry forever, so one entry per junk message would let an organisation grow it
without bound. A :class:`Throttle` lets one entry per key through every ``every`` seconds
and counts the others; the next entry that goes through carries that count
(``suppressed``). The counts live in the process: those not yet carried by an entry are
lost when it stops (structlog has every event).

The state lives in one process: with N broker processes on the shared consumers a key gets
up to N entries per interval. It is still bounded by time, never by the volume of junk.
"""

from __future__ import annotations

import time
from collections.abc import Callable

__all__ = ["Throttle"]


class Throttle:
    """One admitted event per key every ``every`` seconds; the others are counted.

    ``admit`` and ``undo`` do no I/O and never await, so the tasks of one event loop
    (the router's workers) share one throttle without a lock.
    """

    def __init__(self, every: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        if not every >= 0:
            raise ValueError(f"every must be a non-negative number of seconds, not {every}")
        self.every = every
        self._clock = clock
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def admit(self, key: str) -> int | None:
        """None: suppressed (counted for the next admitted one). Otherwise the event may be
        logged now, carrying the returned count of those suppressed since the last one."""
        now = self._clock()
        last = self._last.get(key)
        if last is not None and now - last < self.every:
            self._suppressed[key] = self._suppressed.get(key, 0) + 1
            return None
        self._last[key] = now
        return self._suppressed.pop(key, 0)

    def undo(self, key: str, suppressed: int) -> None:
        """The admitted event was not logged after all (the write failed, or an identical
        entry was already there): give its slot back and keep the count for the next one."""
        self._last.pop(key, None)
        if suppressed:
            self._suppressed[key] = self._suppressed.get(key, 0) + suppressed

    def pending(self, key: str) -> int:
        """Events of ``key`` suppressed and not yet carried by a logged entry."""
        return self._suppressed.get(key, 0)
