"""The NATS-backed ``TaxiiBackend``: what the TAXII server needs, from JetStream.

- POST: the envelope's objects become a bundle, signed on the member's behalf by the
  broker's key (``via: "taxii"``) and published on ``atlas.submit.<org>``; the 202 is sent
  only once JetStream stored it. What a failure means for the client (post again, or do
  not) is said by ``SubmitRefused``'s kind (``_publish``).
- Status: the submission itself is the status record. A status id is the submission's
  sequence in the member's intake stream (``SUBMIT-<org>``), masked and bound to its id by
  a MAC under a key derived from the TAXII key shared by every server instance, written as
  a v4 UUID (``StatusIds``): any instance answers, after a restart too, and an id says
  nothing of how many submissions were made. Pending until the router logged the
  submission (``atlas.log.entries.<sid>.0`` when accepted, ``…r<sha256 of the token>.0``
  when refused), then complete. It lives as long as the intake keeps the submission (a
  day, ``_bus.Streams.intake_max_age``) and the key (``taxii.cursor_key_file``) is not
  replaced; this server also remembers the statuses it made (``_KNOWN_OBJECTS``).
- A publish whose acknowledgement never came is looked for in the store before the POST
  is answered "not confirmed" (``_find``).
- Reads: a reader's views come from the VIEWS stream (``atlas.view.<reader>.*``), indexed
  in memory per reader and caught up on every request (one round trip when nothing is new).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

import nats.errors
import nats.js.errors
import orjson
import structlog
from nats.js import JetStreamContext

from adapters import check_cancelled
from adapters._taxii import (
    CollectionInfo,
    ObjectIndex,
    StatusRecord,
    SubmitRefused,
    collections_for,
    format_ts,
    version_of,
)
from keys import MalformedPackage, PrivateKey
from keys._b64json import b64d

from ._bus import VIEWS, submit_stream, submit_subject
from ._directory_store import ResolvedDirectory
from ._log import submission_outcome
from ._submission import SignedSubmission, SubmissionTooLarge, make_submission
from .errors import SubmissionError

__all__ = ["NatsTaxiiBackend", "StatusIds"]

log = structlog.get_logger()

_RETRY = (0.1, 0.5, 1.0, 2.0)
"""Pauses before publishing a submission again."""
_PUBLISH_TIMEOUT = 5.0
"""Seconds one publish waits for JetStream's acknowledgement (nats-py's default)."""
_PUBLISH_BUDGET = 12.0
"""Seconds a POST keeps publishing its submission before answering."""
_TURNS_TO_SEND = 2
"""Event-loop turns after which a started publish has been written to the socket."""
_FIND_SCAN = 1000
"""Submissions of one organisation read to find one whose acknowledgement was lost."""
_KNOWN_OBJECTS = 100_000
"""Objects of the status records kept in memory per server (about 15 MB); the rest are
read from the stream again."""
_NOT_SENT = (
    nats.errors.NoRespondersError,
    nats.js.errors.NoStreamResponseError,  # nats-py's name for no responders on a publish
    nats.errors.ConnectionReconnectingError,
    nats.errors.ConnectionDrainingError,
    nats.errors.OutboundBufferLimitError,
)
"""Publish failures that say the message was not stored (others, a timeout above all,
may hide a stored message whose acknowledgement was lost)."""


def _text(exc: BaseException | None) -> str:
    return (str(exc) or repr(exc)) if exc is not None else "-"


def _forget_from(tasks: set[asyncio.Future[Any]]) -> Callable[[asyncio.Future[Any]], None]:
    def done(task: asyncio.Future[Any]) -> None:
        tasks.discard(task)
        if not task.cancelled():
            task.exception()  # retrieved: a POST that was cancelled no longer awaits it

    return done


def max_body_for(max_bundle_bytes: int) -> int:
    """The largest envelope whose signed submission still fits: base64 grows by 4/3."""
    return max(1024, (max_bundle_bytes - 2048) * 3 // 4 - 512)


class StatusIds:
    """Status ids: a submission's intake sequence, masked, and a tag binding it to the
    submission's id, written as an RFC 4122 version 4 UUID (TAXII's ``identifier``).

    The 122 free bits of a v4 UUID hold the sequence (48 bits) XOR a mask derived from the
    tag, and the tag (74 bits): a keyed MAC of the sequence and the whole submission id. With
    the key, an id reads back as a sequence (``read``); it names that submission only if
    ``make`` gives the same id again from the submission found there (``names``). Without
    the key an id reveals no counter, and a made-up or changed one names nothing (one chance
    in 2^74)."""

    _SEQ_BITS = 48
    _TAG_BITS = 74

    def __init__(self, shared_key: bytes) -> None:
        root = hmac.digest(shared_key, b"atlas-broker taxii status ids", "sha256")
        self._tag_key = hmac.digest(root, b"tag", "sha256")
        self._mask_key = hmac.digest(root, b"mask", "sha256")

    def _mask(self, tag: int) -> int:
        digest = hmac.digest(self._mask_key, tag.to_bytes(10, "big"), "sha256")
        return int.from_bytes(digest[:6], "big")

    def make(self, seq: int, sid: str) -> str:
        if not 0 < seq < 1 << self._SEQ_BITS:
            raise ValueError(f"stream sequence {seq} does not fit a status id")
        mac = hmac.digest(self._tag_key, seq.to_bytes(8, "big") + bytes.fromhex(sid), "sha256")
        tag = int.from_bytes(mac[:10], "big") >> (80 - self._TAG_BITS)
        high = (seq ^ self._mask(tag)) << 80  # time_low and time_mid: 48 bits
        middle = (4 << 76) | (tag >> 62) << 64  # version 4, then 12 bits of the tag
        low = (0b10 << 62) | (tag & ((1 << 62) - 1))  # RFC 4122 variant, 62 bits of the tag
        return str(uuid.UUID(int=high | middle | low))

    def read(self, status_id: str) -> int | None:
        """The sequence ``status_id`` names if it is one of ours (check it with ``names``)."""
        try:
            value = uuid.UUID(status_id)
        except ValueError:
            return None
        if value.version != 4 or value.variant != uuid.RFC_4122:
            return None
        number = value.int
        tag = ((number >> 64) & 0xFFF) << 62 | (number & ((1 << 62) - 1))
        return (number >> 80) ^ self._mask(tag)

    def names(self, status_id: str, seq: int, sid: str) -> bool:
        """Whether ``status_id`` was made for the submission ``sid`` stored at ``seq``."""
        try:
            expected = self.make(seq, sid)
        except ValueError:
            return False
        return hmac.compare_digest(expected.encode(), str(status_id).lower().encode())


@dataclass(frozen=True, slots=True)
class _Stored:
    """What a status needs of a stored submission."""

    record: StatusRecord
    sid: str
    sha: str
    """Hex of the first 16 bytes of the token's SHA-256: the log's name of a refusal."""


def _stamp(iat: int) -> str:
    return format_ts(datetime.fromtimestamp(iat, UTC))


def _stored(status_id: str, org: str, token: bytes) -> _Stored | None:
    """The status parts of a submission as published by ``submit`` (None if it is not)."""
    parts = token.split(b".")
    if len(parts) != 3:
        return None
    try:
        envelope = orjson.loads(b64d(parts[1], "submission"))
        sid, iat, objects = envelope["sid"], envelope["iat"], envelope["bundle"]["objects"]
        stamp = _stamp(iat)
        pairs = [(o["id"], version_of(o, stamp)) for o in objects]
    except (MalformedPackage, ValueError, KeyError, TypeError, OverflowError, OSError):
        return None
    if not isinstance(sid, str):
        return None
    record = StatusRecord(id=status_id, org=org, request_timestamp=stamp, objects=pairs)
    return _Stored(record, sid, hashlib.sha256(token).hexdigest()[:32])


class NatsTaxiiBackend:
    def __init__(
        self,
        js: JetStreamContext,
        directory: Callable[[], ResolvedDirectory],
        *,
        signing_key: PrivateKey,
        status_key: bytes,
        max_bundle_bytes: int,
        max_objects: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._js = js
        self._directory = directory
        self._key = signing_key
        self._ids = StatusIds(status_key)
        self._max_bundle_bytes = max_bundle_bytes
        self._max_objects = max_objects
        self._clock = clock
        self.max_content_length = max_body_for(max_bundle_bytes)
        self._indexes: dict[str, ObjectIndex] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._known: OrderedDict[str, _Stored] = OrderedDict()
        """Recent submissions' status parts, and the final status of those that have one."""
        self._known_objects = 0
        self._acked: dict[str, int] = {}
        """Per member: the highest intake sequence a publish of this server was
        acknowledged at."""
        self._storing: set[asyncio.Future[Any]] = set()

    async def start(self) -> None:
        """Nothing to prepare: statuses are read from the members' intake streams."""

    async def collections(self, org: str) -> Sequence[CollectionInfo]:
        directory = self._directory().directory
        found = directory.organisation(org)
        if found is None:
            return []
        return collections_for(
            directory.community.id,
            member=found.kind == "member",
            groups=directory.groups_of(org),
            reader=org if found.taxii_read else None,
        )

    async def submit(self, org: str, objects: list[Any], audience: tuple[str, ...]) -> StatusRecord:
        now = int(self._clock())
        bundle = {"type": "bundle", "id": f"bundle--{uuid.uuid4()}", "objects": objects}
        try:
            signed = make_submission(
                bundle,
                org=org,
                key=self._key,
                to=audience,
                feed=None,
                now=now,
                max_bytes=self._max_bundle_bytes,
                max_objects=self._max_objects,
                source="envelope",
                via="taxii",
            )
        except SubmissionTooLarge as exc:
            raise SubmitRefused("too-large", str(exc)) from exc
        except SubmissionError as exc:
            raise SubmitRefused("invalid", str(exc)) from exc
        storing = self._store(org, signed)
        # The status parts are made while JetStream writes and syncs the submission: a
        # started publish reaches the socket two loop turns on (nats-py's request, then its
        # flusher), so the work below runs during the wait for the acknowledgement
        # instead of before the publish. The 202 still waits for the acknowledgement.
        for _ in range(_TURNS_TO_SEND):
            await asyncio.sleep(0)
        stamp = _stamp(now)
        pairs = [(o["id"], version_of(o, stamp)) for o in objects]  # checked: dicts with ids
        sha = hashlib.sha256(signed.token).hexdigest()[:32]
        seq = await asyncio.shield(storing)
        status_id = self._ids.make(seq, signed.sid)
        record = StatusRecord(id=status_id, org=org, request_timestamp=stamp, objects=pairs)
        self._remember(_Stored(record, signed.sid, sha))
        return record

    def _store(self, org: str, signed: SignedSubmission) -> asyncio.Future[int]:
        """Start publishing the submission; the task gives its intake sequence, and the
        POST awaits it (shielded) before the 202.

        Shielded: a POST cancelled mid-way (the client left, the server stops) still
        finishes publishing what it began, so what the log shows never depends on when a
        client hung up."""
        task = asyncio.ensure_future(self._publish(org, signed))
        self._storing.add(task)
        task.add_done_callback(_forget_from(self._storing))
        return task

    async def _publish(self, org: str, signed: SignedSubmission) -> int:
        """Publish the signed submission, again after a failure that may hide a success.

        Publishing the same token twice is safe: the router routes a sid once and logs
        the second copy as a replay. A lost acknowledgement (a timeout) is thus resolved by
        publishing again rather than by telling the client to post again."""
        unsent = True
        error: Exception | None = None
        deadline = time.monotonic() + _PUBLISH_BUDGET
        for delay in (0.0, *_RETRY):
            if deadline - time.monotonic() <= delay:
                break
            if delay:
                await asyncio.sleep(delay)
            remaining = deadline - time.monotonic()
            try:
                ack = await self._js.publish(
                    submit_subject(org),
                    signed.token,
                    stream=submit_stream(org),
                    timeout=min(_PUBLISH_TIMEOUT, remaining),
                )
                self._acked[org] = max(self._acked.get(org, 0), int(ack.seq))
                return int(ack.seq)
            except nats.js.errors.APIError as exc:  # the stream answered no: not stored
                log.warning("taxii.submission_refused_by_store", error=_text(exc))
                if "maximum bytes" in (exc.description or ""):
                    raise SubmitRefused(
                        "over-quota",
                        f"{org} sent its allowance for a day (nats.intake_max_bytes): nothing "
                        "was accepted; post it later",
                    ) from exc
                raise SubmitRefused(
                    "unavailable",
                    f"the store refused the submission ({exc.description or exc}); nothing "
                    "was accepted",
                ) from exc
            except nats.errors.MaxPayloadError as exc:  # refused before sending
                raise SubmitRefused(
                    "too-large", f"the signed submission is over nats.max_payload ({exc})"
                ) from exc
            except (nats.errors.Error, OSError) as exc:
                error = exc
                unsent = unsent and isinstance(exc, _NOT_SENT)
                log.warning("taxii.publish_retry", sid=signed.sid, error=_text(exc))
        name = type(error).__name__
        if unsent:
            raise SubmitRefused(
                "unavailable",
                f"the submission could not be stored ({name}); nothing was accepted, post it again",
            )
        found = await self._find(org, signed.token)
        if found is not None:
            log.warning("taxii.submission_found", sid=signed.sid, seq=found, error=_text(error))
            return found
        log.error("taxii.submission_unconfirmed", sid=signed.sid, error=_text(error))
        raise SubmitRefused(
            "uncertain",
            f"the store did not confirm submission {signed.sid} ({name}) and could not be "
            "read to find it: it may have been stored and routed; do not post these "
            "objects again before checking that they arrived",
        )

    async def _find(self, org: str, token: bytes) -> int | None:
        """Where a publish whose acknowledgement was lost stored ``token``, if the store
        can say: the organisation's last submission, or one of its submissions after the
        last sequence this server saw acknowledged (at most ``_FIND_SCAN`` read)."""
        subject, stream = submit_subject(org), submit_stream(org)
        try:
            async with asyncio.timeout(_PUBLISH_TIMEOUT):
                last = await self._js.get_last_msg(stream, subject)
                if last.data == token:
                    return last.seq or 0
                seq = self._acked.get(org, 0)
                for _ in range(_FIND_SCAN if seq else 0):
                    check_cancelled()  # the timeout's cancel, should a NATS call drop it
                    msg = await self._js.get_msg(stream, seq=seq + 1, subject=subject, next=True)
                    if msg.data == token:
                        return msg.seq or 0
                    seq = msg.seq or 0
                    if seq >= (last.seq or 0):
                        break
        except (nats.errors.Error, OSError, TimeoutError) as exc:  # NotFoundError included
            log.warning("taxii.find_failed", error=_text(exc))
        return None

    def _remember(self, stored: _Stored) -> None:
        """Keep ``stored`` (its objects counted toward a bound, not just its entry)."""
        previous = self._known.pop(stored.record.id, None)
        if previous is not None:
            self._known_objects -= len(previous.record.objects)
        self._known[stored.record.id] = stored
        self._known_objects += len(stored.record.objects)
        while self._known_objects > _KNOWN_OBJECTS and len(self._known) > 1:
            _, dropped = self._known.popitem(last=False)
            self._known_objects -= len(dropped.record.objects)

    async def status(self, org: str, status_id: str) -> StatusRecord | None:
        try:
            status_id = str(uuid.UUID(status_id))
        except ValueError:
            return None
        stored = self._known.get(status_id)
        if stored is None:
            stored = await self._read_stored(org, status_id)
            if stored is None:
                return None
        if stored.record.org != org:
            return None
        if stored.record.outcome != "pending":
            return stored.record
        base = stored.record
        decided = await submission_outcome(self._js, stored.sid, stored.sha)
        if decided is None:
            self._remember(stored)
            return base
        outcome, entry = decided
        if outcome == "accepted":
            record = replace(base, outcome="accepted")
        else:
            record = replace(base, outcome="refused", reason=str(entry.get("reason", "refused")))
        self._remember(replace(stored, record=record))
        return record

    async def _read_stored(self, org: str, status_id: str) -> _Stored | None:
        """The submission a status id names, if it is ``org``'s and still kept."""
        seq = self._ids.read(status_id)
        if seq is None or seq == 0:
            return None
        try:
            msg = await self._js.get_msg(submit_stream(org), seq)
        except nats.js.errors.NotFoundError:
            return None
        if msg.subject != submit_subject(org):
            return None
        stored = _stored(status_id, org, msg.data or b"")
        if stored is None or not self._ids.names(status_id, seq, stored.sid):
            return None
        return stored

    async def index(self, reader: str) -> ObjectIndex:
        index = self._indexes.setdefault(reader, ObjectIndex())
        lock = self._locks.setdefault(reader, asyncio.Lock())
        async with lock:
            subject = f"atlas.view.{reader}.*"
            while True:
                check_cancelled()
                try:
                    msg = await self._js.get_msg(
                        VIEWS, seq=index.last_seq + 1, subject=subject, next=True
                    )
                except nats.js.errors.NotFoundError:
                    return index
                data = orjson.loads(msg.data or b"{}")
                objects = data.get("objects", []) if isinstance(data, dict) else []
                index.add_message(int(msg.seq or 0), msg.time or datetime.now(UTC), objects)
