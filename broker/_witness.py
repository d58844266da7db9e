"""``atlas-broker witness``: cosign checkpoints only when they extend the last cosigned one.

A witness is a separate process with its own Ed25519 key. It reads ``atlas.log.checkpoints``
in order and, for each checkpoint signed by the log, requires an RFC 9162 consistency
proof from the last checkpoint it cosigned: the one in the checkpoint message when that
message extends exactly that size, else one it computes from the log entries in between and
its stored frontier. Consistent: it adds a C2SP cosignature (v1, Ed25519, type 0x04),
saves its new state to disk (atomically, before publishing) and publishes the cosigned
note to the ``WITNESS`` stream. Inconsistent, rolled back or forked: it refuses, logs
``witness.refused`` and keeps its state.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import nats.errors
import nats.js.errors
import orjson
import structlog
from nats.js import JetStreamContext
from nats.js.api import RetentionPolicy, StorageType, StreamConfig

from adapters import check_cancelled
from keys import PrivateKey

from ._bus import ensure_stream
from ._checkpoint import CHECKPOINT_SUBJECT, ENTRIES_FILTER, CheckpointMessage, read_stream
from ._log import decode_chunk
from ._merkle import Frontier, consistency_proof_from_frontier, leaf_hash, verify_consistency
from ._note import Note, NoteSigner, NoteVerifier
from .errors import ConfigError, LogIntegrityError, WitnessRefused

__all__ = [
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


def cosignature_subject(name: str) -> str:
    return f"atlas.witness.{hashlib.sha256(name.encode()).hexdigest()[:16]}"


async def ensure_witness_stream(js: JetStreamContext, *, replicas: int = 1) -> None:
    """Make the WITNESS stream; a witness that may not (its own NATS account, under the
    generated configuration) only checks that the broker made it."""
    try:
        await _make_witness_stream(js, replicas)
    except (nats.errors.NoRespondersError, nats.js.errors.ServiceUnavailableError):
        try:
            await js.stream_info(WITNESS_STREAM)
        except nats.js.errors.NotFoundError as exc:
            raise ConfigError(
                "the WITNESS stream does not exist and this witness may not create it: "
                "start `atlas-broker serve` first (it makes it)"
            ) from exc


async def _make_witness_stream(js: JetStreamContext, replicas: int) -> None:
    config = StreamConfig(
        name=WITNESS_STREAM,
        subjects=[WITNESS_FILTER],
        storage=StorageType.FILE,
        retention=RetentionPolicy.LIMITS,
        deny_delete=True,
        deny_purge=True,
        num_replicas=replicas,
        duplicate_window=600.0,  # a restarted witness republishes its last cosignature
    )
    await ensure_stream(js, config)


@dataclass(frozen=True, slots=True)
class WitnessState:
    origin: str
    size: int
    root: bytes
    frontier: tuple[bytes, ...]
    log_seq: int
    checkpoint_seq: int

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
            )
            Frontier(state.size, state.frontier)
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, binascii.Error) as exc:
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
    record = {"v": 1, "witness": witness.verifier.name, "seq": seq, "note": cosigned}
    await js.publish(
        cosignature_subject(witness.verifier.name),
        orjson.dumps(record),
        stream=WITNESS_STREAM,
        headers={"Nats-Msg-Id": f"{witness.verifier.name}/{seq}"},
    )
    log.info("witness.cosigned", seq=seq, size=message.size)
    return True


async def run_witness(
    js: JetStreamContext, witness: Witness, *, once: bool = False, poll: float = 1.0
) -> WitnessStats:
    """Cosign every new checkpoint; with ``once``, stop when caught up."""
    await ensure_witness_stream(js)
    stats = WitnessStats()
    # Start at the last cosigned checkpoint: cosigning it again is allowed, and republishes a
    # cosignature whose publish failed before a restart (deduplicated by its message id).
    next_seq = witness.state.checkpoint_seq if witness.state is not None else 1
    while True:
        check_cancelled()
        try:
            async for msg in read_stream(js, CHECKPOINT_SUBJECT, start_seq=next_seq):
                seq = msg.metadata.sequence.stream
                republish = witness.state is not None and seq == witness.state.checkpoint_seq
                done = await _handle(js, witness, seq, msg.data)
                if not republish:
                    stats.seen += 1
                    stats.cosigned += done
                    stats.refused += not done
                next_seq = seq + 1
        except (nats.errors.Error, OSError) as exc:
            log.warning("witness.read_failed", error=str(exc) or type(exc).__name__)
        if once:
            return stats
        await asyncio.sleep(poll)
