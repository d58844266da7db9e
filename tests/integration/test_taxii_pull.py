"""Pulling a member's real medallion into the broker and out to a partner."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import http.server
import json
import socket
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar

import orjson
import pytest
import requests
from nats.js import JetStreamContext
from taxii2client.v21 import Collection

from adapters._taxii._client import open_collection
from adapters._taxii._poller import PullError
from broker._audit import read_log
from broker._bus import SUBMISSIONS
from broker._taxii_pull import pull_member
from tests.integration.helpers import indicator, receive_all, received_ids, wait_routed
from tests.integration.medallion import (
    COLLECTION,
    PASSWORD,
    USER,
    collection_url,
    free_port,
    running_medallion,
)


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
        async with running_medallion(tmp_path / "medallion") as url:
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
        async with running_medallion(tmp_path / "partner-taxii") as url:
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


class TestMemberServerTrouble:
    async def test_a_server_that_never_answers_times_out(self) -> None:
        with socket.socket() as silent:
            silent.bind(("127.0.0.1", 0))
            silent.listen()  # accepts connections (the kernel does), never answers
            url = collection_url(silent.getsockname()[1])
            collection = open_collection(url, user=USER, password=PASSWORD, timeout=(1.0, 1.0))
            try:
                started = time.monotonic()
                with pytest.raises(requests.Timeout):
                    await asyncio.to_thread(collection.get_manifest)
                assert time.monotonic() - started < 30  # without a timeout: forever
            finally:
                collection.close()

    async def test_pull_once_from_a_closed_port_is_one_clear_error(
        self, js: JetStreamContext, make_community: Callable[..., Any], running_router: Any
    ) -> None:
        settings = await running_router(make_community())
        url = collection_url(free_port())
        with pytest.raises(PullError) as caught:
            await pull_member(settings, org="bank-a", url=url, user=USER, password=PASSWORD, js=js)
        assert f"pull from {url} failed" in str(caught.value)

    async def test_the_pull_job_outlives_an_outage_and_then_pulls(
        self,
        js: JetStreamContext,
        make_community: Callable[..., Any],
        running_router: Any,
        tmp_path: Path,
    ) -> None:
        settings = await running_router(make_community())
        port = free_port()
        job = asyncio.create_task(
            pull_member(
                settings,
                org="bank-a",
                url=collection_url(port),
                user=USER,
                password=PASSWORD,
                once=False,
                interval=0.2,
                js=js,
            )
        )
        try:
            await asyncio.sleep(1.0)  # a few failed pulls: nothing listens yet
            assert not job.done()
            async with running_medallion(tmp_path / "medallion", port=port) as url:
                objects = [indicator("clear", f"late{i}") for i in range(2)]
                await asyncio.to_thread(_add, url, objects)
                for _ in range(300):  # pulled within a few intervals of coming up
                    if (await js.stream_info(SUBMISSIONS)).state.messages >= 1:
                        break
                    await asyncio.sleep(0.1)
                assert (await js.stream_info(SUBMISSIONS)).state.messages == 1
                assert not job.done()
        finally:
            job.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await job
        await wait_routed(js, 1)


class _Taxii(http.server.BaseHTTPRequestHandler):
    """Answers with TAXII's media type; quiet."""

    def answer(self, body: bytes) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/taxii+json;version=2.1")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


class _Broken(_Taxii):
    """A 'TAXII server' whose collection is fine and whose manifest answer is ``BODY``."""

    BODY = b"[]"

    def do_GET(self) -> None:
        if "/manifest/" in self.path:
            body = self.BODY
        else:
            body = orjson.dumps(
                {"id": COLLECTION, "title": "x", "can_read": True, "can_write": False}
            )
        self.answer(body)


@contextlib.contextmanager
def _serving(handler: type[http.server.BaseHTTPRequestHandler]) -> Iterator[str]:
    """``handler`` on a loopback HTTP server; yields the collection URL to pull from."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield collection_url(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize(
    "body",
    [b"[1, 2]", b'{"objects": null}', b'{"objects": [{"id": "x--1"}]}', b'{"objects": [7]}'],
)
async def test_a_manifest_that_is_not_taxii_is_one_clear_error(
    body: bytes, js: JetStreamContext, make_community: Callable[..., Any], running_router: Any
) -> None:
    settings = await running_router(make_community())
    with _serving(type("Handler", (_Broken,), {"BODY": body})) as url:
        with pytest.raises(PullError) as caught:
            await pull_member(settings, org="bank-a", url=url, user=USER, password=PASSWORD, js=js)
    assert url in str(caught.value) and "not TAXII 2.1" in str(caught.value)
    assert (await js.stream_info(SUBMISSIONS)).state.messages == 0


async def test_a_server_whose_more_never_ends_is_stopped(
    js: JetStreamContext,
    make_community: Callable[..., Any],
    running_router: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from adapters._taxii import _poller

    monkeypatch.setattr(_poller, "MAX_PAGES", 5)
    settings = await running_router(make_community())
    entry = {"id": "indicator--" + "1" * 8 + "-1111-4111-8111-" + "1" * 12}
    entry |= {"date_added": "2026-11-02T09:30:00Z", "version": "2026-11-02T09:30:00Z"}
    body = orjson.dumps({"more": True, "objects": [entry]})
    with (
        _serving(type("Handler", (_Broken,), {"BODY": body})) as url,
        pytest.raises(PullError, match="more than 5 pages"),
    ):
        await pull_member(settings, org="bank-a", url=url, user=USER, password=PASSWORD, js=js)


class _Stub(_Taxii):
    """A minimal TAXII 2.1 collection: ``ENTRIES`` (object, date_added) answered by the
    manifest and objects endpoints with ``added_after`` exclusive and ``match[id]``."""

    ENTRIES: ClassVar[list[tuple[dict[str, Any], str]]] = []

    def do_GET(self) -> None:
        path, _, query = self.path.partition("?")
        params = urllib.parse.parse_qs(query)
        after = params.get("added_after", [""])[0]
        ids = set(",".join(params.get("match[id]", [])).split(",")) - {""}
        chosen = [
            (o, added)
            for o, added in self.ENTRIES
            if (not after or added > after) and (not ids or o["id"] in ids)
        ]
        if path.endswith("/manifest/"):
            body = {
                "objects": [
                    {"id": o["id"], "date_added": added, "version": o["modified"]}
                    for o, added in chosen
                ]
            }
        elif path.endswith("/objects/"):
            body = {"objects": [o for o, _ in chosen]}
        else:
            body = {"id": COLLECTION, "title": "stub", "can_read": True, "can_write": False}
        self.answer(json.dumps(body).encode())  # the standard library writes any integer


def _submitted_ids(token: bytes) -> set[str]:
    payload = token.split(b".")[1]
    envelope = orjson.loads(base64.urlsafe_b64decode(payload + b"=" * (-len(payload) % 4)))
    return {o["id"] for o in envelope["bundle"]["objects"]}


async def test_an_object_added_later_at_the_cursors_instant_is_pulled_once(
    js: JetStreamContext, make_community: Callable[..., Any], running_router: Any
) -> None:
    """The member's server adds b at the very instant a was added, after a pull took a:
    the next pull takes b (``added_after`` that instant would skip it) and not a again."""
    settings = await running_router(make_community())
    a, b, c = (indicator("clear", name) for name in ("a", "b", "c"))
    instant, later = "2026-11-02T09:30:00.123Z", "2026-11-02T09:31:00Z"
    handler = type("Handler", (_Stub,), {"ENTRIES": [(a, instant)]})
    with _serving(handler) as url:

        async def pull() -> Any:
            return await pull_member(
                settings, org="bank-a", url=url, user=USER, password=PASSWORD, js=js
            )

        first = await pull()
        handler.ENTRIES = [(a, instant), (b, instant), (c, later)]
        second = await pull()
        third = await pull()
    assert (first.objects, second.objects, third.objects) == (1, 2, 0)
    tokens = [(await js.get_msg(SUBMISSIONS, seq)).data or b"" for seq in (1, 2)]
    assert [_submitted_ids(t) for t in tokens] == [{a["id"]}, {b["id"], c["id"]}]


async def _pull_from_stub(
    entries: list[tuple[dict[str, Any], str]], settings: Any, js: JetStreamContext, times: int
) -> list[Any]:
    with _serving(type("Handler", (_Stub,), {"ENTRIES": entries})) as url:
        return [
            await pull_member(settings, org="bank-a", url=url, user=USER, password=PASSWORD, js=js)
            for _ in range(times)
        ]


async def _all_submitted(js: JetStreamContext) -> list[set[str]]:
    count = (await js.stream_info(SUBMISSIONS)).state.messages
    return [
        _submitted_ids((await js.get_msg(SUBMISSIONS, seq)).data or b"")
        for seq in range(1, count + 1)
    ]


async def test_an_invalid_object_is_skipped_and_the_feed_goes_on(
    js: JetStreamContext, make_community: Callable[..., Any], running_router: Any
) -> None:
    settings = await running_router(make_community())
    a, c = indicator("clear", "a"), indicator("clear", "c")
    bad = {**indicator("clear", "stix 2.0"), "spec_version": "2.0"}
    entries = [
        (a, "2026-11-02T09:30:00Z"),
        (bad, "2026-11-02T09:30:01Z"),
        (c, "2026-11-02T09:30:02Z"),
    ]
    first, again = await _pull_from_stub(entries, settings, js, 2)
    assert (first.objects, first.refused, again.objects, again.refused) == (2, 1, 0, 0)
    submitted = await _all_submitted(js)
    assert set().union(*submitted) == {a["id"], c["id"]}


async def test_a_chunk_of_nothing_but_refused_objects_stops_the_pull_where_it_is(
    js: JetStreamContext, make_community: Callable[..., Any], running_router: Any
) -> None:
    """Every object refused says more about the broker or the server than the objects."""
    settings = await running_router(make_community())
    old = [{**indicator("clear", f"old{i}"), "spec_version": "2.0"} for i in range(2)]
    entries = [(o, "2026-11-02T09:30:00Z") for o in old]
    with pytest.raises(PullError, match="refused every one of 2 objects"):
        await _pull_from_stub(entries, settings, js, 1)
    assert (await js.stream_info(SUBMISSIONS)).state.messages == 0


async def test_an_object_orjson_cannot_write_is_refused_alone(
    js: JetStreamContext, make_community: Callable[..., Any], running_router: Any
) -> None:
    settings = await running_router(make_community())
    a, b = indicator("clear", "a"), indicator("clear", "b")
    big = {**indicator("clear", "big"), "x_count": 2**70}  # read by requests, not by orjson
    entries = [(a, "2026-11-02T09:30:00Z"), (big, "2026-11-02T09:30:00Z")]
    entries.append((b, "2026-11-02T09:30:00Z"))
    (pulled,) = await _pull_from_stub(entries, settings, js, 1)
    assert (pulled.objects, pulled.refused) == (2, 1)
    assert set().union(*await _all_submitted(js)) == {a["id"], b["id"]}


async def test_a_chunk_too_large_for_one_submission_is_split(
    js: JetStreamContext, make_community: Callable[..., Any], running_router: Any
) -> None:
    settings = await running_router(make_community())
    # 40 objects of ~30 KB: 1.2 MB together, over limits.max_bundle_bytes (750 KiB).
    objects = [indicator("clear", f"{i}-" + "x" * 30_000) for i in range(40)]
    entries = [(o, "2026-11-02T09:30:00Z") for o in objects]
    (pulled,) = await _pull_from_stub(entries, settings, js, 1)
    assert (pulled.objects, pulled.refused) == (40, 0) and pulled.submissions >= 2
    submitted = await _all_submitted(js)
    assert sum(map(len, submitted)) == 40 and set().union(*submitted) == {o["id"] for o in objects}
