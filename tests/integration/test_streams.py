"""Streams and buckets are created idempotently, and LOG refuses deletion and purging."""

from __future__ import annotations

import nats.js.errors
import pytest
from nats.js import JetStreamContext

from broker._bus import DELIVERIES, LOG, SUBMISSIONS, Streams, ensure_streams, log_subject


async def test_ensure_streams_twice_changes_nothing(js: JetStreamContext) -> None:
    before = {name: (await js.stream_info(name)).config for name in (SUBMISSIONS, DELIVERIES, LOG)}
    await ensure_streams(js)
    after = {name: (await js.stream_info(name)).config for name in (SUBMISSIONS, DELIVERIES, LOG)}
    assert before == after


async def test_changed_limits_update_the_existing_streams(js: JetStreamContext) -> None:
    await ensure_streams(js, Streams(max_msg_size=4096))
    assert (await js.stream_info(SUBMISSIONS)).config.max_msg_size == 4096


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
    await ensure_streams(js, Streams(max_msg_size=1024))
    with pytest.raises(nats.js.errors.APIError):
        await js.publish("atlas.submit.bank-a", b"x" * 2048)
    assert (await js.stream_info(SUBMISSIONS)).state.messages == 0
