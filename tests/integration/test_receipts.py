"""Receipts end to end: proof of delivery out, signed proof of receipt back into the log."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import nats.js.errors
import orjson
import pytest
from nats.js import JetStreamContext

from broker._audit import read_log
from broker._audit_jobs import verify_log
from broker._bus import DELIVERIES, RECEIPTS, deliver_subject
from broker._checkpoint import log_origin
from broker._logcopy import LiveLog
from broker._note import NoteVerifier
from broker._receipt import verify_receipt
from broker._service import receive
from keys import jws_sign, load_private_key
from tests.integration.helpers import bundle, indicator, publish, wait_routed


async def _until(predicate: Callable[[], Any]) -> None:
    async with asyncio.timeout(20):
        while not await predicate():  # noqa: ASYNC110 - polls server state
            await asyncio.sleep(0.2)


async def test_every_delivered_package_gets_a_verified_receipt_and_a_logged_ack(
    js: JetStreamContext,
    make_community: Callable[..., Any],
    running_router: Any,
    tmp_path: Path,
) -> None:
    community = make_community()
    settings = await running_router(community)
    sids = [
        await publish(
            settings, js, community, tmp_path, "bank-a", bundle(indicator("clear", f"n{n}"))
        )
        for n in range(3)
    ]
    await wait_routed(js, 3)
    out = tmp_path / "lea-1"

    async def _receive() -> Any:
        return await receive(
            settings,
            org="lea-1",
            key_paths=[community.enc_key("lea-1")],
            out_dir=out,
            once=True,
            js=js,
            sign_key_path=community.sign_key("lea-1"),
        )

    first = await _receive()
    assert first.received == 3

    async def _receipts_out() -> bool:
        return (await js.stream_info(RECEIPTS)).state.messages >= 6  # 3 packages x 2 partners

    await _until(_receipts_out)
    second = await _receive()
    assert second.receipts == 3
    key = community.public["atlas-broker"][0]
    from keys import PublicKey

    verifier = NoteVerifier.from_public_key(log_origin("atlas-broker"), PublicKey.from_jwk(key))
    for sid in sids:
        meta = orjson.loads((out / ".atlas" / "packages" / f"{sid}.json").read_bytes())
        receipt = (out / ".atlas" / "receipts" / f"{sid}.json").read_bytes()
        entry = verify_receipt(
            receipt, [verifier], jti=meta["jti"], aud="lea-1", jwe_sha256=meta["jwe_sha256"]
        )
        assert entry["src"]["submission"] == sid

    async def _acks_logged() -> bool:
        return len([r async for r in read_log(js) if r.entry["type"] == "receipt"]) >= 3

    await _until(_acks_logged)
    acks = [r.entry async for r in read_log(js) if r.entry["type"] == "receipt"]
    assert {a["rcpt"] for a in acks} == {"lea-1"} and "result" not in acks[0]
    result = await verify_log(LiveLog(js), log_keys=[verifier], deliveries=js)
    assert result.ok, result.summary()


async def _first_receipt(
    js: JetStreamContext, community: Any, settings: Any, tmp_path: Path
) -> tuple[Callable[[], Any], Path, str, str, bytes]:
    """lea-1 received one package and its genuine receipt was published, then taken off the
    stream: (receive again, lea-1's folder, submission id, package id, the receipt)."""
    sid = await publish(settings, js, community, tmp_path, "bank-a", bundle(indicator("clear")))
    await wait_routed(js, 1)
    out = tmp_path / "lea-1"

    def _receive() -> Any:
        key = [community.enc_key("lea-1")]
        return receive(settings, org="lea-1", key_paths=key, out_dir=out, once=True, js=js)

    await _receive()
    pkg = orjson.loads((out / ".atlas" / "packages" / f"{sid}.json").read_bytes())["jti"]

    async def _receipt_out() -> bool:
        receipts = await js.stream_info(RECEIPTS, subjects_filter="atlas.receipt.>")
        return receipts.state.messages >= 1

    await _until(_receipt_out)
    genuine = await js.get_last_msg(RECEIPTS, f"atlas.receipt.lea-1.{pkg}")
    await js.purge_stream(RECEIPTS)
    return _receive, out, sid, pkg, genuine.data or b""


async def test_a_tampered_receipt_is_rejected_and_not_kept(
    js: JetStreamContext,
    make_community: Callable[..., Any],
    running_router: Any,
    tmp_path: Path,
) -> None:
    community = make_community()
    settings = await running_router(community)
    again, out, sid, pkg, genuine = await _first_receipt(js, community, settings, tmp_path)
    # A forged receipt for the same package, published ahead of the genuine one's retry.
    forged = orjson.loads(genuine)
    forged["index"] += 1
    await js.publish(f"atlas.receipt.lea-1.{pkg}", orjson.dumps(forged))
    stats = await again()
    assert stats.receipts == 0
    assert not (out / ".atlas" / "receipts" / f"{sid}.json").exists()
    assert len(list((out / ".atlas" / "quarantine").glob(f"receipt-{sid}-*.json"))) == 1


async def test_a_receipt_under_another_packages_name_is_quarantined(
    js: JetStreamContext,
    make_community: Callable[..., Any],
    running_router: Any,
    tmp_path: Path,
) -> None:
    community = make_community()
    settings = await running_router(community)
    again, out, sid, _, genuine = await _first_receipt(js, community, settings, tmp_path)
    await js.publish("atlas.receipt.lea-1.AAAAAAAAAAAAAAAAAAAAAA", genuine)
    stats = await again()
    assert stats.receipts == 0
    (kept,) = (out / ".atlas" / "quarantine").glob(f"receipt-{sid}-*.json")
    detail = orjson.loads(kept.read_bytes())["detail"]
    assert detail == "the receipt's subject names another package"


async def test_a_receipt_whose_subject_is_no_package_id_is_quarantined(
    js: JetStreamContext,
    make_community: Callable[..., Any],
    running_router: Any,
    tmp_path: Path,
) -> None:
    community = make_community()
    settings = await running_router(community)
    await publish(settings, js, community, tmp_path, "bank-a", bundle(indicator("clear")))
    await wait_routed(js, 1)
    out = tmp_path / "lea-1"
    await receive(
        settings, org="lea-1", key_paths=[community.enc_key("lea-1")], out_dir=out, once=True, js=js
    )
    await js.purge_stream(RECEIPTS)
    # Taken as a file name, "/x" would be an absolute path outside the partner's folder.
    ack = await js.publish("atlas.receipt.lea-1./x", b"{}")

    stats = await receive(
        settings, org="lea-1", key_paths=[community.enc_key("lea-1")], out_dir=out, once=True, js=js
    )

    assert stats.receipts == 0
    kept = out / ".atlas" / "quarantine" / f"receipt-no-sid-{ack.seq}.json"
    assert orjson.loads(kept.read_bytes())["detail"] == "not a receipt of a package and submission"


async def test_an_acknowledgement_with_absurd_numbers_is_refused_and_the_broker_goes_on(
    js: JetStreamContext,
    make_community: Callable[..., Any],
    running_router: Any,
    tmp_path: Path,
) -> None:
    community = make_community()
    settings = await running_router(community)
    key = load_private_key(community.sign_key("lea-1"))
    # Beyond 2**53 a number cannot be written as RFC 8785 JSON: it once stopped the router.
    for index in (2**60, -1, 1.5, True):
        ack = {"v": 1, "pkg": "pkg-x", "index": index, "size": 3, "jwe_sha256": "0" * 64}
        token = jws_sign(orjson.dumps(ack), key, {"typ": "atlas-ack+jws", "org": "lea-1"})
        await js.publish("atlas.ack.lea-1", token.encode())

    async def _all_handled() -> bool:
        try:
            info = await js.consumer_info(RECEIPTS, "acks")
        except nats.js.errors.NotFoundError:  # the recorder has not bound its consumer yet
            return False
        return (
            info.num_pending == 0 and info.num_ack_pending == 0 and info.delivered.stream_seq >= 4
        )

    await _until(_all_handled)
    receipts = [r.entry async for r in read_log(js) if r.entry["type"] == "receipt"]
    # One refused entry a minute per organisation; the others are counted, not lost.
    assert [e.get("result") for e in receipts] == ["refused"]
    # Still routing.
    await publish(settings, js, community, tmp_path, "bank-a", bundle(indicator("clear")))
    await wait_routed(js, 1)


async def test_a_receipt_for_a_quarantined_package_is_not_waited_for(
    js: JetStreamContext,
    make_community: Callable[..., Any],
    running_router: Any,
    tmp_path: Path,
) -> None:
    community = make_community()
    settings = await running_router(community)
    sid = await publish(settings, js, community, tmp_path, "bank-a", bundle(indicator("clear")))
    await wait_routed(js, 1)

    async def _receipts_out() -> bool:
        return (await js.stream_info(RECEIPTS)).state.messages >= 2

    await _until(_receipts_out)
    out = tmp_path / "lea-1"
    # The package replaced by a copy with one character changed: it is quarantined, and its
    # receipt arrives.
    genuine = await js.get_last_msg(DELIVERIES, deliver_subject("lea-1", sid))
    await js.delete_msg(DELIVERIES, genuine.seq or 0)
    data = genuine.data or b""
    at = len(data) - 30  # inside the ciphertext
    changed = data[:at] + (b"A" if data[at : at + 1] != b"A" else b"B") + data[at + 1 :]
    await js.publish(deliver_subject("lea-1", sid), changed, stream=DELIVERIES)
    key = [community.enc_key("lea-1")]
    first = await receive(settings, org="lea-1", key_paths=key, out_dir=out, once=True, js=js)
    assert first.quarantined == 1
    again = await receive(settings, org="lea-1", key_paths=key, out_dir=out, once=True, js=js)

    assert again.receipts == 0
    kept = list((out / ".atlas" / "quarantine").glob(f"receipt-{sid}-*.json"))
    assert len(kept) == 1
    assert "its package was quarantined" in orjson.loads(kept[0].read_bytes())["detail"]


async def test_refused_acknowledgements_are_logged_once_a_minute_per_organisation(
    js: JetStreamContext,
    make_community: Callable[..., Any],
    running_router: Any,
    tmp_path: Path,
) -> None:
    community = make_community()
    await running_router(community)
    for n in range(50):
        await js.publish("atlas.ack.lea-1", f"junk {n}".encode())
    with pytest.raises(nats.js.errors.NoStreamResponseError):  # no intake: not a party
        await js.publish("atlas.ack.ghost", b"junk")
    key = load_private_key(community.sign_key("lea-2"))
    ack = {"v": 1, "pkg": "pkg-x", "index": 0, "size": 1, "jwe_sha256": "0" * 64}
    await js.publish(
        "atlas.ack.lea-2",
        jws_sign(orjson.dumps(ack), key, {"typ": "atlas-ack+jws", "org": "lea-2"}).encode(),
    )

    async def _lea2_logged() -> bool:
        return any([r async for r in read_log(js) if r.entry.get("rcpt") == "lea-2"])

    await _until(_lea2_logged)
    receipts = [r.entry async for r in read_log(js) if r.entry["type"] == "receipt"]
    # Each organisation's acknowledgements come through its own intake stream: in order
    # for one organisation, in no set order between two. lea-2 signed its acknowledgement,
    # but no package pkg-x was delivered to it: refused too.
    assert sorted((e["rcpt"], e.get("result") or "") for e in receipts) == [
        ("lea-1", "refused"),
        ("lea-2", "refused"),
    ]
