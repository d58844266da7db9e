"""The cycle collector's pauses measured, and start-up objects frozen."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from broker._gc import CollectorWatch, freeze_startup
from broker._metrics import BrokerMetrics


def _count(metrics: BrokerMetrics, generation: str) -> float:
    value = metrics.registry.get_sample_value(
        "atlas_gc_pause_seconds_count", {"generation": generation}
    )
    return value or 0.0


def test_times_each_collection_by_generation_while_active() -> None:
    metrics = BrokerMetrics()
    with CollectorWatch(metrics.gc_pause_seconds):
        gc.collect(0)
        gc.collect(2)
        gc.collect(2)
    assert _count(metrics, "0") >= 1
    assert _count(metrics, "2") >= 2
    assert "atlas_gc_pause_seconds_bucket" in metrics.render().decode()


def test_stops_timing_when_left() -> None:
    metrics = BrokerMetrics()
    watch = CollectorWatch(metrics.gc_pause_seconds)
    with watch:
        pass
    before = len(gc.callbacks)
    gc.collect(2)
    assert _count(metrics, "2") == 0
    assert len(gc.callbacks) == before


@pytest.fixture
def unfrozen() -> Iterator[None]:
    yield
    gc.unfreeze()


@pytest.mark.usefixtures("unfrozen")
def test_moves_live_objects_out_of_full_collections_when_frozen() -> None:
    kept = [{"n": i} for i in range(1000)]
    frozen = freeze_startup()
    assert frozen >= len(kept)
    assert gc.get_freeze_count() == frozen
    assert not any(o is kept for o in gc.get_objects(2))
