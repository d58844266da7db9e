"""Submissions fetched per organisation and handed to the router's workers in turn.

Every organisation that publishes has a durable pull consumer of its own on SUBMISSIONS,
``route-<org>``, filtered to ``atlas.submit.<org>``. Each broker process runs one fetch loop
per consumer (``OrgFeeds``): it fetches one submission, waits for the organisation's
rate-limit token if a limit is set, queues the submission for the workers and waits until a
worker took it before it fetches the next. The queue therefore holds at most one submission
per organisation, in the order they became ready, and the workers serve organisations in
turn: a flood from one organisation -- junk or valid, over its rate or not -- puts at most
one of its submissions ahead of another organisation's next one, and whatever it leaves
ack-pending counts against its own consumer's ``max_ack_pending`` alone.

Why not one shared consumer (as before): a member over its rate had its submissions nak'd
with a delay, and nak'd messages stay ack-pending; a flood larger than ``max_ack_pending``
stopped the shared consumer for everybody until it drained at the flooder's rate (measured:
400 junk messages in 0.25 s held other members' submissions for 55 s). Without a rate
limit, a junk flood queued ahead of everybody else's work (4-20 s measured at 5,000/s).

A fetched submission is kept in progress (``keep_in_progress``) from the moment it is
fetched, so waiting for its turn or its token never runs out its ack wait.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import nats.errors
import nats.js.errors
import structlog
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, ConsumerInfo, DeliverPolicy

from adapters import cancel_and_wait, check_cancelled, keep_in_progress
from adapters._consumer import Backoff

from ._bus import SUBMISSIONS, consumers_of, oldest_pending, submit_subject
from ._config import RouterSettings
from ._limits import SubmissionLimiter

__all__ = [
    "LEGACY_CONSUMER",
    "Backlog",
    "Held",
    "OrgFeeds",
    "ensure_route_consumers",
    "oldest_unrouted",
    "route_consumer",
    "route_consumers",
    "router_backlog",
]

log = structlog.get_logger()

LEGACY_CONSUMER = "router"
"""The one consumer all organisations' submissions shared before; replaced on start."""
_PREFIX = "route-"
FETCH_WAIT = 5.0
"""Seconds a fetch of an idle organisation's consumer waits for a submission."""


def route_consumer(org: str) -> str:
    """The organisation's consumer on SUBMISSIONS (ids are valid consumer names)."""
    return f"{_PREFIX}{org}"


async def route_consumers(js: JetStreamContext) -> dict[str, ConsumerInfo]:
    """The routing consumers on SUBMISSIONS by organisation."""
    return {
        info.name[len(_PREFIX) :]: info
        for info in await consumers_of(js, SUBMISSIONS)
        if info.name.startswith(_PREFIX)
    }


@dataclass(frozen=True, slots=True)
class Backlog:
    """The routing consumers' counts, summed over the organisations."""

    pending: int
    """Submissions not handed out yet."""
    ack_pending: int
    """Handed out and not acknowledged yet (being routed, waiting, or put back)."""
    delivered: int
    """Hand-outs so far (redeliveries included)."""

    def drained(self, at_least: int = 0) -> bool:
        """Nothing left to route, after at least ``at_least`` hand-outs."""
        return self.pending == 0 and self.ack_pending == 0 and self.delivered >= at_least


async def router_backlog(js: JetStreamContext) -> Backlog:
    """What the routing consumers have left, over every organisation."""
    infos = (await route_consumers(js)).values()
    return Backlog(
        pending=sum(info.num_pending or 0 for info in infos),
        ack_pending=sum(info.num_ack_pending or 0 for info in infos),
        delivered=sum(info.delivered.consumer_seq or 0 for info in infos if info.delivered),
    )


async def oldest_unrouted(
    js: JetStreamContext, consumers: dict[str, ConsumerInfo]
) -> dict[str, int]:
    """For each organisation with submissions still to route, the SUBMISSIONS sequence of
    its oldest one (the first of its subject past its consumer's acknowledged floor)."""
    return await oldest_pending(js, SUBMISSIONS, consumers)


def _settings_of(config: ConsumerConfig, cfg: RouterSettings, workers: int) -> ConsumerConfig:
    return dataclasses.replace(
        config,
        ack_wait=cfg.ack_wait,
        max_deliver=cfg.max_deliver,
        max_ack_pending=max(cfg.max_ack_pending, workers + 1),
    )


@dataclass(frozen=True, slots=True)
class Ensured:
    created: list[str]
    """Organisations whose consumer was made now."""
    failed: list[str]
    """Organisations whose consumer could be neither made nor found (logged)."""


async def ensure_route_consumers(
    js: JetStreamContext, orgs: Iterable[str], cfg: RouterSettings, *, complete: bool
) -> Ensured:
    """Create the missing routing consumers of ``orgs`` and bring the others to ``cfg``.

    When the shared consumer of earlier versions is there, new consumers start after its
    acknowledged floor (what it acked out of order above the floor is routed again, which
    finds its packages and entries stored). It is deleted once every organisation has its
    own, and only when ``orgs`` are ``complete``: those of a loaded directory, not just
    the consumers left over. One organisation's failure is logged and skipped: the others
    go on.
    """
    # The legacy consumer is read before the list: a process deletes it only after every
    # organisation's consumer exists, so once it is gone the list holds them all.
    legacy_floor: int | None = None
    with contextlib.suppress(nats.js.errors.NotFoundError):
        legacy = await js.consumer_info(SUBMISSIONS, LEGACY_CONSUMER)
        legacy_floor = (legacy.ack_floor.stream_seq or 0) if legacy.ack_floor else 0
    existing = await route_consumers(js)
    created: list[str] = []
    failed: list[str] = []
    for org in orgs:
        try:
            if await _ensure_one(js, org, existing.get(org), cfg, legacy_floor):
                created.append(org)
        except nats.js.errors.APIError as exc:
            failed.append(org)
            log.warning(
                "router.consumer_failed",
                consumer=route_consumer(org),
                error=str(exc) or type(exc).__name__,
            )
    if legacy_floor is not None and complete and not failed:
        with contextlib.suppress(nats.js.errors.NotFoundError):
            await js.delete_consumer(SUBMISSIONS, LEGACY_CONSUMER)
        log.warning(
            "router.legacy_consumer_replaced",
            consumer=LEGACY_CONSUMER,
            ack_floor=legacy_floor,
            organisations=len(created),
        )
    return Ensured(created, failed)


async def _ensure_one(
    js: JetStreamContext,
    org: str,
    info: ConsumerInfo | None,
    cfg: RouterSettings,
    legacy_floor: int | None,
) -> bool:
    """Whether ``org``'s consumer was created now (else it existed: updated if need be)."""
    if info is None:
        name = route_consumer(org)
        config = ConsumerConfig(
            durable_name=name,
            name=name,
            ack_policy=AckPolicy.EXPLICIT,
            filter_subject=submit_subject(org),
        )
        if legacy_floor is None:
            config.deliver_policy = DeliverPolicy.ALL
        else:
            config.deliver_policy = DeliverPolicy.BY_START_SEQUENCE
            config.opt_start_seq = legacy_floor + 1
        try:
            await js.add_consumer(SUBMISSIONS, _settings_of(config, cfg, cfg.workers))
            return True
        except nats.js.errors.APIError as refused:
            # Another process made it meanwhile (from another floor, perhaps): keep that.
            info = await _info(js, name)
            if info is None:
                raise refused from None
    wanted = _settings_of(info.config, cfg, cfg.workers)
    if wanted != info.config:
        await js.add_consumer(SUBMISSIONS, wanted)
    return False


async def _info(js: JetStreamContext, name: str) -> ConsumerInfo | None:
    try:
        info: ConsumerInfo = await js.consumer_info(SUBMISSIONS, name)
    except nats.js.errors.NotFoundError:
        return None
    return info


@dataclass(slots=True)
class Held:
    """A fetched submission waiting for a worker: kept in progress until the worker is done."""

    msg: Msg
    keepalive: asyncio.Task[None]
    taken: asyncio.Future[None]

    async def done(self) -> None:
        await cancel_and_wait(self.keepalive)


class OrgFeeds:
    """One fetch loop per organisation; ``next()`` hands their submissions out in turn."""

    def __init__(
        self,
        js: JetStreamContext,
        cfg: RouterSettings,
        limiter: SubmissionLimiter,
        *,
        limited: Callable[[str], bool],
        on_rate_limited: Callable[[str, float], None],
    ) -> None:
        self._js = js
        self._cfg = cfg
        self._limiter = limiter
        self._limited = limited
        """Whether the organisation's submissions count against a rate (known ones only)."""
        self._on_rate_limited = on_rate_limited
        self._ready: asyncio.Queue[Held] = asyncio.Queue()
        self.bound: set[str] = set()
        """Organisations whose consumer this process fetches from right now."""
        self.waiting = 0
        """Submissions held for their organisation's rate-limit token right now."""

    async def next(self) -> Held:
        """The next submission, from the organisation that has waited longest."""
        while True:
            held = await self._ready.get()
            if held.taken.done():  # its feed stopped while it waited (and gave it back)
                continue
            held.taken.set_result(None)
            return held

    async def feed(self, org: str) -> None:
        """Fetch ``org``'s submissions one at a time and queue each for the workers."""
        sub = await self._js.pull_subscribe_bind(route_consumer(org), stream=SUBMISSIONS)
        self.bound.add(org)
        backoff = Backoff()
        try:
            while True:
                check_cancelled()
                try:
                    # One at a time: nats-py's batched fetch holds the first message back
                    # until the batch fills or the pull expires.
                    msgs = await sub.fetch(1, timeout=FETCH_WAIT)
                except TimeoutError:  # idle (nats-py raises the builtin one too)
                    backoff.reset()
                    continue
                except (nats.errors.Error, OSError) as exc:
                    await backoff.wait("router.fetch_failed", exc)
                    continue
                backoff.reset()
                for msg in msgs:
                    await self._hand_over(org, msg)
        finally:
            self.bound.discard(org)
            with contextlib.suppress(nats.errors.Error, OSError):
                await sub.unsubscribe()

    async def _hand_over(self, org: str, msg: Msg) -> None:
        keepalive = asyncio.create_task(
            keep_in_progress(msg, max(self._cfg.ack_wait / 3, 0.5)), name=f"keepalive-{org}"
        )
        taken: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        try:
            # A stop that nats-py's fetch swallowed (Python 3.11, see check_cancelled) must
            # not leave this waiting for a worker that has stopped too.
            check_cancelled()
            delay = self._limiter.reserve(org) if self._limited(org) else 0.0
            if delay > 0:
                self._on_rate_limited(org, delay)
                self.waiting += 1
                try:
                    await asyncio.sleep(delay)
                finally:
                    self.waiting -= 1
            self._ready.put_nowait(Held(msg, keepalive, taken))
            await taken
        except BaseException:
            if not taken.done() or taken.cancelled():  # no worker has it: give it back
                taken.cancel()
                with contextlib.suppress(nats.errors.Error, OSError):
                    await msg.nak()
                # Last: it raises again when this task is being stopped.
                await cancel_and_wait(keepalive)
            raise
