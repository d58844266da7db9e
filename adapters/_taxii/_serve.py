"""Serving the ASGI app with uvicorn inside our own event loop and task tree.

``serve_http`` returns when cancelled, after uvicorn stopped accepting and finished the
requests in flight; signals stay with the caller (the CLI cancels the main task on Ctrl-C).

Connections are guarded before any request reaches the app (``HttpLimits``): uvicorn waits
without limit for a request's head and body and accepts connections until the process runs
out of file descriptors, so idle sockets opened by anyone, logged in or not, could take the
server off the air. TLS is set up here, not by uvicorn, so that a connection is counted and
admitted before its handshake.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import resource
import socket
import ssl
import time
from asyncio import sslproto
from collections import Counter
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import h11
import orjson
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
    """Seconds from a connection (or the previous response) to a complete request head; a
    TLS handshake must finish within it too."""
    body_timeout: float = 30.0
    """Seconds a request body may go without a byte arriving, and a response without the
    client reading any of it."""
    body_deadline: float = 600.0
    """Seconds one request body may take in all (a body trickled a byte at a time)."""


_MAX_HEAD = 16 * 1024
"""Bytes of a request head h11 buffers before refusing it (431): h11's and uvicorn's
default."""

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


class _Sampled:
    """One log line a second for events that come in floods, with the count since the last."""

    def __init__(self, event: str, level: str) -> None:
        self._event, self._level = event, level
        self._count = 0
        self._since = 0.0

    def add(self, reason: str, peer: str) -> None:
        self._count += 1
        now = time.monotonic()
        if now - self._since >= 1.0:
            getattr(log, self._level)(self._event, reason=reason, peer=peer, count=self._count)
            self._count, self._since = 0, now


class _Counts:
    """Open connections of one server, in all and per address (TLS handshakes included)."""

    def __init__(self, limits: HttpLimits) -> None:
        self.room = _connection_room(limits.max_connections)
        self.per_address = limits.max_connections_per_address
        self.total = 0
        self.by_address: Counter[str] = Counter()

    def admit(self, address: str) -> _Seat | str:
        """A seat for a connection from ``address``, or why there is none."""
        if self.total >= self.room:
            return "too many connections"
        if self.by_address[address] >= self.per_address:
            return "too many connections from one address"
        self.total += 1
        self.by_address[address] += 1
        return _Seat(self, address)

    def leave(self, address: str) -> None:
        self.total -= 1
        self.by_address[address] -= 1
        if not self.by_address[address]:
            del self.by_address[address]


class _Seat:
    """One admitted connection's place in the counts; given back once, however it ends."""

    __slots__ = ("_counts", "address", "taken")

    def __init__(self, counts: _Counts, address: str) -> None:
        self._counts, self.address, self.taken = counts, address, True

    def give_back(self) -> None:
        if self.taken:
            self.taken = False
            self._counts.leave(self.address)


class _CountedTLS(sslproto.SSLProtocol):
    """asyncio's TLS layer for one admitted connection: its seat is given back when the
    socket closes, whether or not the handshake ever finished."""

    seat: _Seat | None = None

    def connection_lost(self, exc: BaseException | None) -> None:
        if self.seat is not None:
            self.seat.give_back()
        super().connection_lost(exc)


class _Parser(h11.Connection):
    """h11's parser, keeping the last error it found in a request: uvicorn answers every
    one with the same plain-text 400 and drops the reason."""

    error: h11.RemoteProtocolError | None = None

    def next_event(self) -> Any:
        try:
            return super().next_event()
        except h11.RemoteProtocolError as exc:
            self.error = exc
            raise


def _protocol_error_body(error: h11.RemoteProtocolError | None) -> tuple[int, bytes]:
    """The status and JSON body (the TAXII error message's members) for a request h11
    could not parse."""
    status = error.error_status_hint if error is not None else 400
    if status not in (400, 431, 501):
        status = 400
    # h11 quotes the offending bytes after a colon ("illegal header line: bytearray(...)"),
    # credentials and all when an Authorization line lacks its colon: never echoed or logged.
    reason = str(error).split(":", 1)[0].strip() if error is not None else ""
    reason = reason or "malformed request"
    body = {
        "title": "Request Header Fields Too Large" if status == 431 else "Bad Request",
        "description": f"the request is not valid HTTP/1.1: {reason}",
        "http_status": str(status),
    }
    return status, orjson.dumps(body)


def _guarded_protocol(
    limits: HttpLimits, tls: ssl.SSLContext | None, error_media_type: str
) -> type[asyncio.Protocol]:
    """The protocol uvicorn runs on each accepted TCP connection: the connection is counted
    and admitted (or closed) before anything else, TLS included, and then served by
    uvicorn's h11 protocol with ``limits``' timers. A request h11 cannot parse is answered
    in ``error_media_type`` with the reason, as the app's own errors are."""
    counts = _Counts(limits)
    refusals = _Sampled("http.connection_refused", "warning")
    timeouts = _Sampled("http.connection_timed_out", "info")
    malformed = _Sampled("http.request_malformed", "info")

    class Guarded(H11Protocol):
        seat: _Seat | None = None
        _head_timer: asyncio.TimerHandle | None = None
        _body_timer: asyncio.TimerHandle | None = None
        _body_deadline: asyncio.TimerHandle | None = None
        _write_timer: asyncio.TimerHandle | None = None

        def __init__(self, config: uvicorn.Config, *args: Any, **kwargs: Any) -> None:
            super().__init__(config, *args, **kwargs)
            size = config.h11_max_incomplete_event_size
            self.conn = _Parser(h11.SERVER, size if size is not None else _MAX_HEAD)

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm_head_timer()

        def connection_lost(self, exc: Exception | None) -> None:
            if self.seat is not None:
                self.seat.give_back()
            self._cancel_timers()
            super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            self._track_body()

        def handle_events(self) -> None:
            cycle = self.cycle
            super().handle_events()
            if self.cycle is not cycle:  # a request's head arrived
                if self._head_timer is not None:
                    self._head_timer.cancel()
                    self._head_timer = None
                self._stop(self._body_deadline)
                self._body_deadline = None
                if self.conn.their_state is h11.SEND_BODY:
                    self._body_deadline = self.loop.call_later(
                        limits.body_deadline, self._late, "the request body took too long"
                    )
            self._track_body()

        def send_400_response(self, msg: str) -> None:
            error = cast(_Parser, self.conn).error
            status, body = _protocol_error_body(error)
            reason = orjson.loads(body)["description"]  # without the quoted bytes
            malformed.add(reason, self.client[0] if self.client else "-")
            headers = [
                (b"content-type", error_media_type.encode("ascii")),
                (b"cache-control", b"no-store"),
                (b"connection", b"close"),
            ]
            try:
                for event in (
                    h11.Response(status_code=status, headers=headers),
                    h11.Data(data=body),
                    h11.EndOfMessage(),
                ):
                    self.transport.write(self.conn.send(event) or b"")
            except h11.LocalProtocolError:
                pass  # a response had already begun: there is nothing more to say
            self.transport.close()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing() and self._between_requests():
                self._arm_head_timer()  # the next request's head, if any, has its own time

        def pause_writing(self) -> None:
            super().pause_writing()
            if self._write_timer is None:
                self._write_timer = self.loop.call_later(
                    limits.body_timeout, self._late, "the client does not read the response"
                )

        def resume_writing(self) -> None:
            super().resume_writing()
            self._stop(self._write_timer)
            self._write_timer = None

        def _between_requests(self) -> bool:
            cycle: Any = self.cycle  # None until the first request
            return cycle is None or bool(cycle.response_complete)

        def _arm_head_timer(self) -> None:
            if self._head_timer is None:
                self._head_timer = self.loop.call_later(limits.header_timeout, self._head_late)

        def _head_late(self) -> None:
            self._head_timer = None
            if self._between_requests():
                self._late("no complete request head in time")

        def _track_body(self) -> None:
            self._stop(self._body_timer)
            self._body_timer = None
            if self.conn.their_state is h11.SEND_BODY and not self.transport.is_closing():
                self._body_timer = self.loop.call_later(limits.body_timeout, self._body_late)
            else:
                self._stop(self._body_deadline)
                self._body_deadline = None

        def _body_late(self) -> None:
            self._body_timer = None
            if self.conn.their_state is not h11.SEND_BODY:
                return
            if self.flow.read_paused:  # the app has not read what came: not the client's fault
                self._body_timer = self.loop.call_later(limits.body_timeout, self._body_late)
                return
            self._late("the request body stalled")

        def _late(self, reason: str) -> None:
            if self.transport.is_closing() and not self.transport.get_write_buffer_size():
                return
            timeouts.add(reason, self.client[0] if self.client else "-")
            # Aborted, not closed: a close would wait for an unread response to drain.
            self.transport.abort()

        @staticmethod
        def _stop(timer: asyncio.TimerHandle | None) -> None:
            if timer is not None:
                timer.cancel()

        def _cancel_timers(self) -> None:
            for timer in (self._head_timer, self._body_timer, self._body_deadline):
                self._stop(timer)
            self._stop(self._write_timer)
            self._head_timer = self._body_timer = self._body_deadline = self._write_timer = None

    class Gate(asyncio.Protocol):
        """Admits a TCP connection or closes it, then hands it to ``Guarded`` (through
        asyncio's TLS layer when serving HTTPS, the handshake bounded by header_timeout)."""

        def __init__(self, **uvicorn_args: Any) -> None:
            self._args = uvicorn_args

        def connection_made(self, base: asyncio.BaseTransport) -> None:
            transport = cast(asyncio.Transport, base)  # a TCP server's transport
            peer = transport.get_extra_info("peername")
            address = _address_key(str(peer[0])) if isinstance(peer, tuple) and peer else "-"
            seat = counts.admit(address)
            if isinstance(seat, str):
                refusals.add(seat, address)
                transport.abort()
                return
            served = Guarded(**self._args)
            served.seat = seat
            if tls is None:
                transport.set_protocol(served)
                served.connection_made(transport)
                return
            # No waiter: a failed handshake is the connection's end, not an error to await.
            handshake: Any = {
                "server_side": True,
                "ssl_handshake_timeout": limits.header_timeout,
            }
            layer = _CountedTLS(
                asyncio.get_running_loop(), served, tls, cast(Any, None), **handshake
            )
            layer.seat = seat
            transport.set_protocol(layer)
            layer.connection_made(transport)

        def connection_lost(self, exc: Exception | None) -> None:
            pass  # only a refused connection ends here

    return Gate


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
    trusted_proxies: Sequence[str] = (),
    error_media_type: str = "application/json",
) -> None:
    """Serve ``app`` until cancelled; ``on_started`` gets the base URL (real port).

    ``trusted_proxies``: addresses or networks whose ``X-Forwarded-For``/``-Proto`` are
    believed (the client is then the nearest address not among them); none by default.
    ``error_media_type``: the content type of the JSON error (``title``, ``description``,
    ``http_status``) for a request that is not valid HTTP, which never reaches ``app``."""
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
        trusted_proxies=trusted_proxies,
        error_media_type=error_media_type,
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
    trusted_proxies: Sequence[str] = (),
    error_media_type: str = "application/json",
) -> None:
    """Serve ``app`` on a bound socket until cancelled, then close it (see ``serve_http``)."""
    tls = _server_tls(cert_file, key_file) if cert_file else None
    config = uvicorn.Config(
        app,
        # TLS is ours, not uvicorn's: a connection is admitted before its handshake.
        http=_guarded_protocol(limits, tls, error_media_type),
        log_config=None,
        access_log=False,
        lifespan="off",
        server_header=False,
        # X-Forwarded-* are believed from the configured proxies only, not from loopback
        # by default as uvicorn would: the failed-login limits key on the client's address,
        # which any local process could otherwise name.
        proxy_headers=bool(trusted_proxies),
        forwarded_allow_ips=list(trusted_proxies) or None,
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


def _server_tls(cert_file: Path, key_file: Path | None) -> ssl.SSLContext:
    """The server's TLS context: TLS 1.2 or later, the configured chain and key."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(cert_file, key_file)
    except (OSError, ssl.SSLError) as exc:
        raise AdapterError(
            f"cannot load the TLS certificate {cert_file} and key {key_file}: {exc}"
        ) from exc
    return context


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
