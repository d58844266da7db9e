"""Stopping tasks: ``cancel_and_wait`` keeps the caller's own cancellation, ``supervised``
restarts what ended cancelled unasked, ``check_cancelled`` stops a loop whose cancel was lost."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import Awaitable, Callable

import pytest

from adapters import cancel_and_wait, check_cancelled, gather_or_fail, supervised

WIND_DOWN = 0.2

Stopper = Callable[[asyncio.Task[None]], Awaitable[None]]


async def _slow_to_stop() -> None:
    """A helper that, like a keep-alive finishing its publish, takes a moment to wind down
    once cancelled, whatever else is cancelled meanwhile."""
    try:
        await asyncio.sleep(3600)
    except asyncio.CancelledError:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + WIND_DOWN
        while (left := deadline - loop.time()) > 0:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.sleep(left)
        raise


async def _cancelled_while_stopping(stop: Stopper) -> tuple[asyncio.Task[None], list[str]]:
    """A worker stops its helper with ``stop``; the worker is cancelled meanwhile."""
    carried_on: list[str] = []

    async def worker() -> None:
        helper = asyncio.create_task(_slow_to_stop())
        await asyncio.sleep(0)
        await stop(helper)
        carried_on.append("after the helper stopped")

    task = asyncio.create_task(worker())
    await asyncio.sleep(WIND_DOWN / 10)  # the worker now waits for its helper to wind down
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    return task, carried_on


async def test_a_cancelled_caller_stays_cancelled() -> None:
    worker, carried_on = await _cancelled_while_stopping(cancel_and_wait)
    assert worker.cancelled()
    assert carried_on == []


async def test_the_suppress_pattern_it_replaces_loses_the_cancellation() -> None:
    """The control: with ``suppress(CancelledError)`` the worker carries on, so the test above
    would fail if ``cancel_and_wait`` behaved the same way."""

    async def suppressing(helper: asyncio.Task[None]) -> None:
        helper.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await helper

    worker, carried_on = await _cancelled_while_stopping(suppressing)
    assert not worker.cancelled()
    assert carried_on == ["after the helper stopped"]


async def test_the_helpers_own_cancellation_is_dropped() -> None:
    helper = asyncio.create_task(_slow_to_stop())
    await asyncio.sleep(0)
    await cancel_and_wait(helper)
    assert helper.cancelled()


async def test_a_helper_that_failed_reports_its_error() -> None:
    async def broken() -> None:
        raise ValueError("boom")

    helper = asyncio.create_task(broken())
    await asyncio.sleep(0)
    with pytest.raises(ValueError, match="boom"):
        await cancel_and_wait(helper)


async def test_supervised_restarts_a_job_that_ended_cancelled_without_a_stop() -> None:
    """What a NATS failover did to a router worker: the future it awaited was cancelled
    under it, the worker ended cancelled, and nothing had asked it to stop."""
    started: asyncio.Queue[asyncio.Future[None]] = asyncio.Queue()

    async def job() -> None:
        waiting: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        started.put_nowait(waiting)
        await waiting

    supervisor = asyncio.create_task(supervised("job", job))
    async with asyncio.timeout(5):
        first = await started.get()
        first.cancel()  # a library cancels what the job awaits
        second = await started.get()  # ... and the job runs again
    assert not supervisor.done()

    supervisor.cancel()  # a real stop ends the supervisor and its job
    with contextlib.suppress(asyncio.CancelledError):
        await supervisor
    assert supervisor.cancelled()
    assert second.cancelled()
    assert started.empty()


async def test_supervised_reports_a_job_that_failed() -> None:
    async def job() -> None:
        raise ValueError("broken")

    with pytest.raises(ValueError, match="broken"):
        await supervised("job", job)


async def _turns_after_a_lost_cancel(check: Callable[[], None]) -> int:
    """A loop around ``asyncio.wait_for`` is cancelled in the very turn its awaited result
    arrives (what happens to nats-py's ``next_msg`` under traffic); how many more turns it
    runs, ``check()`` being called at the top of each."""
    loop = asyncio.get_running_loop()
    arrived: asyncio.Queue[asyncio.Future[int]] = asyncio.Queue()
    turns_after = 0

    async def worker() -> None:
        nonlocal turns_after
        while True:
            check()
            if asyncio.current_task().cancelling():  # type: ignore[union-attr]
                turns_after += 1
                if turns_after == 3:
                    return
            result: asyncio.Future[int] = loop.create_future()
            arrived.put_nowait(result)
            await asyncio.wait_for(result, 5)

    task = asyncio.create_task(worker())
    async with asyncio.timeout(5):
        result = await arrived.get()
        result.set_result(1)  # the result and the cancel reach the worker together
        task.cancel()
        while not task.done():
            if not arrived.empty():
                (await arrived.get()).set_result(1)
            await asyncio.sleep(0)
    return turns_after


async def test_check_cancelled_stops_a_loop_whose_cancel_a_library_dropped() -> None:
    assert await _turns_after_a_lost_cancel(check_cancelled) == 0


async def test_without_the_check_the_loop_carries_on_before_python_3_12() -> None:
    """The control: Python 3.11's ``wait_for`` returns the result and drops the cancel, so
    the loop would run on for ever; 3.12 rebuilt ``wait_for`` and raises."""
    turns = await _turns_after_a_lost_cancel(lambda: None)
    assert turns == (3 if sys.version_info < (3, 12) else 0)


async def test_gather_or_fail_gives_results_in_order() -> None:
    async def later(value: int, delay: float) -> int:
        await asyncio.sleep(delay)
        return value

    assert await gather_or_fail(later(1, 0.02), later(2, 0.0), later(3, 0.01)) == [1, 2, 3]
    assert await gather_or_fail() == []


async def test_gather_or_fail_raises_the_failure_stops_the_rest_and_leaves_the_caller_be() -> None:
    """The caller is not marked cancelled, as a 3.11 TaskGroup leaves it after a child fails
    once its body has ended (CPython gh-116720)."""
    stopped: list[str] = []

    async def slow() -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            stopped.append("slow")
            raise

    async def broken() -> None:
        await asyncio.sleep(0.01)
        raise ValueError("store failed")

    with pytest.raises(ValueError, match="store failed"):
        await gather_or_fail(slow(), broken())
    assert stopped == ["slow"]
    assert asyncio.current_task().cancelling() == 0  # type: ignore[union-attr]
    check_cancelled()  # and so nothing stops this task now


async def test_gather_or_fail_passes_a_cancel_on_to_what_it_runs() -> None:
    started = asyncio.Event()
    stopped: list[str] = []

    async def waits() -> None:
        started.set()
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            stopped.append("waits")
            raise

    caller = asyncio.create_task(gather_or_fail(waits()))
    await started.wait()
    caller.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await caller
    assert caller.cancelled() and stopped == ["waits"]
