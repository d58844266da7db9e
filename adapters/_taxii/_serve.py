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

from .._consumer import cancel_and_wait
from .._errors import AdapterError

__all__ = ["bind_listener", "is_loopback", "serve_http", "serve_socket"]


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
        sock = bind_listener(host, port)
    except OSError as exc:
        raise AdapterError(f"the TAXII server cannot listen on {host}:{port}: {exc}") from exc
    await serve_socket(
        app, sock, host=host, cert_file=cert_file, key_file=key_file, on_started=on_started
    )


async def serve_socket(
    app: Any,
    sock: socket.socket,
    *,
    host: str,
    cert_file: Path | None = None,
    key_file: Path | None = None,
    on_started: Callable[[str], None] | None = None,
) -> None:
    """Serve ``app`` on a bound socket until cancelled, then close it."""
    config = uvicorn.Config(
        app,
        ssl_certfile=str(cert_file) if cert_file else None,
        ssl_keyfile=str(key_file) if key_file else None,
        log_config=None,
        access_log=False,
        lifespan="off",
        server_header=False,
    )
    server = _Server(config)
    serving = asyncio.create_task(server.serve(sockets=[sock]), name=f"http-{host}")
    bound = sock.getsockname()[1]
    try:
        while not server.started:
            if serving.done():
                serving.result()
                raise AdapterError(f"the HTTP server could not start on {host}:{bound}")
            await asyncio.sleep(0.01)
        scheme = "https" if cert_file else "http"
        shown = f"[{host}]" if ":" in host else host
        if on_started is not None:
            on_started(f"{scheme}://{shown}:{bound}")
        await asyncio.shield(serving)
    finally:
        server.should_exit = True
        try:
            await asyncio.wait({serving}, timeout=5)
        finally:
            if not serving.done():
                await cancel_and_wait(serving)
            sock.close()


def bind_listener(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host:port`` (0: a free port), TCP_NODELAY on accepted ones."""
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
