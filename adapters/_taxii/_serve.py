"""Serving the ASGI app with uvicorn inside our own event loop and task tree.

``serve_http`` returns when cancelled, after uvicorn stopped accepting and finished the
requests in flight; signals stay with the caller (the CLI cancels the main task on Ctrl-C).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
from collections.abc import Callable, Generator
from pathlib import Path
from typing import Any

import uvicorn

from .._errors import AdapterError

__all__ = ["is_loopback", "serve_http"]


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield  # the caller owns signal handling


async def serve_http(
    app: Any,
    *,
    host: str,
    port: int,
    cert_file: Path | None = None,
    key_file: Path | None = None,
    on_started: Callable[[str], None] | None = None,
) -> None:
    """Serve ``app`` until cancelled; ``on_started`` gets the base URL (real port)."""
    if cert_file is None and not is_loopback(host):
        raise AdapterError(
            f"refusing plain HTTP on {host}: configure taxii.cert_file and taxii.key_file "
            "(plain HTTP is for loopback only)"
        )
    # Bound here, not by uvicorn: it answers a busy port with sys.exit() from inside a task.
    try:
        sock = _bind(host, port)
    except OSError as exc:
        raise AdapterError(f"the TAXII server cannot listen on {host}:{port}: {exc}") from exc
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        ssl_certfile=str(cert_file) if cert_file else None,
        ssl_keyfile=str(key_file) if key_file else None,
        log_config=None,
        access_log=False,
        lifespan="off",
        server_header=False,
    )
    server = _Server(config)
    serving = asyncio.create_task(server.serve(sockets=[sock]), name="taxii-http")
    try:
        while not server.started:
            if serving.done():
                serving.result()
                raise AdapterError(f"the TAXII server could not listen on {host}:{port}")
            await asyncio.sleep(0.01)
        bound = server.servers[0].sockets[0].getsockname()[1]
        scheme = "https" if cert_file else "http"
        shown = f"[{host}]" if ":" in host else host
        if on_started is not None:
            on_started(f"{scheme}://{shown}:{bound}")
        await asyncio.shield(serving)
    finally:
        server.should_exit = True
        done, _ = await asyncio.wait({serving}, timeout=5)
        if not done:
            serving.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await serving
        sock.close()


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP named: asyncio sets TCP_NODELAY only on sockets that say so, and without
    # it every small response waits out Nagle and the client's delayed ACK (40 ms).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock
