"""Isolation enforced by nats-server itself, with the configuration generated from the
directory: each organisation in an account of its own, lent only its own subjects. Nobody
reads another's deliveries, publishes for another member, writes LOG, or makes the server
write anywhere by naming a reply subject."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import nats
import nats.errors
import nats.js.errors
import orjson
import pytest
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext

from adapters import durable_pull
from broker import EmbeddedNats
from broker._audit_jobs import verify_log
from broker._bus import (
    DELIVERIES,
    LOG,
    SUBMISSIONS,
    Streams,
    copy_subject,
    deliver_subject,
    ensure_streams,
    submit_stream,
)
from broker._checkpoint import ENTRIES_FILTER, log_origin, read_stream
from broker._config import Settings
from broker._deploy import (
    ORG_API_PREFIX,
    ORG_MAX_CONNECTIONS,
    render_accounts,
    render_cluster,
    render_single,
    write_users,
)
from broker._directory_store import fetch_directory, store_directory
from broker._embedded import find_nats_server
from broker._keyops import ensure_party_consumers
from broker._logcopy import LiveLog
from broker._note import NoteVerifier
from broker._service import publish_bundle, receive, run_router
from broker._witness import (
    WITNESS_STREAM,
    Witness,
    cosignature_subject,
    ensure_witness_stream,
    run_witness,
)
from broker.errors import SubmissionError
from keys import PrivateKey
from tests.integration.helpers import bundle, indicator, until, wait_routed

REFUSED = (nats.errors.Error, asyncio.TimeoutError)
WITNESSES = {"witness-1": "witness.example/w1"}


async def _login(url: str, seed: Path) -> NATS:
    return await nats.connect(url, nkeys_seed=str(seed), max_reconnect_attempts=1)


@pytest.fixture
async def secured(tmp_path: Path, make_community: Callable[..., Any]) -> Any:
    """The generated accounts on a real server; the broker made the streams, the directory
    and every organisation's consumers, as `directory load` does."""
    community = make_community()
    community.doc["organisations"].append(
        {"id": "audit-1", "name": "Auditor", "kind": "auditor", "keys": []}
    )
    directory = community.directory()
    users = write_users(directory, tmp_path / "nkeys", extra=WITNESSES)
    server = EmbeddedNats(
        tmp_path / "srv",
        publish_url=False,
        extra_config=render_accounts(directory, users, WITNESSES),
    )
    await server.start()
    broker = await _login(server.url, tmp_path / "nkeys" / "atlas-broker.nk")
    js = broker.jetstream()
    await ensure_streams(js)
    await store_directory(js, directory)
    await ensure_party_consumers(js, directory)
    await ensure_witness_stream(js)
    server.community = community  # type: ignore[attr-defined]
    yield server, tmp_path / "nkeys", js
    await broker.close()
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
            render_cluster(
                directory, users, node=node, store_dir=tmp_path / f"js{node}", route_secret="s"
            )
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


async def test_a_partner_reads_its_own_deliveries_and_nothing_of_another(secured: Any) -> None:
    server, seeds, js = secured
    await js.publish(deliver_subject("lea-1", "a" * 32), b"sealed-for-lea-1")
    await js.publish(deliver_subject("lea-2", "b" * 32), b"sealed-for-lea-2")
    partner = await _login(server.url, seeds / "lea-1.nk")
    pjs = partner.jetstream(prefix=ORG_API_PREFIX)
    seen: list[bytes] = []

    async def _collect(msg: Any) -> None:
        seen.append(msg.data)

    await partner.subscribe("atlas.deliver.>", cb=_collect)
    sub = await durable_pull(pjs, DELIVERIES, "rcv-lea-1", "atlas.deliver.lea-1.*")
    (msg,) = await sub.fetch(1, timeout=5)
    assert msg.data == b"sealed-for-lea-1"
    await msg.ack_sync()
    assert (await js.consumer_info(DELIVERIES, "rcv-lea-1")).num_ack_pending == 0
    assert (await fetch_directory(pjs)).directory.community.id == "test"
    for attempt in (
        pjs.consumer_info(DELIVERIES, "rcv-lea-2"),
        pjs.add_consumer(DELIVERIES, durable_name="x", filter_subject="atlas.deliver.lea-2.*"),
        pjs.get_msg(DELIVERIES, 2),
        pjs.stream_info(DELIVERIES),
    ):
        with pytest.raises(REFUSED):
            await asyncio.wait_for(attempt, 5)
    await asyncio.sleep(0.3)
    assert seen == []  # nothing of the broker's account reaches a subscription here
    await partner.close()


async def test_a_member_cannot_publish_for_another_member(secured: Any) -> None:
    server, seeds, js = secured
    member = await _login(server.url, seeds / "bank-a.nk")
    mjs = member.jetstream(prefix=ORG_API_PREFIX)
    seen: list[bytes] = []

    async def _collect(msg: Any) -> None:
        seen.append(msg.data)

    # Where the intakes' copy consumers deliver, in the broker's account: not reached.
    await member.subscribe(copy_subject(">"), cb=_collect)
    with pytest.raises(REFUSED):
        await mjs.publish("atlas.submit.bank-b", b"forged", timeout=2)
    ack = await mjs.publish("atlas.submit.bank-a", b"own", timeout=2)
    assert ack.stream == submit_stream("bank-a")
    await member.publish(copy_subject(submit_stream("bank-b")), b"forged copy")
    await until(_holding(js, SUBMISSIONS, 1), within=10, what="the copy for the router")
    await asyncio.sleep(0.3)
    # Only its own publish, in its own account; none of the broker's copies.
    assert seen == [b"forged copy"]
    assert (await js.stream_info(SUBMISSIONS)).state.messages == 1
    await member.close()


def _holding(js: JetStreamContext, stream: str, count: int) -> Callable[[], Awaitable[bool]]:
    async def holds() -> bool:
        return (await js.stream_info(stream)).state.messages == count

    return holds


async def test_a_publish_tells_an_organisation_nothing_of_anothers(secured: Any) -> None:
    """A member's acknowledgement counts its own submissions only, and a header naming
    another's subject finds nothing there (on a shared stream the answer was the other's
    last sequence: when, and how often, it submitted). Acknowledgements likewise."""
    server, seeds, js = secured
    bank_a = await _login(server.url, seeds / "bank-a.nk")
    bank_b = await _login(server.url, seeds / "bank-b.nk")
    lea_2 = await _login(server.url, seeds / "lea-2.nk")
    ajs, bjs, ljs = (c.jetstream(prefix=ORG_API_PREFIX) for c in (bank_a, bank_b, lea_2))
    try:
        first = await ajs.publish("atlas.submit.bank-a", b"a-1", timeout=2)
        for n in range(3):
            await bjs.publish("atlas.submit.bank-b", b"b-%d" % n, timeout=2)
        await js.publish("atlas.receipt.lea-1.pkg-1", b"receipt")
        second = await ajs.publish("atlas.submit.bank-a", b"a-2", timeout=2)
        assert (first.seq, second.seq) == (1, 2)  # bank-b's three are not counted
        for who, sjs, own, other in (
            ("bank-a", ajs, "atlas.submit.bank-a", "atlas.submit.bank-b"),
            ("lea-2", ljs, "atlas.ack.lea-2", "atlas.receipt.lea-1.*"),
        ):
            probe = {
                "Nats-Expected-Last-Subject-Sequence": "999",
                "Nats-Expected-Last-Subject-Sequence-Subject": other,
            }
            with pytest.raises(nats.js.errors.APIError) as caught:
                await sjs.publish(own, b"probe", headers=probe, timeout=2)
            assert caught.value.description == "wrong last sequence: 0", (who, caught.value)
        await until(_holding(js, SUBMISSIONS, 5), within=10, what="every submission copied")
    finally:
        for client in (bank_a, bank_b, lea_2):
            await client.close()


async def test_an_organisation_filling_its_intake_refuses_only_its_own(secured: Any) -> None:
    """What one organisation sends is capped by a limit of its own: past it, its own
    publishes are refused, everybody else's are stored and copied for the router."""
    server, seeds, js = secured
    await ensure_streams(js, Streams(intake_max_bytes=1024**2))  # the least allowed
    bank_a = await _login(server.url, seeds / "bank-a.nk")
    bank_b = await _login(server.url, seeds / "bank-b.nk")
    ajs, bjs = (c.jetstream(prefix=ORG_API_PREFIX) for c in (bank_a, bank_b))
    try:
        sent = 0
        with pytest.raises(nats.js.errors.APIError, match="maximum bytes"):
            for _ in range(100):
                await ajs.publish("atlas.submit.bank-a", b"x" * (64 * 1024), timeout=2)
                sent += 1
        assert 10 <= sent < 16
        ack = await bjs.publish("atlas.submit.bank-b", b"still taken", timeout=2)
        assert ack.stream == submit_stream("bank-b")
        await until(_holding(js, SUBMISSIONS, sent + 1), within=10, what="bank-b's copied")
    finally:
        for client in (bank_a, bank_b):
            await client.close()


async def test_nobody_but_the_broker_writes_log_and_the_auditor_reads_it(secured: Any) -> None:
    server, seeds, js = secured
    for org in ("bank-a", "lea-1", "audit-1"):
        client = await _login(server.url, seeds / f"{org}.nk")
        with pytest.raises(REFUSED):
            await client.jetstream(prefix=ORG_API_PREFIX).publish(
                "atlas.log.entries.x.0", b"{}", timeout=2
            )
        await client.close()
    assert (await js.stream_info(LOG)).state.messages == 0
    await js.publish("atlas.log.entries.y.0", b'{"v":1}')
    auditor = await _login(server.url, seeds / "audit-1.nk")
    ajs = auditor.jetstream(prefix=ORG_API_PREFIX)
    assert (await ajs.stream_info(LOG)).state.messages == 1
    read = [msg.data async for msg in read_stream(ajs, ENTRIES_FILTER)]
    assert read == [b'{"v":1}']
    with pytest.raises(REFUSED):
        await asyncio.wait_for(ajs.purge_stream(LOG), 5)
    await auditor.close()


async def test_a_reply_subject_makes_the_server_write_nothing_in_the_brokers_account(
    secured: Any,
) -> None:
    """nats-server does not check a reply subject against permissions, and JetStream
    answers a request there. In one account, a pull on one's own consumer with the reply
    `$JS.API.STREAM.DELETE.LOG` deleted LOG (found by a probe); across accounts every
    answer stays in the requester's account."""
    server, seeds, js = secured
    before = {name: (await js.stream_info(name)).state.messages for name in (LOG, SUBMISSIONS)}
    directory = await fetch_directory(js)
    partner = await _login(server.url, seeds / "lea-1.nk")
    member = await _login(server.url, seeds / "bank-a.nk")
    pull = f"{ORG_API_PREFIX}.CONSUMER.MSG.NEXT.DELIVERIES.rcv-lea-1"
    for reply in (
        "$JS.API.STREAM.DELETE.LOG",
        "$JS.API.STREAM.PURGE.SUBMISSIONS",
        "$JS.API.CONSUMER.DELETE.DELIVERIES.rcv-lea-2",
        "atlas.log.entries.forged.0",
        "atlas.log.checkpoints",
        "atlas.submit.bank-b",
        "$KV.atlas_directory.directory",
    ):
        await partner.publish(pull, b'{"no_wait":true}', reply=reply)
        await partner.publish("$JS.API.STREAM.INFO.KV_atlas_directory", b"", reply=reply)
        await member.publish("atlas.submit.bank-a", b"own", reply=reply)
    await partner.flush()
    await member.flush()
    await asyncio.sleep(0.5)
    assert (await js.stream_info(LOG)).state.messages == before[LOG]
    assert (await js.stream_info(SUBMISSIONS)).state.messages == before[SUBMISSIONS] + 7
    assert (await js.consumer_info(DELIVERIES, "rcv-lea-2")).name == "rcv-lea-2"
    assert (await fetch_directory(js)).revision == directory.revision
    await partner.close()
    await member.close()


async def test_a_member_publishes_and_a_partner_receives_through_the_generated_accounts(
    secured: Any, settings_for: Callable[..., Settings], tmp_path: Path
) -> None:
    """The real CLI paths (publish_bundle, receive) as organisations: their nkey and the
    API prefix their account is lent; the router runs as the broker."""
    server, seeds, js = secured
    community = server.community
    broker_settings = settings_for(community, server.url)
    origin = log_origin(broker_settings.broker.id)
    ready = asyncio.Event()
    router = asyncio.create_task(
        run_router(js, broker_settings, signing_key=community.broker_key, ready=ready)
    )

    def as_org(org: str) -> Settings:
        nats_cfg = broker_settings.nats.model_copy(
            update={"nkey_seed_file": seeds / f"{org}.nk", "api_prefix": ORG_API_PREFIX}
        )
        return broker_settings.model_copy(
            update={"nats": nats_cfg, "data_dir": tmp_path / f"data-{org}"}
        )

    try:
        await asyncio.wait_for(ready.wait(), 30)
        path = tmp_path / "b.json"
        path.write_bytes(orjson.dumps(bundle(indicator("amber"))))
        published = await publish_bundle(
            as_org("bank-a"),
            path,
            org="bank-a",
            key_path=community.sign_key("bank-a"),
            to=("org:lea-1",),
        )
        await wait_routed(js, 1)
        stats = await receive(
            as_org("lea-1"),
            org="lea-1",
            key_paths=[community.enc_key("lea-1")],
            out_dir=tmp_path / "inbox",
            once=True,
        )
        assert stats.received == 1 and stats.quarantined == 0
        assert (tmp_path / "inbox" / f"{published.sid}.json").exists()
        # The witness, in its own account, reads the broker's checkpoints and cosigns.
        witness = Witness(
            name=WITNESSES["witness-1"],
            signing_key=PrivateKey.generate("Ed25519"),
            log_keys=[NoteVerifier.from_public_key(origin, community.broker_key.public)],
            state_path=tmp_path / "witness.state",
            origin=origin,
        )
        wnc = await _login(server.url, seeds / "witness-1.nk")
        wjs = wnc.jetstream(prefix=ORG_API_PREFIX)
        async with asyncio.timeout(60):  # the checkpointer signs every 5 s
            while not (await run_witness(wjs, witness, once=True)).cosigned:  # noqa: ASYNC110
                await asyncio.sleep(0.5)
        assert (await js.stream_info(WITNESS_STREAM)).state.messages >= 1
        with pytest.raises(REFUSED):
            await wjs.publish(cosignature_subject("someone/else"), b"{}", timeout=2)
        with pytest.raises(REFUSED):
            await wjs.publish("atlas.log.checkpoints", b"{}", timeout=2)
        await wnc.close()
        # The auditor verifies the live log through its account; DELIVERIES it may not read.
        anc = await _login(server.url, seeds / "audit-1.nk")
        ajs = anc.jetstream(prefix=ORG_API_PREFIX)
        log_key = NoteVerifier.from_public_key(origin, community.broker_key.public)
        result = await verify_log(LiveLog(ajs), log_keys=[log_key], deliveries=ajs)
        assert result.ok, result.summary()
        assert result.entries > 0 and result.checkpoints > 0
        assert result.deliveries_unreadable and "DELIVERIES is not readable" in str(
            result.deliveries_unreadable
        )
        await anc.close()
        # A member may not read LOG: publish --wait says so, its submission stored.
        with pytest.raises(SubmissionError, match="its outcome cannot be read from the LOG"):
            await publish_bundle(
                as_org("bank-a"), path, org="bank-a", key_path=community.sign_key("bank-a"), wait=5
            )
    finally:
        router.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await router


async def test_one_organisation_cannot_exhaust_the_server_or_the_store(secured: Any) -> None:
    """Its account's connections are capped, and what it may write is capped in size."""
    server, seeds, js = secured
    clients = [await _login(server.url, seeds / "lea-1.nk") for _ in range(ORG_MAX_CONNECTIONS)]
    try:
        refused = NATS()
        with pytest.raises(nats.errors.Error, match="maximum account active connections"):
            await refused.connect(
                server.url, nkeys_seed=str(seeds / "lea-1.nk"), allow_reconnect=False
            )
        await refused.close()  # its transport too: a later test's GC must not meet it
        other = await _login(server.url, seeds / "lea-2.nk")  # others still get in
        await other.close()
        pjs = clients[0].jetstream(prefix=ORG_API_PREFIX)
        with pytest.raises(nats.js.errors.APIError):
            await pjs.publish("atlas.ack.lea-1", b"x" * (100 * 1024), timeout=5)
        info = await js.stream_info("RECEIPTS")
        assert info.config.max_bytes and info.config.max_bytes > 0
    finally:
        for client in clients:
            await client.close()
