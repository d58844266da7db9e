"""`atlas-broker taxii pull` SIGKILLed while paging a real medallion, then restarted: its
durable cursor (and the signed submission it keeps before publishing) mean the partner
gets every object of the member's collection exactly once."""

from __future__ import annotations

import asyncio
import os
import signal
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from nats.js import JetStreamContext
from taxii2client.v21 import Collection

from broker._audit import read_log
from broker._bus import SUBMISSIONS
from broker._config import Settings
from broker._taxii_pull import pull_member
from tests.conftest import Community
from tests.integration.helpers import broker_argv, indicator, receive_all, wait_routed
from tests.integration.medallion import PASSWORD, USER, running_medallion

OBJECTS = 400
PER_POST = 50  # medallion stamps each POST with one date_added: 8 instants
CHUNKS = 2  # the poller submits at most 200 objects at a time, never splitting an instant


def _pull_command(config: Path, url: str) -> list[str]:
    return broker_argv(
        config,
        "taxii",
        "pull",
        "--org",
        "bank-a",
        "--url",
        url,
        "--user",
        USER,
        "--once",
    )


async def _run(command: list[str]) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        *command,
        env={**os.environ, "ATLAS_PULL_PASSWORD": PASSWORD},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


async def _stored(js: JetStreamContext) -> int:
    return int((await js.stream_info(SUBMISSIONS)).state.messages)


class TestPullCrash:
    @pytest.mark.timeout(240)
    async def test_each_object_reaches_the_partner_once_when_pull_is_killed_mid_paging(
        self,
        js: JetStreamContext,
        make_community: Callable[..., Community],
        running_router: Any,
        tmp_path: Path,
    ) -> None:
        community = make_community()
        settings: Settings = await running_router(community)
        config = tmp_path / "atlas.toml"
        broker_key = community.root / "atlas-broker" / "atlas-broker.sign.pem"
        config.write_text(
            f'data_dir = "{settings.data_dir}"\n[nats]\nurl = "{settings.nats.url}"\n'
            f'[broker]\nsigning_key = "{broker_key}"\n'
        )
        objects = [indicator("clear", f"pulled {i}") for i in range(OBJECTS)]
        ids = {o["id"] for o in objects}

        async with running_medallion(tmp_path / "medallion") as url:

            def load() -> None:
                with Collection(url, user=USER, password=PASSWORD) as collection:
                    for start in range(0, OBJECTS, PER_POST):
                        envelope = {"objects": objects[start : start + PER_POST]}
                        collection.add_objects(envelope, poll_interval=0.1, timeout=20)

            await asyncio.to_thread(load)

            # 1. Killed for real once the first chunk is stored, with more pages to go.
            proc = await _run(_pull_command(config, url))
            try:
                async with asyncio.timeout(120):
                    while await _stored(js) < 1 and proc.returncode is None:  # noqa: ASYNC110 - polls server state
                        await asyncio.sleep(0.005)
            finally:
                if proc.returncode is None:
                    proc.send_signal(signal.SIGKILL)
                _, killed_err = await proc.communicate()
            at_kill = await _stored(js)
            assert proc.returncode == -signal.SIGKILL, killed_err.decode()
            assert 1 <= at_kill < CHUNKS, f"not killed mid-paging: {at_kill} of {CHUNKS} stored"
            states = list((settings.data_dir / "taxii-pull").glob("bank-a-*.json"))
            assert len(states) == 1  # the cursor (or the pending submission) survived the kill

            # 2. Restarted: it resumes after its cursor.
            proc = await _run(_pull_command(config, url))
            async with asyncio.timeout(180):
                out, err = await proc.communicate()
            assert proc.returncode == 0, err.decode()
            assert "pulled" in out.decode()

            # 3. Once more, in process: nothing is left to send.
            again = await pull_member(
                settings, org="bank-a", url=url, user=USER, password=PASSWORD, js=js
            )
            assert (again.objects, again.submissions) == (0, 0)
            state = orjson.loads(states[0].read_bytes())
            assert state["pending"] is None

        stored = await _stored(js)
        await wait_routed(js, stored)
        entries = [r.entry async for r in read_log(js)]
        submissions = [e for e in entries if e["type"] == "submission"]
        accepted = [e for e in submissions if e.get("result") != "refused"]
        refused = [e for e in submissions if e.get("result") == "refused"]
        # A submission re-published after the kill is the same signed one: refused as a replay.
        assert all(e.get("reason") == "replayed" for e in refused), refused
        assert len(accepted) == CHUNKS and len(accepted) + len(refused) == stored
        assert {e.get("via") for e in accepted} == {"taxii-pull"}

        for partner in ("lea-1", "lea-2"):
            inbox = tmp_path / "received" / partner
            stats = await receive_all(settings, js, community, partner, inbox)
            assert stats.received == CHUNKS
            counts = Counter(
                o["id"]
                for path in inbox.glob("*.json")
                for o in orjson.loads(path.read_bytes())["objects"]
            )
            assert set(counts) == ids, "skipped: " + ", ".join(sorted(ids - set(counts))[:5])
            resent = {i: n for i, n in counts.items() if n != 1}
            assert not resent, f"re-sent: {resent}"
