"""`atlas-broker taxii serve` as a real process: HTTP on loopback, stopped by a signal."""

from __future__ import annotations

import asyncio
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from nats.js import JetStreamContext
from taxii2client.v21 import Server

from adapters import AdapterError
from adapters._taxii import (
    Credentials,
    MemoryBackend,
    bind_listener,
    create_app,
    serve_http,
    set_secret,
)
from broker._bus import SUBMISSIONS
from broker._directory_store import store_directory
from broker._embedded import EmbeddedNats
from tests.conftest import Community
from tests.integration.helpers import indicator, start_broker

STARTED = re.compile(r"TAXII 2\.1 at (https?://[^\s/]+)/taxii2/")
STOP_WITHIN = 20.0


async def _start(config: Path) -> tuple[asyncio.subprocess.Process, str, bytearray]:
    """Start ``taxii serve --with-router``; its base URL once it listens, and its stderr."""
    proc = await start_broker(
        config, "taxii", "serve", "--with-router", stderr=asyncio.subprocess.PIPE
    )
    assert proc.stderr is not None
    seen = bytearray()
    try:
        async with asyncio.timeout(60):
            while (found := STARTED.search(seen.decode(errors="replace"))) is None:
                line = await proc.stderr.readline()
                if not line:
                    raise AssertionError(f"taxii serve exited: {seen.decode(errors='replace')}")
                seen += line
    except BaseException:
        proc.kill()
        await proc.wait()
        raise
    return proc, found.group(1), seen


class TestTaxiiServeCommand:
    @pytest.mark.timeout(120)
    @pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
    async def test_exits_0_promptly_when_signalled_after_serving(
        self,
        sig: signal.Signals,
        js: JetStreamContext,
        nats_server: EmbeddedNats,
        make_community: Callable[..., Community],
        tmp_path: Path,
    ) -> None:
        community = make_community()
        community.org("lea-1")["taxii_read"] = True
        await store_directory(js, community.directory())
        data = tmp_path / "data"
        tokens = {
            org: set_secret(data / "taxii-credentials.toml", org, n=1024)
            for org in ("bank-a", "lea-1")
        }
        broker_key = community.root / "atlas-broker" / "atlas-broker.sign.pem"
        config = tmp_path / "atlas.toml"
        config.write_text(
            f'data_dir = "{data}"\n[nats]\nurl = "{nats_server.url}"\n'
            f'[broker]\nsigning_key = "{broker_key}"\n[taxii]\nport = 0\n'
        )
        proc, url, stderr = await _start(config)
        try:
            obj = indicator("clear", "served")

            def flow() -> tuple[Any, list[dict[str, Any]]]:
                member = Server(f"{url}/taxii2/", user="bank-a", password=tokens["bank-a"])
                root = member.api_roots[0]
                community_coll = next(c for c in root.collections if c.title == "community")
                status = community_coll.add_objects(
                    {"objects": [obj]}, poll_interval=0.2, timeout=30
                )
                partner = Server(f"{url}/taxii2/", user="lea-1", password=tokens["lea-1"])
                views = next(c for c in partner.api_roots[0].collections if c.can_read)
                deadline = time.monotonic() + 30
                while True:
                    got = views.get_objects().get("objects", [])
                    if got or time.monotonic() > deadline:
                        return status, got
                    time.sleep(0.2)

            status, got = await asyncio.to_thread(flow)
            assert status.status == "complete" and status.success_count == 1
            assert got == [obj]
            assert (await js.stream_info(SUBMISSIONS)).state.messages == 1
        finally:
            if proc.returncode is None:
                proc.send_signal(sig)
            try:
                async with asyncio.timeout(STOP_WITHIN):
                    _, rest = await proc.communicate()
            except TimeoutError:
                proc.kill()
                await proc.wait()
                raise
        output = (stderr + rest).decode(errors="replace")
        assert proc.returncode == 0, output
        assert "stopped" in output
        assert "Traceback" not in output, output


class TestStartupFailures:
    @pytest.mark.timeout(60)
    def test_exits_1_with_one_line_when_no_credentials_exist(
        self, make_community: Callable[..., Community], tmp_path: Path
    ) -> None:
        community = make_community()
        broker_key = community.root / "atlas-broker" / "atlas-broker.sign.pem"
        config = tmp_path / "atlas.toml"
        config.write_text(
            f'data_dir = "{tmp_path / "data"}"\n[nats]\nurl = "nats://127.0.0.1:1"\n'
            f'[broker]\nsigning_key = "{broker_key}"\n'
        )
        result = subprocess.run(
            [sys.executable, "-m", "broker", "--config", str(config), "taxii", "serve"],
            capture_output=True,
            text=True,
            timeout=50,
            check=False,
        )
        assert result.returncode == 1, result.stderr
        assert "Traceback" not in result.stderr
        assert "taxii passwd" in result.stderr  # says what to do, before connecting to NATS

    @pytest.mark.timeout(60)
    def test_passwd_refuses_an_id_that_is_not_one_in_one_line(self, tmp_path: Path) -> None:
        result = subprocess.run(
            [sys.executable, "-m", "broker", "taxii", "passwd", "--org", "Bad Org.*"],
            capture_output=True,
            text=True,
            timeout=50,
            cwd=tmp_path,
            check=False,
        )
        assert result.returncode == 1, result.stderr
        assert "Traceback" not in result.stderr, result.stderr
        assert "'Bad Org.*' is not a valid organisation id" in result.stderr
        assert result.stdout == ""  # no secret printed
        assert not list(tmp_path.rglob("*.toml"))  # nothing stored

    def test_listening_socket_is_tcp_when_bound_by_us(self) -> None:
        # asyncio turns Nagle off (TCP_NODELAY) only on sockets whose proto says TCP;
        # without it each small response waited ~40 ms for the client's delayed ACK.
        with bind_listener("127.0.0.1", 0) as sock:
            assert sock.proto == socket.IPPROTO_TCP

    @pytest.mark.timeout(30)
    async def test_adapter_error_when_port_is_taken(self) -> None:
        app = create_app(MemoryBackend(members={}), Credentials({}), cursor_key=b"k" * 32)
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            port = taken.getsockname()[1]
            with pytest.raises(AdapterError, match=re.escape(f"cannot listen on 127.0.0.1:{port}")):
                await serve_http(app, host="127.0.0.1", port=port)
