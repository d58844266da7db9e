"""Back-pressure and limits against a real nats-server: rate limits that delay but never drop,
fairness between organisations, and oversize or over-count bundles refused clearly."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import nats.js.errors
import orjson
import pytest
import structlog
from nats.js import JetStreamContext
from structlog.testing import capture_logs

from broker import SubmissionError
from broker._audit import read_log
from broker._bus import DELIVERIES, ensure_streams, submit_stream, submit_subject
from broker._config import Settings
from broker._directory_store import store_directory
from broker._embedded import EmbeddedNats
from broker._feeds import router_backlog
from broker._metrics import BrokerMetrics
from broker._service import publish_bundle, run_router, streams_for
from broker._submission import make_submission
from keys import load_private_key
from tests.conftest import Community
from tests.integration.helpers import bundle, indicator, publish, wait_routed

pytestmark = pytest.mark.integration


@contextlib.asynccontextmanager
async def _router(
    js: JetStreamContext, settings: Settings, community: Community
) -> AsyncIterator[BrokerMetrics]:
    metrics = BrokerMetrics()
    ready = asyncio.Event()
    task = asyncio.create_task(
        run_router(js, settings, signing_key=community.broker_key, ready=ready, metrics=metrics)
    )
    try:
        async with asyncio.timeout(30):
            await ready.wait()
        yield metrics
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def _count(metrics: BrokerMetrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


FLOOD = 20


@pytest.mark.timeout(120)
async def test_flooding_member_is_delayed_not_dropped_and_does_not_starve_another(
    js: JetStreamContext,
    nats_server: EmbeddedNats,
    make_community: Callable[..., Community],
    settings_for: Callable[..., Settings],
    tmp_path: Path,
) -> None:
    community = make_community()
    settings = settings_for(
        community,
        nats_server.url,
        limits={"submissions_per_second": 5.0, "burst": 2},
    )
    await ensure_streams(js, streams_for(settings))
    await store_directory(js, community.directory())
    # The flood is queued first, the other member's one submission behind all of it.
    flood = [
        await publish(
            settings, js, community, tmp_path, "bank-a", bundle(indicator("clear", f"f{n}"))
        )
        for n in range(FLOOD)
    ]
    other = await publish(
        settings, js, community, tmp_path, "bank-b", bundle(indicator("clear", "other"))
    )

    async with _router(js, settings, community) as metrics:
        await wait_routed(js, FLOOD + 1)

    accepted = [
        r.entry["sub"]
        async for r in read_log(js)
        if r.entry["type"] == "submission" and r.entry.get("result") == "accepted"
    ]
    # Nothing dropped, nothing twice.
    assert sorted(accepted) == sorted([*flood, other])
    # bank-b was routed before bank-a's flood finished: it did not wait behind the flood.
    position = accepted.index(other)
    assert position < FLOOD, f"bank-b routed after the whole flood ({position})"
    assert accepted.index(flood[-1]) > position
    # The flood was delayed (once per deferred submission at least), never refused.
    assert _count(metrics, "atlas_submissions_rate_limited_total", org="bank-a") >= FLOOD - 2
    assert _count(metrics, "atlas_submissions_rate_limited_total", org="bank-b") == 0
    assert _count(metrics, "atlas_submissions_accepted_total", org="bank-a") == FLOOD
    assert _count(metrics, "atlas_submissions_accepted_total", org="bank-b") == 1
    assert _count(metrics, "atlas_deliveries_total") == 2 * (FLOOD + 1)
    assert _count(metrics, "atlas_deferred_submissions") == 0
    assert (await router_backlog(js)).drained()


class TestBundleLimitsOnPublish:
    """``publish`` (and TAXII and the poller, which use the same function) refuse locally."""

    async def test_refused_naming_max_objects_when_the_bundle_has_too_many(
        self, make_community: Callable[..., Community], tmp_path: Path
    ) -> None:
        community = make_community(partners=())
        settings = Settings(data_dir=tmp_path, limits={"max_objects": 5})
        path = tmp_path / "many.json"
        path.write_bytes(orjson.dumps(bundle(*(indicator("clear") for _ in range(6)))))
        with pytest.raises(SubmissionError) as info:
            await publish_bundle(
                settings, path, org="bank-a", key_path=community.sign_key("bank-a")
            )
        assert str(info.value) == (
            f"{path} holds 6 objects, over the limit of 5 per bundle (limits.max_objects)"
        )

    async def test_refused_naming_max_bundle_bytes_when_the_bundle_is_too_large(
        self, make_community: Callable[..., Community], tmp_path: Path
    ) -> None:
        community = make_community(partners=())
        settings = Settings(data_dir=tmp_path, limits={"max_bundle_bytes": 2048})
        path = tmp_path / "big.json"
        path.write_bytes(orjson.dumps(bundle(indicator("clear", "x" * 3000))))
        size = path.stat().st_size
        with pytest.raises(SubmissionError) as info:
            await publish_bundle(
                settings, path, org="bank-a", key_path=community.sign_key("bank-a")
            )
        assert str(info.value) == (
            f"{path} is {size:,} bytes, over the size limit of 2,048 bytes "
            "(limits.max_bundle_bytes)"
        )


@pytest.mark.timeout(120)
async def test_router_refuses_oversize_and_over_count_submissions_and_keeps_serving(
    js: JetStreamContext,
    nats_server: EmbeddedNats,
    make_community: Callable[..., Community],
    settings_for: Callable[..., Settings],
    tmp_path: Path,
) -> None:
    """A member publishing on NATS directly, past the limits of the router that routes it."""
    # The suite keeps logs at error level; refusals are warnings.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    community = make_community()
    settings = settings_for(
        community, nats_server.url, limits={"max_bundle_bytes": 4096, "max_objects": 5}
    )
    await store_directory(js, community.directory())
    key = load_private_key(community.sign_key("bank-a"))

    def signed(data: dict[str, Any]) -> bytes:
        return make_submission(
            orjson.dumps(data),
            org="bank-a",
            key=key,
            to=(),
            feed=None,
            now=int(time.time()),
            max_bytes=1024 * 1024,
            max_objects=1000,
        ).token

    big = signed(bundle(indicator("clear", "y" * 5000)))
    many = signed(bundle(*(indicator("clear") for _ in range(6))))
    async with _router(js, settings, community) as metrics:
        # The stream the router configured refuses the oversize message at the door.
        with pytest.raises(nats.js.errors.Error, match="maximum"):
            await js.publish(submit_subject("bank-a"), big, stream=submit_stream("bank-a"))
        # A process with larger limits widened the stream: the router still refuses.
        await ensure_streams(js)
        with capture_logs() as logs:
            await js.publish(submit_subject("bank-a"), big, stream=submit_stream("bank-a"))
            await js.publish(submit_subject("bank-a"), many, stream=submit_stream("bank-a"))
            good = await publish(
                settings, js, community, tmp_path, "bank-a", bundle(indicator("clear"))
            )
            await wait_routed(js, 3)

    refusals = {e["reason"]: e["detail"] for e in logs if e["event"] == "submission.refused"}
    assert refusals == {
        "too-large": f"the submission is {len(big):,} bytes, over the size limit of 4,096 bytes "
        "(limits.max_bundle_bytes)",
        "too-many-objects": "the bundle holds 6 objects, over the limit of 5 per bundle "
        "(limits.max_objects)",
    }
    entries = [r.entry async for r in read_log(js) if r.entry["type"] == "submission"]
    assert sorted(e.get("reason", "") for e in entries if e["result"] == "refused") == [
        "too-large",
        "too-many-objects",
    ]
    assert [e["sub"] for e in entries if e["result"] == "accepted"] == [good]
    assert _count(metrics, "atlas_submissions_refused_total", reason="too-large") == 1
    assert _count(metrics, "atlas_submissions_refused_total", reason="too-many-objects") == 1


@pytest.mark.timeout(120)
async def test_router_refuses_a_bundle_whose_package_cannot_fit_one_message(
    js: JetStreamContext,
    nats_server: EmbeddedNats,
    make_community: Callable[..., Community],
    settings_for: Callable[..., Settings],
    tmp_path: Path,
) -> None:
    """Within limits.max_bundle_bytes, but sealed twice over base64 it outgrows
    nats.max_payload: refused and logged at once, never retried forever, nothing stored."""
    community = make_community()
    settings = settings_for(community, nats_server.url, limits={"max_bundle_bytes": 60 * 1024})
    settings = settings.model_copy(
        update={"nats": settings.nats.model_copy(update={"max_payload": 64 * 1024})}
    )
    await store_directory(js, community.directory())
    async with _router(js, settings, community) as metrics:
        sid = await publish(
            settings, js, community, tmp_path, "bank-a", bundle(indicator("clear", "z" * 40_000))
        )
        await wait_routed(js, 1)
    entries = [r.entry async for r in read_log(js)]
    assert [(e["type"], e["result"], e["reason"]) for e in entries] == [
        ("submission", "refused", "package-too-large")
    ]
    assert sid not in str(entries)  # refused before its id was logged as accepted
    assert (await js.stream_info(DELIVERIES)).state.messages == 0
    assert _count(metrics, "atlas_submissions_refused_total", reason="package-too-large") == 1
    assert _count(metrics, "atlas_submissions_retried_total") == 0
