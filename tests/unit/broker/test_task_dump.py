"""SIGUSR2's task dump shows the whole await chain of a waiting task."""

from __future__ import annotations

import asyncio

from broker.cli import await_chain


async def _innermost(gate: asyncio.Event) -> None:
    await gate.wait()


async def _middle(gate: asyncio.Event) -> None:
    await _innermost(gate)


async def test_the_chain_names_every_coroutine_down_to_the_innermost_wait() -> None:
    gate = asyncio.Event()
    task = asyncio.create_task(_middle(gate), name="probe")
    await asyncio.sleep(0)
    chain = await_chain(task)
    gate.set()
    await task
    names = [line.rsplit(" in ", 1)[1] for line in chain]
    assert names[:2] == ["_middle", "_innermost"]
    assert names[-1] == "wait"  # asyncio.Event.wait, where it really waits
