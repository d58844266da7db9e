"""The tamper-evident log against a real nats-server: checkpointer, audit, witness."""

from __future__ import annotations

import asyncio
import contextlib
import re
import sys
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import nats.js.errors
import pytest
from nats.js import JetStreamContext

from broker._audit_jobs import verify_log
from broker._checkpoint import CHECKPOINT_SUBJECT, CheckpointMessage, log_origin
from broker._checkpointer import Checkpointer
from broker._log import append_entries, timestamp
from broker._logcopy import LiveLog, LogCopy, write_copy
from broker._merkle import MerkleTree, leaf_hash
from broker._note import Checkpoint, NoteSigner
from broker._router import PKG_ID_HEADER
from broker._witness import Witness, run_witness
from keys import PrivateKey, generate_org_keys
from tests.integration.helpers import bundle, indicator, publish, wait_routed

ORIGIN = log_origin("atlas-broker")


class Checkpointers:
    """Start checkpointers as tasks (fast settings); stop one, or all at teardown."""

    def __init__(self, js: JetStreamContext) -> None:
        self._js = js
        self._tasks: dict[Checkpointer, asyncio.Task[None]] = {}

    async def start(self, key: PrivateKey, **kwargs: Any) -> Checkpointer:
        options = {"interval": 0.2, "lease_ttl": 1.5} | kwargs
        checkpointer = Checkpointer(self._js, signing_key=key, origin=ORIGIN, **options)
        ready = asyncio.Event()
        self._tasks[checkpointer] = asyncio.create_task(checkpointer.run(ready=ready))
        await ready.wait()
        return checkpointer

    async def stop(self, checkpointer: Checkpointer) -> None:
        task = self._tasks.pop(checkpointer)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    async def stop_all(self) -> None:
        for checkpointer in list(self._tasks):
            await self.stop(checkpointer)


@pytest.fixture
async def checkpointers(js: JetStreamContext) -> AsyncIterator[Checkpointers]:
    started = Checkpointers(js)
    yield started
    await started.stop_all()


async def eventually(condition: Callable[[], bool], seconds: float = 15) -> None:
    async with asyncio.timeout(seconds):
        while not condition():  # noqa: ASYNC110 - polling another task's counters
            await asyncio.sleep(0.05)


async def entry_count(js: JetStreamContext) -> int:
    source = LiveLog(js)
    await source.snapshot()
    return len([r async for r in source.records()])


async def wait_checkpointed(checkpointer: Checkpointer, size: int) -> None:
    await eventually(lambda: checkpointer.stats.size >= size)


async def wait_log_checkpointed(js: JetStreamContext, size: int) -> None:
    """Whichever checkpointer holds the lease (ours, or one run_router starts)."""
    async with asyncio.timeout(15):
        while True:
            with contextlib.suppress(nats.js.errors.NotFoundError):
                last = await js.get_last_msg("LOG", CHECKPOINT_SUBJECT)
                if CheckpointMessage.decode(last.data or b"").size >= size:
                    return
            await asyncio.sleep(0.05)


async def log_some(js: JetStreamContext, sub: str, n: int) -> None:
    now = timestamp(datetime.now(UTC))
    entries = [{"type": "submission", "ts": now, "org": "bank-a", "n": i} for i in range(n)]
    await append_entries(js, f"atlas.log.entries.{sub}", entries)


async def test_audit_verifies_and_witness_cosigns_when_router_and_checkpointer_ran(
    js: JetStreamContext,
    make_community: Callable[..., Any],
    running_router: Any,
    checkpointers: Checkpointers,
    tmp_path: Path,
) -> None:
    community = make_community()
    settings = await running_router(community)
    checkpointer = await checkpointers.start(community.broker_key)
    for tlp in ("clear", "green", "amber", "red"):
        data = bundle(indicator(tlp), indicator("clear"))
        await publish(settings, js, community, tmp_path, "bank-a", data, to=("org:lea-1",))
    await wait_routed(js, 4)
    total = await entry_count(js)
    await wait_log_checkpointed(js, total)
    log_key = checkpointer.verifier

    result = await verify_log(LiveLog(js), log_keys=[log_key], deliveries=js, grace=0)
    assert result.ok, result.problems
    assert result.entries == result.checkpointed_size == total
    assert result.deliveries_checked == (await js.stream_info("DELIVERIES")).state.messages > 0

    copy = tmp_path / "copy"
    await write_copy(LiveLog(js), copy)
    assert (await verify_log(LogCopy(copy), log_keys=[log_key])).ok

    witness_key = PrivateKey.generate("Ed25519")
    witness = Witness(name="witness.test/w1", signing_key=witness_key, log_keys=[log_key],
                      state_path=tmp_path / "witness" / "state.json", origin=ORIGIN)  # fmt: skip
    stats = await run_witness(js, witness, once=True)
    assert stats.cosigned >= 1 and stats.refused == 0
    assert witness.state is not None and witness.state.size == total
    witnessed = await verify_log(LiveLog(js), log_keys=[log_key], witness_keys=[witness.verifier])
    assert witnessed.ok and witnessed.cosignatures["witness.test/w1"] == stats.cosigned


async def test_witness_refuses_when_checkpoint_is_inconsistent_with_its_last(
    js: JetStreamContext, checkpointers: Checkpointers, tmp_path: Path
) -> None:
    key = PrivateKey.generate("Ed25519")
    checkpointer = await checkpointers.start(key)
    await log_some(js, "s1", 30)
    await wait_checkpointed(checkpointer, 30)
    state_path = tmp_path / "w.json"
    witness = Witness(name="w.test/1", signing_key=PrivateKey.generate("Ed25519"),
                      log_keys=[checkpointer.verifier], state_path=state_path)  # fmt: skip
    assert (await run_witness(js, witness, once=True)).cosigned >= 1
    before = state_path.read_bytes()

    # The log operator (who holds the log key) signs a rewritten history: entry 3 changed,
    # and a fork of the same size with a different root.
    signer = NoteSigner(ORIGIN, key)
    entries = [f'{{"forged":{i}}}'.encode() for i in range(40)]
    rewritten = MerkleTree.of_entries(entries)
    extended = CheckpointMessage(
        note=Checkpoint(ORIGIN, 40, rewritten.root()).sign(signer).serialize(),
        size=40, prev_size=30, log_seq=10**6,
        leaves=b"".join(leaf_hash(e) for e in entries[30:]),
        frontier=rewritten.frontier().nodes,
        consistency=tuple(rewritten.consistency_proof(30, 40)), ts="t",
    )  # fmt: skip
    same_size = CheckpointMessage(
        note=Checkpoint(ORIGIN, 30, rewritten.root(30)).sign(signer).serialize(),
        size=30, prev_size=30, log_seq=10**6, leaves=b"",
        frontier=rewritten.frontier(30).nodes, consistency=(), ts="t",
    )  # fmt: skip
    await checkpointers.stop(checkpointer)
    for forged in (extended, same_size):
        await js.publish(CHECKPOINT_SUBJECT, forged.encode(), stream="LOG")

    stats = await run_witness(js, witness, once=True)
    assert stats.refused == 2 and stats.cosigned == 0
    assert state_path.read_bytes() == before
    restarted = Witness(name="w.test/1", signing_key=PrivateKey.generate("Ed25519"),
                        log_keys=[checkpointer.verifier], state_path=state_path)  # fmt: skip
    assert restarted.state == witness.state  # state survives on disk


async def test_checkpointer_resumes_from_stored_frontier_when_restarted(
    js: JetStreamContext, checkpointers: Checkpointers
) -> None:
    key = PrivateKey.generate("Ed25519")
    first = await checkpointers.start(key)
    await log_some(js, "a", 300)
    await wait_checkpointed(first, 300)
    await checkpointers.stop(first)
    assert first.stats.entries == 300
    await log_some(js, "b", 50)
    second = await checkpointers.start(key)
    await wait_checkpointed(second, 350)
    assert second.stats.entries == 50  # resumed from the frontier, not from zero
    result = await verify_log(LiveLog(js), log_keys=[second.verifier])
    assert result.ok and result.checkpointed_size == 350 and result.consistency_proofs >= 1


async def test_one_checkpointer_is_active_when_two_run(
    js: JetStreamContext, checkpointers: Checkpointers
) -> None:
    key = PrivateKey.generate("Ed25519")
    a = await checkpointers.start(key, holder="a")
    b = await checkpointers.start(key, holder="b")
    await log_some(js, "x", 20)
    await eventually(lambda: a.active.is_set() or b.active.is_set())
    leader, standby = (a, b) if a.active.is_set() else (b, a)
    await wait_checkpointed(leader, 20)
    assert not standby.active.is_set() and standby.stats.checkpoints == 0
    await checkpointers.stop(leader)
    await log_some(js, "y", 10)
    await wait_checkpointed(standby, 30)  # took over once the lease was released
    result = await verify_log(LiveLog(js), log_keys=[leader.verifier])
    assert result.ok and result.checkpointed_size == 30


async def test_stale_checkpoint_is_refused_when_another_writer_published_first(
    js: JetStreamContext,
) -> None:
    key = PrivateKey.generate("Ed25519")
    await log_some(js, "z", 5)
    one = Checkpointer(js, signing_key=key, origin=ORIGIN)
    two = Checkpointer(js, signing_key=key, origin=ORIGIN)
    s1, s2 = await one.resume(), await two.resume()
    for state in (s1, s2):
        for n in range(5):
            state.pending.append(state.frontier.append_entry(f"{n}".encode()))
        state.log_seq = 1
    await one._publish(s1)
    with pytest.raises(Exception, match="moved past seq 0"):
        await two._publish(s2)
    assert (await js.stream_info("LOG", subjects_filter=CHECKPOINT_SUBJECT)).state.messages == 2


async def test_verify_fails_when_a_stored_package_has_no_entry(
    js: JetStreamContext, checkpointers: Checkpointers
) -> None:
    checkpointer = await checkpointers.start(PrivateKey.generate("Ed25519"))
    await log_some(js, "d", 3)
    await wait_checkpointed(checkpointer, 3)
    await js.publish("atlas.deliver.lea-1.ghost", b"sealed", stream="DELIVERIES",
                     headers={PKG_ID_HEADER: "ghost-pkg"})  # fmt: skip
    result = await verify_log(LiveLog(js), log_keys=[checkpointer.verifier], deliveries=js, grace=0)
    assert not result.ok
    assert "ghost-pkg has no log entry" in result.summary()
    pending = await verify_log(
        LiveLog(js), log_keys=[checkpointer.verifier], deliveries=js, grace=60
    )
    assert pending.ok and pending.deliveries_pending == 1


async def atlas(*args: str, cwd: Path) -> tuple[int, str]:
    """Run the real ``atlas-broker`` command line in a child process."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "broker", "--log-format", "json", "--log-level", "warning", *args,
        cwd=cwd, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    async with asyncio.timeout(60):
        output, _ = await proc.communicate()
    return proc.returncode or 0, output.decode()


async def test_cli_witness_and_verify_work_when_run_as_commands(
    js: JetStreamContext,
    nats_server: Any,
    checkpointers: Checkpointers,
    tmp_path: Path,
) -> None:
    checkpointer = await checkpointers.start(PrivateKey.generate("Ed25519"))
    await log_some(js, "cli", 40)
    await wait_checkpointed(checkpointer, 40)
    witness_dir = tmp_path / "witness"
    generate_org_keys("witness", witness_dir)
    url = ["--nats-url", nats_server.url, "--data-dir", str(tmp_path / "data")]
    log_key = checkpointer.verifier.vkey

    code, output = await atlas(
        *url, "witness", "--key", str(witness_dir / "witness.sign.pem"), "--name", "w.test/cli",
        "--state", str(witness_dir / "state.json"), "--log-key", log_key, "--once", cwd=tmp_path,
    )  # fmt: skip
    assert code == 0, output
    assert "cosigned 1, refused 0" in output
    witness_vkey = re.search(r"witness verifier key: (\S+)", output)
    assert witness_vkey is not None

    code, output = await atlas(
        *url, "audit", "verify", "--log-key", log_key, "--witness-key", witness_vkey[1],
        cwd=tmp_path,
    )  # fmt: skip
    assert code == 0, output
    assert "OK: 40 entries" in output and "1 cosignatures, 1 by w.test/cli" in output

    # A witness the auditor names but who cosigned nothing fails the verification.
    silent = NoteSigner("w.test/silent", PrivateKey.generate("Ed25519"), cosigner=True)
    code, output = await atlas(
        *url, "audit", "verify", "--log-key", log_key, "--witness-key", witness_vkey[1],
        "--witness-key", silent.verifier.vkey, cwd=tmp_path,
    )  # fmt: skip
    assert code != 0, output
    assert "witness w.test/silent" in output and "cosigned no checkpoint" in output

    # A log key (type 0x01) given as a witness key is refused, saying what it is.
    code, output = await atlas(
        *url, "audit", "verify", "--log-key", log_key, "--witness-key", log_key, cwd=tmp_path
    )
    assert code == 2, output
    assert "not a witness's cosignature key" in output

    code, output = await atlas(
        *url, "audit", "export", "--format", "log", "--out", str(tmp_path / "copy"), cwd=tmp_path
    )
    assert code == 0, output
    code, output = await atlas(
        "audit", "verify", "--from", str(tmp_path / "copy"), "--log-key", log_key, cwd=tmp_path
    )
    assert code == 0 and "OK: 40 entries" in output, output


async def test_a_foreign_witness_record_does_not_hide_the_cosignatures_after_it(
    js: JetStreamContext,
) -> None:
    from broker._witness import ensure_witness_stream

    await ensure_witness_stream(js)
    await js.publish("atlas.witness.0000000000000001", b"not json")
    await js.publish("atlas.witness.0000000000000002", b'{"note": "a later cosigned note"}')

    snap = await LiveLog(js).snapshot()

    assert [note for _, note in snap.cosignatures] == ["a later cosigned note"]
