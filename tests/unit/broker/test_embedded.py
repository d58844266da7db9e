from __future__ import annotations

import os
from pathlib import Path

import nats
import pytest

from broker import EmbeddedNats, NatsUnavailable
from broker._embedded import running_url


class TestEmbeddedNats:
    async def test_serves_jetstream_on_loopback_and_publishes_its_url(self, tmp_path: Path) -> None:
        async with EmbeddedNats(tmp_path) as server:
            assert server.url.startswith("nats://127.0.0.1:")
            assert running_url(tmp_path) == server.url
            conf = (tmp_path / "nats" / "nats-server.conf").read_text()
            assert "sync_interval: always" in conf
            nc = await nats.connect(server.url)
            info = await nc.jetstream().account_info()
            assert info.limits is not None
            await nc.close()
        assert running_url(tmp_path) is None

    async def test_refuses_a_second_server_on_the_same_data_folder(self, tmp_path: Path) -> None:
        async with EmbeddedNats(tmp_path):
            with pytest.raises(NatsUnavailable, match="already runs"):
                await EmbeddedNats(tmp_path).start()

    async def test_error_names_the_cause_when_the_port_is_taken(self, tmp_path: Path) -> None:
        async with EmbeddedNats(tmp_path / "a", publish_url=False) as first:
            port = int(first.url.rsplit(":", 1)[1])
            with pytest.raises(NatsUnavailable, match="exited at start"):
                await EmbeddedNats(tmp_path / "b", port=port, publish_url=False).start()

    async def test_writes_its_stderr_to_a_file_not_an_unread_pipe(self, tmp_path: Path) -> None:
        # A pipe nobody reads fills at 64 KiB (Go runtime traces, warnings) and then blocks
        # the server on its next write to stderr.
        async with EmbeddedNats(tmp_path, publish_url=False) as server:
            assert server.pid is not None
            stderr = os.readlink(f"/proc/{server.pid}/fd/2")
            assert stderr == str(tmp_path / "nats" / "nats-server.stderr")

    async def test_keeps_its_store_across_restarts(self, tmp_path: Path) -> None:
        for expected in (1, 2):
            async with EmbeddedNats(tmp_path, publish_url=False) as server:
                nc = await nats.connect(server.url)
                js = nc.jetstream()
                await js.add_stream(name="T", subjects=["t"])
                await js.publish("t", b"x")
                assert (await js.stream_info("T")).state.messages == expected
                await nc.close()
