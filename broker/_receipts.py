"""Receipts out, acknowledgements in: proof of delivery and proof of receipt.

- :class:`ReceiptPublisher` follows the signed checkpoints; for every delivery entry a new
  checkpoint covers, it publishes the recipient's receipt (index, entry, inclusion proof,
  checkpoint) on ``atlas.receipt.<recipient>.<package id>``, once per subject. It works
  from the checkpoint messages and LOG alone, so any broker process can run it and a
  restart resumes where its durable consumer stopped.
- The receive bridge verifies a receipt against the package it opened, keeps it beside the
  bundle, and answers with an acknowledgement signed by its own key on ``atlas.ack.<org>``.
- :class:`AckRecorder` verifies each acknowledgement against the directory and against the
  receipt the broker published for that package, and writes one ``receipt`` entry per
  recipient and package to the log: proof, in the log itself, that the recipient got it.
  Anything else on ``atlas.ack.<org>`` is a refused acknowledgement: at most one entry per
  organisation every ``AckRecorder.REFUSED_EVERY`` seconds and broker process.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import nats.errors
import nats.js.errors
import orjson
import structlog
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from adapters import BridgeError, check_cancelled, durable_pull
from keys import PackageError, jws_verify

from ._bus import LOG, RECEIPTS, log_subject, receipt_subject
from ._checkpoint import CHECKPOINT_SUBJECT, ENTRIES_FILTER, CheckpointMessage, read_stream
from ._directory_store import DirectoryWatcher, ResolvedDirectory
from ._log import EXPECT_NEW_SUBJECT, WRONG_LAST_SEQUENCE, append_entries, decode_chunk, timestamp
from ._merkle import Frontier
from ._note import Checkpoint, Note, NoteVerifier
from ._receipt import Receipt, receipts_for, verify_receipt
from ._throttle import Throttle
from .errors import LogIntegrityError

__all__ = ["ACKS_CONSUMER", "ACK_TYP", "AckRecorder", "ReceiptPublisher", "receipt_checker"]

log = structlog.get_logger()

ACK_TYP = "atlas-ack+jws"
ACKS_CONSUMER = "acks"
"""The recorder's durable consumer of acknowledgements on RECEIPTS."""
_TRANSIENT = (nats.errors.Error, OSError, TimeoutError)


async def _follow(
    js: JetStreamContext, stream: str, name: str, subject: str, handle: Callable[[Msg], Any]
) -> None:
    """A durable fetch loop: idle on timeouts, back off on errors, nak on transient faults."""
    sub = await durable_pull(js, stream, name, subject)
    try:
        while True:
            check_cancelled()
            try:
                msgs = await sub.fetch(1, timeout=1.0)
            except TimeoutError:  # nats-py raises the builtin one too (batched fetch)
                continue
            except _TRANSIENT as exc:
                log.warning("receipts.fetch_failed", consumer=name, error=str(exc))
                await asyncio.sleep(1.0)
                continue
            for msg in msgs:
                try:
                    await handle(msg)
                    await msg.ack_sync()
                except _TRANSIENT as exc:
                    log.warning("receipts.retry", consumer=name, error=str(exc))
                    with contextlib.suppress(nats.errors.Error):
                        await msg.nak(delay=2)
    finally:
        with contextlib.suppress(nats.errors.Error, OSError):
            await sub.unsubscribe()


class ReceiptPublisher:
    """Publishes a receipt for every delivery a new checkpoint covers."""

    KEPT = 64
    """Recent checkpoints kept by tree size: a checkpoint's receipts need the frontier
    and LOG position of the one before it."""

    def __init__(self, js: JetStreamContext) -> None:
        self._js = js
        self._previous: dict[int, tuple[Frontier, int, int]] = {}
        """Tree size -> (frontier, LOG position of its last entry, its message's sequence)."""
        self.published = 0
        self.scans = 0
        """Times the checkpoint before one was not kept and LOG's were read to find it."""
        self.scanned = 0
        """Checkpoint messages those reads went through."""

    async def run(self) -> None:
        await _follow(self._js, LOG, "receipts", CHECKPOINT_SUBJECT, self.handle)

    def _keep(self, cp: CheckpointMessage) -> None:
        self._previous[cp.size] = (Frontier(cp.size, cp.frontier), cp.log_seq, cp.seq)
        while len(self._previous) > self.KEPT:  # the oldest added first
            del self._previous[next(iter(self._previous))]

    async def _before(self, cp: CheckpointMessage) -> tuple[Frontier, int] | None:
        if cp.prev_size == 0:
            return Frontier(), 0
        if cp.prev_size not in self._previous:
            await self._scan_for(cp)
        kept = self._previous.get(cp.prev_size)
        return None if kept is None else (kept[0], kept[1])

    async def _scan_for(self, cp: CheckpointMessage) -> None:
        """Read the checkpoints before ``cp`` until its predecessor, from just after the
        latest one kept that came before it (several processes share the consumer, so each
        handles some checkpoints only: its predecessor is usually a few messages back);
        after a restart, from the start of LOG."""
        self.scans += 1
        start = max((seq for _, _, seq in self._previous.values() if seq < cp.seq), default=0)
        reader = read_stream(self._js, CHECKPOINT_SUBJECT, start_seq=start + 1, stop_seq=cp.seq - 1)
        async with contextlib.aclosing(reader) as msgs:  # closed when found, not left open
            async for msg in msgs:
                self.scanned += 1
                try:
                    earlier = CheckpointMessage.decode(msg.data, seq=msg.metadata.sequence.stream)
                except LogIntegrityError:
                    continue
                self._keep(earlier)
                if earlier.size == cp.prev_size:
                    return

    async def handle(self, msg: Msg) -> None:
        try:
            cp = CheckpointMessage.decode(msg.data, seq=msg.metadata.sequence.stream)
        except LogIntegrityError as exc:
            log.error("receipts.bad_checkpoint", seq=msg.metadata.sequence.stream, error=str(exc))
            return
        before = await self._before(cp)
        if before is None:
            log.error("receipts.no_previous_checkpoint", size=cp.prev_size)
            return
        # Kept before its receipts go out: when publishing them fails and this checkpoint
        # comes back later, the ones after it meanwhile find it here, rather than each
        # reading every checkpoint in LOG (which the soak measured growing a broker's CPU
        # per submission by half while RECEIPTS refused receipts).
        self._keep(cp)
        frontier, log_seq = before
        entries: list[bytes] = []
        async for chunk in read_stream(
            self._js, ENTRIES_FILTER, start_seq=log_seq + 1, stop_seq=cp.log_seq
        ):
            entries.extend(decode_chunk(chunk.data))
        if len(entries) != cp.size - cp.prev_size:
            log.error(
                "receipts.range_mismatch", expected=cp.size - cp.prev_size, found=len(entries)
            )
            return
        for rcpt, pkg, receipt in receipts_for(cp.note, frontier, entries):
            try:
                await self._js.publish(
                    receipt_subject(rcpt, pkg), receipt.encode(), headers=dict(EXPECT_NEW_SUBJECT)
                )
                self.published += 1
            except nats.js.errors.BadRequestError as exc:
                if exc.err_code != WRONG_LAST_SEQUENCE:
                    raise
        log.info("receipts.published", size=cp.size)


class AckRecorder:
    """Turns recipients' signed acknowledgements into ``receipt`` log entries.

    An acknowledgement is recorded only for a package delivered to the organisation that
    signed it: the receipt the broker published for it on ``atlas.receipt.<org>.<pkg>``
    must prove, under a checkpoint signed by a live broker key, a ``delivery`` entry with
    that ``pkg``, that recipient and that ``jwe_sha256``, at the acknowledged ``index`` of a
    tree of the acknowledged ``size``. One entry per (organisation, package): its LOG
    subject is named by both, so acknowledging again adds nothing.
    """

    REFUSED_EVERY = 60.0
    """Seconds between two refused-ack entries of one organisation; those in between are
    counted into the next entry's ``suppressed`` (anything published on an organisation's
    ack subject would otherwise grow the log without bound). Per broker process."""

    def __init__(
        self,
        js: JetStreamContext,
        directory: DirectoryWatcher,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._js = js
        self._directory = directory
        self.recorded = 0
        self.refusals = Throttle(self.REFUSED_EVERY, clock=clock)

    async def run(self) -> None:
        await _follow(self._js, RECEIPTS, ACKS_CONSUMER, "atlas.ack.*", self.handle)

    async def handle(self, msg: Msg) -> None:
        org = msg.subject.rsplit(".", 1)[-1]
        resolved = self._directory.current
        if org not in resolved.orgs:
            # Not an organisation: nobody whose receipt could be logged.
            log.warning("receipt.ack_unknown_org", subject=msg.subject[:120])
            return
        now = int(_now().timestamp())
        digest = hashlib.sha256(msg.data).hexdigest()
        try:
            header, payload = jws_verify(msg.data, resolved.orgs[org].signing(now))
            if header.get("typ") != ACK_TYP or header.get("org") != org:
                raise PackageError(f"not an acknowledgement by {org}")
            ack = _Ack.parse(orjson.loads(payload))
        except (
            PackageError,
            orjson.JSONDecodeError,
            KeyError,
            TypeError,
            ValueError,
        ) as exc:
            await self._refuse(org, digest, str(exc))
            return
        undelivered = await self._undelivered(ack, org, resolved, now)
        if undelivered is not None:
            await self._refuse(org, digest, undelivered)
            return
        entry = {
            "type": "receipt",
            "ts": timestamp(_now()),
            "rcpt": org,
            "pkg": ack.pkg,
            "index": ack.index,
            "size": ack.size,
            "ack_sha256": digest,
        }
        if await append_entries(self._js, log_subject("a" + _receipt_key(org, ack.pkg)), [entry]):
            self.recorded += 1
        else:
            log.info("receipt.ack_repeated", org=org, pkg=ack.pkg)

    async def _undelivered(
        self, ack: _Ack, org: str, resolved: ResolvedDirectory, now: int
    ) -> str | None:
        """Why the acknowledged package is not known to be delivered to ``org`` at that
        index and tree size, or None when the broker's own receipt proves it."""
        if not _PKG_RE.match(ack.pkg):
            return "acknowledgement 'pkg' is not a package id"
        try:
            stored = await self._js.get_last_msg(RECEIPTS, receipt_subject(org, ack.pkg))
        except nats.js.errors.NotFoundError:
            return (
                f"no receipt was published to {org} for package {ack.pkg} (or it was "
                "dropped as one of RECEIPTS' oldest)"
            )
        try:
            receipt = Receipt.decode(stored.data or b"")
            checkpoint = Checkpoint.parse(Note.parse(receipt.checkpoint).text)
            log_keys = [
                NoteVerifier.from_public_key(checkpoint.origin, key)
                for key, revoked_at in resolved.broker_keyring.values()
                if key.kind == "Ed25519" and (revoked_at is None or revoked_at > now)
            ]
            verify_receipt(receipt, log_keys, jti=ack.pkg, aud=org, jwe_sha256=ack.jwe_sha256)
        except LogIntegrityError as exc:
            return f"the receipt of package {ack.pkg} does not prove its delivery: {exc}"
        if (receipt.index, checkpoint.size) != (ack.index, ack.size):
            return (
                f"package {ack.pkg} is at index {receipt.index} of a tree of size "
                f"{checkpoint.size}, not at the acknowledged {ack.index} of {ack.size}"
            )
        return None

    async def _refuse(self, org: str, digest: str, why: str) -> None:
        """A refused acknowledgement: at most one entry per organisation and interval."""
        suppressed = self.refusals.admit(org)
        log.warning("receipt.ack_refused", org=org, error=why, logged=suppressed is not None)
        if suppressed is None:
            return
        entry: dict[str, Any] = {
            "type": "receipt",
            "ts": timestamp(_now()),
            "rcpt": org,
            "result": "refused",
            "ack_sha256": digest,
        }
        if suppressed:
            entry["suppressed"] = suppressed
        try:
            written = await append_entries(self._js, log_subject("a" + digest[:32]), [entry])
        except BaseException:
            self.refusals.undo(org, suppressed)  # the redelivery tries again
            raise
        if written:
            self.recorded += 1
        else:  # the same bytes were refused and logged before: the count waits
            self.refusals.undo(org, suppressed)


@dataclass(frozen=True, slots=True)
class _Ack:
    """The payload of a recipient's acknowledgement."""

    pkg: str
    index: int
    size: int
    jwe_sha256: str

    @classmethod
    def parse(cls, ack: Any) -> _Ack:
        """KeyError, TypeError or ValueError when it is not an acknowledgement."""
        return cls(
            pkg=_ack_text(ack, "pkg"),
            index=_ack_count(ack, "index"),
            size=_ack_count(ack, "size"),
            jwe_sha256=_ack_digest(ack, "jwe_sha256"),
        )


_SHA256_RE = re.compile(r"^[0-9a-f]{64}\Z")


def _ack_digest(ack: Any, name: str) -> str:
    value = ack[name]
    if not isinstance(value, str) or not _SHA256_RE.match(value):
        raise ValueError(f"acknowledgement '{name}' is not a hex SHA-256")
    return value


_PKG_RE = re.compile(r"^[A-Za-z0-9_-]{1,128}\Z")
"""A package id (``jti``) as the router makes them: base64url, one NATS subject token."""


def _receipt_key(org: str, pkg: str) -> str:
    """32 hex digits naming the one receipt entry of ``org`` for package ``pkg``."""
    return hashlib.sha256(f"receipt\n{org}\n{pkg}".encode()).hexdigest()[:32]


def _now() -> datetime:
    return datetime.now(UTC)


_MAX_COUNT = 2**53 - 1
"""Log entries are RFC 8785 JSON, whose numbers are exact only up to here."""


def _ack_count(ack: Any, name: str) -> int:
    """A tree index or size from a recipient's acknowledgement, or ValueError."""
    value = ack[name]
    if type(value) is not int or not 0 <= value <= _MAX_COUNT:
        raise ValueError(f"acknowledgement '{name}' is not a whole number of the log")
    return value


def _ack_text(ack: Any, name: str) -> str:
    value = ack[name]
    if not isinstance(value, str) or not 0 < len(value) <= 128:
        raise ValueError(f"acknowledgement '{name}' is not a package id")
    return value


def receipt_checker(
    log_keys: list[NoteVerifier],
) -> Callable[[bytes, str, str, str], dict[str, Any]]:
    """What the broker hands the receive bridge to check receipts (adapters stay pure)."""

    def _check(data: bytes, jti: str, aud: str, jwe_sha256: str) -> dict[str, Any]:
        try:
            return verify_receipt(data, log_keys, jti=jti, aud=aud, jwe_sha256=jwe_sha256)
        except LogIntegrityError as exc:
            raise BridgeError(f"receipt does not verify: {exc}") from exc

    return _check
