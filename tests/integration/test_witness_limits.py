"""The WITNESS stream under the generated NATS configuration, with two witnesses in accounts
of their own: what one witness can store is bounded, and it cannot make the other's
cosignatures vanish (found by a probe: a 264 MB flood in 2 s, and decoys stored under the
other witness's predictable message ids)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import nats
import nats.js.errors
import pytest
import structlog
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from nats.js.api import PubAck, StorageType, StreamConfig
from structlog.testing import capture_logs

from broker import EmbeddedNats
from broker._audit_jobs import verify_log
from broker._bus import ensure_streams
from broker._checkpoint import log_origin
from broker._checkpointer import Checkpointer
from broker._deploy import ORG_API_PREFIX, render_accounts, write_users
from broker._log import append_entries, timestamp
from broker._logcopy import LiveLog
from broker._witness import (
    WITNESS_COSIGNATURES_KEPT,
    WITNESS_FILTER,
    WITNESS_MAX_MSG_SIZE,
    WITNESS_STREAM,
    Witness,
    WitnessStats,
    cosignature_subject,
    ensure_witness_stream,
    run_witness,
)
from keys import PrivateKey

W1, W2 = "witness.example/w1", "witness.example/w2"
WITNESSES = {"witness-1": W1, "witness-2": W2}
ORIGIN = log_origin("atlas-broker")


@dataclass
class Rig:
    server: EmbeddedNats
    seeds: Path
    js: JetStreamContext
    """The broker's own account."""
    checkpointer: Checkpointer
    tmp_path: Path

    async def login(self, user: str) -> tuple[NATS, JetStreamContext]:
        nc = await nats.connect(
            self.server.url, nkeys_seed=str(self.seeds / f"{user}.nk"), max_reconnect_attempts=1
        )
        return nc, nc.jetstream(prefix=ORG_API_PREFIX)

    def witness(self, name: str, state: str = "w1.json") -> Witness:
        return Witness(
            name=name,
            signing_key=PrivateKey.generate("Ed25519"),
            log_keys=[self.checkpointer.verifier],
            state_path=self.tmp_path / state,
            origin=ORIGIN,
        )

    async def log_and_checkpoint(self, n: int) -> None:
        now = timestamp(datetime.now(UTC))
        size = self.checkpointer.stats.size
        entries = [{"type": "submission", "ts": now, "org": "bank-a", "n": i} for i in range(n)]
        await append_entries(self.js, f"atlas.log.entries.w{size}", entries)
        async with asyncio.timeout(15):
            while self.checkpointer.stats.size < size + n:  # noqa: ASYNC110
                await asyncio.sleep(0.05)

    async def stored(self, name: str) -> int:
        info = await self.js.stream_info(WITNESS_STREAM, subjects_filter=WITNESS_FILTER)
        return (info.state.subjects or {}).get(cosignature_subject(name), 0)


async def _make_rig(
    tmp_path: Path, make_community: Callable[..., Any], *, witness_stream: bool
) -> AsyncIterator[Rig]:
    directory = make_community().directory()
    seeds = tmp_path / "nkeys"
    users = write_users(directory, seeds, extra=WITNESSES)
    server = EmbeddedNats(
        tmp_path / "srv",
        publish_url=False,
        sync_always=False,  # tens of thousands of writes in a test; durability is not tested
        extra_config=render_accounts(directory, users, WITNESSES),
    )
    await server.start()
    broker = await nats.connect(server.url, nkeys_seed=str(seeds / "atlas-broker.nk"))
    js = broker.jetstream()
    await ensure_streams(js)
    if witness_stream:
        await ensure_witness_stream(js)
    checkpointer = Checkpointer(
        js, signing_key=PrivateKey.generate("Ed25519"), origin=ORIGIN, interval=0.2, lease_ttl=1.5
    )
    ready = asyncio.Event()
    task = asyncio.create_task(checkpointer.run(ready=ready))
    await ready.wait()
    try:
        yield Rig(server, seeds, js, checkpointer, tmp_path)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await broker.close()
        await server.stop()


@pytest.fixture
async def rig(tmp_path: Path, make_community: Callable[..., Any]) -> AsyncIterator[Rig]:
    """The generated accounts; the broker made the streams, WITNESS included."""
    async for made in _make_rig(tmp_path, make_community, witness_stream=True):
        yield made


@pytest.fixture
async def bare_rig(tmp_path: Path, make_community: Callable[..., Any]) -> AsyncIterator[Rig]:
    """The same, without WITNESS: the test makes it as an older broker did."""
    async for made in _make_rig(tmp_path, make_community, witness_stream=False):
        yield made


@pytest.fixture
def logs() -> Iterator[list[dict[str, Any]]]:
    """Every event down to info (the suite's default filter keeps errors only)."""
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(0))
    with capture_logs() as captured:
        yield captured


async def _cosign_until(js: JetStreamContext, witness: Witness) -> WitnessStats:
    async with asyncio.timeout(30):
        while not (stats := await run_witness(js, witness, once=True)).cosigned:  # noqa: ASYNC110
            await asyncio.sleep(0.1)
    return stats


class TestSize:
    async def test_write_is_refused_when_a_witness_publishes_more_than_a_cosignature(
        self, rig: Rig
    ) -> None:
        nc, wjs = await rig.login("witness-2")
        subject = cosignature_subject(W2)
        for size in (1_000_000, 100_000, WITNESS_MAX_MSG_SIZE + 1):
            with pytest.raises(nats.js.errors.APIError, match="message size exceeds maximum"):
                await wjs.publish(subject, b"x" * size, timeout=2)
        assert await rig.stored(W2) == 0
        await wjs.publish(subject, b"x" * 400, timeout=2)  # a cosignature's size is fine
        assert await rig.stored(W2) == 1
        await nc.close()

    async def test_cosignature_fits_with_room_when_a_witness_publishes_one(self, rig: Rig) -> None:
        await rig.log_and_checkpoint(10)
        nc, wjs = await rig.login("witness-1")
        await _cosign_until(wjs, rig.witness(W1))
        stored = await rig.js.get_last_msg(WITNESS_STREAM, cosignature_subject(W1))
        assert stored.data is not None and 300 < len(stored.data) < WITNESS_MAX_MSG_SIZE // 4
        await nc.close()


class TestCount:
    async def test_flood_keeps_only_its_own_latest_when_a_witness_writes_past_the_limit(
        self, rig: Rig
    ) -> None:
        await rig.log_and_checkpoint(10)
        nc1, wjs1 = await rig.login("witness-1")
        witness = rig.witness(W1)
        stats = await _cosign_until(wjs1, witness)
        # witness-2 floods its own subject with as many largest messages as it may write.
        nc2, wjs2 = await rig.login("witness-2")
        flood, batch = WITNESS_COSIGNATURES_KEPT + 500, 500
        junk = b"j" * (WITNESS_MAX_MSG_SIZE - 128)
        for _ in range(flood // batch):
            await asyncio.gather(
                *(wjs2.publish(cosignature_subject(W2), junk) for _ in range(batch))
            )

        assert await rig.stored(W2) == WITNESS_COSIGNATURES_KEPT
        state = (await rig.js.stream_info(WITNESS_STREAM)).state
        assert state.bytes < (WITNESS_COSIGNATURES_KEPT + 10) * (WITNESS_MAX_MSG_SIZE + 128)
        # witness-1's cosignature stays, and the auditor still counts it.
        assert stats.cosigned >= 1 and await rig.stored(W1) == stats.cosigned
        result = await verify_log(
            LiveLog(rig.js),
            log_keys=[rig.checkpointer.verifier],
            witness_keys=[witness.verifier],
        )
        assert result.ok, result.problems
        assert result.cosignatures == {W1: stats.cosigned}
        await nc1.close()
        await nc2.close()


class TestDecoys:
    async def test_cosignatures_are_stored_when_another_witness_claimed_their_ids(
        self, rig: Rig
    ) -> None:
        """witness-2 stores decoys on its own subject under witness-1's ids ("<name>/<LOG
        seq>", as the witness once sent them) and any other id it may guess."""
        # Even were ids remembered as long as they once were (the stream's window is short
        # now), the witness sends none for a decoy to match.
        config = (await rig.js.stream_info(WITNESS_STREAM)).config
        await rig.js.update_stream(replace(config, duplicate_window=600.0))
        nc2, wjs2 = await rig.login("witness-2")
        for seq in range(1, 200):
            for msg_id in (f"{W1}/{seq}", f"{W1}/{seq}/0"):
                await wjs2.publish(
                    cosignature_subject(W2), b'{"decoy":1}', headers={"Nats-Msg-Id": msg_id}
                )
        await rig.log_and_checkpoint(10)
        await rig.log_and_checkpoint(10)
        nc1, wjs1 = await rig.login("witness-1")
        witness = rig.witness(W1)
        cosigned = 0
        async with asyncio.timeout(30):
            while witness.state is None or witness.state.size < 20:
                cosigned += (await run_witness(wjs1, witness, once=True)).cosigned
                await asyncio.sleep(0.1)

        assert cosigned >= 1 and await rig.stored(W1) == cosigned
        assert witness.state.witness_seq > 0
        result = await verify_log(
            LiveLog(rig.js),
            log_keys=[rig.checkpointer.verifier],
            witness_keys=[witness.verifier],
        )
        assert result.ok, result.problems
        assert result.cosignatures.get(W1) == cosigned
        assert result.witnessed_size[W1] == 20
        await nc1.close()
        await nc2.close()

    async def test_run_reports_failure_when_the_server_answers_duplicate(
        self, rig: Rig, monkeypatch: pytest.MonkeyPatch, logs: list[dict[str, Any]]
    ) -> None:
        await rig.log_and_checkpoint(10)
        nc, wjs = await rig.login("witness-1")
        witness = rig.witness(W1)

        async def answers_duplicate(subject: str, payload: bytes = b"", **kw: Any) -> PubAck:
            return PubAck(stream=WITNESS_STREAM, seq=1, duplicate=True)  # nothing stored

        monkeypatch.setattr(wjs, "publish", answers_duplicate)
        async with asyncio.timeout(30):
            while (stats := await run_witness(wjs, witness, once=True)) == WitnessStats():  # noqa: ASYNC110
                await asyncio.sleep(0.1)
        assert stats.cosigned == 0 and stats.refused == 0 and stats.failed == 1
        assert witness.state is not None and witness.state.witness_seq == 0
        assert [e["seq"] for e in logs if e["event"] == "witness.publish_duplicate"] == [
            witness.state.checkpoint_seq
        ]

        monkeypatch.undo()  # the next pass publishes it again, and it is stored
        stats = await run_witness(wjs, witness, once=True)
        assert stats.cosigned == 1 and stats.failed == 0
        assert witness.state.witness_seq > 0
        last = await rig.js.get_last_msg(WITNESS_STREAM, cosignature_subject(W1))
        assert last.seq == witness.state.witness_seq and last.data and b'"note"' in last.data
        await nc.close()


class TestRestart:
    async def test_nothing_is_published_again_when_the_last_cosignature_was_stored(
        self, rig: Rig
    ) -> None:
        await rig.log_and_checkpoint(10)
        nc, wjs = await rig.login("witness-1")
        witness = rig.witness(W1)
        cosigned = (await _cosign_until(wjs, witness)).cosigned
        assert await rig.stored(W1) == cosigned
        restarted = Witness(
            name=W1,
            signing_key=PrivateKey.generate("Ed25519"),
            log_keys=[rig.checkpointer.verifier],
            state_path=rig.tmp_path / "w1.json",
            origin=ORIGIN,
        )
        assert restarted.state == witness.state
        assert await run_witness(wjs, restarted, once=True) == WitnessStats()
        assert await rig.stored(W1) == cosigned
        await nc.close()

    async def test_last_cosignature_is_published_once_when_its_storing_was_not_confirmed(
        self, rig: Rig
    ) -> None:
        await rig.log_and_checkpoint(10)
        nc, wjs = await rig.login("witness-1")
        witness = rig.witness(W1)
        cosigned = (await _cosign_until(wjs, witness)).cosigned
        assert witness.state is not None
        # A crash after saving the state and before the server's answer (or a state file
        # written by an older witness): no WITNESS sequence recorded.
        replace(witness.state, witness_seq=0).save(rig.tmp_path / "w1.json")
        restarted = rig.witness(W1)
        assert await run_witness(wjs, restarted, once=True) == WitnessStats(cosigned=1, seen=1)
        assert await rig.stored(W1) == cosigned + 1
        assert restarted.state is not None and restarted.state.witness_seq > 0
        assert await run_witness(wjs, restarted, once=True) == WitnessStats()
        assert await rig.stored(W1) == cosigned + 1
        await nc.close()


OLD_WITNESS = StreamConfig(
    name=WITNESS_STREAM,
    subjects=[WITNESS_FILTER],
    storage=StorageType.FILE,
    deny_delete=True,
    deny_purge=True,
    duplicate_window=600.0,
)
"""WITNESS as brokers made it before it had limits."""


class TestExistingStream:
    async def test_limits_are_applied_when_the_broker_finds_an_unlimited_stream(
        self, bare_rig: Rig, logs: list[dict[str, Any]]
    ) -> None:
        rig = bare_rig
        await rig.js.add_stream(OLD_WITNESS)
        nc, wjs = await rig.login("witness-2")
        for _ in range(30):
            await wjs.publish(cosignature_subject(W2), b"x" * 100_000)
        await ensure_witness_stream(wjs)  # the witness may not update it: it says so
        assert [e["event"] for e in logs if e["event"].startswith("witness.")] == [
            "witness.stream_unlimited"
        ]

        await ensure_witness_stream(rig.js)  # the broker starts

        config = (await rig.js.stream_info(WITNESS_STREAM)).config
        assert config.max_msg_size == WITNESS_MAX_MSG_SIZE
        assert config.max_msgs_per_subject == WITNESS_COSIGNATURES_KEPT
        assert config.duplicate_window == 1.0
        assert config.deny_delete and config.deny_purge
        oversized = [e for e in logs if e["event"] == "witness.stream_oversized"]
        assert len(oversized) == 1 and "--max-msgs-per-subject 1" in oversized[0]["hint"]
        with pytest.raises(nats.js.errors.APIError, match="message size exceeds maximum"):
            await wjs.publish(cosignature_subject(W2), b"x" * 100_000)
        await nc.close()

    async def test_broker_logs_an_error_and_goes_on_when_the_server_refuses_the_update(
        self, bare_rig: Rig, logs: list[dict[str, Any]]
    ) -> None:
        rig = bare_rig
        await rig.js.add_stream(replace(OLD_WITNESS, storage=StorageType.MEMORY))

        await ensure_witness_stream(rig.js)  # does not raise

        (error,) = [e for e in logs if e["event"] == "witness.stream_not_updated"]
        assert error["log_level"] == "error" and error["max_msg_size"] == -1
        assert "nats stream edit WITNESS" in error["hint"]
