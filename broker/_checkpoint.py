"""Signed checkpoints of the dissemination log, and the checkpointer that writes them.

A checkpoint message on ``atlas.log.checkpoints`` is a JSON wrapper around a C2SP signed
note (see :mod:`broker._note`). Only the note is signed; the rest lets an auditor or a
witness use it without recomputing anything, and every field is checked against the note:

=============  ==========================================================================
``note``       the signed checkpoint: origin, tree size, base64 root, log signature
``size``       tree size (= the note's); ``prev_size`` is the previous checkpoint's
``log_seq``    LOG stream sequence of the last entries message in the tree: the tree holds
               exactly the entries of the messages on ``atlas.log.entries.>`` up to it
``leaves``     base64 of the leaf hashes ``[prev_size, size)``: with the previous frontier
               they must give the signed root, which lets an auditor name the first
               altered entry rather than only a range
``frontier``   the O(log n) perfect-subtree roots at ``size``: a checkpointer (or witness)
               resumes from it after a restart, without recomputing from zero
``consistency``  RFC 9162 consistency proof from ``prev_size`` to ``size``
=============  ==========================================================================

The :class:`Checkpointer` (see :mod:`broker._checkpointer`) publishes them; only one is
active at a time, and each publish carries ``Nats-Expected-Last-Subject-Sequence`` so a
second writer's stale checkpoint is refused by the server.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import nats.errors
import nats.js.errors
import orjson
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from adapters import check_cancelled

from ._bus import CHECKPOINT_SUBJECT, LOG
from ._merkle import HASH_SIZE, Frontier, consistency_proof_from_frontier, verify_consistency
from ._note import Checkpoint, NoteSigner, NoteVerifier, OpenedCheckpoint, open_checkpoint
from .errors import CheckpointInvalid, ProofInvalid

__all__ = [
    "CHECKPOINT_SUBJECT",
    "ENTRIES_FILTER",
    "WRAPPER_VERSION",
    "CheckpointMessage",
    "VerifiedCheckpoint",
    "build_checkpoint",
    "log_origin",
    "read_stream",
]

ENTRIES_FILTER = "atlas.log.entries.>"
WRAPPER_VERSION = 1
TREE_SIZE_HEADER = "Atlas-Tree-Size"
LOG_SEQ_HEADER = "Atlas-Log-Seq"


def log_origin(broker_id: str) -> str:
    """The checkpoint origin (and log key name) of a broker: ``<broker id>/log``."""
    return f"{broker_id}/log"


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def _unb64(value: Any, what: str) -> bytes:
    if not isinstance(value, str):
        raise CheckpointInvalid(f"checkpoint wrapper: {what} is not a string")
    try:
        return base64.b64decode(value.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError) as exc:
        raise CheckpointInvalid(f"checkpoint wrapper: {what} is not base64") from exc


def _hashes(value: Any, what: str) -> tuple[bytes, ...]:
    if not isinstance(value, list):
        raise CheckpointInvalid(f"checkpoint wrapper: {what} is not a list")
    out = tuple(_unb64(item, what) for item in value)
    if any(len(item) != HASH_SIZE for item in out):
        raise CheckpointInvalid(f"checkpoint wrapper: {what} holds a value that is not a hash")
    return out


def _uint(data: dict[str, Any], key: str) -> int:
    value = data.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise CheckpointInvalid(f"checkpoint wrapper: {key} is not a non-negative integer")
    return value


@dataclass(frozen=True, slots=True)
class CheckpointMessage:
    note: str
    size: int
    prev_size: int
    log_seq: int
    leaves: bytes
    frontier: tuple[bytes, ...]
    consistency: tuple[bytes, ...]
    ts: str
    seq: int = 0
    """LOG stream sequence of this message (0 until stored)."""

    def encode(self) -> bytes:
        return orjson.dumps(
            {
                "v": WRAPPER_VERSION,
                "note": self.note,
                "size": self.size,
                "prev_size": self.prev_size,
                "log_seq": self.log_seq,
                "leaves": _b64(self.leaves),
                "frontier": [_b64(n) for n in self.frontier],
                "consistency": [_b64(n) for n in self.consistency],
                "ts": self.ts,
            }
        )

    def headers(self) -> dict[str, str]:
        return {TREE_SIZE_HEADER: str(self.size), LOG_SEQ_HEADER: str(self.log_seq)}

    def to_record(self) -> dict[str, Any]:
        """The export form: the wrapper plus its stream sequence."""
        return {"seq": self.seq, **orjson.loads(self.encode())}

    @classmethod
    def decode(cls, data: bytes | str, *, seq: int = 0) -> CheckpointMessage:
        """Parse a wrapper strictly (``CheckpointInvalid``); the note is not verified here."""
        try:
            doc = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise CheckpointInvalid(f"checkpoint message (seq {seq}) is not JSON") from exc
        if not isinstance(doc, dict) or doc.get("v") != WRAPPER_VERSION:
            raise CheckpointInvalid(f"checkpoint message (seq {seq}) is not a v1 wrapper")
        note, ts = doc.get("note"), doc.get("ts")
        if not isinstance(note, str) or not isinstance(ts, str):
            raise CheckpointInvalid(f"checkpoint message (seq {seq}) has no note or ts")
        message = cls(
            note=note,
            size=_uint(doc, "size"),
            prev_size=_uint(doc, "prev_size"),
            log_seq=_uint(doc, "log_seq"),
            leaves=_unb64(doc.get("leaves"), "leaves"),
            frontier=_hashes(doc.get("frontier"), "frontier"),
            consistency=_hashes(doc.get("consistency"), "consistency"),
            ts=ts,
            seq=seq,
        )
        if message.prev_size > message.size:
            raise CheckpointInvalid(f"checkpoint message (seq {seq}): prev_size > size")
        if len(message.leaves) != HASH_SIZE * (message.size - message.prev_size):
            raise CheckpointInvalid(
                f"checkpoint message (seq {seq}) carries {len(message.leaves) // HASH_SIZE} "
                f"leaf hashes for {message.size - message.prev_size} entries"
            )
        return message

    def leaf_hashes(self) -> list[bytes]:
        raw = self.leaves
        return [raw[i : i + HASH_SIZE] for i in range(0, len(raw), HASH_SIZE)]

    def verify(
        self,
        log_keys: Sequence[NoteVerifier],
        witness_keys: Sequence[NoteVerifier] = (),
        *,
        origin: str | None = None,
    ) -> VerifiedCheckpoint:
        """Check the note's signature and that the wrapper agrees with the signed note."""
        opened = open_checkpoint(self.note, log_keys, witness_keys, origin=origin)
        where = f"checkpoint seq {self.seq} (size {self.size})"
        if opened.checkpoint.size != self.size:
            raise CheckpointInvalid(f"{where}: the wrapper size differs from the signed size")
        try:
            frontier = Frontier(self.size, self.frontier)
        except ProofInvalid as exc:
            raise CheckpointInvalid(f"{where}: frontier: {exc}") from exc
        if frontier.root() != opened.checkpoint.root:
            raise CheckpointInvalid(f"{where}: the frontier does not give the signed root")
        return VerifiedCheckpoint(self, opened, frontier)


@dataclass(frozen=True, slots=True)
class VerifiedCheckpoint:
    message: CheckpointMessage
    opened: OpenedCheckpoint
    frontier: Frontier

    @property
    def size(self) -> int:
        return self.message.size

    @property
    def root(self) -> bytes:
        return self.opened.checkpoint.root

    def check_follows(self, previous: VerifiedCheckpoint) -> None:
        """Verify this checkpoint's consistency proof from ``previous`` (its prev_size)."""
        if self.message.prev_size != previous.size:
            raise ProofInvalid(
                f"checkpoint of size {self.size} proves consistency from size "
                f"{self.message.prev_size}, not {previous.size}"
            )
        verify_consistency(
            previous.size, self.size, previous.root, self.root, self.message.consistency
        )


def build_checkpoint(
    signer: NoteSigner,
    *,
    previous: Frontier,
    current: Frontier,
    leaves: Sequence[bytes],
    log_seq: int,
    ts: str,
) -> CheckpointMessage:
    """Sign ``current`` and wrap it with what auditors and witnesses need.

    ``leaves`` are the leaf hashes appended to ``previous`` to make ``current``.
    """
    if previous.size + len(leaves) != current.size:
        raise ProofInvalid(
            f"{len(leaves)} leaves do not take a tree of size {previous.size} to {current.size}"
        )
    note = Checkpoint(signer.name, current.size, current.root()).sign(signer)
    return CheckpointMessage(
        note=note.serialize(),
        size=current.size,
        prev_size=previous.size,
        log_seq=log_seq,
        leaves=b"".join(leaves),
        frontier=current.nodes,
        consistency=tuple(consistency_proof_from_frontier(previous, leaves)),
        ts=ts,
    )


async def read_stream(
    js: JetStreamContext,
    subject: str,
    *,
    start_seq: int = 1,
    stop_seq: int | None = None,
    stream: str = LOG,
    batch: int = 256,
) -> AsyncGenerator[Msg, None]:
    """Messages of ``stream`` on ``subject`` from ``start_seq`` (to ``stop_seq``), in order.

    An ephemeral pull consumer without acks; a gap in its consumer sequence (a message lost
    on the way) raises rather than skipping an entry. A reader that may not create
    consumers (an auditor under the generated NATS configuration, whose account is lent
    only stream info and message get) reads message by message instead.
    """
    info = await js.stream_info(stream)
    last = info.state.last_seq if stop_seq is None else min(stop_seq, info.state.last_seq)
    if not info.state.messages or start_seq > last:
        return
    config = ConsumerConfig(
        ack_policy=AckPolicy.NONE,
        deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
        opt_start_seq=max(1, start_seq),
        filter_subject=subject,
        inactive_threshold=30.0,
        mem_storage=True,
    )
    try:
        sub = await js.pull_subscribe(subject, stream=stream, config=config)
    except (
        nats.errors.NoRespondersError,
        nats.errors.TimeoutError,
        nats.js.errors.ServiceUnavailableError,  # nats-py's word for "no responders" here
    ):
        async for msg in _read_by_get(js, stream, subject, max(1, start_seq), last):
            yield msg
        return
    expected = 1
    try:
        while True:
            check_cancelled()
            try:
                msgs = await sub.fetch(batch, timeout=1.0)
            except TimeoutError:  # nats-py raises the builtin one too (batched fetch)
                return
            for msg in msgs:
                meta = msg.metadata
                if meta.sequence.consumer != expected:
                    raise nats.errors.Error(
                        f"{stream} read lost messages before stream seq {meta.sequence.stream}"
                    )
                expected += 1
                if meta.sequence.stream > last:
                    return
                yield msg
                if meta.num_pending == 0 or meta.sequence.stream == last:
                    return
    finally:
        await sub.unsubscribe()


async def _read_by_get(
    js: JetStreamContext, stream: str, subject: str, start: int, last: int
) -> AsyncIterator[Msg]:
    """``read_stream`` one stored message at a time (``STREAM.MSG.GET``, next by subject)."""
    seq, count = start, 0
    while seq <= last:
        check_cancelled()
        try:
            raw = await js.get_msg(stream, seq, subject=subject, next=True)
        except nats.js.errors.NotFoundError:
            return
        found = int(raw.seq or 0)
        if found < seq or found > last:
            return
        count += 1
        pair = Msg.Metadata.SequencePair(consumer=count, stream=found)
        metadata = Msg.Metadata(
            sequence=pair,
            num_pending=0,
            num_delivered=1,
            timestamp=raw.time or datetime.now(UTC),
            stream=stream,
            consumer="",
        )
        yield Msg(
            _client=js._nc,  # a Msg needs its client; this one is never acked
            subject=raw.subject or subject,
            data=raw.data or b"",
            headers=raw.headers,
            _metadata=metadata,
        )
        seq = found + 1
