"""The receive bridge's replay cache on disk: kept as long as a package can still be opened."""

from __future__ import annotations

import stat
from pathlib import Path

from adapters import DiskReplayGuard

NOW = 1_800_000_000


def test_an_id_is_remembered_across_a_restart_until_exp_plus_leeway(tmp_path: Path) -> None:
    path = tmp_path / "replay.jsonl"
    guard = DiskReplayGuard(path, now=lambda: NOW)
    guard.add("in-leeway", NOW - 30)  # open_package still accepts it for 30 s
    guard.add("long-gone", NOW - 61)
    guard.add("valid", NOW + 3600)

    again = DiskReplayGuard(path, now=lambda: NOW)

    assert again.seen("in-leeway", NOW - 30)
    assert again.seen("valid", NOW + 3600)
    assert not again.seen("long-gone", NOW - 61)
    assert len(path.read_bytes().splitlines()) == 2  # compacted on load
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_a_damaged_line_is_skipped_not_fatal(tmp_path: Path) -> None:
    path = tmp_path / "replay.jsonl"
    path.write_bytes(b'{"jti": "a", "exp": 1900000000}\n{not json\n{"jti": "b"}\n')

    guard = DiskReplayGuard(path, now=lambda: NOW)

    assert guard.seen("a", 1_900_000_000) and not guard.seen("b", 0)
