"""Python's cycle collector in a long-running broker: pauses measured, startup objects frozen.

A full (generation 2) collection walks every tracked object in the process; the imported
libraries alone (stix2, pydantic, nats, cryptography's wrappers) are most of them, and
they live as long as the process.  ``frozen_startup`` moves them to the permanent
generation (``gc.freeze``) while the broker serves, so a full collection walks only what
the work keeps, and ``CollectorWatch`` counts every collection's pause into the
``atlas_gc_pause_seconds`` histogram: a latency tail can be set against the collector's
pauses instead of guessed at.
"""

from __future__ import annotations

import bisect
import gc
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from types import TracebackType
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import HistogramMetricFamily
from prometheus_client.registry import Collector

__all__ = ["PAUSE_BUCKETS", "CollectorWatch", "frozen_startup"]

PAUSE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
_GENERATIONS = 3


@contextmanager
def frozen_startup() -> Iterator[int]:
    """Collect once, then keep every object alive now out of later collections' reach
    until the block ends (yields how many were frozen)."""
    gc.collect()
    gc.freeze()
    try:
        yield gc.get_freeze_count()
    finally:
        gc.unfreeze()


class CollectorWatch(Collector):
    """Counts the cycle collector's pauses while active (a context manager), and is the
    Prometheus collector that exposes them.

    The gc callback runs inside whatever allocation started the collection, possibly in a
    thread holding a lock of prometheus_client or of a logger: it takes no lock and
    allocates nothing that could start a collection, only adds to preallocated counts.
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self._started = 0.0
        self._buckets = [[0] * (len(PAUSE_BUCKETS) + 1) for _ in range(_GENERATIONS)]
        self._sums = [0.0] * _GENERATIONS
        if registry is not None:
            registry.register(self)

    def _callback(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
            return
        seconds = time.perf_counter() - self._started
        generation = info.get("generation", 0)
        if not 0 <= generation < _GENERATIONS:
            return
        self._buckets[generation][bisect.bisect_left(PAUSE_BUCKETS, seconds)] += 1
        self._sums[generation] += seconds

    def collect(self) -> Iterable[HistogramMetricFamily]:
        family = HistogramMetricFamily(
            "atlas_gc_pause_seconds",
            "Pauses of Python's cycle collector, by generation (2 is a full collection).",
            labels=["generation"],
        )
        for generation in range(_GENERATIONS):
            counts = self._buckets[generation]
            cumulative, running = [], 0
            for bound, count in zip((*PAUSE_BUCKETS, float("inf")), counts, strict=True):
                running += count
                cumulative.append((_bound(bound), running))
            family.add_metric([str(generation)], cumulative, self._sums[generation])
        yield family

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


def _bound(value: float) -> str:
    return "+Inf" if value == float("inf") else repr(value)
