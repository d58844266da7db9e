"""Isolation enforced by nats-server itself, with the configuration generated from the
directory: nobody reads another's deliveries, publishes for another member, or writes LOG."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import nats
import nats.errors
import pytest
from nats.aio.client import Client as NATS

from broker import EmbeddedNats
from broker._bus import DELIVERIES, LOG, SUBMISSIONS, deliver_subject, ensure_streams
from broker._deploy import _authorization, render_cluster, render_single, write_users
from broker._embedded import find_nats_server


async def _login(url: str, seed: Path, org: str | None, errors: list[str]) -> NATS:
    async def _on_error(exc: Exception) -> None:
        errors.append(str(exc))

    options: dict[str, Any] = {"inbox_prefix": f"_INBOX.{org}"} if org else {}
    return await nats.connect(
        url, nkeys_seed=str(seed), error_cb=_on_error, max_reconnect_attempts=1, **options
    )


@pytest.fixture
async def secured(tmp_path: Path, make_community: Callable[..., Any]) -> Any:
    community = make_community()
    community.doc["organisations"].append(
        {"id": "audit-1", "name": "Auditor", "kind": "auditor", "keys": []}
    )
    directory = community.directory()
    users = write_users(directory, tmp_path / "nkeys")
    server = EmbeddedNats(
        tmp_path / "srv", publish_url=False, extra_config=_authorization(directory, users)
    )
    await server.start()
    yield server, tmp_path / "nkeys"
    await server.stop()


def test_generated_configurations_pass_nats_server_check(
    tmp_path: Path, make_community: Callable[..., Any]
) -> None:
    directory = make_community().directory()
    users = write_users(directory, tmp_path / "nkeys")
    files = [tmp_path / "single.conf"]
    files[0].write_text(render_single(directory, users, store_dir=tmp_path / "js"))
    for node in range(3):
        path = tmp_path / f"node{node + 1}.conf"
        path.write_text(
            render_cluster(directory, users, node=node, store_dir=tmp_path / f"js{node}")
        )
        files.append(path)
    for path in files:
        check = subprocess.run(
            [str(find_nats_server()), "-t", "-c", str(path)],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert check.returncode == 0, (path.name, check.stdout, check.stderr)
    for seed in (tmp_path / "nkeys").iterdir():
        assert seed.stat().st_mode & 0o777 == 0o600


async def test_a_partner_cannot_read_another_partners_deliveries(secured: Any) -> None:
    server, seeds = secured
    errors: list[str] = []
    broker = await _login(server.url, seeds / "atlas-broker.nk", None, errors)
    js = broker.jetstream()
    await ensure_streams(js)
    await js.publish(deliver_subject("lea-2", "a" * 32), b"sealed-for-lea-2")

    intruder = await _login(server.url, seeds / "lea-1.nk", "lea-1", errors)
    got: list[bytes] = []

    async def _collect(msg: Any) -> None:
        got.append(msg.data)

    await intruder.subscribe("atlas.deliver.lea-2.>", cb=_collect)
    ijs = intruder.jetstream()
    with pytest.raises((nats.errors.Error, asyncio.TimeoutError)):
        await ijs.add_consumer(
            DELIVERIES,
            durable_name="rcv-lea-2",
            name="rcv-lea-2",
            filter_subject="atlas.deliver.lea-2.*",
            timeout=2,
        )
    with pytest.raises((nats.errors.Error, asyncio.TimeoutError)):
        await ijs.add_consumer(
            DELIVERIES,
            durable_name="rcv-lea-1",
            name="rcv-lea-1",
            filter_subject="atlas.deliver.lea-2.*",
            timeout=2,
        )
    await js.publish(deliver_subject("lea-2", "b" * 32), b"another")
    await asyncio.sleep(0.5)
    assert got == []
    assert any("permissions violation" in e.lower() for e in errors), errors
    # Its own consumer, with its own filter, it may create and read.
    await ijs.add_consumer(
        DELIVERIES,
        durable_name="rcv-lea-1",
        name="rcv-lea-1",
        filter_subject="atlas.deliver.lea-1.*",
        timeout=2,
    )
    await intruder.close()
    await broker.close()


async def test_a_member_cannot_publish_for_another_member(secured: Any) -> None:
    server, seeds = secured
    errors: list[str] = []
    broker = await _login(server.url, seeds / "atlas-broker.nk", None, errors)
    js = broker.jetstream()
    await ensure_streams(js)
    member = await _login(server.url, seeds / "bank-a.nk", "bank-a", errors)
    mjs = member.jetstream()
    with pytest.raises((nats.errors.Error, asyncio.TimeoutError)):
        await mjs.publish("atlas.submit.bank-b", b"forged", timeout=2)
    ack = await mjs.publish("atlas.submit.bank-a", b"own", timeout=2)
    assert ack.stream == SUBMISSIONS
    assert (await js.stream_info(SUBMISSIONS)).state.messages == 1
    await member.close()
    await broker.close()


async def test_nobody_but_the_broker_writes_log(secured: Any) -> None:
    server, seeds = secured
    errors: list[str] = []
    broker = await _login(server.url, seeds / "atlas-broker.nk", None, errors)
    js = broker.jetstream()
    await ensure_streams(js)
    for org in ("bank-a", "lea-1", "audit-1"):
        client = await _login(server.url, seeds / f"{org}.nk", org, errors)
        with pytest.raises((nats.errors.Error, asyncio.TimeoutError)):
            await client.jetstream().publish("atlas.log.entries.x.0", b"{}", timeout=2)
        await client.close()
    assert (await js.stream_info(LOG)).state.messages == 0
    # The auditor can read LOG.
    await js.publish("atlas.log.entries.y.0", b'{"v":1}')
    auditor = await _login(server.url, seeds / "audit-1.nk", "audit-1", errors)
    info = await auditor.jetstream().stream_info(LOG)
    assert info.state.messages == 1
    await auditor.close()
    await broker.close()
