"""Pulling a member's real medallion into the broker and out to a partner."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

from nats.js import JetStreamContext
from taxii2client.v21 import Collection

from broker._audit import read_log
from broker._bus import SUBMISSIONS
from broker._taxii_pull import pull_member
from tests.integration.helpers import indicator, receive_all, received_ids, wait_routed
from tests.integration.medallion import PASSWORD, USER, medallion


def _add(url: str, objects: list[dict[str, Any]]) -> None:
    with Collection(url, user=USER, password=PASSWORD) as collection:
        collection.add_objects({"objects": objects}, poll_interval=0.1, timeout=10)


class TestPullFromMedallion:
    async def test_each_object_reaches_the_partner_once_when_pulled_twice(
        self,
        js: JetStreamContext,
        make_community: Callable[..., Any],
        running_router: Any,
        tmp_path: Path,
    ) -> None:
        community = make_community()
        settings = await running_router(community)
        with medallion(tmp_path / "medallion") as url:
            first = [indicator("clear", f"a{i}") for i in range(3)]
            await asyncio.to_thread(_add, url, first)

            async def pull() -> Any:
                return await pull_member(
                    settings, org="bank-a", url=url, user=USER, password=PASSWORD, js=js
                )

            one = await pull()
            again = await pull()  # nothing new: nothing re-sent
            later = [indicator("clear", "b")]
            await asyncio.to_thread(_add, url, later)
            two = await pull()
        assert (one.objects, again.objects, two.objects) == (3, 0, 1)
        assert (await js.stream_info(SUBMISSIONS)).state.messages == 2
        await wait_routed(js, 2)
        await receive_all(settings, js, community, "lea-1", tmp_path / "lea-1")
        assert received_ids(tmp_path / "lea-1") == {o["id"] for o in [*first, *later]}
        vias = [e.get("via") async for e in _entries(js) if e["type"] == "submission"]
        assert vias == ["taxii-pull", "taxii-pull"]


async def _entries(js: JetStreamContext) -> Any:
    async for record in read_log(js):
        yield record.entry


class TestPushToMedallion:
    async def test_partner_server_holds_the_view_when_receiver_pushes(
        self,
        js: JetStreamContext,
        make_community: Callable[..., Any],
        running_router: Any,
        tmp_path: Path,
    ) -> None:
        from adapters._taxii._push import taxii_pusher
        from broker._service import receive
        from tests.integration.helpers import bundle, publish

        community = make_community()
        settings = await running_router(community)
        clear, red = indicator("clear"), indicator("red")
        await publish(settings, js, community, tmp_path, "bank-a", bundle(clear, red))
        await wait_routed(js, 1)
        with medallion(tmp_path / "partner-taxii") as url:
            stats = await receive(
                settings,
                org="lea-1",
                key_paths=[community.enc_key("lea-1")],
                out_dir=tmp_path / "lea-1",
                once=True,
                js=js,
                push=taxii_pusher(url, user=USER, password=PASSWORD),
            )

            def stored() -> list[str]:
                with Collection(url, user=USER, password=PASSWORD) as collection:
                    return [o["id"] for o in collection.get_objects().get("objects", [])]

            ids = await asyncio.to_thread(stored)
        assert stats.received == 1 and ids == [clear["id"]]
