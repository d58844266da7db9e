"""The directory watcher keeps the last good directory through a bad value, and goes on."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from nats.js import JetStreamContext

from broker._bus import DIRECTORY_BUCKET
from broker._directory_store import DirectoryWatcher, store_directory


async def test_a_value_that_is_not_a_directory_leaves_the_last_good_one_in_force(
    js: JetStreamContext, make_community: Callable[..., Any]
) -> None:
    community = make_community()
    first = await store_directory(js, community.directory())
    async with DirectoryWatcher(js, interval=0.05) as watcher:
        assert watcher.current.revision == first
        kv = await js.key_value(DIRECTORY_BUCKET)
        for bad in (b"", b"{not json", b"[1, 2]", b'{"community": 5}'):
            await kv.put("directory", bad)
            await asyncio.sleep(0.2)
            assert watcher.current.revision == first  # the last good one stays in force
        again = await store_directory(js, community.directory())
        applied = await asyncio.wait_for(watcher.wait_for(again), 10)
        assert applied.revision == again  # the poll survived every bad value
