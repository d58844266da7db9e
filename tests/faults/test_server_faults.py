"""NATS itself failing: a cluster node killed under load, the whole broker restarted."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import nats
import pytest
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext

from broker._bus import DELIVERIES
from tests.conftest import Community
from tests.faults.checker import expected_views
from tests.faults.rig import (
    PARTNERS,
    Cluster,
    Load,
    Rig,
    free_port,
    paused_when,
    prepare_receiver,
    prime,
    receive_once,
    router_idle,
    stored,
    until,
)


@contextlib.asynccontextmanager
async def client(servers: list[str]) -> AsyncIterator[NATS]:
    """The test's own connection: it follows the servers through failures and restarts."""
    nc = await nats.connect(servers=servers, max_reconnect_attempts=-1, reconnect_time_wait=0.25)
    try:
        yield nc
    finally:
        with contextlib.suppress(Exception):
            await nc.close()


@pytest.mark.timeout(150)
async def test_nothing_lost_when_a_cluster_node_is_killed_and_restarted_under_load(
    cluster: Cluster, rig: Rig, community: Community
) -> None:
    async with client(cluster.urls) as nc:
        js = nc.jetstream()
        await prime(js, community, replicas=3)
        # Product bug (see the report): on a cluster the bridge's first fetch on a consumer
        # it has just created can get 503 and the bridge exits; create them well ahead.
        for org in PARTNERS:
            await prepare_receiver(js, org)
        serve = rig.broker(rig.config("serve", url=cluster.url, replicas=3))
        await serve.start()
        load = Load(js, community)
        publishing = asyncio.create_task(load.run(45, every=0.03))
        await until(lambda: _at_least(js, 10), within=60, what="packages before the fault")

        # The node leading DELIVERIES goes: its streams elect new leaders while load goes on.
        info = await js.stream_info(DELIVERIES)
        assert info.cluster is not None and len(info.cluster.replicas or []) == 2
        node = cluster.node_named(str(info.cluster.leader))
        await cluster.kill(node)
        before = len(load.accepted)
        await until(
            lambda: _accepted(load, before + 5), within=60, what="submissions with a node down"
        )
        await cluster.restart(node)
        await publishing
        assert before < len(load.accepted) == 45

        await until(lambda: router_idle(js), within=90, what="the router to finish")
        await cluster.healthy()
        await receive_once(js, rig, PARTNERS)
        await rig.check(js, load, cluster.url, PARTNERS)
        assert serve.alive


@pytest.mark.timeout(150)
@pytest.mark.parametrize("how", ["crash", "stop"])
async def test_nothing_lost_when_the_whole_broker_restarts_with_work_in_flight(
    rig: Rig, community: Community, how: str
) -> None:
    """``serve`` with its embedded nats-server: killed outright (both SIGKILLed) or stopped
    cleanly (SIGTERM) while submissions are still being routed, then started again."""
    config = rig.config("broker", url=None, port=free_port())
    serve = rig.broker(config)
    await serve.start()
    nats_dir = rig.root / "broker" / "nats"
    url = (nats_dir / "url").read_text().strip()
    async with client([url]) as nc:
        js = nc.jetstream()
        await prime(js, community)
        load = Load(js, community)
        await load.run(36)
        total = len(expected_views(community.doc, load.accepted))

        async def _in_flight() -> bool:
            return 0 < await stored(js, DELIVERIES) < total

        await paused_when(serve, _in_flight)
        at_fault = await stored(js, DELIVERIES)
        if how == "crash":
            server_pid = _embedded_pid(nats_dir / "ports")
            os.kill(server_pid, signal.SIGKILL)
            await serve.kill()
            await until(lambda: _gone(server_pid), within=30, what="the nats-server to exit")
            # The crashed serve left data_dir/nats/url behind: the new one must see that
            # nothing listens there and start its own server.
            assert (nats_dir / "url").exists()
        else:
            await serve.stop()
            # SIGTERM must end serve by itself (130, as Ctrl-C); -9 means the rig had to kill it.
            assert serve.returncode == 130, (
                f"serve ignored SIGTERM: exit {serve.returncode}; its last lines:\n"
                + serve.tail(40)
            )
            assert not (nats_dir / "url").exists()
        assert 0 < at_fault < total, f"no work in flight: {at_fault} of {total} packages"

        await serve.start()
        assert (nats_dir / "url").read_text().strip() == url
        await until(lambda: router_idle(js), within=60, what="the restarted router to finish")
        await receive_once(js, rig, PARTNERS)
        await rig.check(js, load, url, PARTNERS)


async def _at_least(js: JetStreamContext, count: int) -> bool:
    return await stored(js, DELIVERIES) >= count


async def _accepted(load: Load, count: int) -> bool:
    return len(load.accepted) >= count


async def _gone(pid: int) -> bool:
    """Exited: no such process, or a zombie nobody has reaped yet (it holds no port)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()  # noqa: ASYNC240 - tiny procfs read
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


def _embedded_pid(ports_dir: Path) -> int:
    """The pid of the embedded nats-server, from the name of its ports file."""
    for path in ports_dir.glob("*.ports"):
        found = re.search(r"_(\d+)\.ports$", path.name)
        if found:
            return int(found.group(1))
    raise AssertionError(f"no ports file in {ports_dir}")
