"""Helpers for the real-services tier: bundles, publishing and receiving."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import nats.js.errors
import orjson
from nats.js import JetStreamContext

from adapters import ReceiveStats
from broker._bus import RECEIPTS, SUBMISSIONS, submit_stream
from broker._config import Settings
from broker._feeds import router_backlog
from broker._receipts import ACKS_CONSUMER
from broker._service import publish_bundle, receive
from tests.conftest import TLP2, Community

T = "2026-11-02T09:30:00.000Z"


async def until(
    predicate: Callable[[], Awaitable[bool]], *, within: float, what: str, every: float = 0.05
) -> None:
    """Poll ``predicate`` until it holds; fail the test naming ``what`` after ``within`` s."""
    try:
        async with asyncio.timeout(within):
            while not await predicate():  # noqa: ASYNC110 - polls server and process state
                await asyncio.sleep(every)
    except TimeoutError:
        raise AssertionError(f"timed out after {within:.0f} s waiting for {what}") from None


def broker_argv(config: Path, *args: str, json_logs: bool = True) -> list[str]:
    """``python -m broker --config FILE [--log-format json] ARGS...`` for a subprocess."""
    logs = ["--log-format", "json"] if json_logs else []
    return [sys.executable, "-m", "broker", "--config", str(config), *logs, *args]


async def start_broker(
    config: Path,
    *args: str,
    stdout: int = asyncio.subprocess.DEVNULL,
    stderr: int = asyncio.subprocess.DEVNULL,
    env: dict[str, str] | None = None,
    json_logs: bool = True,
) -> asyncio.subprocess.Process:
    """The real CLI (``atlas-broker ARGS``) as a child process."""
    return await asyncio.create_subprocess_exec(
        *broker_argv(config, *args, json_logs=json_logs), stdout=stdout, stderr=stderr, env=env
    )


def sdo(kind: str, tlp: str | None, **props: Any) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "type": kind,
        "spec_version": "2.1",
        "id": f"{kind}--{uuid.uuid4()}",
        "created": T,
        "modified": T,
        **props,
    }
    if tlp is not None:
        obj["object_marking_refs"] = [TLP2[tlp] if tlp in TLP2 else tlp]
    return obj


def indicator(tlp: str | None, name: str = "bad domain") -> dict[str, Any]:
    return sdo(
        "indicator",
        tlp,
        name=name,
        pattern="[domain-name:value = 'x.example']",
        pattern_type="stix",
        valid_from=T,
    )


def bundle(*objects: dict[str, Any]) -> dict[str, Any]:
    return {"type": "bundle", "id": f"bundle--{uuid.uuid4()}", "objects": list(objects)}


async def publish(
    settings: Settings,
    js: JetStreamContext,
    community: Community,
    tmp: Path,
    org: str,
    data: dict[str, Any],
    to: tuple[str, ...] = (),
) -> str:
    path = tmp / f"bundle-{uuid.uuid4().hex[:8]}.json"
    path.write_bytes(orjson.dumps(data))
    result = await publish_bundle(
        settings, path, org=org, key_path=community.sign_key(org), to=to, js=js
    )
    return result.sid


async def intake_total(js: JetStreamContext) -> int:
    """What every intake stream took so far (the test servers delete nothing from them):
    SUBMISSIONS holds as many once nats-server copied them all."""
    prefix = submit_stream("")
    return sum(
        info.state.last_seq or 0
        for info in await js.streams_info()
        if info.config.name.startswith(prefix)
    )


async def routed_through(js: JetStreamContext, count: int) -> bool:
    """SUBMISSIONS holds ``count`` submissions or more and the router acked every one."""
    try:
        last = (await js.stream_info(SUBMISSIONS)).state.last_seq or 0
        # Read after the stream: nothing the consumers report drained can be newer.
        backlog = await router_backlog(js)
    except nats.js.errors.NotFoundError:  # the streams are not made yet
        return False
    return last >= count and backlog.drained() and backlog.delivered > 0


async def wait_routed(js: JetStreamContext, count: int) -> None:
    await until(lambda: routed_through(js, count), within=30, what=f"{count} routed")


async def receive_all(
    settings: Settings,
    js: JetStreamContext,
    community: Community,
    org: str,
    out: Path,
    key: Path | None = None,
    *,
    acknowledge: bool = False,
) -> ReceiveStats:
    """One pass of ``org``'s receive bridge into ``out``; with ``acknowledge`` it signs and
    publishes its acknowledgements of the receipts it keeps."""
    return await receive(
        settings,
        org=org,
        key_paths=[key or community.enc_key(org)],
        out_dir=out,
        once=True,
        js=js,
        sign_key_path=community.sign_key(org) if acknowledge else None,
    )


async def receipts_out(js: JetStreamContext, count: int) -> bool:
    """The broker has published at least ``count`` receipts (one per subject; the
    stream's message count would include acknowledgements and notices)."""
    info = await js.stream_info(RECEIPTS, subjects_filter="atlas.receipt.>")
    return sum((info.state.subjects or {}).values()) >= count


async def acks_handled(js: JetStreamContext, count: int) -> bool:
    """The acknowledgement recorder has handled (acked) at least ``count`` acknowledgements
    and holds none."""
    try:
        info = await js.consumer_info(RECEIPTS, ACKS_CONSUMER)
    except nats.js.errors.NotFoundError:  # the recorder has not bound its consumer yet
        return False
    return (
        info.num_pending == 0
        and info.num_ack_pending == 0
        and (info.ack_floor.consumer_seq or 0) >= count
    )


def received_ids(out: Path) -> set[str]:
    ids: set[str] = set()
    for path in out.glob("*.json"):
        ids.update(o["id"] for o in orjson.loads(path.read_bytes())["objects"])
    return ids


def cli(
    *args: str, url: str | None = None, cwd: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``atlas-broker ARGS`` as a user runs it, JSON logs on stderr."""
    prefix = ["--nats-url", url] if url else []
    return subprocess.run(
        [sys.executable, "-m", "broker", "--log-format", "json", *prefix, *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
        env={**os.environ, **(env or {})},
        check=False,
    )
