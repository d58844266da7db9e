"""Junk on a member's own submit subject cannot grow the permanent log without bound.

Found by a probe (F7): every distinct unsigned or badly signed message on
``atlas.submit.<org>`` became a LOG entry of its own, kept forever. The router now writes at
most one such refusal per organisation and ``Router.REFUSED_EVERY`` (per process), counting
the others into the next entry's ``suppressed``; refusals of validly signed submissions are
still logged one by one, and a valid submission in the middle of the junk is routed.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import secrets
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
import structlog
from nats.js import JetStreamContext
from structlog.testing import LogCapture

from broker._audit import read_log
from broker._bus import ensure_streams, submit_subject
from broker._directory_store import store_directory
from broker._embedded import EmbeddedNats
from broker._feeds import route_consumers
from broker._router import Router
from broker._service import run_router, streams_for
from broker._throttle import Throttle
from keys import PrivateKey, load_private_key, sign_submission
from tests.conftest import stop_within
from tests.integration.helpers import (
    bundle,
    indicator,
    publish,
    receive_all,
    received_ids,
    wait_routed,
)

pytestmark = pytest.mark.integration


INTERVAL = 60.0
"""The router's default ``REFUSED_EVERY``."""


class Clock:
    """The router's throttle clock, moved by the test."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@contextlib.asynccontextmanager
async def _router(
    js: JetStreamContext, community: Any, settings: Any, clock: Clock
) -> AsyncIterator[list[Router]]:
    """The real router of ``community`` with a throttle on ``clock``; stopped at the end."""
    routers: list[Router] = []

    def _attach(router: Router) -> None:
        router.refusals = Throttle(INTERVAL, clock=clock)
        routers.append(router)

    await ensure_streams(js, streams_for(settings))
    await store_directory(js, community.directory())
    ready = asyncio.Event()
    task = asyncio.create_task(
        run_router(js, settings, signing_key=community.broker_key, ready=ready, attach=_attach)
    )
    try:
        started = asyncio.create_task(ready.wait())
        await asyncio.wait({started, task}, return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            started.cancel()
            task.result()  # the router did not start: its error, not a hang
        yield routers
    finally:
        await stop_within([task], seconds=30)


def _envelope(org: str, **extra: Any) -> bytes:
    return orjson.dumps(
        {
            "v": 1,
            "sid": secrets.token_hex(16),
            "org": org,
            "iat": int(time.time()),
            "to": [],
            "feed": None,
            "bundle": bundle(indicator("clear")),
            **extra,
        }
    )


def _junk(community: Any, n: int) -> list[bytes]:
    """``n`` distinct messages no valid signature of bank-a vouches for."""
    intruder = PrivateKey.generate("Ed25519")
    bank_b = load_private_key(community.sign_key("bank-b"))
    now = int(time.time())
    makers: list[Callable[[], bytes]] = [
        lambda: os.urandom(16) + b" not a JWS",
        lambda: f"eyJ{secrets.token_urlsafe(8)}.e30.{secrets.token_urlsafe(8)}".encode(),
        lambda: sign_submission(_envelope("bank-a"), intruder, org="bank-a", now=now).encode(),
        # Another member's valid key, on bank-a's subject: not bank-a's signature.
        lambda: sign_submission(_envelope("bank-a"), bank_b, org="bank-a", now=now).encode(),
    ]
    return [makers[i % len(makers)]() for i in range(n)]


async def _publish_all(js: JetStreamContext, org: str, messages: list[bytes]) -> None:
    for data in messages:
        await js.publish(submit_subject(org), data)


@pytest.mark.timeout(180)
async def test_junk_is_logged_once_per_interval_with_suppressed_counts_and_signed_refusals_each(
    js: JetStreamContext,
    nats_server: EmbeddedNats,
    make_community: Callable[..., Any],
    settings_for: Callable[..., Any],
    tmp_path: Path,
) -> None:
    community = make_community()
    settings = settings_for(community, nats_server.url)
    key = load_private_key(community.sign_key("bank-a"))
    clock = Clock()
    capture = LogCapture()
    structlog.configure(
        processors=[structlog.contextvars.merge_contextvars, capture],
        wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
        cache_logger_on_first_use=False,
    )
    stale = int(time.time()) - settings.router.package_ttl - 3600
    # Validly signed by bank-a, refused all the same: each is evidence, each is logged.
    signed_refused = {
        sign_submission(_envelope("bank-a", iat=stale), key, org="bank-a", now=stale).encode(): (
            "stale"
        )
        for _ in range(3)
    } | {
        sign_submission(
            _envelope("bank-a", via="taxii"), key, org="bank-a", now=int(time.time())
        ).encode(): "bad-signature"
        for _ in range(2)
    }
    first, second, third = _junk(community, 24), _junk(community, 16), _junk(community, 10)

    async with _router(js, community, settings, clock) as (router,):
        await _publish_all(js, "bank-a", first)
        await _publish_all(js, "bank-a", list(signed_refused))
        sid = await publish(
            settings, js, community, tmp_path, "bank-a", bundle(indicator("clear", "valid"))
        )
        await _publish_all(js, "bank-a", second)
        published = len(first) + len(signed_refused) + 1 + len(second)
        await wait_routed(js, published)

        entries = [r.entry async for r in read_log(js)]
        refused = [e for e in entries if e.get("result") == "refused"]
        by_token = {e["src_sha256"]: e for e in refused}
        # Every validly signed refusal has its own entry, with its reason.
        for token, reason in signed_refused.items():
            assert by_token[hashlib.sha256(token).hexdigest()]["reason"] == reason
        unsigned = [e for e in refused if e["src_sha256"] not in _shas(signed_refused)]
        # Of 40 junk messages, one entry; the others wait for the next one.
        assert len(unsigned) == 1 and "suppressed" not in unsigned[0], unsigned
        assert unsigned[0]["org"] == "bank-a"
        assert router.refusals.pending("bank-a") == len(first) + len(second) - 1
        # The valid submission in the middle of the junk was routed and delivered.
        assert [e["result"] for e in entries if e.get("sub") == sid] == ["accepted"]
        out = tmp_path / "lea-1"
        got = await receive_all(settings, js, community, "lea-1", out)
        assert got.received == 1 and received_ids(out)

        clock.now += INTERVAL
        await _publish_all(js, "bank-a", third)
        await _publish_all(js, "bank-b", [b"bank-b's own junk"])
        published += len(third) + 1
        await wait_routed(js, published)

        consumers = (await route_consumers(js)).values()
        # each was acked once: none comes back forever
        assert sum(info.num_redelivered or 0 for info in consumers) == 0
        entries = [r.entry async for r in read_log(js)]
        refused = [e for e in entries if e.get("result") == "refused"]
        unsigned = [e for e in refused if e["src_sha256"] not in _shas(signed_refused)]
        # bank-b's junk comes through its own intake: in no set order with bank-a's.
        assert sorted((e["org"], e.get("suppressed", 0)) for e in unsigned) == [
            ("bank-a", 0),
            ("bank-a", len(first) + len(second) - 1),
            ("bank-b", 0),
        ]
        assert all(e.get("suppressed") != 0 for e in unsigned)  # left out when none
        assert router.refusals.pending("bank-a") == len(third) - 1
        assert router.stats.refusals_suppressed == len(first) + len(second) + len(third) - 2
        # Nothing lost: entries + suppressed counts + pending = every junk message.
        assert (
            len(unsigned)
            + sum(e.get("suppressed", 0) for e in unsigned)
            + (router.refusals.pending("bank-a"))
            == len(first) + len(second) + len(third) + 1
        )

    # structlog still says every refusal, logged or not.
    warned = [e for e in capture.entries if e["event"] == "submission.refused"]
    assert len([e for e in warned if e.get("signed") is False]) == (
        len(first) + len(second) + len(third) + 1
    )
    assert len([e for e in warned if "signed" not in e]) == len(signed_refused)


def _shas(tokens: dict[bytes, str]) -> set[str]:
    return {hashlib.sha256(t).hexdigest() for t in tokens}
