"""The receive bridge's state on disk: the replay cache kept as long as a package can still
be opened, never through a planted link; the state folder its own."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from adapters import BridgeError, DiskReplayGuard, Receiver
from keys import BrokerKeyring

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


def test_a_link_planted_as_the_cache_is_not_followed(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_bytes(b"keep me\n")
    path = tmp_path / "replay.jsonl"
    guard = DiskReplayGuard(path, now=lambda: NOW)
    path.unlink(missing_ok=True)
    path.symlink_to(victim)
    with pytest.raises(OSError):  # the receiver reports it as a write failure
        guard.add("jti", NOW + 60)
    assert victim.read_bytes() == b"keep me\n"


def _receiver(out: Path) -> Receiver:
    return Receiver(
        None,  # type: ignore[arg-type]  # making the folders needs no NATS
        org="lea-1",
        decryption_keys={},
        broker_keys=lambda: BrokerKeyring.of(),
        out_dir=out,
    )


def test_a_state_folder_that_is_a_link_is_refused(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    out = tmp_path / "out"
    out.mkdir()
    (out / ".atlas").symlink_to(elsewhere)
    with pytest.raises(BridgeError, match="is a link or not this user's folder"):
        _receiver(out)
    assert list(elsewhere.iterdir()) == []


def test_a_state_folder_open_to_others_is_closed(tmp_path: Path) -> None:
    out = tmp_path / "out"
    (out / ".atlas").mkdir(parents=True)
    (out / ".atlas").chmod(0o777)
    _receiver(out)
    assert stat.S_IMODE((out / ".atlas").stat().st_mode) == 0o700


def test_an_output_folder_it_makes_is_not_for_everyone_to_list(tmp_path: Path) -> None:
    _receiver(tmp_path / "out")
    assert stat.S_IMODE((tmp_path / "out").stat().st_mode) & 0o007 == 0
