"""The long-running and one-shot jobs behind the CLI, as plain async functions.

The CLI parses arguments and settings and calls these; the demo and the tests call them
too, so every path a user runs is the path that is tested.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import secrets
import stat
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import nats.errors
import nats.js.errors
import orjson
import structlog
from nats.js import JetStreamContext
from nats.js.api import StreamInfo

from adapters import ReceiptKeeper, Receiver, ReceiveStats, check_cancelled, supervised
from adapters._consumer import Backoff
from keys import (
    BrokerKeyring,
    KeyFileError,
    KeyRegistryError,
    PrivateKey,
    PublicKey,
    load_private_key,
)
from policy import OrgKind, PolicyError

from ._bus import (
    RECEIPTS,
    SUBMISSIONS,
    Streams,
    consumers_of,
    ensure_intake,
    ensure_streams,
    intake_lag,
    nats_session,
    oldest_pending,
    submit_stream,
    submit_subject,
)
from ._checkpoint import log_origin
from ._checkpointer import run_checkpointer
from ._config import Settings
from ._directory_store import (
    DirectoryWatcher,
    ensure_directory_intake,
    fetch_directory,
    intake_orgs,
)
from ._embedded import running_url
from ._feeds import oldest_unrouted, route_consumers
from ._gc import frozen_startup
from ._keyops import ensure_party_consumers
from ._log import submission_outcome
from ._metrics import BrokerMetrics
from ._monitor import Monitor
from ._note import NoteVerifier
from ._receipts import AckRecorder, ReceiptPublisher, receipt_checker
from ._router import ROUTER_CONSUMER, Router
from ._submission import (
    SignedSubmission,
    SubmissionTooLarge,
    make_submission,
    over_size_limit,
)
from ._witness import ensure_witness_stream
from .errors import BrokerError, ConfigError, DirectoryUnavailable, SubmissionError

__all__ = [
    "load_digest_key",
    "publish_bundle",
    "receive",
    "serve",
    "streams_for",
]

log = structlog.get_logger()


_ORG_ID = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}\Z")
"""As the directory has them: they name NATS subjects and consumers."""


def _check_org(org: str) -> None:
    if not _ORG_ID.match(org):
        raise ConfigError(
            f"--org {org!r} is not an organisation id: 1-63 lowercase letters, digits, '-' "
            "or '_' (it names NATS subjects, so no dots or wildcards)"
        )


def _read_at_most(path: Path, size: int) -> tuple[bytes, int]:
    """Up to ``size`` bytes of ``path``, and its whole size when it is a regular file (else
    0)."""
    with path.open("rb") as fh:
        whole = os.fstat(fh.fileno())
        return fh.read(size), whole.st_size if stat.S_ISREG(whole.st_mode) else 0


def streams_for(settings: Settings) -> Streams:
    return Streams(
        submissions_max_age=float(settings.router.package_ttl),
        max_msg_size=settings.limits.max_bundle_bytes,
        replicas=settings.nats.replicas,
        deliveries_max_bytes=settings.nats.stream_max_bytes,
        intake_max_bytes=settings.nats.intake_max_bytes,
    )


def load_digest_key(settings: Settings) -> bytes:
    """The key of the object digests in the log; created (0600) on first use."""
    path = settings.broker.digest_key_file or settings.data_dir / "digest.key"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(secrets.token_bytes(32))
        log.info("digest_key.created", path=str(path))
    if path.stat().st_mode & 0o077:
        raise ConfigError(f"broker.digest_key_file {path} is readable by others: chmod 600 it")
    data = path.read_bytes()
    if len(data) < 32:
        raise ConfigError(f"broker.digest_key_file {path} holds {len(data)} bytes; 32 are needed")
    return data


def broker_signing_key(settings: Settings) -> PrivateKey:
    if settings.broker.signing_key is None:
        raise ConfigError(
            "broker.signing_key is not set: generate one with "
            "`atlas-broker keys generate --org atlas-broker --out DIR` and set "
            "[broker] signing_key in the configuration (or ATLAS_BROKER__SIGNING_KEY)"
        )
    passphrase = settings.broker.signing_key_passphrase
    key = load_private_key(
        settings.broker.signing_key,
        passphrase=passphrase.get_secret_value().encode() if passphrase else None,
    )
    if key.kind != "Ed25519":
        # Packages could carry ES256, but the same key signs the log's checkpoints, and
        # C2SP signed notes (what auditors and witnesses verify) are Ed25519.
        raise ConfigError(
            f"broker.signing_key {settings.broker.signing_key}: {key.kind} key; the "
            "broker's signing key must be Ed25519, because it also signs the log's "
            "checkpoints (C2SP signed notes): generate one with `atlas-broker keys generate "
            "--org atlas-broker --out DIR`"
        )
    return key


def broker_p256_key(settings: Settings) -> PrivateKey | None:
    """The optional ES256 key for P-256 recipients (``broker.p256_signing_key``)."""
    path = settings.broker.p256_signing_key
    if path is None:
        return None
    passphrase = settings.broker.signing_key_passphrase
    key = load_private_key(
        path, passphrase=passphrase.get_secret_value().encode() if passphrase else None
    )
    if key.kind != "ES256":
        raise ConfigError(
            f"broker.p256_signing_key {path}: {key.kind} key, not a P-256 signing key: "
            "generate one with `atlas-broker keys generate --org atlas-broker --sign ES256`"
        )
    return key


async def run_router(
    js: JetStreamContext,
    settings: Settings,
    *,
    signing_key: PrivateKey,
    ready: asyncio.Event | None = None,
    metrics: BrokerMetrics | None = None,
    attach: Callable[[Router], None] | None = None,
) -> None:
    """The router workers, the checkpointer and the receipt jobs, until cancelled.

    ``metrics`` receives the router's counts (a registry of its own when omitted);
    ``attach`` is handed the router once built (the monitor reports its readiness).
    """
    await ensure_streams(js, streams_for(settings))
    await ensure_directory_intake(js)
    async with DirectoryWatcher(js) as watcher:
        router = Router(
            js,
            watcher,
            settings=settings,
            signing_key=signing_key,
            p256_signing_key=broker_p256_key(settings),
            digest_key=load_digest_key(settings),
            metrics=metrics,
        )
        if attach is not None:
            attach(router)
        await router.ensure_consumers()
        if ready is not None:
            ready.set()
        log.info("router.started", workers=settings.router.workers)
        async with asyncio.TaskGroup() as group:
            group.create_task(_provide_for_parties(js, settings), name="party-resources")
            group.create_task(_keep_intake(js, watcher), name="intake")
            # Exactly one checkpointer is active across broker processes (a lease in KV);
            # the others stand by and take over when it stops.
            origin = log_origin(settings.broker.id)
            group.create_task(
                supervised(
                    "checkpointer",
                    lambda: run_checkpointer(js, signing_key=signing_key, origin=origin),
                ),
                name="checkpointer",
            )
            group.create_task(supervised("receipts", ReceiptPublisher(js).run), name="receipts")
            group.create_task(supervised("acks", AckRecorder(js, watcher).run), name="acks")
            await router.run()


async def serve(settings: Settings, *, on_monitor: Callable[[str], None] | None = None) -> None:
    """``atlas-broker serve``: the router on the configured or embedded NATS, until stopped.

    With ``monitor.enabled`` (the default) it also serves /healthz, /readyz and /metrics;
    ``on_monitor`` is given the monitor's URL once it listens.
    """
    signing_key = broker_signing_key(settings)
    broker_p256_key(settings)  # a wrong file stops serve here, not in the router
    if settings.nats.url is None:
        other = running_url(Path(settings.data_dir))
        if other is not None:
            # It would attach to the other's server, and hang once that one stops.
            raise ConfigError(
                f"another `atlas-broker serve` already runs on {settings.data_dir} (its "
                f"embedded nats-server is at {other}): stop it first, or run several workers "
                "against one NATS server by setting nats.url for each (deploy/README.md)"
            )
    metrics = BrokerMetrics(ROUTER_CONSUMER)
    async with nats_session(settings, embedded_ok=True, name="atlas-broker-serve") as (nc, js):
        # Started: what lives now (libraries, settings, the connection) lives as long as
        # the process, and full collections need not walk it again.
        with metrics.gc_pauses, frozen_startup() as frozen:
            log.debug("gc.frozen", objects=frozen)
            if not settings.monitor.enabled:
                await run_router(js, settings, signing_key=signing_key, metrics=metrics)
                return
            monitor = Monitor(
                nc, js, metrics, settings=settings.monitor, data_dir=Path(settings.data_dir)
            )
            async with asyncio.TaskGroup() as group:
                group.create_task(monitor.run(on_started=on_monitor), name="monitor")
                group.create_task(
                    run_router(
                        js,
                        settings,
                        signing_key=signing_key,
                        metrics=metrics,
                        attach=monitor.attach,
                    ),
                    name="router",
                )


async def _provide_for_parties(js: JetStreamContext, settings: Settings) -> None:
    """What organisations and witnesses may use but not make under the generated NATS
    configuration: the WITNESS stream and each organisation's consumers (``directory
    load`` makes them too). Off the start path: a server still recovering its store after a
    crash must not hold the router back."""
    backoff = Backoff()
    while True:
        check_cancelled()
        try:
            await ensure_witness_stream(js, replicas=settings.nats.replicas)
            made = await ensure_party_consumers(js, (await fetch_directory(js)).directory)
            if made:
                log.info("router.party_consumers_made", count=made)
            return
        except DirectoryUnavailable:
            return  # none loaded yet: `directory load` makes them
        except (nats.errors.Error, OSError) as exc:
            await backoff.wait("router.party_resources_failed", exc)


INTAKE_CHECK_EVERY = 30.0
"""Seconds between two checks that SUBMISSIONS and RECEIPTS copy every organisation's
intake (``_keep_intake``)."""


NEARLY_FULL = 0.9
"""Share of SUBMISSIONS' (RECEIPTS') bytes past which a submission still to route (a
receipt or acknowledgement still to take) among the oldest tenth is warned of: both
streams drop their oldest when full."""


def _next_dropped(info: StreamInfo) -> float | None:
    """The sequence up to which a stream at least ``NEARLY_FULL`` holds its oldest tenth
    (dropped next); None when it is not that full."""
    limit = info.config.max_bytes or 0
    if limit <= 0 or info.state.bytes < NEARLY_FULL * limit:
        return None
    first, last = info.state.first_seq or 0, info.state.last_seq or 0
    return first + (last - first) * (1 - NEARLY_FULL)


def _at_risk(info: StreamInfo, front: dict[str, int]) -> dict[str, int]:
    """Those of ``front`` (oldest pending sequence by consumer) that ``info``'s stream
    drops next."""
    edge = _next_dropped(info)
    return {} if edge is None else {key: seq for key, seq in front.items() if seq <= edge}


async def _keep_intake(js: JetStreamContext, watcher: DirectoryWatcher) -> None:
    """Keep every organisation's intake streams copied into SUBMISSIONS and RECEIPTS.

    Their sources are written by read-modify-write from several processes (``serve``,
    ``taxii``, ``directory load``): two at once can drop a source just added, and an intake
    that is no longer copied acknowledges its organisation's publishes that the router never
    sees. A source put back copies the backlog, so a check every ``INTAKE_CHECK_EVERY``
    seconds bounds how long that lasts."""
    backoff = Backoff()
    behind: dict[str, int] = {}
    front: dict[str, int] = {}
    while True:
        check_cancelled()
        await asyncio.sleep(INTAKE_CHECK_EVERY)
        try:
            added = await ensure_intake(js, intake_orgs(watcher.current.directory))
            lag = await intake_lag(js)
        except DirectoryUnavailable:
            continue
        except (nats.errors.Error, OSError) as exc:
            await backoff.wait("router.intake_check_failed", exc)
            continue
        if added:
            log.warning("router.intake_sources_restored", count=added)
        for name, count in lag.items():
            if name in behind:  # behind at two checks in a row: the copy is not moving
                log.error(
                    "router.intake_copy_stalled",
                    intake=name,
                    lag=count,
                    hint="SUBMISSIONS or RECEIPTS refuses its messages (bigger than it "
                    "takes, or nats-server's store has no room left); the intake still "
                    "acknowledges, and drops what was not copied after a day",
                )
        behind = lag
        try:
            front = await _check_unrouted(js, front)
            await _check_unfetched(js)
        except (nats.errors.Error, OSError) as exc:
            await backoff.wait("router.intake_check_failed", exc)


async def _check_unrouted(js: JetStreamContext, before: dict[str, int]) -> dict[str, int]:
    """SUBMISSIONS drops its oldest when full: say when a submission still to route is
    among the oldest tenth of a stream 90% full, and when one was dropped unrouted (its
    organisation's oldest at the previous check, below the stream's first now, never
    acknowledged). Returns the oldest unrouted submission of each organisation."""
    info = await js.stream_info(SUBMISSIONS)
    consumers = await route_consumers(js)
    front = await oldest_unrouted(js, consumers)
    first = info.state.first_seq or 0
    for org, seq in before.items():
        floor = consumers[org].ack_floor if org in consumers else None
        acked = (floor.stream_seq or 0) if floor is not None else 0
        if seq < first and acked < seq:
            log.error(
                "router.submission_dropped_unrouted",
                org=org,
                stream_seq=seq,
                hint="SUBMISSIONS was full and dropped it before the router took it: the "
                "router fell a whole stream behind; raise nats.stream_max_bytes or add "
                "workers",
            )
    at_risk = _at_risk(info, front)
    if at_risk:
        log.warning(
            "router.submissions_at_risk",
            orgs=sorted(at_risk),
            oldest=min(at_risk.values()),
            first_seq=first,
            hint="SUBMISSIONS is nearly full and drops its oldest submissions: these "
            "are not routed yet; make the router catch up (more workers or processes) "
            "or raise nats.stream_max_bytes (SUBMISSIONS keeps half of it)",
        )
    return front


async def _check_unfetched(js: JetStreamContext) -> None:
    """RECEIPTS drops its oldest when full: say whose receipts (a recipient's ``rct-``
    consumer) or which acknowledgements (``acks``) not taken yet are among the oldest tenth
    of a RECEIPTS 90% full."""
    info = await js.stream_info(RECEIPTS)
    if _next_dropped(info) is None:
        return  # not nearly full: no consumer is read
    consumers = {c.name: c for c in await consumers_of(js, RECEIPTS)}
    at_risk = _at_risk(info, await oldest_pending(js, RECEIPTS, consumers))
    if at_risk:
        log.warning(
            "receipts.unfetched_at_risk",
            consumers=sorted(at_risk),
            oldest=min(at_risk.values()),
            first_seq=info.state.first_seq,
            hint="RECEIPTS is nearly full and drops its oldest: these recipients have not "
            "fetched those receipts (or acknowledgements wait to be recorded); they lose "
            "the receipts, not the packages. Raise nats.stream_max_bytes (RECEIPTS keeps "
            "an eighth of it) if recipients are away that long",
        )


@dataclass(frozen=True, slots=True)
class Published:
    sid: str
    intake_seq: int
    """Its sequence in the member's own intake stream (``SUBMIT-<org>``)."""
    size: int
    outcome: str | None = None
    """With a wait: "accepted" or "refused" once the router decided, None if it had not."""
    reason: str | None = None
    unknown_to: tuple[str, ...] = ()
    """With a wait: names of the audience (``--to``) the directory does not know."""


async def publish_bundle(
    settings: Settings,
    bundle_path: Path,
    *,
    org: str,
    key_path: Path,
    to: tuple[str, ...] = (),
    feed: str | None = None,
    passphrase: bytes | None = None,
    js: JetStreamContext | None = None,
    wait: float = 0.0,
) -> Published:
    """Sign and submit a bundle; returns only after JetStream stored it.

    With ``wait`` > 0, also waits up to that many seconds for the router's decision.
    """
    _check_org(org)
    limit = settings.limits.max_bundle_bytes
    try:
        raw, size = await asyncio.to_thread(_read_at_most, bundle_path, limit + 1)
    except OSError as exc:
        raise SubmissionError(f"{bundle_path}: cannot read: {exc.strerror or exc}") from exc
    if len(raw) > limit:  # not read further: /dev/zero or a huge file fails at once
        raise SubmissionTooLarge(
            over_size_limit(str(bundle_path), size, limit)
            or f"{bundle_path} is more than {limit:,} bytes, over the size limit "
            "(limits.max_bundle_bytes)"
        )
    key = load_private_key(key_path, passphrase=passphrase)
    signed = make_submission(
        raw,
        org=org,
        key=key,
        to=to,
        feed=feed,
        now=int(time.time()),
        max_bytes=settings.limits.max_bundle_bytes,
        max_objects=settings.limits.max_objects,
        source=str(bundle_path),
    )
    if js is not None:
        return await _publish_signed(js, org, signed, wait)
    async with nats_session(settings, embedded_ok=False, name="atlas-publish") as (_, js2):
        return await _publish_signed(js2, org, signed, wait)


_INTAKE_FULL = 10077
"""JetStream's "maximum bytes exceeded" (and any other store refusal: "{err}")."""


async def _publish_signed(
    js: JetStreamContext, org: str, signed: SignedSubmission, wait: float
) -> Published:
    try:
        ack = await js.publish(submit_subject(org), signed.token, stream=submit_stream(org))
    except (nats.errors.NoRespondersError, nats.js.errors.NoStreamResponseError):
        raise SubmissionError(
            f"nothing takes submissions of {org!r} ({submit_subject(org)}): is it in the "
            "directory the broker loaded (`atlas-broker directory load`)?"
        ) from None
    except nats.js.errors.APIError as exc:
        if exc.err_code != _INTAKE_FULL or "maximum bytes" not in (exc.description or ""):
            raise
        raise SubmissionError(
            f"{submit_stream(org)} is full: {org} sent nats.intake_max_bytes in the last "
            "day; nothing was stored, send it later (or have the limit raised)"
        ) from None
    log.info("submission.stored", sub=signed.sid, seq=ack.seq, bytes=len(signed.token))
    published = Published(sid=signed.sid, intake_seq=int(ack.seq), size=len(signed.token))
    if wait <= 0:
        return published
    sha = hashlib.sha256(signed.token).hexdigest()
    deadline = time.monotonic() + wait
    while True:
        check_cancelled()
        try:
            decided = await submission_outcome(js, signed.sid, sha)
        except (
            nats.errors.TimeoutError,
            nats.errors.NoRespondersError,
            nats.js.errors.ServiceUnavailableError,  # nats-py's word for no responders
        ) as exc:
            raise SubmissionError(
                f"submission {signed.sid} is stored, but its outcome cannot be read from the "
                f"LOG stream ({type(exc).__name__}): may this NATS user read the log? Leave "
                "out --wait, or ask the broker's operators"
            ) from exc
        if decided is not None:
            outcome, entry = decided
            reason = entry.get("reason") if outcome == "refused" else None
            unknown = entry.get("unknown_to")
            return replace(
                published,
                outcome=outcome,
                reason=str(reason) if reason else None,
                unknown_to=tuple(map(str, unknown)) if isinstance(unknown, list) else (),
            )
        if time.monotonic() >= deadline:
            return published
        await asyncio.sleep(min(0.1, max(0.0, deadline - time.monotonic())))


def _decryption_key(path: Path, passphrase: bytes | None) -> PrivateKey:
    """A ``receive --key``: an encryption key; a signing key given by mistake is named."""
    try:
        key = load_private_key(path, passphrase=passphrase)
    except KeyFileError:
        # A P-256 file whose name does not say its use: here it can only be for decryption.
        return load_private_key(path, passphrase=passphrase, use="enc")
    if key.use == "enc":
        return key
    raise ConfigError(
        f"--key {path} is a {key.kind} signing key: give the organisation's encryption key "
        "(its .enc.pem or .enc.jwk file); a signing key goes to --sign-key"
    )


def read_jwks(path: Path) -> BrokerKeyring:
    """A pinned broker key set: ``{"keys": [JWK, ...]}``."""
    try:
        data = orjson.loads(path.read_bytes())
        keys = [PublicKey.from_jwk(jwk) for jwk in data["keys"]]
    except (OSError, orjson.JSONDecodeError, KeyError, TypeError, KeyRegistryError) as exc:
        raise ConfigError(f"--broker-jwks {path}: not a usable JWK set ({exc})") from exc
    signing = [key for key in keys if key.use == "sig"]
    if not signing:
        kinds = ", ".join(sorted({key.kind for key in keys})) or "no keys"
        raise ConfigError(
            f"--broker-jwks {path}: no signing key in the set ({kinds}): give the broker's "
            "public signing keys (its JWK set, as `keys generate --org atlas-broker` printed it)"
        )
    return BrokerKeyring.of(*signing)  # encryption keys in the set are not the broker's trust


class BrokerRing:
    """The broker keys a receiver trusts, kept current while it runs.

    With pinned keys (``--broker-jwks``) the trust anchors never come from the bus, but
    revocations do: a revocation can only make the receiver stricter. Without pinned keys
    the directory's ``[broker]`` keys are used as they are.
    """

    def __init__(self, js: JetStreamContext, pinned: BrokerKeyring | None, interval: float = 2.0):
        self._js = js
        self._pinned = pinned
        self._interval = interval
        self._ring = pinned or BrokerKeyring({})

    def current(self) -> BrokerKeyring:
        return self._ring

    async def refresh(self) -> None:
        try:
            published = (await fetch_directory(self._js)).broker_keyring
        except DirectoryUnavailable:
            if self._pinned is None:
                raise
            return
        if self._pinned is None:
            self._ring = published
            return
        self._ring = BrokerKeyring(
            {
                kid: (key, published[kid][1] if kid in published else None)
                for kid, (key, _) in self._pinned.items()
            }
        )

    async def follow(self) -> None:
        while True:
            check_cancelled()
            await asyncio.sleep(self._interval)
            try:
                await self.refresh()
            except (nats.errors.Error, OSError, BrokerError, PolicyError) as exc:
                log.warning("receive.key_refresh_failed", error=str(exc))


def _receipt_check(ring: BrokerRing, settings: Settings) -> Any:
    """Receipts are checked against the log key: the broker's Ed25519 signing keys."""

    def _check(data: bytes, jti: str, aud: str, jwe_sha256: str) -> dict[str, Any]:
        keys = [
            NoteVerifier.from_public_key(log_origin(settings.broker.id), key)
            for key, revoked_at in ring.current().values()
            if key.kind == "Ed25519" and revoked_at is None
        ]
        return receipt_checker(keys)(data, jti, aud, jwe_sha256)

    return _check


async def _check_party(js: JetStreamContext, org: str) -> None:
    """Refuse an ``--org`` the community directory does not name: a typo would otherwise
    wait on (or drain) a consumer nobody delivers to, and report success."""
    try:
        directory = (await fetch_directory(js)).directory
    except DirectoryUnavailable:
        return  # the broker keys' refresh says what is missing, or --broker-jwks stands in
    found = directory.organisation(org)
    if found is None:
        raise ConfigError(
            f"--org {org!r} is not an organisation of the community directory; "
            "check the id (`atlas-broker keys list` shows the directory's organisations)"
        )
    if found.kind == OrgKind.AUDITOR:
        raise ConfigError(
            f"{org!r} is an auditor: nothing is delivered to auditors; read the log with "
            "`atlas-broker audit verify` instead"
        )


async def receive(
    settings: Settings,
    *,
    org: str,
    key_paths: list[Path],
    out_dir: Path,
    once: bool,
    broker_jwks: Path | None = None,
    passphrase: bytes | None = None,
    js: JetStreamContext | None = None,
    on_ready: Callable[[Receiver], None] | None = None,
    sign_key_path: Path | None = None,
    push: Callable[[dict[str, Any]], Awaitable[None]] | None = None,
) -> ReceiveStats:
    """``atlas-broker receive``: open this organisation's packages into ``out_dir``.

    Receipts for packages already stored are verified and kept beside them; with
    ``sign_key_path`` each is acknowledged with a signature that the broker logs.
    """
    _check_org(org)
    keys = [_decryption_key(p, passphrase) for p in key_paths]
    decryption = {k.public.thumbprint: k for k in keys}
    pinned = read_jwks(broker_jwks) if broker_jwks else None

    async def _run(js: JetStreamContext) -> ReceiveStats:
        await _check_party(js, org)
        ring = BrokerRing(js, pinned)
        await ring.refresh()
        if pinned is None:
            log.warning(
                "receive.broker_keys_from_bus", hint="pin the broker's keys with --broker-jwks"
            )
        receiver = Receiver(
            js,
            org=org,
            decryption_keys=decryption,
            broker_keys=ring.current,
            out_dir=out_dir,
            push=push,
        )
        keeper = ReceiptKeeper(
            js,
            org=org,
            out_dir=out_dir,
            check=_receipt_check(ring, settings),
            signing_key=load_private_key(sign_key_path, passphrase=passphrase)
            if sign_key_path
            else None,
        )
        if on_ready is not None:
            on_ready(receiver)
        async with asyncio.TaskGroup() as group:
            refresher = group.create_task(ring.follow())
            keeping = None if once else group.create_task(keeper.run())
            try:
                stats = await receiver.run(once=once)
                if once:
                    await keeper.drain()
                stats.receipts = keeper.stats.kept
                return stats
            finally:
                refresher.cancel()
                if keeping is not None:
                    keeping.cancel()

    if js is not None:
        return await _run(js)
    async with nats_session(settings, embedded_ok=False, name=f"atlas-receive-{org}") as (_, js2):
        return await _run(js2)
