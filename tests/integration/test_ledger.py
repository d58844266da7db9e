"""The object ledger against a real nats-server: one write per new object, no
lost writes between competing workers, conflicts found, hand-deleted records survived, and
only an object's owner adds versions."""

from __future__ import annotations

import asyncio

import nats.js.errors
import orjson
import pytest
from nats.js import JetStreamContext

from broker._bus import OBJECTS_BUCKET
from broker._ledger import Ledger, ObjectRecord

KEY = b"k" * 32
T1, T2 = "2026-01-01T00:00:00.000Z", "2026-02-01T00:00:00.000Z"


class CountingLedger(Ledger):
    """Counts the reads the ledger makes (the writes are counted by the stream)."""

    def __init__(self, js: JetStreamContext) -> None:
        super().__init__(js, KEY)
        self.reads = 0

    async def _get(self, object_id: str) -> ObjectRecord:
        self.reads += 1
        return await super()._get(object_id)


async def _stored(js: JetStreamContext, ledger: Ledger, object_id: str) -> dict[str, object]:
    kv = await js.key_value(OBJECTS_BUCKET)
    entry = await kv.get(ledger.key_of(object_id))
    return dict(orjson.loads(entry.value or b"{}"))


async def _writes(js: JetStreamContext) -> int:
    return (await js.stream_info(f"KV_{OBJECTS_BUCKET}")).state.last_seq


async def test_new_objects_take_one_write_each_and_no_read(js: JetStreamContext) -> None:
    ledger = CountingLedger(js)
    ids = [f"indicator--{n:08d}-0000-4000-8000-000000000000" for n in range(5)]
    versions = {(i, T1): f"sha-{i}" for i in ids}

    claim = await ledger.claim(versions, "bank-a", received={i: {"ec3": "green"} for i in ids})

    assert claim.conflicts == [] and claim.foreign == []
    assert all(claim.before[i] == ObjectRecord({}, {}, None) for i in ids)
    assert ledger.reads == 0
    assert await _writes(js) == 5
    info = await js.stream_info(f"KV_{OBJECTS_BUCKET}")
    assert info.state.num_deleted in (0, None)  # nothing superseded, no interior deletes
    for i in ids:
        assert await _stored(js, ledger, i) == {
            "v": {T1: f"sha-{i}"},
            "r": {"ec3": "green"},
            "o": "bank-a",
        }


async def test_a_known_object_returns_what_earlier_submissions_left(js: JetStreamContext) -> None:
    ledger = Ledger(js, KEY)
    oid = "indicator--00000001-0000-4000-8000-000000000000"
    await ledger.claim({(oid, T1): "sha-a"}, "bank-a", received={oid: {"ec3": "green"}})
    writes = await _writes(js)

    again = await ledger.claim({(oid, T1): "sha-a"}, "bank-a", received={oid: {"ec3": "green"}})
    assert again.conflicts == []
    assert again.before[oid].versions == {T1: "sha-a"}
    assert Ledger.received_before(again.before) == {"ec3": {oid: "green"}}
    assert await _writes(js) == writes  # nothing new: nothing written

    clash = await ledger.claim({(oid, T1): "sha-OTHER"}, "bank-a", received={oid: {"ncu": "red"}})
    assert clash.conflicts == [(oid, T1)]
    assert await _stored(js, ledger, oid) == {
        "v": {T1: "sha-a"},
        "r": {"ec3": "green"},
        "o": "bank-a",
    }


async def test_competing_workers_lose_no_version_and_no_receiver(js: JetStreamContext) -> None:
    one, two = Ledger(js, KEY), Ledger(js, KEY)
    oid = "indicator--00000002-0000-4000-8000-000000000000"

    # Both try to create the record at once: one create wins, the other merges after a read.
    a, b = await asyncio.gather(
        one.claim({(oid, T1): "sha-1"}, "bank-a", received={oid: {"ec3": "green"}}),
        two.claim({(oid, T2): "sha-2"}, "bank-a", received={oid: {"ncu": "green"}}),
    )

    assert a.conflicts == b.conflicts == [] and a.foreign == b.foreign == []
    assert await _stored(js, one, oid) == {
        "v": {T1: "sha-1", T2: "sha-2"},
        "r": {"ec3": "green", "ncu": "green"},
        "o": "bank-a",
    }


async def test_a_relay_adds_receivers_and_keeps_the_owner(js: JetStreamContext) -> None:
    ledger = Ledger(js, KEY)
    oid = "indicator--00000003-0000-4000-8000-000000000000"
    await ledger.claim({(oid, T1): "sha-1"}, "bank-a", received={oid: {"ec3": "green"}})

    relay = await ledger.claim(
        {(oid, T1): "sha-1"},
        "bank-b",
        received={oid: {"ncu": "amber", "ec3": "clear"}},  # a relay at a lower level
    )

    assert relay.foreign == [] and relay.conflicts == []
    # ec3 keeps green: a later revocation is judged against the higher level it received.
    assert await _stored(js, ledger, oid) == {
        "v": {T1: "sha-1"},
        "r": {"ec3": "green", "ncu": "amber"},
        "o": "bank-a",
    }


async def test_a_record_deleted_by_hand_is_started_afresh(js: JetStreamContext) -> None:
    ledger = Ledger(js, KEY)
    oid = "indicator--00000004-0000-4000-8000-000000000000"
    await ledger.claim({(oid, T1): "sha-1"}, "bank-a")
    kv = await js.key_value(OBJECTS_BUCKET)
    await kv.delete(ledger.key_of(oid))

    claim = await ledger.claim({(oid, T2): "sha-2"}, "bank-a")

    assert claim.conflicts == []
    assert claim.before[oid].versions == {}
    assert (await _stored(js, ledger, oid))["v"] == {T2: "sha-2"}


async def test_only_the_owner_adds_versions(js: JetStreamContext) -> None:
    ledger = Ledger(js, KEY)
    oid = "indicator--00000005-0000-4000-8000-000000000000"
    await ledger.claim({(oid, T1): "sha-1"}, "bank-a")

    # Refused whole: the receivers of a refused submission are not recorded either.
    takeover = await ledger.claim({(oid, T2): "sha-2"}, "bank-b", received={oid: {"x": "red"}})
    relay = await ledger.claim({(oid, T1): "sha-1"}, "bank-b")
    update = await ledger.claim({(oid, T2): "sha-2"}, "bank-a")

    assert takeover.foreign == [oid] and takeover.conflicts == []
    assert relay.foreign == [] and relay.conflicts == []
    assert update.foreign == [] and update.conflicts == []
    assert await _stored(js, ledger, oid) == {
        "v": {T1: "sha-1", T2: "sha-2"},
        "r": {},
        "o": "bank-a",
    }


async def test_a_members_objects_are_its_own_whoever_came_first(js: JetStreamContext) -> None:
    """bank-a authored it (created_by_ref or its identity): bank-b may relay what is
    registered, never add a version, even when bank-b registered it first."""
    ledger = Ledger(js, KEY)
    known = "indicator--00000006-0000-4000-8000-000000000000"
    unknown = "indicator--00000007-0000-4000-8000-000000000000"
    squatted = "identity--00000009-0000-4000-8000-000000000000"
    authors = {known: "bank-a", unknown: "bank-a", squatted: "bank-a"}
    await ledger.claim({(known, T1): "sha-1"}, "bank-a", authors=authors)
    # Written before bank-a's identity was in the directory: first come, bank-b.
    await ledger.claim({(squatted, T1): "forged"}, "bank-b")
    writes = await _writes(js)

    relay = await ledger.claim(
        {(known, T1): "sha-1", (unknown, T1): "sha-x"}, "bank-b", authors=authors
    )
    newer = await ledger.claim({(known, T2): "sha-2"}, "bank-b", authors=authors)
    assert relay.foreign == [unknown] and newer.foreign == [known]
    assert await _writes(js) == writes

    # Its directory identity is bank-a's whoever registered it; the rest is the record's.
    own = await ledger.claim(
        {(squatted, T2): "real"}, "bank-a", authors=authors, sovereign={squatted}
    )
    assert own.foreign == []
    assert (await _stored(js, ledger, squatted))["o"] == "bank-a"


async def test_a_new_versions_created_by_ref_does_not_change_the_owner(
    js: JetStreamContext,
) -> None:
    """bank-a's object (no created_by_ref): bank-b's versions naming a stranger, or naming
    bank-b, are refused; so are member versions of a third party's object."""
    ledger = Ledger(js, KEY)
    anonymous = "indicator--00000010-0000-4000-8000-000000000000"
    mitre = "attack-pattern--00000011-0000-4000-8000-000000000000"
    await ledger.claim({(anonymous, T1): "a1"}, "bank-a")
    await ledger.claim({(mitre, T1): "m1"}, "bank-b", authors={mitre: None})

    as_stranger = await ledger.claim({(anonymous, T2): "x"}, "bank-b", authors={anonymous: None})
    as_self = await ledger.claim({(anonymous, T2): "x"}, "bank-b", authors={anonymous: "bank-b"})
    taken = await ledger.claim({(mitre, T2): "x"}, "bank-a", authors={mitre: "bank-a"})
    dropped = await ledger.claim({(mitre, T2): "x"}, "bank-a")

    assert as_stranger.foreign == as_self.foreign == [anonymous]
    assert taken.foreign == dropped.foreign == [mitre]
    assert (await _stored(js, ledger, anonymous))["o"] == "bank-a"
    assert (await _stored(js, ledger, mitre))["o"] == "*"


async def test_a_third_partys_objects_are_nobodys(js: JetStreamContext) -> None:
    """created_by_ref names someone outside the directory (MITRE, say): whoever sends it
    first does not keep the others from relaying its later versions."""
    ledger = Ledger(js, KEY)
    oid = "attack-pattern--0000000b-0000-4000-8000-000000000000"
    first = await ledger.claim({(oid, T1): "v1"}, "bank-b", authors={oid: None})
    later = await ledger.claim({(oid, T2): "v2"}, "bank-a", authors={oid: None})

    assert first.foreign == later.foreign == []
    assert await _stored(js, ledger, oid) == {"v": {T1: "v1", T2: "v2"}, "r": {}, "o": "*"}


async def test_undo_leaves_nothing_of_a_refused_submission(js: JetStreamContext) -> None:
    ledger = Ledger(js, KEY)
    theirs = "indicator--0000000c-0000-4000-8000-000000000000"
    known = "indicator--0000000d-0000-4000-8000-000000000000"
    fresh = "indicator--0000000e-0000-4000-8000-000000000000"
    await ledger.claim({(theirs, T1): "t1"}, "bank-b")
    await ledger.claim({(known, T1): "k1"}, "bank-a", received={known: {"ec3": "green"}})

    # bank-a's submission: a RED object to lea-1, a relay of its own, and a takeover.
    claim = await ledger.claim(
        {(fresh, T1): "f1", (known, T1): "k1", (theirs, T2): "t2"},
        "bank-a",
        received={fresh: {"lea-1": "red"}, known: {"lea-1": "red"}},
    )
    assert claim.foreign == [theirs] and set(claim.written) == {fresh, known}
    await ledger.undo(claim)

    kv = await js.key_value(OBJECTS_BUCKET)
    assert (await ledger.load([fresh]))[fresh].versions == {}
    assert await _stored(js, ledger, known) == {
        "v": {T1: "k1"},
        "r": {"ec3": "green"},
        "o": "bank-a",
    }
    with pytest.raises(nats.js.errors.KeyNotFoundError):
        await kv.get(ledger.key_of(fresh))


async def test_two_organisations_racing_for_a_new_id_get_one_owner(js: JetStreamContext) -> None:
    oid = "indicator--00000008-0000-4000-8000-000000000000"
    a, b = await asyncio.gather(
        Ledger(js, KEY).claim({(oid, T1): "sha-a"}, "bank-a"),
        Ledger(js, KEY).claim({(oid, T2): "sha-b"}, "bank-b"),
    )
    stored = await _stored(js, Ledger(js, KEY), oid)
    winner, loser = (a, b) if stored["o"] == "bank-a" else (b, a)
    assert winner.foreign == [] and loser.foreign == [oid]
    assert len(stored["v"]) == 1  # type: ignore[arg-type]


async def test_uuid_case_does_not_make_another_object(js: JetStreamContext) -> None:
    ledger = Ledger(js, KEY)
    oid = "indicator--0000000a-0000-4000-8000-00000000abcd"
    await ledger.claim({(oid, T1): "sha-1"}, "bank-a")

    shouted = await ledger.claim(
        {(oid.upper().replace("INDICATOR", "indicator"), T2): "x"}, "bank-b"
    )

    assert shouted.foreign == [oid.upper().replace("INDICATOR", "indicator")]


async def test_undo_leaves_a_record_written_on_top_of_it(js: JetStreamContext) -> None:
    """Another submission merged after the refused one wrote: undo must neither clobber that
    nor fail (a failure would be retried for ever, as a NATS error)."""
    ledger = Ledger(js, KEY)
    oid = "indicator--0000000f-0000-4000-8000-000000000000"
    refused = await ledger.claim({(oid, T1): "v1"}, "bank-a", received={oid: {"lea-1": "red"}})
    created = await ledger.claim({(oid, T1): "v1"}, "bank-a", received={oid: {"lea-2": "red"}})
    updated = await ledger.claim({(oid, T2): "v2"}, "bank-a")
    await ledger.claim({(oid, T2): "v2"}, "bank-a", received={oid: {"lea-3": "red"}})

    await ledger.undo(refused)  # its create was followed by two writes: left alone
    await ledger.undo(updated)  # likewise

    assert set(created.written) == {oid}
    assert (await _stored(js, ledger, oid))["r"] == {"lea-1": "red", "lea-2": "red", "lea-3": "red"}
