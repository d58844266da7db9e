"""Organisations are routed in turn, each through its own consumer (``broker._feeds``),
against a real nats-server: one member's flood, over its rate limit or not, does not hold
up another member's submission; organisations added while the router runs are routed; the
shared consumer of earlier versions is replaced without routing anything twice."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import nats.js.errors
import pytest
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig

from broker._audit import read_log
from broker._bus import SUBMISSIONS, ensure_intake, ensure_streams
from broker._config import RouterSettings, Settings
from broker._directory_store import store_directory
from broker._embedded import EmbeddedNats
from broker._feeds import (
    LEGACY_CONSUMER,
    Ensured,
    ensure_route_consumers,
    route_consumer,
    route_consumers,
)
from broker._service import streams_for
from tests.conftest import Community
from tests.integration.helpers import bundle, indicator, publish, until, wait_routed

pytestmark = pytest.mark.integration


async def _prepared(js: JetStreamContext, settings: Settings, community: Community) -> Settings:
    """The streams and the directory, before any router runs."""
    await ensure_streams(js, streams_for(settings))
    await store_directory(js, community.directory())
    return settings


async def _accepted(js: JetStreamContext) -> list[str]:
    """The accepted submissions' ids in the order the router logged them."""
    return [
        r.entry["sub"]
        async for r in read_log(js)
        if r.entry["type"] == "submission" and r.entry.get("result") == "accepted"
    ]


@pytest.mark.timeout(180)
@pytest.mark.parametrize(
    ("flood", "extra"),
    [
        pytest.param(
            40,
            # Before: the flooder's deferred submissions held all 4 hand-outs of the one
            # shared consumer, so nothing else came out until its flood had drained.
            {
                "limits": {"submissions_per_second": 20.0, "burst": 1},
                "router": {"max_ack_pending": 4},
            },
            id="over-its-rate-past-max-ack-pending",
        ),
        # Before: the other member's submission waited behind the whole flood.
        pytest.param(150, {}, id="no-rate-limit"),
    ],
)
async def test_a_flood_queued_first_does_not_hold_up_another_member(
    js: JetStreamContext,
    make_community: Callable[..., Community],
    running_router: Callable[..., Any],
    settings_for: Callable[..., Any],
    nats_server: EmbeddedNats,
    tmp_path: Path,
    flood: int,
    extra: dict[str, Any],
) -> None:
    community = make_community()
    settings = await _prepared(js, settings_for(community, nats_server.url, **extra), community)
    flooded = [
        await publish(settings, js, community, tmp_path, "bank-a", bundle(indicator("clear")))
        for _ in range(flood)
    ]
    other = await publish(settings, js, community, tmp_path, "bank-b", bundle(indicator("clear")))

    await running_router(community, **extra)
    await wait_routed(js, flood + 1)

    accepted = await _accepted(js)
    assert sorted(accepted) == sorted([*flooded, other])  # each once, none dropped
    # Served in turn: bank-b's one submission came out within the first few, not behind
    # the flood it was queued after (two workers; the flooder's first ones may be ahead).
    assert accepted.index(other) < 5, f"bank-b routed after {accepted.index(other)} of bank-a's"
    consumers = await route_consumers(js)
    assert {"bank-a", "bank-b"} <= set(consumers)
    assert consumers["bank-a"].delivered.stream_seq >= flood


@pytest.mark.timeout(120)
async def test_an_organisation_added_while_the_router_runs_is_routed(
    js: JetStreamContext,
    make_community: Callable[..., Community],
    running_router: Callable[..., Any],
    tmp_path: Path,
) -> None:
    community = make_community(members=("bank-a", "bank-b", "bank-c"))
    full = community.directory()
    community.doc["organisations"] = [
        o for o in community.doc["organisations"] if o["id"] != "bank-c"
    ]
    settings = await running_router(community)
    assert "bank-c" not in await route_consumers(js)

    await store_directory(js, full)
    sid = await publish(settings, js, community, tmp_path, "bank-c", bundle(indicator("clear")))

    async def logged() -> bool:
        return sid in await _accepted(js)

    await until(logged, within=30, what="bank-c's submission to be routed")
    assert (await route_consumers(js))["bank-c"].num_ack_pending == 0


@pytest.mark.timeout(120)
async def test_the_shared_consumer_of_earlier_versions_is_replaced_without_routing_twice(
    js: JetStreamContext,
    make_community: Callable[..., Community],
    running_router: Callable[..., Any],
    settings_for: Callable[..., Any],
    nats_server: EmbeddedNats,
    tmp_path: Path,
) -> None:
    community = make_community()
    settings = await _prepared(js, settings_for(community, nats_server.url), community)
    sids = [
        await publish(settings, js, community, tmp_path, org, bundle(indicator("clear")))
        for org in ("bank-a", "bank-b", "bank-a")
    ]

    async def copied() -> bool:
        return (await js.stream_info(SUBMISSIONS)).state.last_seq == len(sids)

    await until(copied, within=10, what="the submissions to reach SUBMISSIONS")
    # What an earlier version left: its one consumer, having routed the first two.
    await js.add_consumer(
        SUBMISSIONS,
        ConsumerConfig(
            durable_name=LEGACY_CONSUMER,
            ack_policy=AckPolicy.EXPLICIT,
            filter_subject="atlas.submit.*",
        ),
    )
    legacy = await js.pull_subscribe_bind(LEGACY_CONSUMER, stream=SUBMISSIONS)
    for msg in await legacy.fetch(2, timeout=5):
        await msg.ack_sync()
    await legacy.unsubscribe()

    await running_router(community)
    sids.append(
        await publish(settings, js, community, tmp_path, "bank-b", bundle(indicator("clear")))
    )
    await wait_routed(js, len(sids))

    accepted = await _accepted(js)
    # The two the old consumer acked are not routed again; the other two are, once each.
    assert len(accepted) == 2 and len(set(accepted)) == 2 and set(accepted) <= set(sids)
    with pytest.raises(nats.js.errors.NotFoundError):
        await js.consumer_info(SUBMISSIONS, LEGACY_CONSUMER)
    for org in ("bank-a", "bank-b"):
        info = await js.consumer_info(SUBMISSIONS, route_consumer(org))
        assert info.config.filter_subject == f"atlas.submit.{org}"


@pytest.mark.timeout(120)
async def test_a_routing_consumer_deleted_by_hand_is_made_again(
    js: JetStreamContext,
    make_community: Callable[..., Community],
    running_router: Callable[..., Any],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("broker._router.CONSUMER_CHECK_EVERY", 0.5)
    community = make_community()
    settings = await running_router(community)
    first = await publish(settings, js, community, tmp_path, "bank-a", bundle(indicator("clear")))
    await wait_routed(js, 1)
    await js.delete_consumer(SUBMISSIONS, route_consumer("bank-a"))

    async def made_again() -> bool:
        return "bank-a" in await route_consumers(js)

    await until(made_again, within=30, what="route-bank-a to be made again")
    second = await publish(settings, js, community, tmp_path, "bank-a", bundle(indicator("clear")))
    await wait_routed(js, 2)
    # The new consumer starts from the stream's start: the first is handed out again and
    # found routed (its entries are stored), so it is logged once all the same.
    assert sorted(await _accepted(js)) == sorted([first, second])


@pytest.mark.timeout(180)
async def test_a_full_submissions_stream_keeps_routing_what_the_intakes_accept(
    js: JetStreamContext,
    make_community: Callable[..., Community],
    running_router: Callable[..., Any],
    tmp_path: Path,
) -> None:
    community = make_community()
    settings = await running_router(community)
    # SUBMISSIONS shrunk to a few submissions: the members' intakes have room for many
    # more, and acknowledge each one; what they acknowledge must still be routed.
    config = (await js.stream_info(SUBMISSIONS)).config
    first = await publish(settings, js, community, tmp_path, "bank-a", bundle(indicator("clear")))
    await wait_routed(js, 1)
    size = (await js.stream_info(SUBMISSIONS)).state.bytes
    assert size > 0
    config.max_bytes = 4 * size
    await js.update_stream(config)
    sids = [first]
    # The router keeps up (each is routed before the next is sent), as it does when
    # SUBMISSIONS fills over weeks: what it must drop for room is long routed.
    for n in range(12):
        org = ("bank-a", "bank-b")[n % 2]
        sids.append(
            await publish(settings, js, community, tmp_path, org, bundle(indicator("clear")))
        )

        async def logged() -> bool:
            return sids[-1] in await _accepted(js)

        await until(logged, within=30, what=f"submission {n + 2} to be routed")
    assert sorted(await _accepted(js)) == sorted(sids)
    state = (await js.stream_info(SUBMISSIONS)).state
    assert state.first_seq > 1 and state.bytes <= 4 * size  # the oldest, routed, made room


async def _legacy(js: JetStreamContext) -> None:
    """The one consumer an earlier version left on SUBMISSIONS."""
    await js.add_consumer(
        SUBMISSIONS,
        ConsumerConfig(
            durable_name=LEGACY_CONSUMER,
            ack_policy=AckPolicy.EXPLICIT,
            filter_subject="atlas.submit.*",
        ),
    )


async def test_more_than_a_page_of_consumers_is_listed(js: JetStreamContext) -> None:
    """nats-server lists 256 consumers per request; nats-py asks for one page."""
    await ensure_intake(js, ["bank-a"])
    orgs = [f"org-{n:03d}" for n in range(300)]
    ensured = await ensure_route_consumers(js, orgs, RouterSettings(), complete=True)
    assert len(ensured.created) == 300 and not ensured.failed
    assert set(await route_consumers(js)) == set(orgs)
    again = await ensure_route_consumers(js, orgs, RouterSettings(), complete=True)
    assert again == Ensured([], [])  # all found: nothing made twice, nothing failed


async def test_a_consumer_another_process_just_made_is_kept(
    js: JetStreamContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two processes migrating at once: one lists the consumers before the other made them,
    and its create (from another start) must not stop it."""
    await ensure_intake(js, ["bank-a"])
    theirs = await ensure_route_consumers(js, ["bank-a"], RouterSettings(), complete=True)
    assert theirs.created == ["bank-a"]  # from the stream's start
    await _legacy(js)  # ours still saw it: its create (from the floor) differs from theirs

    async def stale(js: JetStreamContext) -> dict[str, Any]:
        return {}

    monkeypatch.setattr("broker._feeds.route_consumers", stale)
    ours = await ensure_route_consumers(js, ["bank-a"], RouterSettings(), complete=True)
    assert ours == Ensured([], [])
    info = await js.consumer_info(SUBMISSIONS, route_consumer("bank-a"))
    assert info.config.filter_subject == "atlas.submit.bank-a"


async def test_the_legacy_consumer_stays_until_a_directory_names_every_organisation(
    js: JetStreamContext,
) -> None:
    await ensure_intake(js, ["bank-a"])
    await _legacy(js)
    await ensure_route_consumers(js, [], RouterSettings(), complete=False)  # no directory
    assert (await js.consumer_info(SUBMISSIONS, LEGACY_CONSUMER)).name == LEGACY_CONSUMER
    await ensure_route_consumers(js, ["bank-a"], RouterSettings(), complete=True)
    with pytest.raises(nats.js.errors.NotFoundError):
        await js.consumer_info(SUBMISSIONS, LEGACY_CONSUMER)
