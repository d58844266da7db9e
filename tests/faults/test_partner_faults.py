"""Partners failing: a receive bridge killed before it acks, a partner's network cut."""

from __future__ import annotations

import contextlib

import nats.js.errors
import pytest
from nats.js import JetStreamContext

from broker._bus import DELIVERIES
from broker._embedded import EmbeddedNats
from tests.conftest import Community
from tests.faults.checker import expected_views
from tests.faults.rig import (
    PARTNERS,
    Load,
    Proc,
    Rig,
    TcpProxy,
    consumer_lag,
    paused_when,
    prepare_receiver,
    prime,
    receive_once,
    router_idle,
    until,
)


def missing(rig: Rig, load: Load, org: str) -> set[str]:
    """Submissions ``org`` is entitled to that its receive bridge has not written yet."""
    want = {sid for (rcpt, sid) in expected_views(rig.community.doc, load.accepted) if rcpt == org}
    return want - {p.stem for p in rig.inbox(org).glob("*.json")}


async def drained(js: JetStreamContext, rig: Rig, load: Load, org: str) -> bool:
    """Everything written, every package acked."""
    if missing(rig, load, org):
        return False
    return await consumer_lag(js, DELIVERIES, f"rcv-{org}") == (0, 0)


@pytest.mark.timeout(120)
async def test_a_receiver_killed_before_acking_writes_everything_exactly_once_after_restart(
    js: JetStreamContext, nats_server: EmbeddedNats, rig: Rig, community: Community
) -> None:
    await prime(js, community)
    await prepare_receiver(js, "lea-1")
    await rig.broker(rig.config("serve", url=nats_server.url)).start()
    load = Load(js, community)
    await load.run(36)
    await until(lambda: router_idle(js), within=60, what="the router to finish")
    entitled = len(missing(rig, load, "lea-1"))

    receiver = rig.receiver("lea-1", nats_server.url)
    await receiver.start()

    async def _holding_unacked() -> bool:
        _, unacked = await consumer_lag(js, DELIVERIES, "rcv-lea-1")
        return unacked > 0 and 0 < len(missing(rig, load, "lea-1")) < entitled

    await paused_when(receiver, _holding_unacked)
    _, unacked = await consumer_lag(js, DELIVERIES, "rcv-lea-1")
    written = entitled - len(missing(rig, load, "lea-1"))
    await receiver.kill()
    assert unacked > 0 and 0 < written < entitled

    await receiver.start()
    await until(lambda: drained(js, rig, load, "lea-1"), within=60, what="lea-1 to catch up")
    # Every delivery, redeliveries included, takes a consumer sequence number.
    info = await js.consumer_info(DELIVERIES, "rcv-lea-1")
    assert (info.delivered.consumer_seq or 0) > entitled, "nothing was delivered twice"
    await receiver.stop()
    await receive_once(js, rig, ("lea-2", "ngo-x"))
    await rig.check(js, load, nats_server.url, PARTNERS)


@pytest.mark.timeout(120)
async def test_a_cut_off_partner_lags_while_others_receive_and_catches_up_after(
    js: JetStreamContext, nats_server: EmbeddedNats, rig: Rig, community: Community
) -> None:
    await prime(js, community)
    await rig.broker(rig.config("serve", url=nats_server.url)).start()
    proxy = TcpProxy(nats_server.url)
    await proxy.start()
    try:
        receivers = {}
        for org in PARTNERS:
            await prepare_receiver(js, org)
            receivers[org] = rig.receiver(org, proxy.url if org == "lea-2" else nats_server.url)
            await receivers[org].start()
        load = Load(js, community)

        async def _all_caught_up(orgs: tuple[str, ...] = PARTNERS) -> bool:
            for org in orgs:
                if not await drained(js, rig, load, org):
                    return False
            return True

        await load.run(12)
        await until(_all_caught_up, within=60, what="every partner to receive the first batch")

        await proxy.cut()
        await load.run(12)
        others = ("lea-1", "ngo-x")
        await until(
            lambda: _all_caught_up(others), within=60, what="the others to receive during the cut"
        )
        pending, _ = await consumer_lag(js, DELIVERIES, "rcv-lea-2")
        assert pending > 0, "the cut-off partner's consumer does not lag"
        assert missing(rig, load, "lea-2"), "the cut-off partner received through the cut"

        await proxy.restore()
        assert receivers["lea-2"].alive, "the cut-off partner's bridge exited during the cut"
        await until(lambda: drained(js, rig, load, "lea-2"), within=60, what="lea-2 to catch up")
        assert proxy.connections >= 2  # it came back through the restored link
        for proc in receivers.values():
            await proc.stop()
        await rig.check(js, load, nats_server.url, PARTNERS)
    finally:
        await proxy.aclose()


@pytest.mark.timeout(60)
async def test_a_receive_bridge_outlives_a_network_cut_longer_than_a_request_timeout(
    js: JetStreamContext, nats_server: EmbeddedNats, rig: Rig, community: Community
) -> None:
    await prime(js, community)
    await prepare_receiver(js, "lea-2")
    proxy = TcpProxy(nats_server.url)
    await proxy.start()
    try:
        receiver = rig.receiver("lea-2", proxy.url)
        await receiver.start()
        await until(  # its receipt keeper has a pull waiting: the bridge is running
            lambda: _bound(js, "rct-lea-2"), within=30, what="the bridge to start"
        )
        await proxy.cut()
        with contextlib.suppress(AssertionError):
            await until(lambda: _exited(receiver), within=10, what="nothing")
        assert receiver.alive, f"the bridge exited ({receiver.returncode}):\n{receiver.tail(3)}"
    finally:
        await proxy.aclose()


async def _bound(js: JetStreamContext, consumer: str) -> bool:
    try:
        info = await js.consumer_info("RECEIPTS", consumer)
    except nats.js.errors.NotFoundError:
        return False
    return bool(info.num_waiting)


async def _exited(proc: Proc) -> bool:
    return not proc.alive
