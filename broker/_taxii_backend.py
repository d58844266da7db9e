"""The NATS-backed ``TaxiiBackend``: what the TAXII server needs, from JetStream.

- POST: the envelope's objects become a bundle, signed on the member's behalf by the
  broker's key (``via: "taxii"``) and published on ``atlas.submit.<org>``; the 202 is sent
  only once JetStream stored it and its status record (organisation, objects, digest of the
  submission), kept in the ``atlas_taxii_status`` bucket so that any server instance
  answers. Both are written at once; what a failure of either means for the client (post
  again, or do not) is said by ``SubmitRefused``'s kind (``_publish``, ``_store_both``).
- Status: pending until the router logged the submission (``atlas.log.entries.<sid>.0``
  when accepted, ``…r<sha256 of the token>.0`` when refused), then complete.
- Reads: a reader's views come from the VIEWS stream (``atlas.view.<reader>.*``), indexed
  in memory per reader and caught up on every request (one round trip when nothing is new).
"""

from __future__ import annotations

import asyncio
import hashlib
import time
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import nats.errors
import nats.js.errors
import orjson
import structlog
from nats.js import JetStreamContext
from nats.js.api import KeyValueConfig
from nats.js.kv import KeyValue

from adapters._taxii import (
    CollectionInfo,
    ObjectIndex,
    StatusRecord,
    SubmitRefused,
    collections_for,
    format_ts,
    version_of,
)
from keys import PrivateKey

from ._bus import LOG, SUBMISSIONS, VIEWS, log_subject, submit_subject
from ._directory_store import ResolvedDirectory
from ._log import decode_chunk
from ._submission import SignedSubmission, SubmissionTooLarge, make_submission
from .errors import SubmissionError

__all__ = ["STATUS_BUCKET", "NatsTaxiiBackend"]

log = structlog.get_logger()

STATUS_BUCKET = "atlas_taxii_status"
_STATUS_TTL = 30 * 86400.0
_RETRY = (0.1, 0.5, 1.0, 2.0)
"""Pauses before writing a submission or a status record again."""
_PUBLISH_TIMEOUT = 5.0
"""Seconds one publish waits for JetStream's acknowledgement (nats-py's default)."""
_PUBLISH_BUDGET = 12.0
"""Seconds a POST keeps publishing its submission before answering."""
_RECORD_BUDGET = 8.0
"""Seconds to keep writing the status record of a stored submission before answering."""
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


def _forget_from(tasks: set[asyncio.Future[None]]) -> Callable[[asyncio.Future[None]], None]:
    def done(task: asyncio.Future[None]) -> None:
        tasks.discard(task)
        if not task.cancelled():
            task.exception()  # retrieved: a POST that was cancelled no longer awaits it

    return done


def max_body_for(max_bundle_bytes: int) -> int:
    """The largest envelope whose signed submission still fits: base64 grows by 4/3."""
    return max(1024, (max_bundle_bytes - 2048) * 3 // 4 - 512)


class NatsTaxiiBackend:
    def __init__(
        self,
        js: JetStreamContext,
        directory: Callable[[], ResolvedDirectory],
        *,
        signing_key: PrivateKey,
        max_bundle_bytes: int,
        max_objects: int,
        via: str = "taxii",
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._js = js
        self._directory = directory
        self._key = signing_key
        self._max_bundle_bytes = max_bundle_bytes
        self._max_objects = max_objects
        self._clock = clock
        self.max_content_length = max_body_for(max_bundle_bytes)
        self._kv: KeyValue | None = None
        self._indexes: dict[str, ObjectIndex] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._final: dict[str, StatusRecord] = {}
        self._storing: set[asyncio.Future[None]] = set()

    async def start(self) -> None:
        self._kv = await self._js.create_key_value(
            KeyValueConfig(bucket=STATUS_BUCKET, ttl=_STATUS_TTL, history=1)
        )

    @property
    def kv(self) -> KeyValue:
        if self._kv is None:
            raise RuntimeError("NatsTaxiiBackend.start() was not awaited")
        return self._kv

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
        now = self._clock()
        bundle = {"type": "bundle", "id": f"bundle--{uuid.uuid4()}", "objects": objects}
        try:
            signed = make_submission(
                bundle,
                org=org,
                key=self._key,
                to=audience,
                feed=None,
                now=int(now),
                max_bytes=self._max_bundle_bytes,
                max_objects=self._max_objects,
                source="envelope",
                via="taxii",
            )
        except SubmissionTooLarge as exc:
            raise SubmitRefused("too-large", str(exc)) from exc
        except SubmissionError as exc:
            raise SubmitRefused("invalid", str(exc)) from exc
        stamp = format_ts(datetime.fromtimestamp(now, UTC))
        pairs = [(o["id"], version_of(o, stamp)) for o in objects]  # checked: dicts with ids
        record = StatusRecord(
            id=str(uuid.UUID(hex=signed.sid)), org=org, request_timestamp=stamp, objects=pairs
        )
        stored = {
            "org": org,
            "ts": stamp,
            "sid": signed.sid,
            "sha": hashlib.sha256(signed.token).hexdigest()[:32],
            "objects": pairs,
        }
        await self._store(org, record.id, orjson.dumps(stored), signed)
        return record

    async def _store(
        self, org: str, status_id: str, status: bytes, signed: SignedSubmission
    ) -> None:
        """Store the status record and the submission, both before the 202.

        Shielded: a POST cancelled mid-way (the client left, the server stops) still
        finishes storing what it began, so a stored submission never lacks its record."""
        task = asyncio.ensure_future(self._store_both(org, status_id, status, signed))
        self._storing.add(task)
        task.add_done_callback(_forget_from(self._storing))
        await asyncio.shield(task)

    async def _store_both(
        self, org: str, status_id: str, status: bytes, signed: SignedSubmission
    ) -> None:
        """The two writes go out together: each waits for its own fsync, and one after the
        other took a third of a POST's time. A status id is handed out only once both are
        stored; a record whose submission was not stored is never handed out and expires
        with the bucket."""
        put = asyncio.ensure_future(self.kv.put(status_id, status))
        try:
            await self._publish(org, status_id, signed)
        finally:
            (first,) = await asyncio.gather(put, return_exceptions=True)
        recorded: object = first
        deadline = time.monotonic() + _RECORD_BUDGET
        for delay in _RETRY:
            if not isinstance(recorded, BaseException):
                return
            log.warning("taxii.status_retry", sid=signed.sid, error=_text(recorded))
            await asyncio.sleep(delay)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                async with asyncio.timeout(remaining):
                    await self.kv.put(status_id, status)
                recorded = None
            except Exception as exc:  # retried, then reported below
                recorded = exc
        if not isinstance(recorded, BaseException):
            return
        log.error("taxii.status_not_recorded", sid=signed.sid, error=_text(recorded))
        raise SubmitRefused(
            "uncertain",
            f"submission {status_id} was stored and will be routed, but its status could "
            f"not be recorded ({type(recorded).__name__}): do not post these objects again",
        )

    async def _publish(self, org: str, status_id: str, signed: SignedSubmission) -> None:
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
                await self._js.publish(
                    submit_subject(org),
                    signed.token,
                    stream=SUBMISSIONS,
                    timeout=min(_PUBLISH_TIMEOUT, remaining),
                )
                return
            except nats.js.errors.APIError as exc:  # the stream answered no: not stored
                log.warning("taxii.submission_refused_by_store", error=_text(exc))
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
        log.error("taxii.submission_unconfirmed", sid=signed.sid, error=_text(error))
        raise SubmitRefused(
            "uncertain",
            f"the store did not confirm submission {status_id} ({name}): it may have been "
            "stored and routed; check its status before posting these objects again",
        )

    async def status(self, org: str, status_id: str) -> StatusRecord | None:
        try:
            status_uuid = uuid.UUID(status_id)
        except ValueError:
            return None
        key = str(status_uuid)
        final = self._final.get(key)
        if final is not None:
            return final if final.org == org else None
        try:
            entry = await self.kv.get(key)
        except nats.js.errors.KeyNotFoundError:
            return None
        data = orjson.loads(entry.value or b"{}")
        if data.get("org") != org:
            return None
        base = {
            "id": key,
            "org": org,
            "request_timestamp": data["ts"],
            "objects": [tuple(o) for o in data["objects"]],
        }
        accepted = await self._first_entry(log_subject(data["sid"]) + ".0")
        if accepted is not None:
            record = StatusRecord(**base, outcome="accepted")
        else:
            refused = await self._first_entry(log_subject("r" + data["sha"]) + ".0")
            if refused is None:
                return StatusRecord(**base)
            record = StatusRecord(
                **base,
                outcome="refused",
                reason=str(refused.get("reason", "refused")),
            )
        self._final[key] = record
        return record

    async def _first_entry(self, subject: str) -> dict[str, object] | None:
        try:
            msg = await self._js.get_last_msg(LOG, subject)
        except nats.js.errors.NotFoundError:
            return None
        lines = decode_chunk(msg.data or b"")
        return orjson.loads(lines[0]) if lines else None

    async def index(self, reader: str) -> ObjectIndex:
        index = self._indexes.setdefault(reader, ObjectIndex())
        lock = self._locks.setdefault(reader, asyncio.Lock())
        async with lock:
            subject = f"atlas.view.{reader}.*"
            while True:
                try:
                    msg = await self._js.get_msg(
                        VIEWS, seq=index.last_seq + 1, subject=subject, next=True
                    )
                except nats.js.errors.NotFoundError:
                    return index
                data = orjson.loads(msg.data or b"{}")
                objects = data.get("objects", []) if isinstance(data, dict) else []
                index.add_message(int(msg.seq or 0), msg.time or datetime.now(UTC), objects)
