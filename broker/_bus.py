"""The NATS side: connecting, the JetStream streams and buckets, subject names.

| stream        | subjects                                   | why                                 |
|---------------|--------------------------------------------|-------------------------------------|
| SUBMIT-<org>  | ``atlas.submit.<org>``                     | one member's intake, capped, 1 day  |
| ACK-<org>     | ``atlas.ack.<org>``                        | one recipient's acks, capped, 1 day |
| SUBMISSIONS   | (sourced from every SUBMIT-<org>)          | signed submissions, 30 d; full:     |
|               |                                            | the oldest (routed) dropped         |
| DELIVERIES    | ``atlas.deliver.<recipient>.<submission>`` | one sealed package per subject      |
| RECEIPTS      | ``atlas.receipt.*.*``, ``atlas.notice.*``  | receipts, notices; acks sourced     |
|               | (and sourced from every ACK-<org>)         | from every ACK-<org>; full: the     |
|               |                                            | oldest dropped                      |
| LOG           | ``atlas.log.entries.<submission>.<n>``,    | dissemination log: delete/purge     |
|               | ``atlas.log.checkpoints``                  | denied, no age limit                |

Log entries of one submission are one message on their own subject, published with an
expected last subject sequence of 0 like deliveries: a worker that crashes after writing
them and is redelivered the submission cannot write them twice.

Organisations never write a stream another organisation writes: each has intake streams
of its own, which nats-server copies into SUBMISSIONS and RECEIPTS. Written straight into
a shared stream, a member's publish learned of others' activity (its acknowledgement
carries the stream-wide sequence, and an ``Nats-Expected-Last-Subject-Sequence-Subject``
header naming another member's subject answers with that subject's last sequence), and
one organisation could fill the shared stream's byte limit and have everyone else's
submissions refused. An intake stream holds one organisation's subject only, and its
byte limit (``nats.intake_max_bytes``, a day's worth) is that organisation's alone.

Each intake is copied through a durable consumer of its own (``copy``, acknowledged by
nats-server's flow control as the target stores; nats-server 2.14's durable sourcing),
not through the ephemeral consumer nats-server makes when a source names none. An
ephemeral source that is set up again (a stream update, a restart, a stall) works out
where to resume from the target's newest copy of that intake; once SUBMISSIONS or
RECEIPTS had dropped that copy as one of its oldest, nats-server 2.15.1 resumed after the
target's newest message of any intake and skipped what the intake still held uncopied
(measured: 7 runs of 80 lost a copy; with durable consumers 0 of 80). The durable
consumer's acknowledged floor says what was stored, whatever the target dropped since.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import nats
import nats.errors
import nats.js.errors
import structlog
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    ConsumerInfo,
    DeliverPolicy,
    DiscardPolicy,
    KeyValueConfig,
    RetentionPolicy,
    StorageType,
    StreamConfig,
    StreamConsumerSource,
    StreamSource,
)

from ._config import Settings
from ._embedded import EmbeddedNats, running_url
from .errors import ConfigError, NatsUnavailable

__all__ = [
    "COPY_CONSUMER",
    "DELIVERIES",
    "DIRECTORY_BUCKET",
    "LOG",
    "RECEIPTS",
    "SUBMISSIONS",
    "SUBMITTED_BUCKET",
    "VIEWS",
    "Streams",
    "ack_stream",
    "ack_subject",
    "check_server_version",
    "connect",
    "copy_origin",
    "copy_subject",
    "deliver_subject",
    "ensure_intake",
    "ensure_stream",
    "ensure_streams",
    "intake_lag",
    "log_subject",
    "nats_session",
    "oldest_pending",
    "receipt_subject",
    "submit_stream",
    "submit_subject",
    "view_subject",
]

log = structlog.get_logger()

SUBMISSIONS = "SUBMISSIONS"
DELIVERIES = "DELIVERIES"
VIEWS = "VIEWS"
RECEIPTS = "RECEIPTS"
LOG = "LOG"
DIRECTORY_BUCKET = "atlas_directory"
SUBMITTED_BUCKET = "atlas_submitted"
OBJECTS_BUCKET = "atlas_objects"
CHECKPOINT_SUBJECT = "atlas.log.checkpoints"

_DAY = 86400.0


def submit_subject(org: str) -> str:
    return f"atlas.submit.{org}"


_SUBMIT_PREFIX = "SUBMIT-"


def submit_stream(org: str) -> str:
    """The member's intake stream: it alone writes it (organisation ids are valid stream
    names: lowercase letters, digits, ``-`` and ``_``)."""
    return f"{_SUBMIT_PREFIX}{org}"


def ack_subject(org: str) -> str:
    return f"atlas.ack.{org}"


_ACK_PREFIX = "ACK-"


def ack_stream(org: str) -> str:
    """The recipient's intake stream of acknowledgements."""
    return f"{_ACK_PREFIX}{org}"


COPY_CONSUMER = "copy"
"""The durable consumer of each intake stream through which SUBMISSIONS or RECEIPTS
copies it."""
_SOURCE_HEADER = "Nats-Stream-Source"


def copy_subject(intake: str) -> str:
    """Where an intake's copy consumer delivers: in the broker's account, which no
    organisation reaches (``deploy nats-config`` exports it to none)."""
    return f"atlas.copy.{intake}"


def copy_origin(headers: Mapping[str, str] | None) -> tuple[str, int] | None:
    """The intake stream and its sequence a copy in SUBMISSIONS or RECEIPTS came from
    (its ``Nats-Stream-Source`` header: the stream's name, followed by ``:C=`` and a hash
    when copied through a durable consumer, then the sequence); None for a message not
    copied."""
    fields = (headers or {}).get(_SOURCE_HEADER, "").split()
    if len(fields) < 2 or not fields[1].isdigit():
        return None
    return fields[0].split(":", 1)[0], int(fields[1])


def deliver_subject(recipient: str, submission: str) -> str:
    return f"atlas.deliver.{recipient}.{submission}"


def view_subject(recipient: str, submission: str) -> str:
    return f"atlas.view.{recipient}.{submission}"


def receipt_subject(recipient: str, package: str) -> str:
    """Named by the package id, which only its recipient knows: a submission id would let
    another recipient of it ask the stream whether this one got it too (an expected
    last-subject-sequence header on its own publish answers that)."""
    return f"atlas.receipt.{recipient}.{package}"


def log_subject(submission: str) -> str:
    return f"atlas.log.entries.{submission}"


@dataclass(frozen=True, slots=True)
class Streams:
    submissions_max_age: float = 30 * _DAY
    deliveries_max_age: float = 30 * _DAY
    deliveries_max_bytes: int = 8 * 1024**3
    max_msg_size: int = 1024 * 1024
    replicas: int = 1
    receipts_max_msg_size: int = 64 * 1024
    """Receipts, acknowledgements and notices are a few KB."""
    intake_max_bytes: int = 32 * 1024**2
    """Most bytes one organisation's intake stream (SUBMIT-<org>, ACK-<org>) keeps; with
    ``intake_max_age`` its most a day: past it, its publishes are refused."""
    intake_max_age: float = _DAY
    """Intake streams are copied into SUBMISSIONS and RECEIPTS at once; they keep a day
    (TAXII status lookups read them)."""


_COPY_HEADROOM = 1024
"""Bytes SUBMISSIONS and RECEIPTS take beyond their intakes' largest message: a copy gains
a ``Nats-Stream-Source`` header (about 60 bytes and three times the organisation id), and
nats-server counts headers against the limit. A copy the target refused would hold up
every later message of that intake, unseen (measured: a token that just fit was
acknowledged by the intake and never copied, nor anything after it)."""

_INTAKE_MAX_BYTES = "atlas_intake_max_bytes"
_INTAKE_MAX_AGE = "atlas_intake_max_age"
"""SUBMISSIONS' metadata keys holding the intake streams' limits: whoever later adds an
organisation's intake (``directory load``) gives it the limits the broker was set with."""


def _file_stream(name: str, subjects: list[str], replicas: int, **limits: Any) -> StreamConfig:
    """A file-backed stream with limits retention. Dedupe windows are kept minimal: the
    broker never trusts a client-chosen Nats-Msg-Id (dedupe is stream-wide, so one member
    could make another's message vanish); it dedupes per organisation and per subject."""
    return StreamConfig(
        name=name,
        subjects=subjects,
        storage=StorageType.FILE,
        retention=RetentionPolicy.LIMITS,
        num_replicas=replicas,
        duplicate_window=0.1,
        **limits,
    )


DURABLE_SOURCING = (2, 14)
"""The first nats-server release that copies a stream through a durable consumer."""


def check_server_version(version: Any) -> None:
    """Refuse a nats-server too old for the copy consumers (``version``: nats-py's
    ``connected_server_version``), naming what it is and what is needed."""
    found = (version.major, version.minor)
    if found < DURABLE_SOURCING:
        need = ".".join(map(str, DURABLE_SOURCING))
        raise ConfigError(
            f"the NATS server is nats-server {found[0]}.{found[1]}.{version.patch}; the broker "
            f"needs {need} or later: it copies each organisation's intake stream through "
            "a durable consumer (nats-server's durable sourcing). Upgrade the server, or "
            "leave nats.url unset to run the embedded one"
        )


async def ensure_streams(js: JetStreamContext, streams: Streams = Streams()) -> None:
    """Create the streams and buckets, or bring their configuration up to date."""
    nc = getattr(js, "_nc", None)  # nats-py keeps the connection there, unexported
    if nc is not None and nc.is_connected:
        check_server_version(nc.connected_server_version)
    kept = {
        "max_age": streams.deliveries_max_age,
        "max_bytes": streams.deliveries_max_bytes,
        "discard": DiscardPolicy.NEW,  # never drop an undelivered package silently
    }
    current = {name: await _config(js, name) for name in (SUBMISSIONS, RECEIPTS)}
    sources = {name: config.sources if config else None for name, config in current.items()}
    made = sorted(
        {s.name.removeprefix(_SUBMIT_PREFIX) for s in sources[SUBMISSIONS] or () if s.name}
        | {s.name.removeprefix(_ACK_PREFIX) for s in sources[RECEIPTS] or () if s.name}
    )
    intake = _Intake(
        streams.intake_max_bytes,
        streams.intake_max_age,
        streams.max_msg_size,
        streams.receipts_max_msg_size,
        streams.replicas,
    )
    sub_now, rec_now = current[SUBMISSIONS], current[RECEIPTS]
    if made and sub_now and rec_now:
        # A source may not take bigger messages than its target: smaller ones first.
        await _ensure_intake(
            js,
            made,
            replace(
                intake,
                submit_size=min(intake.submit_size, (sub_now.max_msg_size or 0) - _COPY_HEADROOM),
                ack_size=min(intake.ack_size, (rec_now.max_msg_size or 0) - _COPY_HEADROOM),
            ),
        )
    configs = [
        _file_stream(
            SUBMISSIONS,
            [],  # nats-server then gives it its own name; members write their SUBMIT-<org>
            streams.replicas,
            max_age=streams.submissions_max_age,
            max_msg_size=streams.max_msg_size + _COPY_HEADROOM,
            # Capped too, so that the intake streams together cannot fill the store LOG
            # and DELIVERIES need (found by a probe). Full, it drops its oldest: a member's
            # submission is accepted when its intake stores it, and a copy SUBMISSIONS
            # refused would hold up every later one of that intake while the intake kept
            # acknowledging them (measured). The oldest are long routed; one still waiting
            # for the router is dropped only behind a backlog the size of the whole
            # stream (``serve`` warns when it is nearly full with work waiting).
            max_bytes=streams.deliveries_max_bytes // 2,
            discard=DiscardPolicy.OLD,
            sources=sources[SUBMISSIONS],
            metadata={
                _INTAKE_MAX_BYTES: str(streams.intake_max_bytes),
                _INTAKE_MAX_AGE: str(streams.intake_max_age),
            },
        ),
        _file_stream(DELIVERIES, ["atlas.deliver.*.*"], streams.replicas, **kept),
        # Plaintext views of recipients that read over TAXII (directory: taxii_read).
        _file_stream(VIEWS, ["atlas.view.*.*"], streams.replicas, **kept),
        # Receipts to recipients (one per delivered package), their signed
        # acknowledgements back (atlas.ack.<org> through ACK-<org>, logged), and notices
        # to originators. Full, it drops its oldest: a receipt is derived from LOG (its
        # entry, inclusion proof and checkpoint) and the oldest were fetched long ago;
        # an acknowledgement is recorded (its digest in LOG) as it arrives. Refusing new
        # ones instead stopped every recipient's receipts until the oldest aged out (30
        # days) and held up the acknowledgements in their intakes (measured: the soak
        # filled it at ~236,000 receipts, and receipts stopped).
        _file_stream(
            RECEIPTS,
            ["atlas.receipt.*.*", "atlas.notice.*"],
            streams.replicas,
            max_age=streams.deliveries_max_age,
            max_bytes=streams.deliveries_max_bytes // 8,
            max_msg_size=streams.receipts_max_msg_size + _COPY_HEADROOM,
            discard=DiscardPolicy.OLD,
            sources=sources[RECEIPTS],
        ),
        _file_stream(
            LOG,
            ["atlas.log.entries.>", CHECKPOINT_SUBJECT],
            streams.replicas,
            deny_delete=True,
            deny_purge=True,
        ),
    ]
    for config in configs:
        await ensure_stream(js, config)
    if made:  # the intake streams already made take changed limits, and are copied
        await ensure_intake(js, made)
    await js.create_key_value(
        KeyValueConfig(bucket=DIRECTORY_BUCKET, history=16, replicas=streams.replicas)
    )
    await js.create_key_value(
        KeyValueConfig(bucket=OBJECTS_BUCKET, history=1, replicas=streams.replicas)
    )
    await js.create_key_value(
        KeyValueConfig(
            bucket=SUBMITTED_BUCKET,
            ttl=streams.submissions_max_age,
            replicas=streams.replicas,
        )
    )


async def _config(js: JetStreamContext, name: str) -> StreamConfig | None:
    try:
        return (await js.stream_info(name)).config
    except nats.js.errors.NotFoundError:
        return None


@dataclass(frozen=True, slots=True)
class _Intake:
    """What every intake stream is made with."""

    max_bytes: int
    max_age: float
    submit_size: int
    """Largest message of a SUBMIT- stream: SUBMISSIONS' (a source may not take more)."""
    ack_size: int
    """Largest message of an ACK- stream: RECEIPTS'."""
    replicas: int


async def ensure_intake(js: JetStreamContext, orgs: Iterable[str]) -> int:
    """Each organisation's intake streams, copied into SUBMISSIONS and RECEIPTS; how many
    were added. Their limits are read from SUBMISSIONS and RECEIPTS (``ensure_streams``
    sets them from the settings), so ``directory load`` gives a new organisation the
    broker's."""
    submissions = (await js.stream_info(SUBMISSIONS)).config
    receipts = (await js.stream_info(RECEIPTS)).config
    meta, default = submissions.metadata or {}, Streams()
    intake = _Intake(
        int(meta.get(_INTAKE_MAX_BYTES, default.intake_max_bytes)),
        float(meta.get(_INTAKE_MAX_AGE, default.intake_max_age)),
        (submissions.max_msg_size or 0) - _COPY_HEADROOM,
        (receipts.max_msg_size or 0) - _COPY_HEADROOM,
        submissions.num_replicas or 1,
    )
    return await _ensure_intake(js, orgs, intake, {SUBMISSIONS: submissions, RECEIPTS: receipts})


async def intake_lag(js: JetStreamContext) -> dict[str, int]:
    """Messages each intake holds that SUBMISSIONS or RECEIPTS has not copied yet (intakes
    with none left out). Lag that lasts means the copy stopped: its target is full, or
    refuses the message; the intake meanwhile still acknowledges its organisation."""
    lag: dict[str, int] = {}
    for aggregate in (SUBMISSIONS, RECEIPTS):
        for source in (await js.stream_info(aggregate)).sources or ():
            if source.lag:
                lag[source.name] = int(source.lag)
    return lag


async def _ensure_intake(
    js: JetStreamContext,
    orgs: Iterable[str],
    intake: _Intake,
    aggregates: dict[str, StreamConfig] | None = None,
) -> int:
    wanted: dict[str, list[tuple[str, str]]] = {SUBMISSIONS: [], RECEIPTS: []}
    for org in sorted(set(orgs)):
        for aggregate, name, subject, size in (
            (SUBMISSIONS, submit_stream(org), submit_subject(org), intake.submit_size),
            # No bigger messages than RECEIPTS takes: one it refused would hold up the
            # copying of everything after it.
            (RECEIPTS, ack_stream(org), ack_subject(org), intake.ack_size),
        ):
            config = _file_stream(
                name,
                [subject],
                intake.replicas,
                max_msg_size=size,
                max_bytes=intake.max_bytes,
                max_age=intake.max_age,
                discard=DiscardPolicy.NEW,  # refused when full; nothing accepted is dropped
            )
            await ensure_stream(js, config)
            wanted[aggregate].append((name, subject))
    if aggregates is None:
        return 0  # ensure_streams: it sources them once the aggregates are up to date
    added = 0
    for aggregate, current in aggregates.items():
        added += await _source_intakes(js, current, wanted[aggregate])
    return added


async def _source_intakes(
    js: JetStreamContext, config: StreamConfig, intakes: list[tuple[str, str]]
) -> int:
    """Make ``config``'s stream copy each of ``intakes`` (stream name, subject) through
    its copy consumer; how many had no source at all (new, or dropped by a concurrent
    writer's stale list).

    A source that copies through an ephemeral consumer (a store made before durable
    copying), or names a copy consumer that no longer exists, is taken out first and put
    back once its consumer is made: nothing copies that intake meanwhile, so its consumer
    starts right after the newest copy the target holds."""
    names = {name for name, _ in intakes}
    present = {s.name: s for s in config.sources or () if s.name in names}
    stale = {
        name
        for name, source in present.items()
        if source.consumer is None or not await _has_copy_consumer(js, name)
    }
    if stale:
        config.sources = [s for s in config.sources or () if s.name not in stale]
        await js.update_stream(config)
        log.info("stream.intake_copy_renewed", stream=config.name, count=len(stale))
    wanted = [(name, subject) for name, subject in intakes if name not in present or name in stale]
    ready: list[str] = []
    failed: Exception | None = None
    for name, subject in wanted:
        try:
            await _ensure_copy_consumer(js, config.name or "", name, subject)
        except (nats.errors.Error, OSError) as exc:  # the others are copied meanwhile
            failed = failed or exc
        else:
            ready.append(name)
    if ready:
        config.sources = [*(config.sources or ()), *(_copy_source(name) for name in ready)]
        await js.update_stream(config)
    if failed is not None:
        raise failed  # the next call (``serve`` checks every 30 s) sources the rest
    added = len(names - present.keys())
    if added:
        log.info("stream.intake_added", stream=config.name, count=added)
    return added


def _copy_source(intake: str) -> StreamSource:
    return StreamSource(
        name=intake,
        consumer=StreamConsumerSource(name=COPY_CONSUMER, deliver_subject=copy_subject(intake)),
    )


COPY_HEARTBEAT = 1.0
"""Seconds between the copy consumers' idle heartbeats: an idle intake's copies are
acknowledged by the heartbeat's flow control, and a stall is noticed within a few."""


async def _has_copy_consumer(js: JetStreamContext, intake: str) -> bool:
    try:
        await js.consumer_info(intake, COPY_CONSUMER)
    except nats.js.errors.NotFoundError:
        return False
    return True


async def _ensure_copy_consumer(
    js: JetStreamContext, aggregate: str, intake: str, subject: str
) -> None:
    """The intake's copy consumer; a new one starts after the newest copy of the intake
    that ``aggregate`` holds (from the start of the intake when it holds none: a message
    copied twice is harmless, the router and the acknowledgement recorder take it once)."""
    if await _has_copy_consumer(js, intake):
        return
    newest = await _newest_copy(js, aggregate, intake, subject)
    if newest is not None and newest > ((await js.stream_info(intake)).state.last_seq or 0):
        newest = None  # the intake was made anew since (by hand): copy all it holds
    config = ConsumerConfig(
        name=COPY_CONSUMER,
        durable_name=COPY_CONSUMER,
        description=f"copies {intake} into {aggregate}",
        deliver_subject=copy_subject(intake),
        filter_subject=subject,
        ack_policy=AckPolicy.FLOW_CONTROL,
        flow_control=True,
        idle_heartbeat=COPY_HEARTBEAT,
        max_deliver=-1,
        deliver_policy=DeliverPolicy.ALL if newest is None else DeliverPolicy.BY_START_SEQUENCE,
        opt_start_seq=None if newest is None else newest + 1,
    )
    try:
        await js.add_consumer(intake, config)
    except nats.js.errors.APIError:
        if not await _has_copy_consumer(js, intake):  # else another process made it first
            raise
    log.info("stream.copy_consumer_made", intake=intake, after=newest)


async def _newest_copy(
    js: JetStreamContext, aggregate: str, intake: str, subject: str
) -> int | None:
    """The intake sequence of the newest copy ``aggregate`` holds of ``intake``."""
    try:
        msg = await js.get_last_msg(aggregate, subject)
    except nats.js.errors.NotFoundError:
        return None
    origin = copy_origin(msg.headers)
    return origin[1] if origin is not None and origin[0] == intake else None


# 10047: a server has no room for the stream's limits; 10023: no server (of a cluster)
# has the resources to place it.
_NO_STORAGE = frozenset({10047, 10023})


async def oldest_pending(
    js: JetStreamContext, stream: str, consumers: Mapping[str, ConsumerInfo]
) -> dict[str, int]:
    """For each consumer with one filter subject and messages still to hand out or
    acknowledge, the stream sequence of its oldest one: the first of its filter subject
    past its acknowledged floor (a stream that drops its oldest when full drops those
    first). Consumers without a single filter subject are left out."""
    front: dict[str, int] = {}
    for key, info in consumers.items():
        if not (info.num_pending or info.num_ack_pending):
            continue
        if not info.config.filter_subject:  # none or several: not found this way
            continue
        floor = (info.ack_floor.stream_seq or 0) if info.ack_floor else 0
        try:
            msg = await js.get_msg(
                stream, seq=floor + 1, subject=info.config.filter_subject, next=True
            )
        except nats.js.errors.NotFoundError:
            continue
        if msg.seq is not None:
            front[key] = msg.seq
    return front


async def consumers_of(js: JetStreamContext, stream: str) -> list[ConsumerInfo]:
    """Every consumer of ``stream``: nats-server lists 256 at a time, nats-py one page."""
    found: list[ConsumerInfo] = []
    while True:
        page = await js.consumers_info(stream, offset=len(found))
        if not page:
            return found
        found.extend(page)


async def ensure_stream(js: JetStreamContext, config: StreamConfig) -> None:
    """Create the stream, or bring an existing one's configuration up to date."""
    try:
        try:
            await js.add_stream(config)
        except nats.js.errors.BadRequestError as exc:
            # 10058: the stream exists with another configuration -> update it in place.
            if exc.err_code != 10058:
                raise
            await js.update_stream(config)
            log.info("stream.updated", stream=config.name)
    except nats.js.errors.APIError as exc:
        if exc.err_code not in _NO_STORAGE:
            raise
        size = f"{config.max_bytes:,} bytes" if config.max_bytes else "no byte limit"
        raise ConfigError(
            f"nats-server has no room for stream {config.name} ({size}; "
            f"{exc.description or 'insufficient resources'}): it reserves each stream's "
            "maximum on its store's disk (on every replica), and grants JetStream 75% of "
            "the free space unless max_file_store says otherwise; an account's limits "
            "also count. Free disk space, lower nats.stream_max_bytes (DELIVERIES and "
            "VIEWS each keep that much, SUBMISSIONS half, RECEIPTS an eighth) or "
            "nats.intake_max_bytes (each organisation's SUBMIT- and ACK- streams), or "
            "raise the server's or account's limit"
        ) from exc


def _tls_context(settings: Settings) -> ssl.SSLContext | None:
    cfg = settings.nats
    url = cfg.url or ""
    if not (url.startswith("tls://") or cfg.tls_ca_file or cfg.tls_cert_file):
        return None
    ctx = ssl.create_default_context(cafile=str(cfg.tls_ca_file) if cfg.tls_ca_file else None)
    if cfg.tls_cert_file and cfg.tls_key_file:
        ctx.load_cert_chain(str(cfg.tls_cert_file), str(cfg.tls_key_file))
    return ctx


async def _on_error(exc: Exception) -> None:
    # Permission violations reach a client only through this callback.
    log.warning("nats.error", error=str(exc), kind=type(exc).__name__)


def _on_disconnect(nc: list[NATS]) -> Callable[[], Awaitable[None]]:
    async def _logged() -> None:
        if nc and (nc[0].is_draining or nc[0].is_closed):
            return  # closing on purpose: not news
        log.info("nats.disconnected")

    return _logged


async def _on_reconnect() -> None:
    log.info("nats.reconnected")


def _servers(url: str) -> list[str]:
    """``nats://a:4222,nats://b:4222`` -> one server per comma-separated URL (a cluster)."""
    servers = [part.strip() for part in url.split(",") if part.strip()]
    if not servers:
        raise NatsUnavailable(f"no NATS server in URL {url!r}")
    for server in servers:
        parsed = urllib.parse.urlsplit(server if "://" in server else f"nats://{server}")
        try:
            port = parsed.port
        except ValueError:
            port = -1
        if (
            parsed.scheme not in _SCHEMES
            or not parsed.hostname
            or port == -1
            or parsed.path not in ("", "/")
        ):
            raise ConfigError(
                f"NATS URL {server!r} is not a server URL: write nats://HOST:PORT (or tls://, "
                "ws://, wss://), several separated by commas"
            )
    return servers


_SCHEMES = frozenset({"nats", "tls", "ws", "wss"})


def _without_secret(server: str) -> str:
    """A server URL for messages: a password or token in it is replaced by ``***``."""
    head, sep, rest = server.partition("://")
    if not sep or "@" not in rest.split("/", 1)[0]:
        return server
    userinfo, _, host = rest.partition("@")
    user = userinfo.split(":", 1)[0] if ":" in userinfo else ""
    return f"{head}://{user + ':' if user else ''}***@{host}"


DRAIN_SECONDS = 5
"""How long closing a connection waits for its subscriptions to drain. nats-py waits for
every message already queued to a subscription to be taken (30 s by default): one that
arrived for a worker cancelled on SIGTERM is never taken, and a stop would outlast
systemd's and Kubernetes' grace periods. Unacknowledged work is redelivered anyway."""


async def connect(url: str, settings: Settings, *, name: str = "atlas-broker") -> NATS:
    """Connect to ``url`` with the configured credentials and TLS options.

    ``url`` may list several servers separated by commas (the nodes of a cluster): the
    client connects to one of them and fails over to the others.
    """
    cfg = settings.nats
    servers = _servers(url)
    kwargs: dict[str, object] = {}
    if cfg.user is not None and cfg.password is not None:
        kwargs.update(user=cfg.user, password=cfg.password.get_secret_value())
    if cfg.token is not None:
        kwargs["token"] = cfg.token.get_secret_value()
    if cfg.nkey_seed_file is not None:
        kwargs["nkeys_seed"] = str(cfg.nkey_seed_file)
    if cfg.creds_file is not None:
        kwargs["user_credentials"] = str(cfg.creds_file)
    if cfg.inbox_prefix is not None:
        kwargs["inbox_prefix"] = cfg.inbox_prefix
    tls = _tls_context(settings)
    if tls is not None:
        kwargs["tls"] = tls
    # nats-py retries the first connection as often as later reconnections (forever with
    # -1), so a wrong URL or password would hang; bound the first attempt ourselves.
    holder: list[NATS] = []
    shown = ",".join(_without_secret(server) for server in servers)
    try:
        async with asyncio.timeout(cfg.connect_timeout * 2 + 1):
            nc = await nats.connect(
                servers=servers,
                name=name,
                connect_timeout=int(max(1, cfg.connect_timeout)),
                max_reconnect_attempts=-1,
                reconnect_time_wait=1,
                allow_reconnect=True,
                drain_timeout=DRAIN_SECONDS,
                error_cb=_on_error,
                disconnected_cb=_on_disconnect(holder),
                reconnected_cb=_on_reconnect,
                **kwargs,
            )
    except TimeoutError as exc:
        raise NatsUnavailable(
            f"cannot connect to NATS at {shown}: no successful login within "
            f"{cfg.connect_timeout * 2 + 1:.0f} s (is the server up, are the credentials right?)"
        ) from exc
    except (OSError, nats.errors.Error) as exc:
        raise NatsUnavailable(
            f"cannot connect to NATS at {shown}: {str(exc) or type(exc).__name__}"
        ) from exc
    holder.append(nc)
    if 0 < nc.max_payload < cfg.max_payload:
        # The limits were checked against nats.max_payload: a server taking less would
        # refuse packages and submissions the broker admitted, again at every retry.
        await nc.close()
        raise ConfigError(
            f"nats.max_payload is {cfg.max_payload:,} bytes but the NATS server at {shown} takes "
            f"at most {nc.max_payload:,}: set nats.max_payload (ATLAS_NATS__MAX_PAYLOAD) to "
            f"{nc.max_payload} or less, or raise max_payload in the server's configuration"
        )
    return nc


@contextlib.asynccontextmanager
async def nats_session(
    settings: Settings, *, embedded_ok: bool, name: str = "atlas-broker"
) -> AsyncIterator[tuple[NATS, JetStreamContext]]:
    """Connect to the configured server, or to/with the embedded one.

    With ``nats.url`` set, connect there. Otherwise use the embedded server running on the
    data folder; if none runs and ``embedded_ok`` (``serve``, ``demo``), start one and stop
    it on exit.
    """
    url = settings.nats.url or running_url(settings.data_dir)
    embedded: EmbeddedNats | None = None
    if url is None:
        if not embedded_ok:
            raise NatsUnavailable(
                f"no NATS URL configured and no embedded server running on {settings.data_dir}: "
                "start `atlas-broker serve` (same --data-dir) or set nats.url / ATLAS_NATS__URL"
            )
        embedded = EmbeddedNats(
            Path(settings.data_dir),
            host=settings.nats.host,
            port=settings.nats.port,
            sync_always=settings.nats.sync_always,
            max_payload=settings.nats.max_payload,
        )
        url = await embedded.start()
    try:
        nc = await connect(url, settings, name=name)
        try:
            prefix = settings.nats.api_prefix
            yield nc, nc.jetstream(prefix=prefix) if prefix else nc.jetstream()
        finally:
            with contextlib.suppress(Exception):
                await nc.drain()
    finally:
        if embedded is not None:
            await embedded.stop()
