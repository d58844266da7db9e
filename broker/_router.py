"""The router: verify, evaluate per recipient, seal, deliver once, log, then ack.

Each organisation's submissions come through a durable pull consumer of its own on
SUBMISSIONS (``route-<org>``), and the workers take them from the organisations in turn
(``_feeds``: one organisation's flood, over its rate limit or not, does not hold up
another's). For each submission a worker verifies the originator's signature against the
directory, computes the recipients, asks the policy for each recipient's view, seals each
view to the recipient's current encryption key and publishes it once on
``atlas.deliver.<recipient>.<submission>`` (expected last subject sequence 0), writes the
decisions to LOG, and only then acks. A crash anywhere before the ack is safe: the
redelivered submission finds its packages and log chunks already stored and logs what was
actually stored.

A refusal of a validly signed submission is logged every time: it is evidence of what the
member asked for. A refusal that no valid signature vouches for (junk on the member's own
subject: not a JWS, a bad signature, unknown to the directory, ...) is acked and logged
through structlog every time, but written to LOG at most once per organisation every
``Router.REFUSED_EVERY`` seconds and broker process; the entry carries in ``suppressed``
how many were left out since the previous one (``_throttle``).

Work is bounded: each worker routes one submission at a time and stores at most
``limits.max_inflight_publishes`` of its packages at once; each process holds at most one
fetched submission per organisation besides those being routed, and an organisation's
consumer hands out at most ``router.max_ack_pending`` of its submissions. An organisation
over its rate limit has its next submission held until its token is due
(``SubmissionLimiter``); the others' go on meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import hmac
import math
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import Any, TypeVar, cast

import nats.errors
import nats.js.errors
import orjson
import structlog
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.kv import KeyValue

import policy
from adapters import (
    check_cancelled,
    gather_or_fail,
    supervised,
)
from adapters._consumer import Backoff
from keys import (
    KeyRegistryError,
    PrivateKey,
    PublicKey,
    SealedPackage,
    SerializedView,
    seal,
    verify_submission,
)
from policy import BundleRejected, View

from ._bus import (
    DELIVERIES,
    SUBMITTED_BUCKET,
    copy_origin,
    deliver_subject,
    log_subject,
    view_subject,
)
from ._config import Settings
from ._directory_store import DirectoryWatcher, ResolvedDirectory, intake_orgs
from ._feeds import OrgFeeds, ensure_route_consumers, route_consumers
from ._ledger import Ledger, ObjectRecord
from ._limits import SubmissionLimiter
from ._log import EXPECT_NEW_SUBJECT, WRONG_LAST_SEQUENCE, append_entries, timestamp
from ._metrics import BrokerMetrics
from ._submission import SubmissionRefused, open_submission
from ._throttle import Throttle
from .errors import DirectoryUnavailable

__all__ = ["ROUTER_CONSUMER", "Router", "RouterStats"]

log = structlog.get_logger()

T = TypeVar("T")

ROUTER_CONSUMER = "router"
"""The name the routing consumers go by in metrics and status (their sum)."""
ORG_CHECK_EVERY = 1.0
"""Seconds between two looks at the directory for organisations without a feed."""
FEED_GRACE = 10.0
"""Seconds an organisation of the directory may go without a feed before /readyz says so."""
CONSUMER_CHECK_EVERY = 30.0
"""Seconds between two checks that every routing consumer exists with the settings."""
PKG_ID_HEADER = "Atlas-Pkg-Id"
RCPT_KID_HEADER = "Atlas-Rcpt-Kid"
BROKER_KID_HEADER = "Atlas-Broker-Kid"
VIEW_HEADER = "Atlas-View"
"""JSON: the view_sha256, objects and tlp of the package, for the delivery entry."""
INTERNAL_ERROR_ATTEMPTS = 3
"""Deliveries of a submission that trips an unexpected error before it is refused."""
_TRANSIENT = (nats.errors.Error, OSError, TimeoutError, DirectoryUnavailable)
_HEADER_ROOM = 1024
"""Bytes of nats.max_payload kept for a package's headers."""


@dataclass
class RouterStats:
    processed: int = 0
    accepted: int = 0
    refused: int = 0
    deliveries: int = 0
    withheld: int = 0
    retried: int = 0
    rate_limited: int = 0
    refusals: dict[str, int] = field(default_factory=dict)
    refusals_suppressed: int = 0
    """Refusals of unsigned submissions counted into a later entry instead of their own."""


@dataclass(frozen=True, slots=True)
class _Stored:
    jti: str
    jwe_sha256: str
    rcpt_kid: str
    broker_kid: str
    new: bool
    view: dict[str, Any]
    """The delivery entry's view_sha256, objects and tlp: of the package actually stored."""


def _view_summary(view: View) -> dict[str, Any]:
    assert view.bundle is not None  # noqa: S101 - only sealed views are summarised
    return {
        "view_sha256": hashlib.sha256(orjson.dumps(view.bundle)).hexdigest(),
        "objects": {
            "delivered": view.delivered,
            "withheld": view.withheld,
            "derived": view.derived,
        },
        "tlp": str(view.tlp) if view.tlp is not None else None,
    }


class Router:
    """Runs ``workers`` workers, fed by every organisation's consumer in turn, until cancelled."""

    REFUSED_EVERY = 60.0
    """Seconds between two LOG entries of one organisation's refused submissions that no
    valid signature vouches for (per broker process); those in between are counted into
    the next entry's ``suppressed``. Refusals of validly signed submissions are each logged."""

    def __init__(
        self,
        js: JetStreamContext,
        directory: DirectoryWatcher,
        *,
        settings: Settings,
        signing_key: PrivateKey,
        p256_signing_key: PrivateKey | None = None,
        digest_key: bytes,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        metrics: BrokerMetrics | None = None,
        limiter: SubmissionLimiter | None = None,
    ) -> None:
        self._js = js
        self._directory = directory
        self._settings = settings
        self._signing_key = signing_key
        self._p256_signing_key = p256_signing_key
        """Signs the packages of recipients whose encryption key is P-256 (ES256), if set."""
        self._digest_key = digest_key
        self._clock = clock
        self._ledger = Ledger(js, digest_key)
        self._submitted: KeyValue | None = None
        self.stats = RouterStats()
        self.metrics = metrics or BrokerMetrics(ROUTER_CONSUMER)
        self.limiter = limiter or SubmissionLimiter(settings.limits)
        self.refusals = Throttle(self.REFUSED_EVERY)
        """Unsigned refusals: at most one LOG entry per organisation and interval."""
        self.bound_workers = 0
        """Workers running right now (readiness)."""
        self._unfed_since: dict[str, float] = {}
        self._feeds = OrgFeeds(
            js,
            settings.router,
            self.limiter,
            limited=self._known,
            on_rate_limited=self._rate_limited,
        )

    def unready_reason(self) -> str | None:
        """Why this router cannot route now, or None (the NATS side is checked by the caller)."""
        try:
            resolved = self._directory.current
            self._check_own_key(resolved, self._clock())
        except DirectoryUnavailable as exc:
            return f"directory: {exc}"
        if self.bound_workers == 0:
            return "router: no worker is running"
        now = time.monotonic()
        unfed = set(intake_orgs(resolved.directory)) - self._feeds.bound
        self._unfed_since = {org: self._unfed_since.get(org, now) for org in unfed}
        # A new organisation gets its feed within a second or two: not worth a 503.
        missing = sorted(o for o, t in self._unfed_since.items() if now - t >= FEED_GRACE)
        if missing:
            return (
                f"router: not fetching the submissions of {len(missing)} organisation(s) yet "
                f"({', '.join(missing[:5])}{', ...' if len(missing) > 5 else ''})"
            )
        return None

    @property
    def feeding(self) -> frozenset[str]:
        """Organisations whose routing consumer this process fetches from."""
        return frozenset(self._feeds.bound)

    @property
    def deferred(self) -> int:
        """Submissions held for their organisation's rate-limit token right now."""
        return self._feeds.waiting

    async def run(self) -> None:
        async with asyncio.TaskGroup() as group:
            for n in range(self._settings.router.workers):
                group.create_task(
                    supervised(f"router-worker-{n}", self._worker),
                    name=f"router-worker-{n}",
                )
            group.create_task(
                supervised("router-feeds", functools.partial(self._follow_orgs, group)),
                name="router-feeds",
            )
        # Nothing here returns and a stopped router never gets here: if the tasks all
        # ended anyway, stop the process rather than stay up without routing.
        log.error("router.workers_stopped")
        raise RuntimeError("every router worker stopped although the router was not stopped")

    def _directory_orgs(self) -> tuple[set[str], bool]:
        """The organisations that publish, and whether a directory is loaded at all."""
        try:
            return set(intake_orgs(self._directory.current.directory)), True
        except DirectoryUnavailable:
            return set(), False

    async def ensure_consumers(self) -> None:
        """The routing consumers of the directory's organisations (and of earlier ones)."""
        orgs, loaded = self._directory_orgs()
        orgs |= set(await route_consumers(self._js))
        await ensure_route_consumers(self._js, sorted(orgs), self._settings.router, complete=loaded)

    async def _follow_orgs(self, group: asyncio.TaskGroup) -> None:
        """Start a feed for every organisation of the directory (and any routing consumer
        left from one since removed: its submissions get refused, not stranded), and keep
        their consumers in place. An organisation whose consumer cannot be made is tried
        again at the next periodic check; the others are not held up."""
        started: set[str] = set()
        failed: set[str] = set()
        leftovers: set[str] | None = None
        backoff = Backoff()
        last_check = -math.inf
        while True:
            check_cancelled()
            orgs, loaded = self._directory_orgs()
            try:
                if leftovers is None:
                    leftovers = set(await route_consumers(self._js))
                wanted = orgs | leftovers
                # Every CONSUMER_CHECK_EVERY s: a consumer deleted by hand is made again.
                due = time.monotonic() - last_check >= CONSUMER_CHECK_EVERY
                if due or wanted - started - failed:
                    ensured = await ensure_route_consumers(
                        self._js, sorted(wanted), self._settings.router, complete=loaded
                    )
                    last_check = time.monotonic()
                    failed = set(ensured.failed)
                    if ensured.created:
                        log.info("router.consumers_created", orgs=ensured.created)
            except (nats.errors.Error, OSError) as exc:
                await backoff.wait("router.consumers_failed", exc)
                continue
            backoff.reset()
            # A stop nats-py swallowed (Python 3.11) must not reach the group: it refuses
            # new tasks while it shuts down, leaving their coroutines never awaited.
            check_cancelled()
            for org in sorted(wanted - started - failed):
                feed = supervised(f"router-feed-{org}", functools.partial(self._feeds.feed, org))
                try:
                    group.create_task(feed, name=f"router-feed-{org}")
                except RuntimeError:  # the group is shutting down: so is this
                    feed.close()
                    raise asyncio.CancelledError from None
                started.add(org)
            await asyncio.sleep(ORG_CHECK_EVERY)

    async def _worker(self) -> None:
        self.bound_workers += 1
        try:
            while True:
                held = await self._feeds.next()
                try:
                    await self.handle(held.msg)
                finally:
                    await held.done()
        finally:
            self.bound_workers -= 1

    def _rate_limited(self, org: str, delay: float) -> None:
        self.stats.rate_limited += 1
        self.metrics.rate_limited.labels(self.metrics.org_label(org)).inc()
        self.metrics.deferred.set(self._feeds.waiting + 1)
        log.info("submission.rate_limited", org=org, delay=round(delay, 3))

    def _known(self, org: str) -> bool:
        try:
            return org in self._directory.current.orgs
        except DirectoryUnavailable:
            return False  # unknown ids never get a bucket; routing retries it anyway

    async def handle(self, msg: Msg) -> None:
        """Process one submission: ack, or nak for a transient failure (the caller keeps
        it in progress meanwhile)."""
        started = time.perf_counter()
        self.metrics.inflight_submissions.inc()
        self.metrics.deferred.set(self._feeds.waiting)
        try:
            await self._process(msg)
            await msg.ack_sync()
            self.metrics.route_seconds.observe(time.perf_counter() - started)
        except _TRANSIENT as exc:
            self.stats.retried += 1
            self.metrics.retried.inc()
            delay = min(2 ** (msg.metadata.num_delivered or 1), 30)
            log.warning(
                "submission.retry",
                subject=msg.subject,
                delay=delay,
                error=str(exc) or type(exc).__name__,
            )
            with contextlib.suppress(nats.errors.Error):
                await msg.nak(delay=delay)
        except Exception as exc:  # a bug must not stop every worker
            await self._internal_error(msg, exc)
        finally:
            self.metrics.inflight_submissions.dec()
        self.stats.processed += 1

    async def _internal_error(self, msg: Msg, exc: Exception) -> None:
        """An unexpected error: retry a few times, then refuse the submission (logged).

        Without this, one message that trips a bug would stop every worker, and stop them
        again after each restart, since it is never acknowledged.
        """
        attempt = msg.metadata.num_delivered or 1
        log.error(
            "submission.internal_error",
            subject=msg.subject,
            attempt=attempt,
            error=f"{type(exc).__name__}: {exc}",
            exc_info=exc,
        )
        self.stats.retried += 1
        try:
            if attempt < INTERNAL_ERROR_ATTEMPTS:
                await msg.nak(delay=2**attempt)
                return
            org = msg.subject.split(".", 2)[2]
            now = self._clock()
            await self._refuse(
                org,
                hashlib.sha256(msg.data).hexdigest(),
                "internal-error",
                f"{type(exc).__name__} after {attempt} attempts",
                now,
                unsigned=self._unsigned_key(msg.data, org, self._directory.current, now),
            )
            await msg.ack_sync()
        except _TRANSIENT as again:
            log.warning("submission.retry", subject=msg.subject, error=str(again))
            with contextlib.suppress(nats.errors.Error):
                await msg.nak(delay=min(2**attempt, 30))

    async def _process(self, msg: Msg) -> None:
        org = msg.subject.split(".", 2)[2]
        token = msg.data
        src_sha256 = hashlib.sha256(token).hexdigest()
        resolved = self._directory.current
        self.metrics.know_orgs(frozenset(resolved.orgs))
        now = self._clock()
        with structlog.contextvars.bound_contextvars(org=org, msg_seq=msg.metadata.sequence.stream):
            try:
                envelope = open_submission(
                    token,
                    subject_org=org,
                    signing_keys=(
                        resolved.orgs[org].signing(int(now.timestamp()))
                        if org in resolved.orgs
                        else None
                    ),
                    now=int(now.timestamp()),
                    max_age=int(self._settings.router.package_ttl),
                    max_objects=self._settings.limits.max_objects,
                    max_bytes=self._settings.limits.max_bundle_bytes,
                    broker_keys=_live_broker_keys(resolved, int(now.timestamp())),
                )
            except SubmissionRefused as exc:
                unsigned = self._unsigned_key(token, org, resolved, now)
                await self._refuse(org, src_sha256, exc.reason, str(exc), now, unsigned=unsigned)
                return
            # From here on the submission is validly signed: every refusal is logged.
            try:
                await self._claim(org, envelope.sid, src_sha256, _position(msg))
                await self._route(
                    envelope.via,
                    envelope.sid,
                    org,
                    envelope.to,
                    envelope.feed,
                    envelope.bundle,
                    src_sha256,
                    resolved,
                    now,
                )
            except SubmissionRefused as exc:
                await self._refuse(org, src_sha256, exc.reason, str(exc), now, unsigned=None)
            except BundleRejected as exc:
                await self._refuse(org, src_sha256, "bundle-rejected", str(exc), now, unsigned=None)

    async def _claim(self, org: str, sid: str, src_sha256: str, position: _Position) -> None:
        """A sid is used once, across organisations (it names the log chunks, deliveries,
        views and receipts of the submission); a redelivery of the same message passes,
        and so does a second copy of one intake message (a copy consumer made anew starts
        from the intake's start when SUBMISSIONS no longer holds any of its copies).

        The bucket's key is the organisation-specific ``sub.<sid>``; its value says who."""
        if self._submitted is None:  # looked up once: each lookup is a stream-info request
            self._submitted = await self._js.key_value(SUBMITTED_BUCKET)
        kv = self._submitted
        value = f"{position.key}:{src_sha256}:{org}".encode()
        try:
            await kv.create(f"sub.{sid}", value)
        except nats.js.errors.KeyWrongLastSequenceError:
            existing = (await kv.get(f"sub.{sid}")).value or b""
            if existing == value or _earlier_claim(existing, src_sha256, org, position):
                return  # our own earlier attempt: finish it idempotently
            if existing.endswith(f":{src_sha256}:{org}".encode()):
                raise SubmissionRefused(
                    "replayed", f"submission {sid} was already received"
                ) from None
            # Whose it was is not said: a sid seen in a package says nothing more.
            raise SubmissionRefused(
                "duplicate-id", f"submission id {sid} was already used"
            ) from None

    def _unsigned_key(
        self, token: bytes, org: str, resolved: ResolvedDirectory, now: datetime
    ) -> str | None:
        """None when ``token`` is a submission validly signed by the organisation of its
        subject or by a live broker key (a refusal of it is evidence: always logged);
        otherwise the throttle key its refusal is counted under.

        Organisations the directory does not know share one key, so that junk on made-up
        subjects cannot make the throttle's state grow."""
        at = int(now.timestamp())
        keys = dict(_live_broker_keys(resolved, at))
        if org in resolved.orgs:
            keys.update(resolved.orgs[org].signing(at))
        if keys:
            try:
                verify_submission(token, keys)
            except KeyRegistryError:
                pass
            else:
                return None
        return org if org in resolved.orgs else ""

    async def _refuse(
        self,
        org: str,
        src_sha256: str,
        reason: str,
        detail: str,
        now: datetime,
        *,
        unsigned: str | None,
    ) -> None:
        """Log a refusal; with ``unsigned`` (its throttle key: no valid signature vouches
        for the submission) at most one LOG entry per key and ``REFUSED_EVERY``."""
        self.stats.refused += 1
        self.stats.refusals[reason] = self.stats.refusals.get(reason, 0) + 1
        self.metrics.refused.labels(reason).inc()
        entry: dict[str, Any] = {
            "type": "submission",
            "ts": timestamp(now),
            "org": org,
            "result": "refused",
            "reason": reason,
            "src_sha256": src_sha256,
        }
        subject = log_subject("r" + src_sha256[:32])
        if unsigned is None:
            log.warning("submission.refused", reason=reason, detail=detail, src_sha256=src_sha256)
            await append_entries(self._js, subject, [entry])
            return
        suppressed = self.refusals.admit(unsigned)
        log.warning(
            "submission.refused",
            reason=reason,
            detail=detail,
            src_sha256=src_sha256,
            signed=False,
            logged=suppressed is not None,
        )
        if suppressed is None:
            self.stats.refusals_suppressed += 1
            return
        if suppressed:
            entry["suppressed"] = suppressed
        try:
            written = await append_entries(self._js, subject, [entry])
        except BaseException:
            self.refusals.undo(unsigned, suppressed)  # the redelivery tries again
            raise
        if not written:
            # The same bytes were refused and logged before: nothing new was written, so
            # the count waits for the next entry, and so does the interval.
            self.refusals.undo(unsigned, suppressed)

    async def _route(
        self,
        via: str | None,
        sid: str,
        org: str,
        to: tuple[str, ...],
        feed: str | None,
        bundle: dict[str, Any],
        src_sha256: str,
        resolved: ResolvedDirectory,
        now: datetime,
    ) -> None:
        self._check_own_key(resolved, now)
        directory = resolved.directory
        named_orgs = frozenset(item[4:] for item in to if item.startswith("org:"))
        named_groups = frozenset(item[6:] for item in to if item.startswith("group:"))
        group_ids = {group.id for group in directory.groups}
        unknown_to = sorted(
            [f"org:{o}" for o in named_orgs if directory.organisation(o) is None]
            + [f"group:{g}" for g in named_groups if g not in group_ids]
        )
        if unknown_to:
            log.warning("submission.unknown_audience", sub=sid, org=org, names=unknown_to)
        submission = policy.Submission(
            originator=org,
            submission_id=sid,
            named=named_orgs,
            named_groups=named_groups,
            feed=feed,
        )
        versions = policy.version_digests(bundle)
        authors = policy.authors(bundle, directory=directory)
        identities = {
            *directory.identity_owners(),
            directory.broker.stix_identity.lower(),
        }
        sovereign = {i for i in authors if i.lower() in identities}
        speaks_for = {i: a for i, a in authors.items() if a is not None and a != org}
        untracked = sorted(set(speaks_for) - {object_id for object_id, _ in versions})
        if untracked:
            # Not versioned, so never registered: there is nothing such an object could relay.
            raise SubmissionRefused(
                "impersonation", f"{untracked[0]} speaks for another organisation"
            )
        # Only a revocation's view depends on what the ledger holds (who received the
        # versions it revokes, at which level): only then is it read before evaluating.
        revoked = {o["id"] for o in bundle.get("objects", ()) if o.get("revoked") is True} & {
            object_id for object_id, _ in versions
        }
        records = await self._ledger.load(revoked) if revoked else {}
        recipients = policy.recipients(directory, submission) | _earlier_receivers(
            bundle, records, directory, org
        )
        views = policy.evaluate_all(
            bundle,
            directory=directory,
            submission=submission,
            recipients=recipients,
            now=now,
            digest_key=self._digest_key,
            received_before=Ledger.received_before(records),
        )
        ts = timestamp(now)
        src = {"org": org, "submission": sid, "sha256": src_sha256}
        entries: list[dict[str, Any]] = [
            {
                "type": "submission",
                "ts": ts,
                "org": org,
                "sub": sid,
                "result": "accepted",
                "src_sha256": src_sha256,
                "objects": len(bundle.get("objects", [])),
                "recipients": len(recipients),
                **({"via": via} if via else {}),
                **({"unknown_to": unknown_to} if unknown_to else {}),
            }
        ]
        sealed: list[tuple[str, View, SealedPackage]] = []
        view_json: dict[str, bytes] = {}
        unsealable: list[tuple[str, int]] = []
        for recipient in sorted(views):
            view = views[recipient]
            for decision in view.decisions:
                if decision.action == "delivered":
                    continue
                entries.append(
                    {
                        "type": decision.action,
                        "ts": ts,
                        "rcpt": recipient,
                        "src": src,
                        "obj": decision.object_digest,
                        "obj_type": decision.object_type,
                        "reason": decision.reason,
                        "tlp": str(decision.tlp) if decision.tlp is not None else None,
                    }
                )
            if view.bundle is None:
                continue
            enc_key = resolved.orgs[recipient].encryption
            if enc_key is None:
                entries.append(
                    {
                        "type": "withheld",
                        "ts": ts,
                        "rcpt": recipient,
                        "src": src,
                        "reason": "no-encryption-key",
                        "objects": view.delivered,
                    }
                )
                unsealable.append((recipient, view.delivered))
                continue
            package, view_json[recipient] = self._seal(recipient, view, src, enc_key, now)
            sealed.append((recipient, view, package))
        self._check_package_sizes(sealed)
        # Every refusal for the content happens here, before anything is stored: version
        # conflicts and owners are checked by the same writes that record the versions and
        # who is about to receive them.
        claim = await self._ledger.claim(
            versions,
            org,
            authors=authors,
            sovereign=sovereign,
            received=self._receivers(bundle, versions, sealed),
        )
        if claim.conflicts or claim.foreign:
            await self._ledger.undo(claim)
        if claim.conflicts:
            raise SubmissionRefused(
                "version-conflict",
                f"{len(claim.conflicts)} object(s) reuse an id and modified of an earlier "
                "submission with different content",
            )
        if claim.foreign:
            first = sorted(claim.foreign)[0]
            if first in speaks_for:
                raise SubmissionRefused(
                    "impersonation",
                    f"{len(claim.foreign)} object(s) are new versions only their author may "
                    f"publish: {first} is another organisation's identity or names it in "
                    "created_by_ref",
                )
            raise SubmissionRefused(
                "not-owner",
                f"{len(claim.foreign)} object(s) are new versions of objects another "
                f"organisation published, e.g. {first}: only an object's originator may "
                "supersede or revoke it",
            )
        for view in views.values():
            for decision in view.decisions:
                if decision.action == "withheld":
                    self.stats.withheld += 1
                    self.metrics.withheld.labels(decision.reason or "unknown").inc()
        for recipient, count in unsealable:
            self.metrics.withheld.labels("no-encryption-key").inc(count)
            log.warning("delivery.no_key", rcpt=recipient)
        # Packages of one submission are stored concurrently: with fsync on every write
        # the server's latency, not our CPU, bounds a sequential fan-out. At most
        # limits.max_inflight_publishes at once, so a wide fan-out cannot flood the server.
        gate = asyncio.Semaphore(self._settings.limits.max_inflight_publishes)
        readers = [
            recipient
            for recipient, _, _ in sealed
            if (found := directory.organisation(recipient)) is not None and found.taxii_read
        ]
        # The first failure comes out as itself, so that transient NATS errors are retried.
        done = await gather_or_fail(
            *(
                self._bounded(
                    gate, partial(self._store, recipient, sid, package, _view_summary(view))
                )
                for recipient, view, package in sealed
            ),
            *(
                self._bounded(gate, partial(self._store_view, reader, sid, view_json[reader]))
                for reader in readers
            ),
        )
        packages_stored = cast(list[_Stored], done[: len(sealed)])  # the views: None
        for (recipient, _, _), stored in zip(sealed, packages_stored, strict=True):
            self.stats.deliveries += stored.new
            self.metrics.deliveries.inc(stored.new)
            entries.append(
                {
                    "type": "delivery",
                    "ts": ts,
                    "pkg": stored.jti,
                    "rcpt": recipient,
                    "rcpt_kid": stored.rcpt_kid,
                    "broker_kid": stored.broker_kid,
                    "src": src,
                    "jwe_sha256": stored.jwe_sha256,
                    **stored.view,
                }
            )
        notice = _notice(
            views, recipients, bundle, org=org, sid=sid, ts=ts, sealed={r for r, _, _ in sealed}
        )
        if notice is not None:
            entries.append(notice)
        await append_entries(self._js, log_subject(sid), entries)
        if notice is not None:
            # Kept in RECEIPTS for the originator to read; the log entry is the record.
            await self._js.publish(f"atlas.notice.{org}", orjson.dumps(notice))
        self.stats.accepted += 1
        self.metrics.accepted.labels(self.metrics.org_label(org)).inc()
        log.info("submission.routed", sub=sid, recipients=len(recipients), packages=len(sealed))

    def _check_package_sizes(self, sealed: list[tuple[str, View, SealedPackage]]) -> None:
        """Refuse, before anything is stored, a submission whose package cannot be stored:
        retrying would never help, and storing the others first would leave packages
        without their log entries."""
        room = self._settings.nats.max_payload - _HEADER_ROOM
        for recipient, _, package in sealed:
            if len(package.data) > room:
                raise SubmissionRefused(
                    "package-too-large",
                    f"the package for {recipient} is {len(package.data):,} bytes, over what "
                    f"one NATS message holds ({room:,} bytes of nats.max_payload "
                    f"{self._settings.nats.max_payload:,}); send a smaller bundle",
                )

    def _check_own_key(self, resolved: ResolvedDirectory, now: datetime) -> None:
        """Never sign with a key the directory does not publish, or has revoked."""
        keys = [("broker.signing_key", self._signing_key)]
        if self._p256_signing_key is not None:
            keys.append(("broker.p256_signing_key", self._p256_signing_key))
        for setting, key in keys:
            kid = key.public.thumbprint
            entry = resolved.broker_keyring.get(kid)
            if entry is None:
                raise DirectoryUnavailable(
                    f"the broker's signing key {kid} ({setting}) is not in the directory's "
                    "[broker] keys"
                )
            revoked_at = entry[1]
            if revoked_at is not None and revoked_at <= int(now.timestamp()):
                raise DirectoryUnavailable(
                    f"the broker's signing key {kid} is revoked: configure a new {setting}"
                )

    def _signing_key_for(self, enc_key: PublicKey) -> PrivateKey:
        """ES256 for a P-256 recipient when the broker has a P-256 key (an agency whose JOSE
        library has P-256 but no EdDSA reads it), the Ed25519 key otherwise."""
        if enc_key.kind == "P-256" and self._p256_signing_key is not None:
            return self._p256_signing_key
        return self._signing_key

    def _receivers(
        self,
        bundle: dict[str, Any],
        versions: Mapping[tuple[str, str], str],
        sealed: list[tuple[str, View, SealedPackage]],
    ) -> dict[str, dict[str, str]]:
        """Versioned object id → recipient → TLP level, for the objects the packages carry
        as they are (what a later revocation must reach)."""
        versioned = {object_id for object_id, _ in versions}
        # Decisions digest the id and modified as written (versions holds them normalised).
        id_of = {
            hmac.new(
                self._digest_key, f"{o['id']}|{o.get('modified', '')}".encode(), hashlib.sha256
            ).hexdigest(): o["id"]
            for o in bundle.get("objects", ())
            if o["id"] in versioned
        }
        out: dict[str, dict[str, str]] = {}
        for recipient, view, _ in sealed:
            for decision in view.decisions:
                object_id = id_of.get(decision.object_digest)
                if decision.action == "delivered" and object_id is not None:
                    level = str(decision.tlp) if decision.tlp is not None else "clear"
                    out.setdefault(object_id, {})[recipient] = level
        return out

    def _seal(
        self,
        recipient: str,
        view: View,
        src: dict[str, str],
        enc_key: PublicKey,
        now: datetime,
    ) -> tuple[SealedPackage, bytes]:
        """The package, and the view's JSON it carries (serialized once: the TAXII copy
        stores the same bytes)."""
        assert view.bundle is not None  # noqa: S101 - callers only seal non-empty views
        started = time.perf_counter()
        try:
            serialized = SerializedView(view.bundle)
            package = seal(
                stix=serialized,
                iss=self._settings.broker.id,
                aud=recipient,
                src=src,
                tlp=str(view.tlp) if view.tlp is not None else "clear",
                signing_key=self._signing_key_for(enc_key),
                recipient_key=enc_key,
                now=int(now.timestamp()),
                ttl=self._settings.router.package_ttl,
                dumps=orjson.dumps,
            )
        except KeyRegistryError as exc:
            raise SubmissionRefused("seal-failed", f"cannot seal to {recipient}: {exc}") from exc
        self.metrics.seal_seconds.observe(time.perf_counter() - started)
        return package, serialized.data

    async def _bounded(self, gate: asyncio.Semaphore, work: Callable[[], Awaitable[T]]) -> T:
        async with gate:
            self.metrics.inflight_publishes.inc()
            try:
                return await work()
            finally:
                self.metrics.inflight_publishes.dec()

    async def _store_view(self, recipient: str, sid: str, view_json: bytes) -> None:
        """Keep the view readable over TAXII (only for recipients that chose it)."""
        try:
            await self._js.publish(
                view_subject(recipient, sid),
                view_json,
                headers={**EXPECT_NEW_SUBJECT, "Atlas-Submission": sid},
            )
        except nats.js.errors.BadRequestError as exc:
            if exc.err_code != WRONG_LAST_SEQUENCE:
                raise

    async def _store(
        self, recipient: str, sid: str, sealed: SealedPackage, view: dict[str, Any]
    ) -> _Stored:
        """Publish a package once; if an earlier attempt stored it, report that one.

        An earlier attempt may have evaluated differently (a derived copy carries the time it
        was made; the directory may have changed): the view's summary travels in a header
        so that the delivery entry describes the package actually stored."""
        subject = deliver_subject(recipient, sid)
        headers = {
            **EXPECT_NEW_SUBJECT,
            PKG_ID_HEADER: sealed.jti,
            RCPT_KID_HEADER: sealed.rcpt_kid,
            BROKER_KID_HEADER: sealed.signing_kid,
            VIEW_HEADER: orjson.dumps(view).decode(),
        }
        try:
            await self._js.publish(subject, sealed.data, headers=headers)
        except nats.js.errors.BadRequestError as exc:
            if exc.err_code != WRONG_LAST_SEQUENCE:
                raise
            existing = await self._js.get_last_msg(DELIVERIES, subject)
            hdrs = existing.headers or {}
            return _Stored(
                jti=hdrs.get(PKG_ID_HEADER, ""),
                jwe_sha256=hashlib.sha256(existing.data or b"").hexdigest(),
                rcpt_kid=hdrs.get(RCPT_KID_HEADER, ""),
                broker_kid=hdrs.get(BROKER_KID_HEADER, sealed.signing_kid),
                new=False,
                view=_stored_view(hdrs.get(VIEW_HEADER), view),
            )
        return _Stored(
            jti=sealed.jti,
            jwe_sha256=sealed.jwe_sha256,
            rcpt_kid=sealed.rcpt_kid,
            broker_kid=sealed.signing_kid,
            new=True,
            view=view,
        )


@dataclass(frozen=True, slots=True)
class _Position:
    """Where a submission was stored: its intake message (two copies of it are one
    submission) and its sequence in SUBMISSIONS."""

    key: str
    stream_seq: int
    copied: bool
    """Copied from an intake (every submission since the intake streams)."""


def _earlier_claim(existing: bytes, src_sha256: str, org: str, position: _Position) -> bool:
    """Whether a claim written before claims named intake positions (by SUBMISSIONS'
    sequence) is one of this submission's. A redelivery has the same sequence. A copy
    with another one is taken for a second copy of the same intake message too: the copy
    consumers made at the upgrade start at their intake's start when SUBMISSIONS holds
    none of its copies, and that old claim cannot tell which intake message it was. A
    member's replay of one claimed before the upgrade is then taken idempotently (nothing
    delivered or logged twice) instead of refused."""
    seq, _, rest = existing.decode(errors="replace").partition(":")
    if not seq.isdigit() or rest != f"{src_sha256}:{org}":
        return False
    return int(seq) == position.stream_seq or position.copied


def _position(msg: Msg) -> _Position:
    seq = msg.metadata.sequence.stream
    origin = copy_origin(msg.headers)
    if origin is None:
        return _Position(str(seq), seq, copied=False)
    return _Position(f"{origin[0]}/{origin[1]}", seq, copied=True)


def _stored_view(header: str | None, fallback: dict[str, Any]) -> dict[str, Any]:
    """The view summary an earlier attempt stored beside its package (or, for a package
    stored before summaries were kept, this attempt's)."""
    if header is None:
        return fallback
    try:
        stored = orjson.loads(header)
    except orjson.JSONDecodeError:
        return fallback
    if not isinstance(stored, dict) or set(stored) != set(fallback):
        return fallback
    return stored


def _live_broker_keys(resolved: ResolvedDirectory, now: int) -> dict[str, PublicKey]:
    """Broker keys that may vouch for a submission made on a member's behalf."""
    return {
        kid: key
        for kid, (key, revoked_at) in resolved.broker_keyring.items()
        if revoked_at is None or revoked_at > now
    }


def _earlier_receivers(
    bundle: dict[str, Any], records: dict[str, ObjectRecord], directory: Any, originator: str
) -> frozenset[str]:
    """Those who received an earlier version of a revoked object, followers or not."""
    out: set[str] = set()
    for obj in bundle.get("objects", []):
        if isinstance(obj, dict) and obj.get("revoked") is True and obj.get("id") in records:
            out.update(records[obj["id"]].received)
    return frozenset(
        org
        for org in out
        if org != originator
        and (found := directory.organisation(org)) is not None
        and found.kind != "auditor"
    )


def _notice(
    views: dict[str, View],
    recipients: frozenset[str],
    bundle: dict[str, Any],
    *,
    org: str,
    sid: str,
    ts: str,
    sealed: set[str],
) -> dict[str, Any] | None:
    """Tell the originator when RED objects reached nobody (nobody was named, or nobody
    named has a key to seal to), or the submission nobody. RED withheld from the others
    while a named recipient has it is the rule working, not news."""
    decisions = [d for view in views.values() for d in view.decisions]
    reached = {
        d.object_digest
        for recipient, view in views.items()
        if recipient in sealed
        for d in view.decisions
        if d.action != "withheld"
    }
    red = {
        d.object_digest
        for d in decisions
        if d.reason == "red-not-named" and d.object_digest not in reached
    }
    if red:
        reason, count = "red-not-named", len(red)
    elif not recipients:
        reason, count = "no-recipients", len(bundle.get("objects", []))
    else:
        return None
    return {"type": "notice", "ts": ts, "org": org, "sub": sid, "reason": reason, "objects": count}
