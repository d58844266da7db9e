"""``audit list``: one readable line per entry, whatever its type."""

from __future__ import annotations

from broker.cli import _describe_entry

TS = "2026-11-29T10:00:00.000000Z"


def test_a_refused_acknowledgement_says_so() -> None:
    line = _describe_entry(4, {"type": "receipt", "ts": TS, "rcpt": "ec3", "result": "refused"})
    assert "from ec3" in line and "REFUSED" in line and "None" not in line


def test_key_and_directory_events_name_what_changed() -> None:
    key = {"type": "key", "ts": TS, "event": "revoke", "org": "ec3", "use": "enc", "kid": "k1"}
    assert _describe_entry(1, key).endswith("revoke ec3 enc key k1")
    loaded = {"type": "directory", "ts": TS, "event": "load", "directory_revision": 7,
              "keys_added": ["a/k"], "keys_dropped": []}  # fmt: skip
    assert "load revision 7  keys added 1, dropped 0" in _describe_entry(2, loaded)


def test_a_delivery_lists_its_counts_plainly() -> None:
    line = _describe_entry(
        3,
        {
            "type": "delivery",
            "ts": TS,
            "src": {"org": "bank-a"},
            "rcpt": "ec3",
            "tlp": "amber",
            "objects": {"delivered": 3, "withheld": 1},
            "pkg": "p1",
        },
    )
    assert "bank-a → ec3  tlp=amber delivered=3 withheld=1 pkg=p1" in line
    assert "{" not in line


def test_an_entry_of_another_type_shows_its_members() -> None:
    line = _describe_entry(5, {"v": 1, "type": "notice", "ts": TS, "reason": "x", "sub": "s"})
    assert "reason=x sub=s" in line and "v=1" not in line


def test_query_refuses_a_tlp_that_is_not_one() -> None:
    from typer.testing import CliRunner

    from broker.cli import app

    result = CliRunner().invoke(app, ["audit", "query", "--tlp", "orange"])
    assert result.exit_code == 2 and "--tlp 'orange': use one of clear" in result.output


def test_vkey_warns_of_an_origin_that_is_not_a_logs() -> None:
    from typer.testing import CliRunner

    from broker.cli import app

    result = CliRunner().invoke(
        app, ["audit", "vkey", "--broker-jwks", "/nonexistent", "--origin", "atlas-broker"]
    )
    assert "does not end in /log" in result.output
