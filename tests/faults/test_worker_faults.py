"""Router workers killed mid fan-out, and competing on one consumer."""

from __future__ import annotations

import pytest
from nats.js import JetStreamContext

from broker._bus import DELIVERIES
from broker._embedded import EmbeddedNats
from tests.conftest import Community
from tests.faults.checker import expected_views
from tests.faults.rig import (
    PARTNERS,
    Load,
    Rig,
    half_routed,
    paused_when,
    prime,
    receive_once,
    router_idle,
    stored,
    until,
)


# Above the sum of the bounded waits inside (60 s to catch the moment, 60 s for the restarted
# router), so that a slow run fails on the wait that was slow, with its message.
@pytest.mark.timeout(240)
async def test_nothing_lost_or_doubled_when_a_worker_is_killed_mid_fan_out(
    js: JetStreamContext, nats_server: EmbeddedNats, rig: Rig, community: Community
) -> None:
    await prime(js, community)
    load = Load(js, community)
    # Enough work that the router spends a good while between storing a submission's
    # packages and logging it, the moment the kill must hit.
    await load.run(96)
    total = len(expected_views(community.doc, load.accepted))
    serve = rig.broker(rig.config("serve", url=nats_server.url))
    await serve.start()

    async def _mid_fan_out() -> bool:
        delivered = await stored(js, DELIVERIES)
        return 0 < delivered < total and bool(await half_routed(js))

    await paused_when(serve, _mid_fan_out)
    torn = await half_routed(js)
    await serve.kill()
    at_kill = await stored(js, DELIVERIES)
    assert 0 < at_kill < total, f"not killed mid-stream: {at_kill} of {total} packages"
    assert torn, "no submission had part of its fan-out stored at the kill"

    await serve.start()
    await until(lambda: router_idle(js), within=60, what="the restarted router to finish")
    await receive_once(js, rig, PARTNERS)
    verdict = await rig.check(js, load, nats_server.url, PARTNERS)
    assert verdict.packages == total


@pytest.mark.timeout(120)
async def test_two_broker_processes_share_the_work_and_deliver_once(
    js: JetStreamContext, nats_server: EmbeddedNats, rig: Rig, community: Community
) -> None:
    await prime(js, community)
    workers = [rig.broker(rig.config(n, url=nats_server.url), n) for n in ("serve-a", "serve-b")]
    for proc in workers:
        await proc.start()
    load = Load(js, community)
    await load.run(36, every=0.02)
    await until(lambda: router_idle(js), within=60, what="both routers to finish")
    routed = [{e["sub"] for e in proc.events("submission.routed")} for proc in workers]
    assert all(routed), f"one process did no work: {[len(r) for r in routed]}"
    assert routed[0] | routed[1] == {a.sid for a in load.accepted}
    await receive_once(js, rig, PARTNERS)
    await rig.check(js, load, nats_server.url, PARTNERS)
