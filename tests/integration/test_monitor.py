"""The HTTP monitor of ``serve``: readiness, metrics and ``atlas-broker status``, for real.

Real nats-server processes, real HTTP on loopback; counts are asserted, never speed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import nats
import nats.aio.client
import orjson
import pytest
import structlog
from nats.js import JetStreamContext
from prometheus_client.parser import text_string_to_metric_families
from structlog.testing import capture_logs

from broker._bus import ensure_streams
from broker._config import MonitorSettings, Settings
from broker._directory_store import store_directory
from broker._embedded import EmbeddedNats
from broker._metrics import BrokerMetrics
from broker._monitor import Monitor, monitor_url_file, running_monitor_url
from broker._service import publish_bundle, serve, streams_for
from tests.conftest import Community
from tests.integration.helpers import (
    bundle,
    indicator,
    publish,
    receive_all,
    start_broker,
    wait_routed,
)

pytestmark = pytest.mark.integration


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.asynccontextmanager
async def _serving(settings: Settings) -> AsyncIterator[str]:
    """``serve`` in this process; yields the monitor URL once it listens."""
    started: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(serve(settings, on_monitor=started.set_result))
    try:
        async with asyncio.timeout(30):
            waiting: list[asyncio.Future[Any]] = [task, started]
            done, _ = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
        if task in done:
            task.result()
        yield started.result()
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def _wait_status(
    client: httpx.AsyncClient, path: str, code: int, reason: str = ""
) -> dict[str, Any]:
    """Poll ``path`` until it answers ``code`` (and a reason holding ``reason``); generous
    bound, the machine is shared."""
    async with asyncio.timeout(45):
        while True:
            try:
                resp = await client.get(path)
            except httpx.TransportError:
                resp = None
            if resp is not None and resp.status_code == code:
                body: dict[str, Any] = resp.json()
                if reason in body.get("reason", ""):
                    return body
            await asyncio.sleep(0.1)


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def _value(samples: dict[Any, float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


@pytest.mark.timeout(120)
async def test_readyz_flips_to_503_when_nats_goes_away_and_back_when_it_returns(
    make_community: Callable[..., Community],
    settings_for: Callable[..., Settings],
    tmp_path: Path,
) -> None:
    community = make_community()
    server = EmbeddedNats(tmp_path / "fixed", port=_free_port(), publish_url=False)
    await server.start()
    try:
        settings = settings_for(community, server.url, monitor={"port": 0})
        async with _serving(settings) as url, httpx.AsyncClient(base_url=url) as client:
            assert running_monitor_url(settings.data_dir) == url
            # Up, but no directory loaded yet: not ready, and it says why.
            body = await _wait_status(client, "/readyz", 503, reason="directory")
            assert body["ready"] is False and "directory load" in body["reason"]
            assert (await client.get("/healthz")).status_code == 200

            nc = await nats.connect(server.url)
            try:
                await store_directory(nc.jetstream(), community.directory())
            finally:
                await nc.close()
            body = await _wait_status(client, "/readyz", 200)
            assert body["ready"] is True and body["checks"]["streams"] == "present"

            await server.stop()
            body = await _wait_status(client, "/readyz", 503)
            assert body["reason"].startswith("nats:")
            health = await client.get("/healthz")
            assert health.status_code == 200  # alive, only not ready

            await server.start()  # same port, same store
            body = await _wait_status(client, "/readyz", 200)
            assert body["ready"] is True
        assert not monitor_url_file(settings.data_dir).exists()  # removed on the way out
    finally:
        await server.stop()


@pytest.mark.timeout(120)
async def test_metrics_count_submissions_deliveries_and_withheld_as_they_flow(
    js: JetStreamContext,
    nats_server: EmbeddedNats,
    make_community: Callable[..., Community],
    settings_for: Callable[..., Settings],
    tmp_path: Path,
) -> None:
    community = make_community()
    settings = settings_for(community, nats_server.url, monitor={"port": 0})
    await ensure_streams(js, streams_for(settings))
    await store_directory(js, community.directory())
    # lea-1 binds its durable consumer now and reads nothing: its lag shows per recipient.
    await receive_all(settings, js, community, "lea-1", tmp_path / "early")
    async with _serving(settings) as url, httpx.AsyncClient(base_url=url) as client:
        await _wait_status(client, "/readyz", 200)
        before = _samples((await client.get("/metrics")).text)
        assert _value(before, "atlas_submissions_accepted_total", org="bank-a") == 0
        for n in range(3):
            await publish(
                settings,
                js,
                community,
                tmp_path,
                "bank-a",
                bundle(indicator("clear", f"ok {n}"), indicator("red", f"secret {n}")),
            )
        # One signed by someone else's key: refused as bad-signature.
        path = tmp_path / "forged.json"
        path.write_bytes(orjson.dumps(bundle(indicator("clear"))))
        await publish_bundle(
            settings, path, org="bank-a", key_path=community.sign_key("bank-b"), js=js
        )
        await wait_routed(js, 4)

        resp = await client.get("/metrics")
        assert resp.headers["content-type"].startswith("text/plain")
        after = _samples(resp.text)
        assert _value(after, "atlas_submissions_accepted_total", org="bank-a") == 3
        assert _value(after, "atlas_submissions_refused_total", reason="bad-signature") == 1
        assert _value(after, "atlas_deliveries_total") == 6  # 3 x 2 partners
        # The RED object went to nobody named: withheld from both partners.
        assert _value(after, "atlas_withheld_objects_total", reason="red-not-named") == 6
        assert _value(after, "atlas_seal_seconds_count") == 6
        assert _value(after, "atlas_route_seconds_count") == 4
        router = {"stream": "SUBMISSIONS", "consumer": "router", "recipient": ""}
        assert _value(after, "atlas_consumer_pending", **router) == 0
        assert _value(after, "atlas_consumer_ack_pending", **router) == 0
        consumers = [k for k in after if k[0] == "atlas_consumer_pending"]
        lea1 = [k for k in consumers if ("recipient", "lea-1") in k[1]]
        assert len(lea1) == 1, consumers  # lea-2 never bound one: no series
        assert after[lea1[0]] == 3
        assert _value(after, "atlas_inflight_submissions") == 0
        assert _value(after, "atlas_nats_connected") == 1

        # The checkpointer covers the entries within its interval: the lag drains to 0.
        async with asyncio.timeout(45):
            while True:
                now = _samples((await client.get("/metrics")).text)
                if (
                    _value(now, "atlas_log_checkpoint_size") > 0
                    and _value(now, "atlas_log_checkpoint_lag_messages") == 0
                ):
                    break
                await asyncio.sleep(0.2)
        assert _value(now, "atlas_log_checkpoint_lag_seconds") == 0


async def _cli(config: Path, *args: str) -> tuple[int, str, str]:
    proc = await start_broker(
        config,
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "COLUMNS": "200"},
        json_logs=False,
    )
    out, err = await proc.communicate()
    return proc.returncode or 0, out.decode(), err.decode()


@pytest.mark.timeout(150)
async def test_status_prints_the_figures_of_a_running_serve_and_names_the_url_when_down(
    js: JetStreamContext,
    nats_server: EmbeddedNats,
    make_community: Callable[..., Community],
    tmp_path: Path,
) -> None:
    community = make_community()
    data = tmp_path / "data"
    config = tmp_path / "atlas.toml"
    config.write_text(
        f'data_dir = "{data}"\n'
        f'[nats]\nurl = "{nats_server.url}"\n'
        f'[broker]\nsigning_key = "{community.sign_key("atlas-broker")}"\n'
        "[monitor]\nport = 0\n"
    )
    settings = Settings(data_dir=data, nats={"url": nats_server.url})
    await ensure_streams(js)
    await store_directory(js, community.directory())
    await publish(settings, js, community, tmp_path, "bank-a", bundle(indicator("clear")))

    proc = await start_broker(config, "serve")
    try:
        await wait_routed(js, 1)
        async with asyncio.timeout(45):
            while running_monitor_url(data) is None:  # noqa: ASYNC110 - polls a file
                await asyncio.sleep(0.1)
        url = str(running_monitor_url(data))
        async with httpx.AsyncClient(base_url=url) as client:
            await _wait_status(client, "/readyz", 200)

        code, out, err = await _cli(config, "status", "--json")
        assert code == 0, err
        status = orjson.loads(out)
        assert status["url"] == url and status["ready"] is True and status["healthy"] is True
        assert status["figures"]["submissions"]["accepted_by_org"] == {"bank-a": 1}
        assert status["figures"]["deliveries"] == 2

        code, out, err = await _cli(config, "status")
        assert code == 0, err
        assert "submissions accepted" in out and "packages delivered" in out
        assert url in out
    finally:
        proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(30):
            await proc.wait()

    assert running_monitor_url(data) is None  # serve removed its URL file on the way out
    code, _, err = await _cli(config, "status")
    assert code == 1 and "monitor/url" in err
    dead = f"http://127.0.0.1:{_free_port()}"
    code, _, err = await _cli(config, "status", "--url", dead)
    assert code == 1 and f"no broker monitor answers at {dead}" in err


@pytest.mark.timeout(60)
async def test_monitor_logs_and_returns_when_its_port_is_taken(
    nc: nats.aio.client.Client, js: JetStreamContext, tmp_path: Path
) -> None:
    """The data path matters more: a taken port is an error in the log, not a dead broker."""
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = int(taken.getsockname()[1])
        monitor = Monitor(
            nc, js, BrokerMetrics(), settings=MonitorSettings(port=port), data_dir=tmp_path
        )
        with capture_logs() as logs:
            async with asyncio.timeout(10):
                await monitor.run()  # returns instead of raising
    assert [e["event"] for e in logs] == ["monitor.unavailable"]
    assert logs[0]["port"] == port and "monitor.port" in logs[0]["hint"]
    assert running_monitor_url(tmp_path) is None
