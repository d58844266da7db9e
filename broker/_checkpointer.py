"""The checkpointer: integrates LOG into the Merkle tree and publishes signed checkpoints.

It reads ``atlas.log.entries.>`` in stream order and publishes a checkpoint every
``max_entries`` entries, or after ``interval`` seconds when new entries exist.

Exactly one is active, however many broker processes run:

- a lease in the key-value bucket ``atlas_log_lease`` (``create`` to take it, revision-
  checked ``update`` to keep it, the bucket's max age expires an abandoned one);
- and, should two ever believe they hold it (a paused process), every checkpoint is
  published with ``Nats-Expected-Last-Subject-Sequence`` of the checkpoint it extends, so
  the server refuses the stale one and its writer resumes from the newer checkpoint.

After a restart it resumes from the last checkpoint's stored frontier and ``log_seq``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import nats.errors
import nats.js.errors
import orjson
import structlog
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, KeyValueConfig
from nats.js.kv import KeyValue

from adapters import check_cancelled
from keys import PrivateKey

from ._bus import LOG
from ._checkpoint import (
    CHECKPOINT_SUBJECT,
    ENTRIES_FILTER,
    CheckpointMessage,
    build_checkpoint,
    read_stream,
)
from ._log import WRONG_LAST_SEQUENCE, decode_chunk, timestamp
from ._merkle import Frontier
from ._note import NoteSigner, NoteVerifier
from .errors import ConfigError, LogIntegrityError

__all__ = ["LEASE_BUCKET", "Checkpointer", "CheckpointerStats", "run_checkpointer"]

log = structlog.get_logger()

LEASE_BUCKET = "atlas_log_lease"
LEASE_KEY = "checkpointer"
MAX_ENTRIES_LIMIT = 10_000
"""Keeps a checkpoint message (about 43 bytes of leaf hash per entry) well under 1 MB."""


_TRANSIENT = (nats.errors.Error, OSError, TimeoutError)


class _Superseded(Exception):
    """Another checkpointer published first, or our lease is gone: go back to standby."""


@dataclass
class CheckpointerStats:
    checkpoints: int = 0
    entries: int = 0
    size: int = 0
    superseded: int = 0
    latencies: deque[float] = field(default_factory=lambda: deque(maxlen=10_000))
    """Seconds from an entries message being stored to its signed checkpoint, for the
    last 10,000 (bounded: a broker runs for months)."""


@dataclass
class _State:
    frontier: Frontier
    log_seq: int
    subject_seq: int
    """Sequence of the last message on the checkpoint subject (expected by the next publish)."""
    checkpointed: Frontier
    pending: list[bytes] = field(default_factory=list)
    stored_at: list[datetime] = field(default_factory=list)


class _Lease:
    def __init__(self, kv: KeyValue, holder: str, ttl: float) -> None:
        self._kv, self._holder, self._ttl = kv, holder, ttl
        self._revision = 0
        self._renewed = 0.0

    def _value(self) -> bytes:
        return orjson.dumps({"holder": self._holder, "ttl": self._ttl})

    async def try_acquire(self) -> bool:
        try:
            self._revision = await self._kv.create(LEASE_KEY, self._value())
        except nats.js.errors.KeyWrongLastSequenceError:
            return False
        self._renewed = time.monotonic()
        return True

    async def keep(self) -> None:
        if time.monotonic() - self._renewed < self._ttl / 3:
            return
        try:
            self._revision = await self._kv.update(LEASE_KEY, self._value(), last=self._revision)
        except nats.js.errors.KeyWrongLastSequenceError as exc:
            raise _Superseded("lease lost") from exc
        self._renewed = time.monotonic()

    async def release(self) -> None:
        with contextlib.suppress(nats.errors.Error, OSError, TimeoutError):
            async with asyncio.timeout(2.0):
                await self._kv.delete(LEASE_KEY, last=self._revision)


class Checkpointer:
    def __init__(
        self,
        js: JetStreamContext,
        *,
        signing_key: PrivateKey,
        origin: str,
        max_entries: int = 1000,
        interval: float = 5.0,
        lease_ttl: float = 15.0,
        holder: str | None = None,
        batch: int = 64,
        clock: Callable[[], float] = time.monotonic,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        if not 1 <= max_entries <= MAX_ENTRIES_LIMIT:
            raise ConfigError(f"checkpoint max_entries must be 1..{MAX_ENTRIES_LIMIT}")
        if interval <= 0 or lease_ttl <= 0:
            raise ConfigError("checkpoint interval and lease_ttl must be positive")
        self._js = js
        self._signer = NoteSigner(origin, signing_key)
        self._origin = origin
        self._max_entries = max_entries
        self._interval = interval
        self._lease_ttl = lease_ttl
        self._holder = holder or f"checkpointer-{id(self):x}@{time.time_ns()}"
        self._batch = batch
        self._clock = clock
        self._now = now
        self.stats = CheckpointerStats()
        self.active = asyncio.Event()

    @property
    def verifier(self) -> NoteVerifier:
        return self._signer.verifier

    async def run(self, *, ready: asyncio.Event | None = None) -> None:
        """Stand by for the lease, then checkpoint until cancelled.

        Superseded, or a NATS error (a leader election, a lost connection): release the
        lease, back off, and resume from the newest checkpoint on the subject.
        """
        lease: _Lease | None = None
        backoff = 0.1
        while True:
            check_cancelled()
            try:
                if lease is None:
                    lease = _Lease(await self._lease_bucket(), self._holder, self._lease_ttl)
                    if ready is not None:
                        ready.set()
                if not await lease.try_acquire():
                    await asyncio.sleep(self._lease_ttl / 3)
                    continue
            except _TRANSIENT as exc:
                log.warning("checkpointer.lease_failed", error=str(exc) or type(exc).__name__)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            log.info("checkpointer.active", holder=self._holder, origin=self._origin)
            self.active.set()
            published = self.stats.checkpoints
            try:
                await self._lead(lease)
            except _Superseded as exc:
                self.stats.superseded += 1
                log.warning("checkpointer.superseded", reason=str(exc))
            except _TRANSIENT as exc:
                log.warning("checkpointer.failed", error=str(exc) or type(exc).__name__)
                backoff = 0.1 if self.stats.checkpoints > published else backoff
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
            finally:
                self.active.clear()
                await lease.release()

    async def _lease_bucket(self) -> KeyValue:
        config = KeyValueConfig(bucket=LEASE_BUCKET, history=1, ttl=self._lease_ttl)
        try:
            return await self._js.create_key_value(config)
        except nats.js.errors.BadRequestError:
            return await self._js.key_value(LEASE_BUCKET)

    async def resume(self) -> _State:
        """The state after the last good checkpoint on the subject (or the empty tree)."""
        try:
            last = await self._js.get_last_msg(LOG, CHECKPOINT_SUBJECT)
        except nats.js.errors.NotFoundError:
            return _State(Frontier(), 0, 0, Frontier())
        subject_seq = int(last.seq or 0)
        good = self._usable(last.data or b"", subject_seq)
        if good is None:
            log.warning("checkpointer.last_checkpoint_unusable", seq=subject_seq)
            async for msg in read_stream(self._js, CHECKPOINT_SUBJECT, stop_seq=subject_seq):
                good = self._usable(msg.data, msg.metadata.sequence.stream) or good
        if good is None:
            log.warning("checkpointer.recompute_from_zero")
            return _State(Frontier(), 0, subject_seq, Frontier())
        frontier = Frontier(good.size, good.frontier)
        log.info("checkpointer.resumed", size=good.size, log_seq=good.log_seq)
        return _State(frontier, good.log_seq, subject_seq, frontier.copy())

    def _usable(self, data: bytes, seq: int) -> CheckpointMessage | None:
        try:
            message = CheckpointMessage.decode(data, seq=seq)
            message.verify([self.verifier], origin=self._origin)
        except LogIntegrityError as exc:
            log.warning("checkpointer.checkpoint_skipped", seq=seq, error=str(exc))
            return None
        return message

    async def _lead(self, lease: _Lease) -> None:
        state = await self.resume()
        self.stats.size = state.frontier.size
        last_publish = self._clock()
        fetch_timeout = max(0.05, min(self._interval, self._lease_ttl / 3, 1.0))
        sub: JetStreamContext.PullSubscription | None = None
        expected = 1
        try:
            while True:
                check_cancelled()
                await lease.keep()
                if sub is None:
                    sub = await self._subscribe(state.log_seq + 1)
                    expected = 1
                try:
                    msgs = await sub.fetch(self._batch, timeout=fetch_timeout)
                except TimeoutError:  # nats-py raises the builtin one too (batched fetch)
                    msgs = []
                except (nats.errors.Error, OSError) as exc:
                    log.warning("checkpointer.fetch_failed", error=str(exc) or type(exc).__name__)
                    await self._drop(sub)
                    sub = None
                    await asyncio.sleep(fetch_timeout)
                    continue
                for msg in msgs:
                    meta = msg.metadata
                    if meta.sequence.consumer != expected:
                        log.warning("checkpointer.gap", at=meta.sequence.stream)
                        await self._drop(sub)
                        sub = None
                        break
                    expected += 1
                    entries = decode_chunk(msg.data)
                    for raw in entries:
                        state.pending.append(state.frontier.append_entry(raw))
                    self.stats.entries += len(entries)
                    state.stored_at.append(meta.timestamp)
                    state.log_seq = meta.sequence.stream
                    if len(state.pending) >= self._max_entries:
                        await self._publish(state)
                        last_publish = self._clock()
                if state.pending and self._clock() - last_publish >= self._interval:
                    await self._publish(state)
                    last_publish = self._clock()
        finally:
            await self._drop(sub)

    async def _subscribe(self, start_seq: int) -> JetStreamContext.PullSubscription:
        config = ConsumerConfig(
            ack_policy=AckPolicy.NONE,
            deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
            opt_start_seq=start_seq,
            filter_subject=ENTRIES_FILTER,
            inactive_threshold=max(30.0, self._lease_ttl),
            mem_storage=True,
        )
        return await self._js.pull_subscribe(ENTRIES_FILTER, stream=LOG, config=config)

    async def _drop(self, sub: JetStreamContext.PullSubscription | None) -> None:
        if sub is not None:
            with contextlib.suppress(nats.errors.Error, OSError):
                await sub.unsubscribe()

    async def _publish(self, state: _State) -> None:
        size = state.frontier.size
        message = build_checkpoint(
            self._signer,
            previous=state.checkpointed,
            current=state.frontier,
            leaves=state.pending,
            log_seq=state.log_seq,
            ts=timestamp(self._now()),
        )
        headers = {
            "Nats-Expected-Last-Subject-Sequence": str(state.subject_seq),
            **message.headers(),
        }
        try:
            ack = await self._js.publish(
                CHECKPOINT_SUBJECT, message.encode(), stream=LOG, headers=headers
            )
        except nats.js.errors.BadRequestError as exc:
            if exc.err_code != WRONG_LAST_SEQUENCE:
                raise
            raise _Superseded(f"checkpoint subject moved past seq {state.subject_seq}") from exc
        done = datetime.now(UTC)
        self.stats.latencies.extend((done - t).total_seconds() for t in state.stored_at)
        state.subject_seq = int(ack.seq)
        state.checkpointed = state.frontier.copy()
        state.pending.clear()
        state.stored_at.clear()
        self.stats.checkpoints += 1
        self.stats.size = size
        log.info("checkpoint.published", size=size, seq=ack.seq, log_seq=state.log_seq)


async def run_checkpointer(
    js: JetStreamContext,
    *,
    signing_key: PrivateKey,
    origin: str,
    max_entries: int = 1000,
    interval: float = 5.0,
    lease_ttl: float = 15.0,
    ready: asyncio.Event | None = None,
) -> None:
    """Run a checkpointer until cancelled; ``run_router`` starts one beside the workers."""
    checkpointer = Checkpointer(
        js,
        signing_key=signing_key,
        origin=origin,
        max_entries=max_entries,
        interval=interval,
        lease_ttl=lease_ttl,
    )
    await checkpointer.run(ready=ready)
