"""The object ledger against a real nats-server: one write per new object, no
lost writes between competing workers, conflicts found, hand-deleted records survived, and
only an object's owner adds versions."""

from __future__ import annotations

import asyncio

import orjson
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
        {(oid, T1): "sha-1"}, "bank-b", relay_only={oid}, received={oid: {"ncu": "amber"}}
    )

    assert relay.foreign == [] and relay.conflicts == []
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


async def test_relay_only_ids_are_never_created_or_versioned(js: JetStreamContext) -> None:
    ledger = Ledger(js, KEY)
    known = "indicator--00000006-0000-4000-8000-000000000000"
    unknown = "indicator--00000007-0000-4000-8000-000000000000"
    await ledger.claim({(known, T1): "sha-1"}, "bank-a")
    writes = await _writes(js)

    claim = await ledger.claim(
        {(known, T1): "sha-1", (unknown, T1): "sha-x"}, "bank-b", relay_only={known, unknown}
    )
    newer = await ledger.claim({(known, T2): "sha-2"}, "bank-b", relay_only={known})

    assert claim.foreign == [unknown]
    assert newer.foreign == [known]
    assert await _writes(js) == writes


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
