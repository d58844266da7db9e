"""Binding to a durable pull consumer, waiting out NATS being unreachable, stopping tasks."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

import nats.errors
import nats.js.errors
import structlog
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

__all__ = [
    "DELIVERIES",
    "RECEIPTS",
    "TRANSIENT_NATS",
    "Backoff",
    "PartyConsumer",
    "cancel_and_wait",
    "check_cancelled",
    "delivery_consumer",
    "durable_pull",
    "ensure_durable",
    "gather_or_fail",
    "keep_in_progress",
    "receipt_consumer",
    "supervised",
]

log = structlog.get_logger()

T = TypeVar("T")

DELIVERIES = "DELIVERIES"
RECEIPTS = "RECEIPTS"


@dataclass(frozen=True, slots=True)
class PartyConsumer:
    """A durable consumer the broker makes for an organisation, which only binds to it."""

    stream: str
    name: str
    filter_subject: str


def delivery_consumer(org: str) -> PartyConsumer:
    """``org``'s packages: made by the broker, granted by the generated NATS configuration,
    bound by the receive bridge, all three from here."""
    return PartyConsumer(DELIVERIES, f"rcv-{org}", f"atlas.deliver.{org}.*")


def receipt_consumer(org: str) -> PartyConsumer:
    """``org``'s receipts (inclusion proofs of its packages)."""
    return PartyConsumer(RECEIPTS, f"rct-{org}", f"atlas.receipt.{org}.*")


TRANSIENT_NATS = (nats.errors.Error, OSError)
"""What a long-running consumer waits out: no connection, a timeout, a leader moving (503)."""


def _stopping() -> bool:
    """True when the current task has been asked to stop (its ``cancel()`` was called)."""
    current = asyncio.current_task()
    return current is None or current.cancelling() > 0


def check_cancelled() -> None:
    """Raise ``CancelledError`` if this task was asked to stop and the cancel got lost.

    Before Python 3.12, ``asyncio.wait_for`` returns the awaited result, dropping the
    cancel, when both arrive in the same turn of the loop; nats-py's ``next_msg`` (under
    every ``fetch``) and ``request`` are built on it. A loop around ``next_msg`` cancelled
    while messages flowed kept running in 70 of 200 tries here, and the checkpointer's
    fetch loop was caught doing the same when a test stopped the router. Every loop that
    waits on NATS calls this once per turn; the task's ``cancelling()`` count survives
    the lost cancel, so the stop is still known.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling() > 0:
        raise asyncio.CancelledError


async def gather_or_fail(*aws: Awaitable[T]) -> list[T]:
    """Run ``aws`` concurrently; their results in order. The first failure cancels the
    others, waits until they have stopped, and is raised as itself.

    What an ``asyncio.TaskGroup`` does, without cancelling the caller: on Python 3.11 a
    group whose child fails after its body has ended cancels the task around it and never
    takes that back (CPython gh-116720), so the task's ``cancelling()`` stays 1 for good
    and ``check_cancelled`` stops a worker nobody stopped. That is what restarted router
    workers after a failed store (``supervised``'s "ended cancelled, not stopped").
    """
    tasks = [asyncio.ensure_future(aw) for aw in aws]
    if not tasks:
        return []
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
    finally:
        for task in tasks:
            task.cancel()  # nothing to a finished one
        await asyncio.wait(tasks)
    for task in tasks:
        if not task.cancelled() and (error := task.exception()) is not None:
            raise error
    return [task.result() for task in tasks]


async def cancel_and_wait(task: asyncio.Future[Any]) -> None:
    """Cancel ``task`` and wait until it has finished.

    The task's own ``CancelledError`` is expected and dropped; a cancellation of the caller
    that arrives meanwhile is not. ``suppress(CancelledError)`` around the await would drop
    both, and a worker stopped at that moment would carry on as if nothing had been asked
    of it (a SIGTERM'd ``serve`` then never exits).
    """
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        if _stopping():
            raise


async def supervised(name: str, job: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """Run ``job()`` as its own task, and again whenever it ends cancelled without anyone
    having stopped this one.

    Seen under a NATS failover: router workers ended cancelled although nothing had asked
    them to stop, and since a TaskGroup takes a cancelled child for a finished one, the
    router stayed up and routed nothing. The cause found since: the fan-out's TaskGroup,
    on Python 3.11, cancelled the worker when a store failed and never took it back (see
    ``gather_or_fail``, which the fan-out uses now). This stays as the safety net.
    Stopping the supervisor stops the job (the cancel reaches the task it awaits) and ends
    here; an error of the job ends here too.
    """
    while True:
        task = asyncio.create_task(job(), name=f"{name}-run")
        try:
            await task
            return
        except asyncio.CancelledError:
            if _stopping():
                raise
            log.warning("task.restarted", task=name, reason="ended cancelled, not stopped")
            await asyncio.sleep(0.1)


class Backoff:
    """Exponential pause between attempts, 0.1 s doubling up to ``ceiling``, logged."""

    def __init__(self, ceiling: float = 5.0) -> None:
        self._ceiling = ceiling
        self._delay = 0.1

    async def wait(self, event: str, exc: BaseException) -> None:
        log.warning(event, error=str(exc) or type(exc).__name__, retry_in=self._delay)
        await asyncio.sleep(self._delay)
        self._delay = min(self._delay * 2, self._ceiling)

    def reset(self) -> None:
        self._delay = 0.1


async def durable_pull(
    js: JetStreamContext, stream: str, name: str, filter_subject: str, *, ack_wait: float = 60
) -> JetStreamContext.PullSubscription:
    """A pull subscription on durable ``name`` (explicit acks, from the start of ``stream``).

    The consumer is only created when missing, so a client whose permissions allow just
    INFO/NEXT/ACK on a consumer the broker created still binds to it.
    """
    await ensure_durable(js, stream, name, filter_subject, ack_wait=ack_wait)
    return await js.pull_subscribe_bind(name, stream=stream)


async def ensure_durable(
    js: JetStreamContext, stream: str, name: str, filter_subject: str, *, ack_wait: float = 60
) -> bool:
    """Make durable pull consumer ``name`` unless it exists; True when it was made.

    The broker makes every organisation's consumers (``ensure_party_consumers``), so that
    under the generated NATS configuration organisations never need to create one.
    """
    try:
        await js.consumer_info(stream, name)
        return False
    except nats.js.errors.NotFoundError:
        await js.add_consumer(
            stream,
            ConsumerConfig(
                durable_name=name,
                name=name,
                ack_policy=AckPolicy.EXPLICIT,
                deliver_policy=DeliverPolicy.ALL,
                ack_wait=ack_wait,
                filter_subject=filter_subject,
            ),
        )
        return True


async def keep_in_progress(msg: Msg, interval: float) -> None:
    """Tell the server every ``interval`` seconds that ``msg`` is still being worked on, so
    that its ack wait does not run out (and it is not delivered again) while long work on
    it goes on; run as a task and cancel it when the work ends."""
    while True:
        check_cancelled()
        await asyncio.sleep(interval)
        with contextlib.suppress(nats.errors.Error):
            await msg.in_progress()
