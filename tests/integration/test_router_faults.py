"""Faults inside the router: a submission that trips a bug is refused after a few
attempts while the workers keep serving everyone else; a failed store is retried by the
same worker."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import nats.errors
import pytest
from nats.js import JetStreamContext
from nats.js.api import StreamSource

from broker._audit import read_log
from broker._bus import (
    COPY_CONSUMER,
    SUBMISSIONS,
    SUBMITTED_BUCKET,
    ensure_intake,
    ensure_streams,
    submit_stream,
    submit_subject,
)
from broker._directory_store import store_directory
from broker._embedded import EmbeddedNats
from broker._router import INTERNAL_ERROR_ATTEMPTS, Router
from broker._service import run_router, streams_for
from tests.conftest import stop_within
from tests.integration.helpers import bundle, indicator, publish, receive_all, wait_routed


@contextlib.asynccontextmanager
async def _router(
    js: JetStreamContext, community: Any, settings: Any, inject: Callable[[Router], None]
) -> AsyncIterator[asyncio.Task[None]]:
    """The router of ``community``, ``inject`` applied to it before it starts; stopped at
    the end (failing if it does not stop)."""
    await ensure_streams(js, streams_for(settings))
    await store_directory(js, community.directory())
    ready = asyncio.Event()
    task = asyncio.create_task(
        run_router(js, settings, signing_key=community.broker_key, ready=ready, attach=inject)
    )
    try:
        await ready.wait()
        yield task
    finally:
        await stop_within([task], seconds=30)


async def _publish_routed(
    settings: Any, js: JetStreamContext, community: Any, tmp_path: Path
) -> None:
    """bank-a publishes one TLP:CLEAR indicator; returns once the router took it."""
    await publish(settings, js, community, tmp_path, "bank-a", bundle(indicator("clear")))
    async with asyncio.timeout(60):
        await wait_routed(js, 1)


async def _submission_results(js: JetStreamContext) -> list[str | None]:
    """The result of every submission entry in LOG, in order."""
    return [r.entry.get("result") async for r in read_log(js) if r.entry["type"] == "submission"]


@pytest.mark.timeout(120)
async def test_a_bug_refuses_one_submission_not_the_router(
    js: JetStreamContext,
    nats_server: EmbeddedNats,
    make_community: Callable[..., Any],
    settings_for: Callable[..., Any],
    tmp_path: Path,
) -> None:
    community = make_community()
    settings = settings_for(community, nats_server.url)
    poisoned = indicator("clear", "trips the injected bug")
    calls: list[str] = []

    def _inject(router: Router) -> None:
        route = router._route

        async def _faulty(*args: Any) -> None:
            if poisoned in args[5]["objects"]:
                calls.append(args[1])
                raise RuntimeError("injected bug")
            await route(*args)

        router._route = _faulty  # type: ignore[method-assign]

    async with _router(js, community, settings, _inject) as task:
        await publish(settings, js, community, tmp_path, "bank-a", bundle(poisoned))
        healthy = indicator("clear", "after the bug")
        await publish(settings, js, community, tmp_path, "bank-a", bundle(healthy))
        async with asyncio.timeout(60):
            await wait_routed(js, 2)
        assert not task.done(), "the router stopped"
        assert len(calls) == INTERNAL_ERROR_ATTEMPTS
        entries = [r.entry async for r in read_log(js)]
        refused = [e for e in entries if e.get("result") == "refused"]
        assert [e["reason"] for e in refused] == ["internal-error"]
        got = await receive_all(settings, js, community, "lea-1", tmp_path / "lea-1")
        assert got.received == 1


@pytest.mark.timeout(120)
async def test_a_failed_store_is_retried_by_the_same_worker_not_a_restarted_one(
    js: JetStreamContext,
    nats_server: EmbeddedNats,
    make_community: Callable[..., Any],
    settings_for: Callable[..., Any],
    tmp_path: Path,
) -> None:
    """A package store failing once (a NATS timeout, as in a leader move) is retried.

    The fan-out used a TaskGroup: on Python 3.11 its cancel of the worker, made when the
    store failed, was never taken back, so the worker ended "cancelled" at its next turn
    and ``supervised`` restarted it (found by review; CPython gh-116720)."""
    community = make_community()
    settings = settings_for(community, nats_server.url, router={"workers": 1})
    cancelling_after: list[int] = []
    workers: set[asyncio.Task[Any]] = set()

    def _inject(router: Router) -> None:
        store, handle = router._store, router.handle

        async def _fails_once(*args: Any) -> Any:
            if not cancelling_after:
                cancelling_after.append(-1)  # marks the failure
                raise nats.errors.TimeoutError
            return await store(*args)

        async def _handle(msg: Any) -> None:
            await handle(msg)
            me = asyncio.current_task()
            assert me is not None
            cancelling_after.append(me.cancelling())
            workers.add(me)

        router._store = _fails_once  # type: ignore[method-assign]
        router.handle = _handle  # type: ignore[method-assign]

    async with _router(js, community, settings, _inject):
        await _publish_routed(settings, js, community, tmp_path)
        # Handled twice (failed, then routed) by one worker task, never marked cancelled.
        assert cancelling_after == [-1, 0, 0]
        assert len(workers) == 1
        got = await receive_all(settings, js, community, "lea-1", tmp_path / "lea-1")
        assert got.received == 1


@pytest.mark.timeout(120)
async def test_a_submission_copied_twice_into_submissions_is_routed_once(
    js: JetStreamContext,
    nats_server: EmbeddedNats,
    make_community: Callable[..., Any],
    settings_for: Callable[..., Any],
    tmp_path: Path,
) -> None:
    """A copy consumer made anew when SUBMISSIONS holds none of its intake's copies starts
    at the intake's start: what it copies again is the same intake message, taken once,
    not refused as a replay of itself."""
    community = make_community()
    settings = settings_for(community, nats_server.url)
    async with _router(js, community, settings, lambda router: None):
        await _publish_routed(settings, js, community, tmp_path)
        await js.purge_stream(SUBMISSIONS, subject=submit_subject("bank-a"))
        await js.delete_consumer(submit_stream("bank-a"), COPY_CONSUMER)
        await ensure_intake(js, ["bank-a"])
        async with asyncio.timeout(60):
            await wait_routed(js, 2)
        assert await _submission_results(js) == ["accepted"]
        got = await receive_all(settings, js, community, "lea-1", tmp_path / "lea-1")
        assert got.received == 1


@pytest.mark.timeout(120)
async def test_a_submission_claimed_before_the_upgrade_and_copied_again_is_not_a_replay(
    js: JetStreamContext,
    nats_server: EmbeddedNats,
    make_community: Callable[..., Any],
    settings_for: Callable[..., Any],
    tmp_path: Path,
) -> None:
    """A store of a broker before the copy consumers: ephemeral sources, claims by
    SUBMISSIONS' sequence. A quiet member's copies dropped as SUBMISSIONS' oldest, its
    intake still holding them: the upgrade's copy consumer copies them again, and the
    router takes them as what they are (found by review: refused as replays, and the
    refusal logged for good)."""
    community = make_community()
    settings = settings_for(community, nats_server.url)
    async with _router(js, community, settings, lambda router: None):
        await _publish_routed(settings, js, community, tmp_path)
        kv = await js.key_value(SUBMITTED_BUCKET)
        (key,) = [k for k in await kv.keys() if k.startswith("sub.")]
        claim = (await kv.get(key)).value or b""
        assert claim.startswith(submit_stream("bank-a").encode() + b"/1:")
        await kv.put(key, b"1:" + claim.split(b":", 1)[1])  # as the earlier router wrote it
        config = (await js.stream_info(SUBMISSIONS)).config
        intakes = [s.name for s in config.sources or ()]
        config.sources = [
            StreamSource(name=name, filter_subject=submit_subject(name.removeprefix("SUBMIT-")))
            for name in intakes
        ]
        await js.update_stream(config)
        for name in intakes:
            await js.delete_consumer(name, COPY_CONSUMER)
        await js.purge_stream(SUBMISSIONS, subject=submit_subject("bank-a"))
        await ensure_streams(js, streams_for(settings))  # the upgraded serve's start
        async with asyncio.timeout(60):
            await wait_routed(js, 2)
        assert await _submission_results(js) == ["accepted"]
