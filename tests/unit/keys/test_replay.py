"""The in-memory replay guard."""

from __future__ import annotations

from keys import MemoryReplayGuard, ReplayGuard


class TestMemoryReplayGuard:
    def test_satisfies_protocol_when_checked_at_runtime(self) -> None:
        assert isinstance(MemoryReplayGuard(), ReplayGuard)

    def test_reports_seen_when_jti_was_added(self) -> None:
        guard = MemoryReplayGuard()
        assert not guard.seen("a", 10)
        guard.add("a", 10)
        assert guard.seen("a", 10)
        assert guard.seen("a", 99)
        assert not guard.seen("b", 10)

    def test_keeps_latest_expiry_when_added_twice(self) -> None:
        guard = MemoryReplayGuard()
        guard.add("a", 50)
        guard.add("a", 10)
        assert guard.prune(before=40) == 0
        assert guard.seen("a", 10)

    def test_forgets_only_expired_ids_when_pruned(self) -> None:
        guard = MemoryReplayGuard()
        guard.add("old", 10)
        guard.add("new", 100)
        assert guard.prune(before=50) == 1
        assert len(guard) == 1
        assert not guard.seen("old", 10)
        assert guard.seen("new", 100)
