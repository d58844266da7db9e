"""Acknowledgements become receipt entries only for packages delivered to their signer.

Found by a probe (F8): a recipient signed acknowledgements with its own key for package ids
it invented (index and size 10^12), and each became a permanent ``receipt`` entry. The
recorder now checks every acknowledgement against the receipt the broker itself published
for that package (a delivery entry to that organisation, under a checkpoint signed by the
broker), refuses the others (one entry a minute per organisation), and records one entry
per organisation and package however often it is acknowledged.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
import structlog
from nats.js import JetStreamContext
from structlog.testing import LogCapture

from adapters import ReceiveStats
from broker._audit import read_log
from broker._audit_jobs import verify_log
from broker._bus import RECEIPTS
from broker._checkpoint import log_origin
from broker._directory_store import DirectoryWatcher, store_directory
from broker._logcopy import LiveLog
from broker._note import NoteVerifier
from broker._receipts import ACK_TYP, AckRecorder
from keys import PublicKey, jws_sign, load_private_key
from tests.conftest import stop_within
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

pytestmark = pytest.mark.integration


@pytest.mark.timeout(180)
async def test_only_a_delivered_package_is_recorded_and_only_once(
    js: JetStreamContext,
    make_community: Callable[..., Any],
    running_router: Any,
    tmp_path: Path,
) -> None:
    community = make_community()
    settings = await running_router(community)
    capture = LogCapture()
    structlog.configure(
        processors=[capture],
        wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
        cache_logger_on_first_use=False,
    )
    sid = await publish(settings, js, community, tmp_path, "bank-a", bundle(indicator("clear")))
    await wait_routed(js, 1)
    out = tmp_path / "lea-1"

    def _receive() -> Awaitable[ReceiveStats]:
        return receive_all(settings, js, community, "lea-1", out, acknowledge=True)

    assert (await _receive()).received == 1
    await until(lambda: receipts_out(js, 2), within=30, what="lea-1's and lea-2's receipts")
    assert (await _receive()).receipts == 1  # lea-1 keeps its receipt and acknowledges it

    async def _recorded() -> bool:
        return any([r async for r in read_log(js) if r.entry["type"] == "receipt"])

    await until(_recorded, within=30, what="a receipt entry")
    records = [r async for r in read_log(js)]
    delivery = {r.entry["rcpt"]: r for r in records if r.entry["type"] == "delivery"}
    mine, theirs = delivery["lea-1"], delivery["lea-2"]
    receipt = orjson.loads((out / ".atlas" / "receipts" / f"{sid}.json").read_bytes())
    size = int(receipt["checkpoint"].split("\n")[1])
    assert receipt["index"] == mine.index
    genuine = await js.get_last_msg(RECEIPTS, "atlas.ack.lea-1")

    key = load_private_key(community.sign_key("lea-1"))

    def _ack(pkg: str, index: int, size: int, jwe_sha256: str, **extra: Any) -> bytes:
        ack = {"v": 1, "pkg": pkg, "index": index, "size": size, "jwe_sha256": jwe_sha256}
        return jws_sign(orjson.dumps({**ack, **extra}), key, {"typ": ACK_TYP, "org": "lea-1"})

    pkg, jwe = mine.entry["pkg"], mine.entry["jwe_sha256"]
    forged = [
        # Packages lea-1 never received: invented ids, absurd positions.
        *(_ack(secrets.token_urlsafe(16), 10**12 + n, 10**12 + n + 1, "0" * 64) for n in range(20)),
        # lea-2's package, at its true position: delivered, but not to lea-1.
        _ack(theirs.entry["pkg"], theirs.index, size, theirs.entry["jwe_sha256"]),
        # lea-1's own package, at a position or size it is not at, or another JWE.
        _ack(pkg, mine.index + 1, size, jwe),
        _ack(pkg, mine.index, size + 1000, jwe),
        _ack(pkg, mine.index, size, "1" * 64),
    ]
    # The genuine acknowledgement twice more: the same bytes, and signed anew.
    again = [genuine.data or b"", _ack(pkg, mine.index, size, jwe, note="again").encode()]
    for data in [*(f.encode() for f in forged), *again]:
        await js.publish("atlas.ack.lea-1", data)

    handled = 1 + len(forged) + len(again)
    await until(lambda: acks_handled(js, handled), within=30, what=f"{handled} acks handled")
    receipts = [r.entry async for r in read_log(js) if r.entry["type"] == "receipt"]
    recorded = [e for e in receipts if "result" not in e]
    assert [(e["rcpt"], e["pkg"], e["index"], e["size"]) for e in recorded] == [
        ("lea-1", pkg, mine.index, size)
    ]
    # Refused, all within a minute: one entry; the others counted, and each one warned of.
    assert [(e["rcpt"], e["result"]) for e in receipts if "result" in e] == [("lea-1", "refused")]
    warned = [e for e in capture.entries if e["event"] == "receipt.ack_refused"]
    assert len(warned) == len(forged)
    assert any("no receipt was published to lea-1" in e["error"] for e in warned)

    broker_key = PublicKey.from_jwk(community.public["atlas-broker"][0])
    verifier = NoteVerifier.from_public_key(log_origin("atlas-broker"), broker_key)
    result = await verify_log(LiveLog(js), log_keys=[verifier], deliveries=js)
    assert result.ok, result.summary()


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.timeout(120)
async def test_refused_acks_left_out_are_counted_into_the_next_refused_entry(
    js: JetStreamContext, make_community: Callable[..., Any]
) -> None:
    community = make_community()
    await store_directory(js, community.directory())
    clock = Clock()
    async with DirectoryWatcher(js) as watcher:
        await watcher.wait_for(1)
        recorder = AckRecorder(js, watcher, clock=clock)
        task = asyncio.create_task(recorder.run())
        try:
            for n in range(5):
                await js.publish("atlas.ack.lea-1", f"junk {n}".encode())
            await until(lambda: acks_handled(js, 5), within=30, what="5 acks handled")
            clock.now += AckRecorder.REFUSED_EVERY
            for n in range(3):
                await js.publish("atlas.ack.lea-1", f"more junk {n}".encode())
            await until(lambda: acks_handled(js, 8), within=30, what="8 acks handled")
        finally:
            await stop_within([task], seconds=30)
    receipts = [r.entry async for r in read_log(js) if r.entry["type"] == "receipt"]
    assert [(e["rcpt"], e["result"], e.get("suppressed")) for e in receipts] == [
        ("lea-1", "refused", None),
        ("lea-1", "refused", 4),
    ]
    assert recorder.refusals.pending("lea-1") == 2
