"""Python's cycle collector in a long-running broker: pauses measured, startup objects frozen.

A full (generation 2) collection walks every tracked object in the process; the imported
libraries alone (stix2, pydantic, nats, cryptography's wrappers) are most of them, and
they live as long as the process.  ``freeze_startup`` moves them to the permanent
generation (``gc.freeze``) once the broker has started, so a full collection walks only
what the work keeps, and ``CollectorWatch`` times every collection into the
``atlas_gc_pause_seconds`` histogram and logs the long ones: a latency tail can be set
against the collector's pauses instead of guessed at.
"""

from __future__ import annotations

import gc
import time
from types import TracebackType
from typing import Any

import structlog
from prometheus_client import Histogram

__all__ = ["LONG_PAUSE", "CollectorWatch", "freeze_startup"]

log = structlog.get_logger()

LONG_PAUSE = 0.05
"""Collections longer than this (seconds) are logged at info."""


def freeze_startup() -> int:
    """Collect once, then move every object alive now out of later collections' reach.

    Returns how many objects were frozen.  Objects frozen here are never collected, so
    call it after start-up, not in the middle of work that leaves cycles behind.
    """
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()


class CollectorWatch:
    """Times each collection of the cycle collector while active (a context manager).

    The callback runs inside the collector, on whichever thread allocates: it only reads
    the clock and observes a histogram.
    """

    __slots__ = ("_histogram", "_started")

    def __init__(self, histogram: Histogram) -> None:
        self._histogram = histogram
        self._started: float | None = None

    def _callback(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
            return
        started, self._started = self._started, None
        if started is None:
            return
        seconds = time.perf_counter() - started
        generation = int(info.get("generation", 0))
        self._histogram.labels(str(generation)).observe(seconds)
        if seconds >= LONG_PAUSE:
            log.info(
                "gc.pause",
                generation=generation,
                ms=round(seconds * 1000, 1),
                collected=info.get("collected"),
                frozen=gc.get_freeze_count(),
            )

    def __enter__(self) -> CollectorWatch:
        gc.callbacks.append(self._callback)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._callback in gc.callbacks:
            gc.callbacks.remove(self._callback)
