"""A job that stops on one of our errors prints it as one line, even from a task group."""

from __future__ import annotations

import asyncio

import pytest
import typer

from broker.cli import run
from broker.errors import ConfigError


async def _group_failing(exc: Exception) -> None:
    async def fail() -> None:
        raise exc

    async with asyncio.TaskGroup() as group:
        group.create_task(fail())
        group.create_task(asyncio.sleep(30))


def test_prints_our_error_from_a_task_group_as_one_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(typer.Exit) as stopped:
        run(_group_failing(ConfigError("nats-server has no room for stream DELIVERIES")))
    assert stopped.value.exit_code == 1
    err = capsys.readouterr().err
    assert "error: nats-server has no room for stream DELIVERIES" in err
    assert "Traceback" not in err


def test_leaves_other_errors_of_a_task_group_alone() -> None:
    with pytest.raises(ExceptionGroup) as raised:
        run(_group_failing(ValueError("a bug")))
    assert isinstance(raised.value.exceptions[0], ValueError)


async def _group_failing_twice() -> None:
    async def ours() -> None:
        raise ConfigError("lost the directory")

    async def bug() -> None:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            raise KeyError("a bug in the monitor's clean-up") from None

    async with asyncio.TaskGroup() as group:
        group.create_task(bug())
        await asyncio.sleep(0)  # bug() is waiting when ours() fails and the group stops it
        group.create_task(ours())


def test_keeps_the_traceback_of_a_bug_beside_our_error() -> None:
    with pytest.raises(ExceptionGroup) as raised:
        run(_group_failing_twice())
    assert any(isinstance(e, KeyError) for e in raised.value.exceptions)
