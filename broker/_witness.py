"""``atlas-broker witness``: cosign checkpoints only when they extend the last cosigned one.

A witness is a separate process with its own Ed25519 key. It reads ``atlas.log.checkpoints``
in order and, for each checkpoint signed by the log, requires an RFC 9162 consistency
proof from the last checkpoint it cosigned: the one in the checkpoint message when that
message extends exactly that size, else one it computes from the log entries in between and
its stored frontier. Consistent: it adds a C2SP cosignature (v1, Ed25519, type 0x04),
saves its new state to disk (atomically, before publishing) and publishes the cosigned
note to the ``WITNESS`` stream. Inconsistent, rolled back or forked: it refuses, logs
``witness.refused`` and keeps its state.

Each witness writes one subject of ``WITNESS`` (``cosignature_subject``; the generated NATS
configuration lends it that subject only), and one witness cannot touch another's
cosignatures (both found by a probe):

- A message is at most ``WITNESS_MAX_MSG_SIZE`` bytes, and a subject keeps its latest
  ``WITNESS_COSIGNATURES_KEPT``: a new one drops that witness's own oldest, never another's.
  What a witness can store is bounded, and an honest one cosigns for ever. The latest
  cosignature is the one an audit needs: a witness cosigns only checkpoints consistent
  with the ones it cosigned before, so its latest vouches for those too.
- No message id is sent, and the stream remembers ids for one second only (which bounds
  the server's memory of them). Over a stream-wide window of ten minutes, one witness stored
  decoys under another's predictable ids, and the server then called that witness's
  cosignatures duplicates and stored nothing.
- A cosignature counts as published only when the server stored it (a ``PubAck`` that is
  not a duplicate); the state then records its ``WITNESS`` sequence, and a restart resumes
  after it instead of publishing it again. Anything else is logged, counted in
  ``WitnessStats.failed`` and published again on the next pass.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import nats.errors
import nats.js.errors
import orjson
import structlog
from nats.js import JetStreamContext
from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig

from adapters import check_cancelled
from keys import PrivateKey

from ._bus import ensure_stream
from ._checkpoint import CHECKPOINT_SUBJECT, ENTRIES_FILTER, CheckpointMessage, read_stream
from ._log import decode_chunk
from ._merkle import Frontier, consistency_proof_from_frontier, leaf_hash, verify_consistency
from ._note import Note, NoteSigner, NoteVerifier
from .errors import ConfigError, LogIntegrityError, WitnessRefused

__all__ = [
    "WITNESS_COSIGNATURES_KEPT",
    "WITNESS_MAX_MSG_SIZE",
    "WITNESS_STREAM",
    "Witness",
    "WitnessState",
    "WitnessStats",
    "cosignature_subject",
    "ensure_witness_stream",
    "run_witness",
]

log = structlog.get_logger()

WITNESS_STREAM = "WITNESS"
WITNESS_FILTER = "atlas.witness.>"
WITNESS_MAX_MSG_SIZE = 2048
"""Bytes of one WITNESS message, headers included. A cosignature record measured 369-374
bytes (witness ``witness.example/w1``, origin ``atlas-broker/log``, logs of 1 to 11,111
entries) plus 43 of header; each character of the witness name or origin adds two."""
WITNESS_COSIGNATURES_KEPT = 20_000
"""Per witness: more than a day of checkpoints at one per 5 s (17,280; under load the
checkpointer also cuts every 1,000 entries, and the window is shorter); about 10 MB of an
honest witness's records as stored (480 bytes each), at most 42 MB of a hostile one's."""

_NOT_OURS = nats.js.errors.ServiceUnavailableError
"""What a witness's account is answered when it asks for the stream itself."""
_DUPLICATE_WINDOW = 1.0  # nats-server's floor is 0.1 s; 0 would mean its default, 2 min
_HEADER_BYTES = 64  # "NATS/1.0", Nats-Expected-Stream: WITNESS (43 bytes)
_STORE_OVERHEAD = 128  # per stored message: the subject, sequence, time and checksum


def cosignature_subject(name: str) -> str:
    return f"atlas.witness.{hashlib.sha256(name.encode()).hexdigest()[:16]}"


def _witness_config(replicas: int) -> StreamConfig:
    return StreamConfig(
        name=WITNESS_STREAM,
        subjects=[WITNESS_FILTER],
        storage=StorageType.FILE,
        retention=RetentionPolicy.LIMITS,
        deny_delete=True,
        deny_purge=True,
        num_replicas=replicas,
        max_msg_size=WITNESS_MAX_MSG_SIZE,
        # Per subject, that is per witness: the oldest of its own goes; no stream-wide
        # limit, which one witness could fill to drop or refuse another's.
        max_msgs_per_subject=WITNESS_COSIGNATURES_KEPT,
        discard=DiscardPolicy.OLD,
        duplicate_window=_DUPLICATE_WINDOW,
    )


def _limited(config: StreamConfig) -> bool:
    size, kept = config.max_msg_size or -1, config.max_msgs_per_subject or -1
    return 0 < size <= WITNESS_MAX_MSG_SIZE and 0 < kept <= WITNESS_COSIGNATURES_KEPT


async def ensure_witness_stream(js: JetStreamContext, *, replicas: int | None = None) -> None:
    """Make the WITNESS stream or bring an existing one's limits up to date, and say so when
    nats-server will not. A witness that may not (its own NATS account, under the generated
    configuration) only checks that the broker made it, and warns when it is unlimited.

    ``replicas`` None keeps an existing stream's (1 for a new one): ``directory load`` does
    not know the cluster's, and must not scale an R3 stream down."""
    if replicas is None:
        try:
            replicas = (await js.stream_info(WITNESS_STREAM)).config.num_replicas or 1
        except (nats.js.errors.NotFoundError, nats.errors.NoRespondersError, _NOT_OURS):
            replicas = 1  # a new stream, or one this account may not read (below)
    try:
        await ensure_stream(js, _witness_config(replicas))
    except (nats.errors.NoRespondersError, nats.js.errors.ServiceUnavailableError):
        try:
            info = await js.stream_info(WITNESS_STREAM)
        except nats.js.errors.NotFoundError as exc:
            raise ConfigError(
                "the WITNESS stream does not exist and this witness may not create it: "
                "start `atlas-broker serve` first (it makes it)"
            ) from exc
        if not _limited(info.config):
            log.warning(
                "witness.stream_unlimited",
                max_msg_size=info.config.max_msg_size,
                max_msgs_per_subject=info.config.max_msgs_per_subject,
                hint="the broker has not limited WITNESS yet: another witness could fill the "
                "store; restart the broker with this version (it updates the stream)",
            )
        return
    except nats.js.errors.APIError as exc:
        current = await _current_config(js)
        if current is None:
            raise  # not made at all: nothing to go on with
        # It exists, in a form nats-server will not turn into this one (another storage,
        # say). Cosigning still works, only unlimited: do not stop the broker for it.
        log.error(
            "witness.stream_not_updated",
            error=exc.description or str(exc),
            max_msg_size=current.max_msg_size,
            max_msgs_per_subject=current.max_msgs_per_subject,
            hint=f"nats-server refused to give WITNESS its limits ({WITNESS_MAX_MSG_SIZE} "
            f"bytes a message, {WITNESS_COSIGNATURES_KEPT} per witness): a witness can fill "
            "the store. Set them by hand (nats stream edit WITNESS --max-msg-size "
            f"{WITNESS_MAX_MSG_SIZE} --max-msgs-per-subject {WITNESS_COSIGNATURES_KEPT})",
        )
        return
    await _check_stored(js)


async def _current_config(js: JetStreamContext) -> StreamConfig | None:
    try:
        return (await js.stream_info(WITNESS_STREAM)).config
    except nats.js.errors.NotFoundError:
        return None


async def _check_stored(js: JetStreamContext) -> None:
    """Limits do not shrink what was stored before them: say when WITNESS holds messages
    bigger than a cosignature can be (a witness wrote them while the stream had no limits)."""
    state = (await js.stream_info(WITNESS_STREAM)).state
    if state.bytes > state.messages * (WITNESS_MAX_MSG_SIZE + _STORE_OVERHEAD):
        log.warning(
            "witness.stream_oversized",
            bytes=state.bytes,
            messages=state.messages,
            hint="WITNESS holds messages written before its limits, bigger than any "
            "cosignature; they stay until their witness writes "
            f"{WITNESS_COSIGNATURES_KEPT} newer ones. To free the space now, keep only each "
            "witness's latest cosignature: nats stream edit WITNESS --max-msgs-per-subject 1, "
            "then restart the broker (it restores the limit)",
        )


@dataclass(frozen=True, slots=True)
class WitnessState:
    origin: str
    size: int
    root: bytes
    frontier: tuple[bytes, ...]
    log_seq: int
    checkpoint_seq: int
    witness_seq: int = 0
    """The WITNESS sequence of this checkpoint's cosignature; 0 until the server stored it."""

    def to_json(self) -> bytes:
        b64 = base64.b64encode
        return orjson.dumps(
            {
                "origin": self.origin,
                "size": self.size,
                "root": b64(self.root).decode(),
                "frontier": [b64(n).decode() for n in self.frontier],
                "log_seq": self.log_seq,
                "checkpoint_seq": self.checkpoint_seq,
                "witness_seq": self.witness_seq,
            },
            option=orjson.OPT_INDENT_2,
        )

    @classmethod
    def load(cls, path: Path) -> WitnessState | None:
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise LogIntegrityError(f"witness state {path}: {exc.strerror}") from exc
        try:
            doc = orjson.loads(data)
            state = cls(
                origin=str(doc["origin"]),
                size=int(doc["size"]),
                root=base64.b64decode(doc["root"], validate=True),
                frontier=tuple(base64.b64decode(n, validate=True) for n in doc["frontier"]),
                log_seq=int(doc["log_seq"]),
                checkpoint_seq=int(doc["checkpoint_seq"]),
                witness_seq=int(doc.get("witness_seq", 0)),  # not in older state files
            )
            Frontier(state.size, state.frontier)
        except (
            orjson.JSONDecodeError,
            AttributeError,
            KeyError,
            TypeError,
            ValueError,
            binascii.Error,
        ) as exc:
            raise LogIntegrityError(f"witness state {path} is damaged: {exc}") from exc
        if Frontier(state.size, state.frontier).root() != state.root:
            raise LogIntegrityError(f"witness state {path}: frontier and root disagree")
        return state

    def save(self, path: Path) -> None:
        """Write atomically: a crash leaves the old state or the new, never half."""
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(self.to_json())
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)


@dataclass
class WitnessStats:
    cosigned: int = 0
    refused: int = 0
    seen: int = 0
    failed: int = 0
    """Cosignatures the server did not store (each logged); published again on the next pass."""


class Witness:
    def __init__(
        self,
        *,
        name: str,
        signing_key: PrivateKey,
        log_keys: Sequence[NoteVerifier],
        state_path: Path,
        origin: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._signer = NoteSigner(name, signing_key, cosigner=True)
        self._log_keys = log_keys
        self._origin = origin
        self._path = state_path
        self._clock = clock
        self.state = WitnessState.load(state_path)

    @property
    def verifier(self) -> NoteVerifier:
        return self._signer.verifier

    def cosign(self, message: CheckpointMessage, *, proof: Sequence[bytes] | None = None) -> str:
        """Cosign ``message`` or raise :class:`WitnessRefused`; the state is saved first."""
        try:
            verified = message.verify(self._log_keys, origin=self._origin)
        except LogIntegrityError as exc:
            raise WitnessRefused(f"checkpoint seq {message.seq}: {exc}") from exc
        checkpoint = verified.opened.checkpoint
        state = self.state
        if state is not None:
            where = f"checkpoint seq {message.seq} of size {checkpoint.size}"
            if checkpoint.origin != state.origin:
                raise WitnessRefused(f"{where} is for log {checkpoint.origin}, not {state.origin}")
            if checkpoint.size < state.size:
                raise WitnessRefused(f"{where} is older than the cosigned size {state.size}")
            if proof is None:
                proof = message.consistency if message.prev_size == state.size else None
            if proof is None and checkpoint.size != state.size:
                raise WitnessRefused(f"{where}: no consistency proof from size {state.size}")
            try:
                verify_consistency(
                    state.size, checkpoint.size, state.root, checkpoint.root, proof or []
                )
            except LogIntegrityError as exc:
                raise WitnessRefused(
                    f"{where} is not consistent with the cosigned size {state.size}: {exc}"
                ) from exc
        text = verified.opened.note.text.encode()
        signature = self._signer.sign(text, timestamp=int(self._clock()))
        cosigned = Note.parse(message.note).with_signature(signature).serialize()
        self.state = WitnessState(
            origin=checkpoint.origin,
            size=checkpoint.size,
            root=checkpoint.root,
            frontier=message.frontier,
            log_seq=message.log_seq,
            checkpoint_seq=message.seq,
        )
        self.state.save(self._path)
        return cosigned

    def mark_stored(self, witness_seq: int) -> None:
        """Record that WITNESS holds the last cosignature, at ``witness_seq``: a restart then
        resumes after its checkpoint instead of publishing it again."""
        if self.state is None:
            raise LogIntegrityError("no cosigned checkpoint to mark as stored")
        self.state = replace(self.state, witness_seq=witness_seq)
        self.state.save(self._path)


class _NotStored(Exception):
    """The server did not store a cosignature (logged): publish it again on the next pass."""


async def _proof_from_entries(
    js: JetStreamContext, state: WitnessState, message: CheckpointMessage
) -> list[bytes]:
    """The consistency proof from the cosigned state, computed from the entries between."""
    leaves: list[bytes] = []
    async for msg in read_stream(
        js, ENTRIES_FILTER, start_seq=state.log_seq + 1, stop_seq=message.log_seq
    ):
        leaves.extend(leaf_hash(raw) for raw in decode_chunk(msg.data))
    if state.size + len(leaves) != message.size:
        raise WitnessRefused(
            f"checkpoint seq {message.seq} claims size {message.size} but the log holds "
            f"{state.size + len(leaves)} entries up to seq {message.log_seq}"
        )
    return consistency_proof_from_frontier(Frontier(state.size, state.frontier), leaves)


async def _handle(js: JetStreamContext, witness: Witness, seq: int, data: bytes) -> bool:
    """Cosign and store (True) or refuse (False) the checkpoint at LOG ``seq``; raises
    :class:`_NotStored` when its cosignature was made but not stored."""
    try:
        message = CheckpointMessage.decode(data, seq=seq)
        state = witness.state
        proof = None
        if state is not None and message.size > state.size and message.prev_size != state.size:
            proof = await _proof_from_entries(js, state, message)
        cosigned = witness.cosign(message, proof=proof)
    except LogIntegrityError as exc:
        log.error("witness.refused", seq=seq, reason=str(exc))
        return False
    name = witness.verifier.name
    record = orjson.dumps({"v": 1, "witness": name, "seq": seq, "note": cosigned})
    if len(record) + _HEADER_BYTES > WITNESS_MAX_MSG_SIZE:
        raise ConfigError(
            f"the cosignature of checkpoint seq {seq} is {len(record)} bytes, more than the "
            f"{WITNESS_MAX_MSG_SIZE - _HEADER_BYTES} a WITNESS message may hold: the witness "
            f"name ({len(name)} characters) or the log origin is too long"
        )
    witness.mark_stored(await _publish(js, name, seq, record))
    log.info("witness.cosigned", seq=seq, size=message.size)
    return True


async def _publish(js: JetStreamContext, name: str, seq: int, record: bytes) -> int:
    """Store one cosignature record; its WITNESS sequence, or :class:`_NotStored`."""
    try:
        # No message id: the stream's dedup is stream-wide, and another witness could
        # claim the id first (a restart that publishes again stores one more copy at most).
        ack = await js.publish(cosignature_subject(name), record, stream=WITNESS_STREAM)
    except nats.js.errors.APIError as exc:
        log.error("witness.publish_refused", seq=seq, error=exc.description or str(exc))
        raise _NotStored(f"checkpoint seq {seq}: refused") from exc
    except (nats.errors.Error, OSError) as exc:  # no answer: stored or not, publish again
        log.warning("witness.publish_failed", seq=seq, error=str(exc) or type(exc).__name__)
        raise _NotStored(f"checkpoint seq {seq}: no answer") from exc
    if ack.duplicate:
        # Sent without an id, it has nothing to duplicate: whatever the server matched it
        # with, this cosignature is not stored.
        log.error("witness.publish_duplicate", seq=seq, stream_seq=ack.seq)
        raise _NotStored(f"checkpoint seq {seq}: the server called it a duplicate")
    return ack.seq


async def run_witness(
    js: JetStreamContext, witness: Witness, *, once: bool = False, poll: float = 1.0
) -> WitnessStats:
    """Cosign every new checkpoint; with ``once``, stop when caught up or when a cosignature
    could not be stored (``failed``)."""
    await ensure_witness_stream(js)
    stats = WitnessStats()
    state = witness.state
    # Resume after the last cosigned checkpoint, or at it when the server's storing its
    # cosignature was never confirmed (a crash in between): cosigning it again is allowed.
    next_seq = 1 if state is None else state.checkpoint_seq + (1 if state.witness_seq else 0)
    counted = next_seq - 1
    while True:
        check_cancelled()
        try:
            async for msg in read_stream(js, CHECKPOINT_SUBJECT, start_seq=next_seq):
                seq = msg.metadata.sequence.stream
                done = await _handle(js, witness, seq, msg.data)
                if seq > counted:  # not yet counted: a failed publish is, once stored
                    counted = seq
                    stats.seen += 1
                    stats.cosigned += done
                    stats.refused += not done
                next_seq = seq + 1
        except _NotStored:
            stats.failed += 1  # logged; next_seq stays at its checkpoint
        except (nats.errors.Error, OSError) as exc:
            log.warning("witness.read_failed", error=str(exc) or type(exc).__name__)
        if once:
            return stats
        await asyncio.sleep(poll)
