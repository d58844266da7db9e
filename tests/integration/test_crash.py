"""The broker killed mid-stream and restarted delivers everything exactly once."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from nats.js import JetStreamContext

from broker._audit import read_log
from broker._bus import DELIVERIES, ensure_streams
from broker._config import Settings
from broker._directory_store import store_directory
from broker._embedded import EmbeddedNats
from tests.integration.helpers import (
    bundle,
    indicator,
    publish,
    receive_all,
    routed_through,
    start_broker,
)

SUBMISSION_COUNT = 150


async def _serve(config: Path) -> asyncio.subprocess.Process:
    return await start_broker(config, "serve")


@pytest.mark.timeout(240)
async def test_killed_broker_restarts_and_delivers_everything_exactly_once(
    js: JetStreamContext,
    nats_server: EmbeddedNats,
    make_community: Callable[..., Any],
    tmp_path: Path,
) -> None:
    community = make_community()
    config = tmp_path / "atlas.toml"
    config.write_text(
        f'data_dir = "{tmp_path / "data"}"\n'
        f'[nats]\nurl = "{nats_server.url}"\n'
        f'[broker]\nsigning_key = "{community.root / "atlas-broker" / "atlas-broker.sign.pem"}"\n'
        "[router]\nworkers = 2\nack_wait = 5\n"
    )
    settings = Settings(data_dir=tmp_path / "data", nats={"url": nats_server.url})  # type: ignore[arg-type]
    await ensure_streams(js)
    await store_directory(js, community.directory())
    sids = [
        await publish(
            settings,
            js,
            community,
            tmp_path,
            "bank-a",
            bundle(*(indicator("clear", f"ind {n}-{i}") for i in range(10))),
        )
        for n in range(SUBMISSION_COUNT)
    ]
    total = SUBMISSION_COUNT * 2  # two partners subscribe

    proc = await _serve(config)
    async with asyncio.timeout(60):
        while (await js.stream_info(DELIVERIES)).state.messages < 10:  # noqa: ASYNC110 - polls server state
            await asyncio.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    await proc.wait()
    at_kill = (await js.stream_info(DELIVERIES)).state.messages
    assert 0 < at_kill < total, f"not killed mid-stream: {at_kill} of {total} delivered"

    proc = await _serve(config)
    try:
        async with asyncio.timeout(120):
            while not await routed_through(js, SUBMISSION_COUNT):  # noqa: ASYNC110 - polls server state
                await asyncio.sleep(0.1)
    finally:
        proc.send_signal(signal.SIGTERM)
        await proc.wait()

    assert (await js.stream_info(DELIVERIES)).state.messages == total
    entries = [r.entry async for r in read_log(js)]
    accepted = [e["sub"] for e in entries if e["type"] == "submission"]
    assert sorted(accepted) == sorted(sids)
    deliveries = [e for e in entries if e["type"] == "delivery"]
    assert len(deliveries) == total
    logged = {(e["rcpt"], e["src"]["submission"]): e["jwe_sha256"] for e in deliveries}

    for org in ("lea-1", "lea-2"):
        out = tmp_path / "received" / org
        stats = await receive_all(settings, js, community, org, out)
        assert stats.received == SUBMISSION_COUNT and stats.quarantined == 0
        files = sorted(p.stem for p in out.glob("*.json"))
        assert files == sorted(sids)
        for meta_path in (out / ".atlas" / "packages").glob("*.json"):
            meta = orjson.loads(meta_path.read_bytes())
            assert logged[(org, meta["src"]["submission"])] == meta["jwe_sha256"]
