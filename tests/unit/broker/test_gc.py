"""The cycle collector's pauses counted without locks, and start-up objects frozen."""

from __future__ import annotations

import gc
import threading

from prometheus_client import CollectorRegistry, Histogram

from broker._gc import CollectorWatch, frozen_startup
from broker._metrics import BrokerMetrics


def _count(metrics: BrokerMetrics, generation: str) -> float:
    value = metrics.registry.get_sample_value(
        "atlas_gc_pause_seconds_count", {"generation": generation}
    )
    return value or 0.0


def test_counts_each_collection_by_generation_while_active() -> None:
    metrics = BrokerMetrics()
    with metrics.gc_pauses:
        gc.collect(0)
        gc.collect(2)
        gc.collect(2)
    assert _count(metrics, "0") >= 1
    assert _count(metrics, "2") >= 2
    total = metrics.registry.get_sample_value(
        "atlas_gc_pause_seconds_bucket", {"generation": "2", "le": "+Inf"}
    )
    assert total == _count(metrics, "2")
    assert (
        metrics.registry.get_sample_value("atlas_gc_pause_seconds_sum", {"generation": "2"}) or 0
    ) > 0


def test_stops_counting_when_left() -> None:
    metrics = BrokerMetrics()
    before = len(gc.callbacks)
    with metrics.gc_pauses:
        assert len(gc.callbacks) == before + 1
    gc.collect(2)
    assert _count(metrics, "2") == 0
    assert len(gc.callbacks) == before


def test_a_collection_under_a_metrics_lock_does_not_deadlock() -> None:
    # A collection can start in any allocation, also while a scrape holds a metric's lock:
    # the watch takes no lock (an earlier version observed a Histogram, which does).
    registry = CollectorRegistry()
    other = Histogram("held", "a metric whose lock is held", registry=registry)
    watch = CollectorWatch(registry)

    def collect_under_lock() -> None:
        with other._sum._lock:
            gc.collect(2)

    with watch:
        worker = threading.Thread(target=collect_under_lock, daemon=True)
        worker.start()
        worker.join(timeout=30)
    assert not worker.is_alive()


def test_freezes_live_objects_until_the_block_ends() -> None:
    kept = [{"n": i} for i in range(1000)]
    with frozen_startup() as frozen:
        assert frozen >= len(kept)
        assert not any(o is kept for o in gc.get_objects(2))
    assert gc.get_freeze_count() == 0
