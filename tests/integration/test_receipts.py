"""Receipts end to end: proof of delivery out, signed proof of receipt back into the log."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import nats.js.errors
import orjson
import pytest
from nats.js import JetStreamContext

from broker._audit import read_log
from broker._audit_jobs import verify_log
from broker._bus import (
    CHECKPOINT_SUBJECT,
    DELIVERIES,
    LOG,
    RECEIPTS,
    deliver_subject,
    receipt_subject,
)
from broker._checkpoint import log_origin
from broker._logcopy import LiveLog
from broker._note import NoteVerifier
from broker._receipt import verify_receipt
from broker._receipts import ReceiptPublisher
from broker._service import receive
from keys import jws_sign, load_private_key
from tests.integration.helpers import (
    acks_handled,
    bundle,
    indicator,
    publish,
    receipts_out,
    receive_all,
    until,
    wait_routed,
)


async def _until(predicate: Callable[[], Awaitable[bool]], what: str) -> None:
    await until(predicate, within=20, what=what, every=0.2)


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
    first = await receive_all(settings, js, community, "lea-1", out, acknowledge=True)
    assert first.received == 3
    await _until(lambda: receipts_out(js, 6), "3 packages x 2 partners' receipts")
    second = await receive_all(settings, js, community, "lea-1", out, acknowledge=True)
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

    await _until(_acks_logged, "3 receipt entries")
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

    await _until(lambda: receipts_out(js, 1), "lea-1's receipt")
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

    await _until(lambda: acks_handled(js, 4), "4 acks handled")
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

    await _until(lambda: receipts_out(js, 2), "both partners' receipts")
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

    await _until(_lea2_logged, "lea-2's receipt entry")
    receipts = [r.entry async for r in read_log(js) if r.entry["type"] == "receipt"]
    # Each organisation's acknowledgements come through its own intake stream: in order
    # for one organisation, in no set order between two. lea-2 signed its acknowledgement,
    # but no package pkg-x was delivered to it: refused too.
    assert sorted((e["rcpt"], e.get("result") or "") for e in receipts) == [
        ("lea-1", "refused"),
        ("lea-2", "refused"),
    ]


@pytest.mark.timeout(180)
async def test_a_full_receipts_stream_drops_its_oldest_and_receipts_go_on(
    js: JetStreamContext,
    make_community: Callable[..., Any],
    running_router: Any,
    tmp_path: Path,
) -> None:
    """Found by the soak: full, RECEIPTS refused new receipts, so every recipient's
    receipts stopped until the oldest aged out (30 days), and the publisher retried the
    same checkpoint for ever. Full, it now drops its oldest (receipts long fetched)."""
    community = make_community()
    settings = await running_router(community)
    config = (await js.stream_info(RECEIPTS)).config
    config.max_bytes = config.max_msg_size  # the least nats-server takes: ~40 receipts
    await js.update_stream(config)
    sids = [await publish(settings, js, community, tmp_path, "bank-a", bundle(indicator("clear")))]
    await _until(lambda: receipts_out(js, 2), "the first receipts")
    size = (await js.stream_info(RECEIPTS)).state.bytes // 2
    # Twice as many receipts (two partners each) as RECEIPTS holds.
    for n in range(config.max_bytes // size):
        indicator_n = indicator("clear", f"n{n}")
        sids.append(await publish(settings, js, community, tmp_path, "bank-a", bundle(indicator_n)))
    await wait_routed(js, len(sids))

    async def delivered_to(org: str) -> dict[str, str]:
        return {
            r.entry["src"]["submission"]: r.entry["pkg"]
            async for r in read_log(js)
            if r.entry["type"] == "delivery" and r.entry["rcpt"] == org
        }

    last = sids[-1]
    newest = {org: (await delivered_to(org))[last] for org in ("lea-1", "lea-2")}

    async def newest_receipts_out() -> bool:
        for org, pkg in newest.items():
            try:
                await js.get_last_msg(RECEIPTS, receipt_subject(org, pkg))
            except nats.js.errors.NotFoundError:
                return False
        return True

    await _until(newest_receipts_out, "the receipts of the last submission")
    state = (await js.stream_info(RECEIPTS)).state
    assert state.first_seq > 1 and state.bytes <= config.max_bytes  # the oldest were dropped
    publisher = await js.consumer_info(LOG, "receipts")
    assert publisher.num_pending == 0 and publisher.num_ack_pending == 0  # nothing retried
    # lea-1 gets every package, keeps the receipts still held, and acknowledges them.
    out = tmp_path / "lea-1"
    first = await receive_all(settings, js, community, "lea-1", out, acknowledge=True)
    assert first.received == len(sids)
    assert (out / ".atlas" / "receipts" / f"{last}.json").exists()

    async def newest_acknowledged() -> bool:
        return any(
            [
                r
                async for r in read_log(js)
                if r.entry["type"] == "receipt"
                and r.entry.get("pkg") == newest["lea-1"]
                and "result" not in r.entry
            ]
        )

    await _until(newest_acknowledged, "lea-1's acknowledgement of its newest package")


@pytest.mark.timeout(120)
async def test_a_checkpoint_handled_again_finds_the_one_before_it_without_reading_them_all(
    js: JetStreamContext,
    make_community: Callable[..., Any],
    running_router: Any,
    tmp_path: Path,
) -> None:
    """A checkpoint whose receipts could not all be published comes back; meanwhile the
    ones after it went out. Each then found the checkpoint before it only by reading every
    checkpoint in LOG (the soak saw a broker's CPU per submission grow by half). Processes
    sharing the consumer each handle some checkpoints: they read back only to the last one
    they handled."""
    community = make_community()
    settings = await running_router(community)
    count = 5
    for n in range(count):
        one = bundle(indicator("clear", f"n{n}"))
        await publish(settings, js, community, tmp_path, "bank-a", one)
        await wait_routed(js, n + 1)
        await _until(lambda: receipts_out(js, 2 * (n + 1)), "the receipts")  # noqa: B023
    sub = await js.pull_subscribe(CHECKPOINT_SUBJECT, stream=LOG)
    checkpoints = await sub.fetch(count, timeout=5)
    assert len(checkpoints) == count
    publisher = ReceiptPublisher(js)
    for msg in (*checkpoints[:3], checkpoints[1], checkpoints[2], checkpoints[0]):
        await publisher.handle(msg)
    assert publisher.scans == 0  # the first's predecessor is the empty tree
    assert publisher.published == 0  # each receipt is out already: none twice
    # Two processes taking the checkpoints in turn (one each).
    first, second = ReceiptPublisher(js), ReceiptPublisher(js)
    for n, msg in enumerate(checkpoints):
        await (first if n % 2 == 0 else second).handle(msg)
    assert first.scans + second.scans == count - 1
    assert first.scanned + second.scanned == count - 1  # one message back each time
