"""Serving the ASGI app with uvicorn inside our own event loop and task tree.

``serve_http`` returns when cancelled, after uvicorn stopped accepting and finished the
requests in flight; signals stay with the caller (the CLI cancels the main task on Ctrl-C).

Connections are guarded before any request reaches the app (``HttpLimits``): uvicorn waits
without limit for a request's head and body and accepts connections until the process runs
out of file descriptors, so idle sockets opened by anyone, logged in or not, could take the
server off the air.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import resource
import socket
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h11
import structlog
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from .._consumer import cancel_and_wait
from .._errors import AdapterError

__all__ = ["HttpLimits", "bind_listener", "is_loopback", "serve_http", "serve_socket"]

log = structlog.get_logger()


@dataclass(frozen=True, slots=True)
class HttpLimits:
    """What one HTTP server takes from its clients before it closes their connections."""

    max_connections: int = 1000
    """Open connections in all; more are closed as they come (lowered to fit the process's
    file descriptor limit)."""
    max_connections_per_address: int = 100
    """Open connections from one client address (an IPv6 client's /64)."""
    header_timeout: float = 10.0
    """Seconds from a connection (or the previous response) to a complete request head."""
    body_timeout: float = 30.0
    """Seconds a request body may go without a byte arriving."""


_FD_RESERVE = 256
"""File descriptors kept for everything but HTTP connections (NATS, logs, key files)."""


def _connection_room(wanted: int) -> int:
    """How many connections the process can hold: the soft file limit is raised toward the
    hard one when ``wanted`` needs it, and the answer is lowered to what it allows."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = wanted + _FD_RESERVE
    if soft != resource.RLIM_INFINITY and soft < need:
        target = need if hard == resource.RLIM_INFINITY else min(need, hard)
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
    if soft == resource.RLIM_INFINITY:
        return wanted
    return max(1, min(wanted, soft - _FD_RESERVE))


def _address_key(host: str) -> str:
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host
    if address.version == 6 and getattr(address, "ipv4_mapped", None) is None:
        return str(ipaddress.ip_network(f"{address}/64", strict=False))
    return str(getattr(address, "ipv4_mapped", None) or address)


class _Refusals:
    """Connections closed at the door, logged at most once a second (a flood is one line)."""

    def __init__(self) -> None:
        self._count = 0
        self._since = 0.0

    def add(self, reason: str, peer: str) -> None:
        self._count += 1
        now = time.monotonic()
        if now - self._since >= 1.0:
            log.warning("http.connection_refused", reason=reason, peer=peer, count=self._count)
            self._count, self._since = 0, now


def _guarded_protocol(limits: HttpLimits) -> type[H11Protocol]:
    """uvicorn's h11 protocol with ``limits`` applied to every connection."""
    max_connections = _connection_room(limits.max_connections)
    refusals = _Refusals()

    class Guarded(H11Protocol):
        _head_timer: asyncio.TimerHandle | None = None
        _body_timer: asyncio.TimerHandle | None = None
        _refused = False

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            peer = transport.get_extra_info("peername")
            host = _address_key(str(peer[0])) if isinstance(peer, tuple) and peer else "-"
            if len(self.connections) >= max_connections:
                refusals.add("too many connections", host)
                self._refused = True
                transport.abort()
                return
            same = sum(
                1
                for other in self.connections
                if (client := getattr(other, "client", None)) and _address_key(client[0]) == host
            )
            if same >= limits.max_connections_per_address:
                refusals.add("too many connections from one address", host)
                self._refused = True
                transport.abort()
                return
            super().connection_made(transport)
            self._arm_head_timer()

        def connection_lost(self, exc: Exception | None) -> None:
            if self._refused:  # closed in connection_made, never counted
                return
            self._cancel_timers()
            super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            self._track_body()

        def handle_events(self) -> None:
            cycle = self.cycle
            super().handle_events()
            if self.cycle is not cycle and self._head_timer is not None:
                self._head_timer.cancel()  # a request's head arrived
                self._head_timer = None
            self._track_body()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing() and self._between_requests():
                self._arm_head_timer()  # the next request's head, if any, has its own time

        def _between_requests(self) -> bool:
            cycle: Any = self.cycle  # None until the first request
            return cycle is None or bool(cycle.response_complete)

        def _arm_head_timer(self) -> None:
            if self._head_timer is None:
                self._head_timer = self.loop.call_later(limits.header_timeout, self._head_late)

        def _head_late(self) -> None:
            self._head_timer = None
            if self._between_requests():
                self._close("no complete request head in time")

        def _track_body(self) -> None:
            if self._body_timer is not None:
                self._body_timer.cancel()
                self._body_timer = None
            if self.conn.their_state is h11.SEND_BODY and not self.transport.is_closing():
                self._body_timer = self.loop.call_later(limits.body_timeout, self._body_late)

        def _body_late(self) -> None:
            self._body_timer = None
            if self.conn.their_state is not h11.SEND_BODY:
                return
            if self.flow.read_paused:  # the app has not read what came: not the client's fault
                self._body_timer = self.loop.call_later(limits.body_timeout, self._body_late)
                return
            self._close("the request body stalled")

        def _close(self, reason: str) -> None:
            host = self.client[0] if self.client else "-"
            log.info("http.connection_timed_out", reason=reason, peer=host)
            self.transport.close()

        def _cancel_timers(self) -> None:
            for timer in (self._head_timer, self._body_timer):
                if timer is not None:
                    timer.cancel()
            self._head_timer = self._body_timer = None

    return Guarded


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
    limits: HttpLimits = HttpLimits(),
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
        app,
        sock,
        host=host,
        cert_file=cert_file,
        key_file=key_file,
        on_started=on_started,
        limits=limits,
    )


async def serve_socket(
    app: Any,
    sock: socket.socket,
    *,
    host: str,
    cert_file: Path | None = None,
    key_file: Path | None = None,
    on_started: Callable[[str], None] | None = None,
    limits: HttpLimits = HttpLimits(),
) -> None:
    """Serve ``app`` on a bound socket until cancelled, then close it."""
    config = uvicorn.Config(
        app,
        http=_guarded_protocol(limits),
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
