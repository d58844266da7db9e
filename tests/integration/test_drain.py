"""Closing a broker connection does not wait 30 s for messages nobody will take."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from broker._bus import DRAIN_SECONDS, connect
from broker._config import Settings
from broker._embedded import EmbeddedNats


async def test_drain_gives_up_on_a_message_queued_to_a_reader_that_stopped(
    nats_server: EmbeddedNats, tmp_path: Path
) -> None:
    nc = await connect(nats_server.url, Settings(data_dir=tmp_path))
    sub = await nc.subscribe("atlas.test.orphan")  # read with next_msg, by nobody now
    await nc.publish("atlas.test.orphan", b"queued")
    await nc.flush()
    started = time.monotonic()
    async with asyncio.timeout(60):
        await nc.drain()  # nats-py swallows its own timeout: the elapsed time tells
    waited = time.monotonic() - started
    assert nc.is_closed
    assert sub.pending_msgs == 1
    # nats-py's default waits 30 s for the message to be taken; ours DRAIN_SECONDS (5).
    assert DRAIN_SECONDS - 1 <= waited < 25, f"drain took {waited:.1f} s"
