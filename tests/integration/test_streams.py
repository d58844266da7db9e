"""Streams and buckets are created idempotently, and LOG refuses deletion and purging."""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import nats
import nats.js.errors
import pytest
import structlog
from nats.js import JetStreamContext
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DiscardPolicy,
    StreamConfig,
    StreamConsumerSource,
    StreamSource,
)
from structlog.testing import capture_logs

from adapters._consumer import receipt_consumer
from broker._bus import (
    COPY_CONSUMER,
    DELIVERIES,
    LOG,
    RECEIPTS,
    SUBMISSIONS,
    Streams,
    ack_stream,
    copy_origin,
    copy_subject,
    ensure_intake,
    ensure_streams,
    intake_lag,
    log_subject,
    submit_stream,
)
from broker._config import RouterSettings
from broker._directory_store import DirectoryWatcher, store_directory
from broker._embedded import EmbeddedNats
from broker._feeds import ensure_route_consumers
from broker._metrics import BrokerMetrics
from broker._service import _check_unfetched, _keep_intake
from broker.errors import ConfigError
from tests.conftest import Community, stop_within
from tests.integration.helpers import until


async def test_ensure_streams_twice_changes_nothing(js: JetStreamContext) -> None:
    before = {name: (await js.stream_info(name)).config for name in (SUBMISSIONS, DELIVERIES, LOG)}
    await ensure_streams(js)
    after = {name: (await js.stream_info(name)).config for name in (SUBMISSIONS, DELIVERIES, LOG)}
    assert before == after


async def test_changed_limits_update_the_existing_streams(js: JetStreamContext) -> None:
    await ensure_intake(js, ["bank-a"])
    await ensure_streams(js, Streams(max_msg_size=4096))
    assert (await js.stream_info(submit_stream("bank-a"))).config.max_msg_size == 4096
    # Room for the header a copy gains (a source may not take more than its target).
    assert (await js.stream_info(SUBMISSIONS)).config.max_msg_size == 4096 + 1024


async def test_a_submission_that_just_fits_its_intake_is_copied_with_what_follows(
    js: JetStreamContext,
) -> None:
    """A copy gains a Nats-Stream-Source header, counted against SUBMISSIONS' limit: with
    the same limit as the intake, the largest submissions were acknowledged and never
    copied, nor anything the member sent after them."""
    org = "bank-" + "a" * 57  # the longest ids make the longest header
    await ensure_intake(js, [org])
    await ensure_streams(js, Streams(max_msg_size=4096))
    headers = {"Nats-Expected-Stream": submit_stream(org)}
    for size in range(4096 - 160, 4097, 8):  # up to the intake's own limit
        with contextlib.suppress(nats.js.errors.APIError):  # too big for the intake itself
            await js.publish(f"atlas.submit.{org}", b"x" * size, headers=headers)
    await js.publish(f"atlas.submit.{org}", b"after")
    taken = (await js.stream_info(submit_stream(org))).state.messages

    async def copied() -> bool:
        return (await js.stream_info(SUBMISSIONS)).state.messages == taken

    await until(copied, within=10, what=f"all {taken} copied into SUBMISSIONS")


async def test_log_refuses_delete_and_purge(js: JetStreamContext) -> None:
    config = (await js.stream_info(LOG)).config
    assert config.deny_delete and config.deny_purge
    ack = await js.publish(log_subject("x") + ".0", b'{"v":1}')
    with pytest.raises(nats.js.errors.APIError):
        await js.delete_msg(LOG, ack.seq)
    with pytest.raises(nats.js.errors.APIError):
        await js.purge_stream(LOG)
    assert (await js.stream_info(LOG)).state.messages == 1


async def test_oversize_submission_is_refused_by_the_server(js: JetStreamContext) -> None:
    await ensure_intake(js, ["bank-a"])
    await ensure_streams(js, Streams(max_msg_size=1024))  # the intake made takes it too
    with pytest.raises(nats.js.errors.APIError):
        await js.publish("atlas.submit.bank-a", b"x" * 2048)
    assert (await js.stream_info(submit_stream("bank-a"))).state.messages == 0
    assert (await js.stream_info(SUBMISSIONS)).state.messages == 0


async def test_names_the_setting_when_the_server_cannot_reserve_a_stream(
    tmp_path: Path,
) -> None:
    small = EmbeddedNats(
        tmp_path / "small",
        publish_url=False,
        extra_config="jetstream { max_file_store: 256MB }\n",
    )
    async with small:
        nc = await nats.connect(small.url)
        try:
            js = nc.jetstream()
            with pytest.raises(ConfigError, match=r"nats\.stream_max_bytes") as caught:
                await ensure_streams(js, Streams(deliveries_max_bytes=1024**3))
            assert "no room for stream SUBMISSIONS (536,870,912 bytes" in str(caught.value)
            await ensure_streams(js, Streams(deliveries_max_bytes=64 * 1024**2))
            info = await js.stream_info(DELIVERIES)
            assert info.config.max_bytes == 64 * 1024**2
            for name, share in ((SUBMISSIONS, 2), (RECEIPTS, 8)):
                assert (await js.stream_info(name)).config.max_bytes == 64 * 1024**2 // share
        finally:
            await nc.close()


async def test_a_server_taking_smaller_messages_than_configured_is_refused_at_connect(
    tmp_path: Path,
) -> None:
    from broker._bus import connect
    from broker._config import Settings

    async with EmbeddedNats(tmp_path / "small", max_payload=64 * 1024, publish_url=False) as s:
        default = Settings(data_dir=tmp_path / "d", nats={"url": s.url})  # type: ignore[arg-type]
        with pytest.raises(ConfigError) as caught:
            await connect(s.url, default)
        message = str(caught.value)
        assert "nats.max_payload is 1,048,576 bytes" in message and "65,536" in message
        matching = Settings(
            data_dir=tmp_path / "d",
            nats={"url": s.url, "max_payload": 64 * 1024},  # type: ignore[arg-type]
            limits={"max_bundle_bytes": 30_000},  # type: ignore[arg-type]
        )
        nc = await connect(s.url, matching)
        assert nc.max_payload == 64 * 1024
        await nc.close()


async def test_a_store_of_the_shared_layout_is_brought_to_intake_streams(
    nats_server: EmbeddedNats,
) -> None:
    """A store made before the intake streams: SUBMISSIONS took ``atlas.submit.*`` itself.
    What it holds stays; new submissions go through the member's intake and are copied."""
    nc = await nats.connect(nats_server.url)
    try:
        js = nc.jetstream()
        await js.add_stream(StreamConfig(name=SUBMISSIONS, subjects=["atlas.submit.*"]))
        await js.add_stream(StreamConfig(name=RECEIPTS, subjects=["atlas.receipt.*.*"]))
        await js.publish("atlas.submit.bank-a", b"before")
        await ensure_streams(js)
        await ensure_intake(js, ["bank-a"])
        ack = await js.publish("atlas.submit.bank-a", b"after")
        assert (ack.stream, ack.seq) == (submit_stream("bank-a"), 1)

        async def copied() -> bool:
            return (await js.stream_info(SUBMISSIONS)).state.messages == 2

        await until(copied, within=10, what="the copy into SUBMISSIONS")
        first, second = [await js.get_msg(SUBMISSIONS, seq) for seq in (1, 2)]
        assert (first.data, second.data) == (b"before", b"after")
        assert second.subject == "atlas.submit.bank-a"
        await ensure_streams(js)  # again: the sources it added are kept
        assert [s.name for s in (await js.stream_info(SUBMISSIONS)).config.sources or ()] == [
            submit_stream("bank-a")
        ]
    finally:
        await nc.close()


async def test_an_intake_dropped_from_the_sources_is_put_back_with_its_backlog(
    js: JetStreamContext,
) -> None:
    """Two processes writing SUBMISSIONS' sources at once can drop one just added (each
    writes what it read); what the dropped intake acknowledged meanwhile is copied once the
    source is back (``serve`` checks every INTAKE_CHECK_EVERY seconds)."""
    await ensure_intake(js, ["bank-a", "bank-b"])
    config = (await js.stream_info(SUBMISSIONS)).config
    config.sources = [s for s in config.sources or () if s.name != submit_stream("bank-b")]
    await js.update_stream(config)  # a concurrent writer's stale list
    await js.publish("atlas.submit.bank-b", b"acknowledged while not copied")
    assert await ensure_intake(js, ["bank-a", "bank-b"]) == 1

    async def copied() -> bool:
        return (await js.stream_info(SUBMISSIONS)).state.messages == 1

    await until(copied, within=10, what="the backlog copied")


async def test_intakes_are_copied_through_durable_consumers_of_their_own(
    js: JetStreamContext,
) -> None:
    await ensure_intake(js, ["bank-a", "lea-1"])
    for aggregate, make in ((SUBMISSIONS, submit_stream), (RECEIPTS, ack_stream)):
        sources = (await js.stream_info(aggregate)).config.sources or []
        intakes = [make("bank-a"), make("lea-1")]
        assert [(s.name, s.consumer) for s in sources] == [
            (name, StreamConsumerSource(name=COPY_CONSUMER, deliver_subject=copy_subject(name)))
            for name in intakes
        ]
        for name in intakes:
            consumer = (await js.consumer_info(name, COPY_CONSUMER)).config
            assert consumer.ack_policy == AckPolicy.FLOW_CONTROL and consumer.max_deliver == -1
    await js.publish("atlas.submit.bank-a", b"one")
    await until(lambda: _last_seq(js, SUBMISSIONS, 1), within=10, what="the copy")
    msg = await js.get_msg(SUBMISSIONS, 1)
    assert copy_origin(msg.headers) == (submit_stream("bank-a"), 1)


async def test_an_intake_whose_copies_the_target_dropped_resumes_where_its_copy_stopped(
    js: JetStreamContext,
) -> None:
    """Set up again with none of the intake's copies left in the target (dropped as its
    oldest; purged here), an ephemeral source resumed after the target's newest message of
    any intake and skipped what the intake held uncopied. The copy consumer resumes after
    what it copied."""
    await ensure_intake(js, ["bank-a", "bank-b"])
    await js.publish("atlas.submit.bank-a", b"a1")
    await until(lambda: _last_seq(js, SUBMISSIONS, 1), within=10, what="a1 copied")

    async def acknowledged() -> bool:  # by flow control, within a heartbeat: else sent again
        info = await js.consumer_info(submit_stream("bank-a"), COPY_CONSUMER)
        return info.ack_floor is not None and info.ack_floor.stream_seq == 1

    await until(acknowledged, within=10, what="a1's copy acknowledged")
    config = (await js.stream_info(SUBMISSIONS)).config
    config.sources = [s for s in config.sources or () if s.name != submit_stream("bank-a")]
    await js.update_stream(config)  # a concurrent writer's stale list: bank-a not copied
    await js.publish("atlas.submit.bank-a", b"a2")
    await asyncio.sleep(0.01)
    await js.publish("atlas.submit.bank-b", b"b1")  # newer than a2
    await until(lambda: _last_seq(js, SUBMISSIONS, 2), within=10, what="b1 copied")
    await js.purge_stream(SUBMISSIONS, subject="atlas.submit.bank-a")
    assert await ensure_intake(js, ["bank-a", "bank-b"]) == 1

    async def a2_copied() -> bool:
        return (await js.stream_info(SUBMISSIONS)).state.last_seq >= 3

    await until(a2_copied, within=10, what="a2 copied")
    await asyncio.sleep(0.5)  # nothing more comes
    copies = [await js.get_msg(SUBMISSIONS, 3)]
    assert [m.data for m in copies] == [b"a2"]
    assert (await js.stream_info(SUBMISSIONS)).state.last_seq == 3


async def test_an_intake_made_anew_by_hand_is_copied_from_its_start(
    js: JetStreamContext,
) -> None:
    """Its sequences start at 1 again: a copy consumer starting after the newest copy of
    the one before would skip as many of its messages."""
    await ensure_intake(js, ["bank-a"])
    for n in range(3):
        await js.publish("atlas.submit.bank-a", b"first %d" % n)
    await until(functools.partial(_last_seq, js, SUBMISSIONS, 3), within=10, what="copies")
    await js.delete_stream(submit_stream("bank-a"))
    await ensure_intake(js, ["bank-a"])
    await js.publish("atlas.submit.bank-a", b"second 0")
    await until(functools.partial(_last_seq, js, SUBMISSIONS, 4), within=10, what="its copy")
    assert (await js.get_msg(SUBMISSIONS, 4)).data == b"second 0"


async def test_a_store_sourced_through_ephemeral_consumers_is_moved_to_copy_consumers(
    js: JetStreamContext,
) -> None:
    """A store made before the copy consumers: its sources name none. ``ensure_streams``
    moves them over; what was copied is not copied again, what follows is copied once."""
    await ensure_intake(js, ["bank-a"])
    pairs = (
        (SUBMISSIONS, submit_stream("bank-a"), "atlas.submit.bank-a"),
        (RECEIPTS, ack_stream("bank-a"), "atlas.ack.bank-a"),
    )
    for aggregate, intake, subject in pairs:
        config = (await js.stream_info(aggregate)).config
        config.sources = [StreamSource(name=intake, filter_subject=subject)]
        await js.update_stream(config)
        await js.delete_consumer(intake, COPY_CONSUMER)
        for n in range(3):
            await js.publish(subject, b"before %d" % n)
        await until(functools.partial(_last_seq, js, aggregate, 3), within=10, what="copies")
    await ensure_streams(js)
    for aggregate, intake, subject in pairs:
        sources = (await js.stream_info(aggregate)).config.sources or []
        assert [(s.name, s.consumer and s.consumer.name) for s in sources] == [
            (intake, COPY_CONSUMER)
        ]
        await js.publish(subject, b"after")
        await until(functools.partial(_last_seq, js, aggregate, 4), within=10, what="copied")
        await asyncio.sleep(0.5)  # nothing copied twice
        assert (await js.stream_info(aggregate)).state.messages == 4
        assert copy_origin((await js.get_msg(aggregate, 4)).headers) == (intake, 4)


async def test_a_full_submissions_stream_drops_its_oldest_and_keeps_copying(
    js: JetStreamContext,
) -> None:
    """A copy SUBMISSIONS refused would stop the copying of its intake while the intake
    kept acknowledging: full, it drops its oldest instead (the router took those long ago)."""
    await ensure_streams(
        js, Streams(deliveries_max_bytes=64 * 1024**2, intake_max_bytes=48 * 1024**2)
    )
    await ensure_intake(js, ["bank-a", "bank-b"])
    published = 0
    with pytest.raises(nats.js.errors.APIError, match="maximum bytes"):
        for _ in range(200):  # SUBMISSIONS keeps 32 MiB here: bank-a's 48 MiB overflow it
            await js.publish("atlas.submit.bank-a", b"x" * (500 * 1024))
            published += 1
            if published == 80:  # copied as SUBMISSIONS drops (see the RECEIPTS test)
                await js.publish("atlas.submit.bank-b", b"in the flood")

    async def copied() -> bool:
        return (await js.stream_info(SUBMISSIONS)).state.last_seq == published + 1

    await until(copied, within=20, what="every acknowledged submission copied")
    state = (await js.stream_info(SUBMISSIONS)).state
    assert state.bytes <= 32 * 1024**2 and state.first_seq > 1
    assert await intake_lag(js) == {}


async def test_a_full_receipts_stream_drops_its_oldest_and_keeps_copying(
    js: JetStreamContext,
) -> None:
    """As SUBMISSIONS: an acknowledgement RECEIPTS refused would stop the copying of its
    intake while the intake kept acknowledging.

    lea-2's is sent in the middle of lea-1's flood: copied at the same moment into a full
    stream through ephemeral sources, nats-server 2.15.1 lost it in 8 runs of 60 (never
    stored, its source not behind); through the copy consumers in none of 90."""
    await ensure_streams(
        js, Streams(deliveries_max_bytes=64 * 1024**2, intake_max_bytes=48 * 1024**2)
    )
    await ensure_intake(js, ["lea-1", "lea-2"])
    for n in range(200):  # RECEIPTS keeps 8 MiB here: lea-1's 12 MB overflow it
        await js.publish("atlas.ack.lea-1", b"x" * (60 * 1024))
        if n == 150:
            await js.publish("atlas.ack.lea-2", b"in the flood")

    async def copied() -> bool:
        return (await js.stream_info(RECEIPTS)).state.last_seq == 201

    await until(copied, within=20, what="every acknowledgement copied")
    state = (await js.stream_info(RECEIPTS)).state
    assert state.bytes <= 8 * 1024**2 and state.first_seq > 1
    assert await intake_lag(js) == {}


async def test_a_copy_the_target_refuses_shows_as_intake_lag(js: JetStreamContext) -> None:
    """When a target refuses copies (here RECEIPTS set by hand to refuse new messages when
    full, as before) its intakes still take acknowledgements and the copy stops: nothing
    refuses loudly, so the lag is what says it (``serve`` logs it when it lasts)."""
    await ensure_streams(
        js, Streams(deliveries_max_bytes=64 * 1024**2, intake_max_bytes=48 * 1024**2)
    )
    await ensure_intake(js, ["lea-1", "lea-2"])
    config = (await js.stream_info(RECEIPTS)).config
    config.discard = DiscardPolicy.NEW
    await js.update_stream(config)
    assert await intake_lag(js) == {}
    for _ in range(200):  # RECEIPTS keeps 8 MiB here: lea-1's 12 MB overflow it
        await js.publish("atlas.ack.lea-1", b"x" * (60 * 1024))

    async def lagging() -> bool:
        return (await intake_lag(js)).get(ack_stream("lea-1"), 0) > 0

    await until(lagging, within=10, what="lea-1's intake to lag")
    assert ack_stream("lea-2") not in await intake_lag(js)
    metrics = BrokerMetrics()  # and /metrics says it
    await metrics.sample(js)
    lag = metrics.registry.get_sample_value(
        "atlas_intake_copy_lag", {"intake": ack_stream("lea-1")}
    )
    assert lag is not None and lag > 0
    assert (
        metrics.registry.get_sample_value("atlas_intake_copy_lag", {"intake": ack_stream("lea-2")})
        is None
    )
    await js.purge_stream(RECEIPTS)  # room again: the copy catches up, the series goes

    async def caught_up() -> bool:
        await metrics.sample(js)
        return (
            metrics.registry.get_sample_value(
                "atlas_intake_copy_lag", {"intake": ack_stream("lea-1")}
            )
            is None
        )

    await until(caught_up, within=20, what="the lag series to go")


@pytest.mark.timeout(60)
async def test_serve_warns_of_unrouted_submissions_near_the_front_and_of_one_dropped(
    js: JetStreamContext,
    make_community: Callable[..., Community],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    community = make_community()
    await ensure_streams(js)
    await store_directory(js, community.directory())
    await ensure_route_consumers(js, ["bank-a", "bank-b"], RouterSettings(), complete=True)
    for n in range(3):  # no router runs: all three wait
        await js.publish("atlas.submit.bank-a", b"x" * 1000 + bytes([n]))

    async def copied() -> bool:
        return (await js.stream_info(SUBMISSIONS)).state.last_seq == 3

    await until(copied, within=10, what="the submissions copied")
    config = (await js.stream_info(SUBMISSIONS)).config
    config.max_bytes = (await js.stream_info(SUBMISSIONS)).state.bytes + 100
    await js.update_stream(config)
    monkeypatch.setattr("broker._service.INTAKE_CHECK_EVERY", 0.05)
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(0))  # warnings too

    def event(name: str) -> dict[str, Any] | None:
        return next((e for e in logs if e["event"] == name), None)

    with capture_logs() as logs:
        async with DirectoryWatcher(js) as watcher:
            task = asyncio.create_task(_keep_intake(js, watcher))
            try:

                async def warned() -> bool:
                    return event("router.submissions_at_risk") is not None

                await until(warned, within=10, what="the warning")
                assert event("router.submission_dropped_unrouted") is None
                # Full: the next one makes SUBMISSIONS drop bank-a's oldest, unrouted.
                await js.publish("atlas.submit.bank-b", b"y" * 1000)

                async def dropped() -> bool:
                    return event("router.submission_dropped_unrouted") is not None

                await until(dropped, within=10, what="the error")
            finally:
                await stop_within([task], seconds=10)
    warning = event("router.submissions_at_risk")
    assert warning is not None and warning["orgs"] == ["bank-a"] and warning["oldest"] == 1
    error = event("router.submission_dropped_unrouted")
    assert error is not None and (error["org"], error["stream_seq"]) == ("bank-a", 1)


async def test_serve_warns_of_receipts_not_fetched_near_the_front_of_a_nearly_full_stream(
    js: JetStreamContext,
) -> None:
    """RECEIPTS drops its oldest when full: a recipient whose oldest unfetched receipt is
    among the next dropped is named; one whose receipts are all newer is not."""
    await ensure_streams(
        js, Streams(deliveries_max_bytes=64 * 1024**2, intake_max_bytes=48 * 1024**2)
    )
    for org in ("lea-1", "lea-2"):
        mine = receipt_consumer(org)
        await js.add_consumer(
            RECEIPTS,
            ConsumerConfig(
                durable_name=mine.name,
                ack_policy=AckPolicy.EXPLICIT,
                filter_subject=mine.filter_subject,
            ),
        )
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(0))  # warnings too
    with capture_logs() as logs:
        await js.publish("atlas.receipt.lea-1.pkg-0", b"x" * (60 * 1024))
        await _check_unfetched(js)  # 1 of ~140 receipts: far from full
        assert logs == []
        # RECEIPTS keeps 8 MiB here: 124 of 60 KiB fill it to 93%, lea-1's the oldest.
        for n in range(1, 120):
            await js.publish(f"atlas.receipt.lea-1.pkg-{n}", b"x" * (60 * 1024))
        for n in range(4):
            await js.publish(f"atlas.receipt.lea-2.pkg-{n}", b"x" * (60 * 1024))
        await _check_unfetched(js)
    assert [(e["event"], e["consumers"], e["oldest"]) for e in logs] == [
        ("receipts.unfetched_at_risk", ["rct-lea-1"], 1)
    ]


async def _last_seq(js: JetStreamContext, stream: str, seq: int) -> bool:
    return (await js.stream_info(stream)).state.last_seq == seq
