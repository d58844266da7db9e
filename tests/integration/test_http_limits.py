"""What an HTTP server of ours takes from clients before it closes their connections.

Real sockets on loopback against ``serve_http`` with short limits: idle and half-sent
requests, stalled bodies, and more connections than allowed are closed, while clients that
keep sending are served.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import requests
import trustme

from adapters import cancel_and_wait
from adapters._taxii import (
    TAXII_MEDIA_TYPE,
    Credentials,
    HttpLimits,
    MemoryBackend,
    create_app,
    serve_http,
)

LIMITS = HttpLimits(
    max_connections=6, max_connections_per_address=4, header_timeout=0.5, body_timeout=0.5
)


async def _echo_length(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Reads the whole body, answers with its length."""
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
        size += len(message.get("body", b""))
        if not message.get("more_body"):
            break
    body = str(size).encode()
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body})


BIG = b"x" * (32 << 20)


async def _big_answer(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Answers any request with 32 MiB."""
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": BIG})


@contextlib.asynccontextmanager
async def _serving(
    limits: HttpLimits = LIMITS, app: Any = _echo_length, tls: tuple[Path, Path] | None = None
) -> AsyncIterator[tuple[str, int]]:
    started: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    cert, key = tls or (None, None)
    task = asyncio.create_task(
        serve_http(
            app,
            host="127.0.0.1",
            port=0,
            cert_file=cert,
            key_file=key,
            on_started=started.set_result,
            limits=limits,
        )
    )
    try:
        url = await asyncio.wait_for(asyncio.shield(started), 10)
        yield url, int(url.rsplit(":", 1)[1])
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def _closed_within(sock: socket.socket, seconds: float) -> float | None:
    """Seconds until the server closed ``sock`` (reads it), or None if it stayed open."""
    sock.settimeout(seconds)
    start = time.monotonic()
    try:
        while sock.recv(4096):
            pass
    except TimeoutError:
        return None
    except ConnectionResetError:
        pass
    return time.monotonic() - start


def _connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=5)


async def _who(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Answers with the peer address and scheme the app was given."""
    body = f"{scope['client'][0]} {scope['scheme']}".encode()
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body})


async def test_forwarded_headers_are_not_believed_from_loopback_either() -> None:
    """The failed-login limits key on the peer's address: a local process naming another
    client in X-Forwarded-For would escape them."""
    async with _serving(app=_who) as (url, _):
        headers = {"X-Forwarded-For": "203.0.113.7", "X-Forwarded-Proto": "https"}
        answer = await asyncio.to_thread(requests.get, f"{url}/", headers=headers, timeout=10)
    assert answer.text == "127.0.0.1 http"


async def test_forwarded_headers_are_believed_from_a_configured_proxy() -> None:
    started: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(
        serve_http(
            _who,
            host="127.0.0.1",
            port=0,
            on_started=started.set_result,
            limits=LIMITS,
            trusted_proxies=["127.0.0.0/8"],
        )
    )
    try:
        url = await asyncio.wait_for(asyncio.shield(started), 10)
        headers = {"X-Forwarded-For": "203.0.113.7", "X-Forwarded-Proto": "https"}
        answer = await asyncio.to_thread(requests.get, f"{url}/", headers=headers, timeout=10)
    finally:
        await cancel_and_wait(task)
    assert answer.text == "203.0.113.7 https"


def _exchange(port: int, data: bytes) -> bytes:
    """Sends ``data`` on one connection; everything answered until the server closes it."""
    with _connect(port) as sock:
        sock.sendall(data)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    return received


async def test_a_request_framed_two_ways_is_refused_and_what_follows_never_read() -> None:
    """Content-Length and chunked together: a proxy framing by length would take the
    second request for part of the body (request smuggling)."""
    app = create_app(MemoryBackend(members={}), Credentials({}), cursor_key=b"k" * 32)
    async with _serving(app=app) as (_, port):
        smuggled = b"GET /taxii2/ HTTP/1.1\r\nHost: x\r\n\r\n"
        request = (
            b"POST /taxii2/ HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + smuggled
        )
        answer = await asyncio.to_thread(_exchange, port, request)
    assert answer.startswith(b"HTTP/1.1 400 ")
    assert b"both Transfer-Encoding and Content-Length" in answer
    assert answer.count(b"HTTP/1.1 ") == 1  # the smuggled request got no answer


@pytest.mark.parametrize(
    ("request_bytes", "status", "reason"),
    [
        (
            b"POST /taxii2/ HTTP/1.1\r\nHost: x\r\nContent-Length: 1x\r\n\r\n",
            400,
            b"Content-Length",
        ),
        # A header line without its colon: its bytes (a secret, say) are not echoed.
        (
            b"GET /taxii2/ HTTP/1.1\r\nHost: x\r\nAuthorization Basic c2VjcmV0\r\n\r\n",
            400,
            b"header",
        ),
        # A head past 16 KiB and not yet complete (a complete one in one read is parsed).
        (b"GET /" + b"a" * 20_000, 431, b"too long"),
    ],
    ids=["bad-content-length", "bad-header-line", "head-too-long"],
)
async def test_a_request_that_is_not_http_gets_an_error_in_the_servers_format(
    request_bytes: bytes, status: int, reason: bytes
) -> None:
    """h11 refuses these before the app sees them; the answer is still a JSON error with
    the reason, in the media type the server was given (uvicorn's own is plain text)."""
    started: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    app = create_app(MemoryBackend(members={}), Credentials({}), cursor_key=b"k" * 32)
    task = asyncio.create_task(
        serve_http(
            app,
            host="127.0.0.1",
            port=0,
            on_started=started.set_result,
            error_media_type=TAXII_MEDIA_TYPE,
        )
    )
    try:
        port = int((await asyncio.wait_for(started, 30)).rsplit(":", 1)[1])
        answer = await asyncio.to_thread(_exchange, port, request_bytes)
    finally:
        await cancel_and_wait(task)
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 %d " % status), head
    assert f"content-type: {TAXII_MEDIA_TYPE}".encode() in head.lower()
    error = json.loads(body)
    assert error["http_status"] == str(status)
    assert reason.lower() in error["description"].encode().lower(), error
    assert b"c2VjcmV0" not in answer


class TestTimeouts:
    async def test_closes_a_connection_that_sends_nothing(self) -> None:
        async with _serving() as (_, port):
            with _connect(port) as sock:
                waited = await asyncio.to_thread(_closed_within, sock, 5)
        assert waited is not None and waited < 3

    async def test_closes_a_connection_that_never_finishes_its_head(self) -> None:
        async with _serving() as (_, port):
            with _connect(port) as sock:

                def dribble() -> float | None:
                    sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")
                    for _ in range(8):  # a header line at a time, never the blank line
                        time.sleep(0.2)
                        try:
                            sock.sendall(b"X-Slow: 1\r\n")
                        except OSError:
                            return 0.0  # already closed
                    return _closed_within(sock, 3)

                waited = await asyncio.to_thread(dribble)
        assert waited is not None

    async def test_closes_a_connection_whose_body_stalls(self) -> None:
        async with _serving() as (_, port):
            with _connect(port) as sock:

                def stall() -> float | None:
                    sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\nx")
                    return _closed_within(sock, 5)

                waited = await asyncio.to_thread(stall)
        assert waited is not None and waited < 3

    async def test_serves_a_body_that_keeps_coming_slowly(self) -> None:
        async with _serving() as (url, _):

            def slow() -> Any:
                def chunks() -> Any:
                    for _ in range(6):  # 1.8 s in all, never 0.5 s without a byte
                        time.sleep(0.3)
                        yield b"abcde"

                return requests.post(url + "/", data=chunks(), timeout=10)

            resp = await asyncio.to_thread(slow)
        assert (resp.status_code, resp.text) == (200, "30")

    async def test_keeps_a_connection_that_sends_requests_now_and_then(self) -> None:
        async with _serving() as (url, _):

            def requests_over_time() -> list[str]:
                with requests.Session() as session:
                    answers = []
                    for _ in range(5):  # 1.6 s in all on one connection, past the 0.5 s
                        answers.append(session.post(url + "/", data=b"ab", timeout=5).text)
                        time.sleep(0.4)
                    return answers

            assert await asyncio.to_thread(requests_over_time) == ["2"] * 5

    async def test_aborts_a_body_trickled_past_its_deadline(self) -> None:
        limits = HttpLimits(header_timeout=5, body_timeout=0.5, body_deadline=1.0)
        async with _serving(limits) as (_, port):
            with _connect(port) as sock:

                def trickle() -> float | None:
                    """Seconds until the server closed while bytes kept coming, or None."""
                    sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n")
                    sock.setblocking(False)  # the check below must not wait for data
                    start = time.monotonic()
                    for _ in range(20):  # a byte every 0.2 s: never stalled, never done
                        time.sleep(0.2)
                        try:
                            sock.send(b"x")
                            if sock.recv(1) == b"":
                                return time.monotonic() - start
                        except BlockingIOError:
                            continue  # open, nothing to read
                        except OSError:
                            return time.monotonic() - start
                    return None

                waited = await asyncio.to_thread(trickle)
        assert waited is not None and waited < 3

    async def test_aborts_a_client_that_does_not_read_the_response(self) -> None:
        limits = HttpLimits(header_timeout=5, body_timeout=0.5)
        async with _serving(limits, app=_big_answer) as (_, port):

            def never_read() -> int:
                sock = socket.socket()
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
                with sock:
                    sock.connect(("127.0.0.1", port))
                    sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
                    time.sleep(3)  # the server's buffer fills; nothing is read
                    got = 0
                    sock.settimeout(5)
                    with contextlib.suppress(ConnectionResetError):
                        while chunk := sock.recv(1 << 20):
                            got += len(chunk)
                    return got

            received = await asyncio.to_thread(never_read)
        assert received < len(BIG)  # cut off, not served in full once the client read again


class TestTls:
    @pytest.fixture
    def tls(self, tmp_path: Path) -> tuple[Path, Path]:
        ca = trustme.CA()
        ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
        leaf = ca.issue_cert("127.0.0.1")
        cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
        for i, blob in enumerate(leaf.cert_chain_pems):
            blob.write_to_path(str(cert), append=i > 0)
        leaf.private_key_pem.write_to_path(str(key))
        return cert, key

    async def test_counts_and_times_out_connections_that_never_start_tls(
        self, tls: tuple[Path, Path]
    ) -> None:
        limits = HttpLimits(max_connections_per_address=2, header_timeout=0.5)
        async with _serving(limits, tls=tls) as (_, port):
            silent = [_connect(port) for _ in range(2)]
            try:
                with _connect(port) as third:  # over the cap before any handshake
                    assert await asyncio.to_thread(_closed_within, third, 3) is not None
                for sock in silent:  # no ClientHello: closed at header_timeout
                    waited = await asyncio.to_thread(_closed_within, sock, 5)
                    assert waited is not None and waited < 3
            finally:
                for sock in silent:
                    sock.close()

    async def test_serves_https_once_the_handshake_is_done(self, tls: tuple[Path, Path]) -> None:
        async with _serving(LIMITS, tls=tls) as (url, _):
            assert url.startswith("https://")
            resp = await asyncio.to_thread(
                requests.post,
                url + "/",
                data=b"abcd",
                verify=str(tls[0].parent / "ca.pem"),
                timeout=5,
            )
        assert resp.text == "4"


class TestConnectionCaps:
    @pytest.mark.parametrize(
        ("total", "per_address"), [(50, 3), (3, 50)], ids=["per-address", "total"]
    )
    async def test_closes_connections_over_the_cap_until_some_leave(
        self, total: int, per_address: int
    ) -> None:
        limits = HttpLimits(
            max_connections=total, max_connections_per_address=per_address, header_timeout=30
        )
        async with _serving(limits) as (url, port):
            held = [_connect(port) for _ in range(3)]
            try:
                await asyncio.sleep(0.2)
                with _connect(port) as extra:
                    waited = await asyncio.to_thread(_closed_within, extra, 3)
                assert waited is not None and waited < 1
            finally:
                for sock in held:
                    sock.close()
            await asyncio.sleep(0.2)
            resp = await asyncio.to_thread(requests.post, url + "/", data=b"abc", timeout=5)
            assert resp.text == "3"  # room again once they left

    @pytest.mark.parametrize("wanted", [1, 1000, 10**9])
    def test_fits_the_cap_to_the_file_descriptor_limit(self, wanted: int) -> None:
        import resource

        from adapters._taxii._serve import _connection_room

        room = _connection_room(wanted)
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        assert 1 <= room <= wanted
        assert soft == resource.RLIM_INFINITY or room < soft
