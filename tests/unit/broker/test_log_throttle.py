"""The throttle that keeps unsigned refusals from growing the dissemination log."""

from __future__ import annotations

import pytest

from broker._throttle import Throttle


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class TestThrottle:
    def test_admits_one_per_interval_and_counts_the_rest_when_flooded(self) -> None:
        clock = Clock()
        throttle = Throttle(60, clock=clock)
        assert throttle.admit("bank-a") == 0
        assert [throttle.admit("bank-a") for _ in range(5)] == [None] * 5
        assert throttle.pending("bank-a") == 5
        clock.now += 59.9
        assert throttle.admit("bank-a") is None
        clock.now += 0.1
        assert throttle.admit("bank-a") == 6
        assert throttle.pending("bank-a") == 0

    def test_keys_are_independent_when_one_organisation_floods(self) -> None:
        throttle = Throttle(60, clock=Clock())
        assert throttle.admit("bank-a") == 0
        assert throttle.admit("bank-a") is None
        assert throttle.admit("bank-b") == 0
        assert throttle.pending("bank-b") == 0

    def test_undo_gives_back_the_slot_and_keeps_the_count_when_nothing_was_written(
        self,
    ) -> None:
        throttle = Throttle(60, clock=Clock())
        assert throttle.admit("bank-a") == 0
        assert throttle.admit("bank-a") is None
        assert throttle.admit("bank-a") is None
        throttle.undo("bank-a", 0)
        suppressed = throttle.admit("bank-a")
        assert suppressed == 2
        throttle.undo("bank-a", suppressed)  # the write failed: the count waits
        assert throttle.admit("bank-a") == 2

    def test_every_zero_admits_everything_when_configured_off(self) -> None:
        throttle = Throttle(0, clock=Clock())
        assert [throttle.admit("bank-a") for _ in range(3)] == [0, 0, 0]

    def test_refuses_a_negative_or_nan_interval_when_built(self) -> None:
        for every in (-1.0, float("nan")):
            with pytest.raises(ValueError, match="every must be"):
                Throttle(every)
