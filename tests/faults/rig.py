"""Fault scaffolding shared by the fault tests.

- :class:`Proc`: an ``atlas-broker`` subprocess (``serve`` or ``receive``) that a test can
  pause, kill or stop; its JSON log goes to a file the test reads events from.
- :class:`Rig`: writes the configurations, starts brokers and receivers, and stops whatever
  is still running at teardown.
- :class:`Load`: signed submissions of a fixed mix of TLP levels and audiences, published
  until JetStream acknowledges them; what was acknowledged is what the checker expects.
- :class:`Cluster`: three nats-server processes with routes and JetStream, one killable.
- :class:`TcpProxy`: a cuttable TCP relay between one client and nats-server.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import httpx
import nats.errors
import nats.js.errors
import orjson
from nats.js import JetStreamContext

from adapters import durable_pull
from broker._bus import (
    DELIVERIES,
    LOG,
    RECEIPTS,
    SUBMISSIONS,
    Streams,
    ensure_streams,
    submit_stream,
    submit_subject,
)
from broker._config import LimitSettings, Settings
from broker._directory_store import store_directory
from broker._embedded import EmbeddedNats
from broker._feeds import router_backlog
from broker._submission import make_submission
from keys import load_private_key
from tests.conftest import Community
from tests.faults.checker import Accepted, Verdict, check
from tests.integration.helpers import bundle, indicator, intake_total, receive_all, until

RECEIVER_ACK_WAIT = 5.0
"""Receivers' consumers are created ahead with this ack wait (the bridge's own default,
60 s, would make every test wait a minute for the packages a killed receiver held)."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- server state ---------------------------------------------------------------------------


async def stored(js: JetStreamContext, stream: str) -> int:
    return int((await js.stream_info(stream)).state.messages)


async def subjects(js: JetStreamContext, stream: str, pattern: str) -> dict[str, int]:
    info = await js.stream_info(stream, subjects_filter=pattern)
    return dict(info.state.subjects or {})


async def router_idle(js: JetStreamContext) -> bool:
    """Every stored submission was copied, handed out and acked by the router."""
    try:
        taken = await intake_total(js)
        last = (await js.stream_info(SUBMISSIONS)).state.last_seq
        backlog = await router_backlog(js)
    except (nats.errors.Error, OSError):
        return False  # not created yet, or the server is failing over
    # nats-server copied every intake's submissions, and the router acked them all
    return (last or 0) >= taken and backlog.drained() and backlog.delivered > 0


async def half_routed(js: JetStreamContext) -> set[str]:
    """Submissions with packages stored but no log entries yet: a fan-out in progress."""
    packaged = {s.rsplit(".", 1)[1] for s in await subjects(js, DELIVERIES, "atlas.deliver.>")}
    logged = {s.split(".")[3] for s in await subjects(js, LOG, "atlas.log.entries.>")}
    return packaged - logged


async def consumer_lag(js: JetStreamContext, stream: str, name: str) -> tuple[int, int]:
    """(num_pending, num_ack_pending) of a durable consumer."""
    info = await js.consumer_info(stream, name)
    return int(info.num_pending or 0), int(info.num_ack_pending or 0)


# -- subprocesses ---------------------------------------------------------------------------


class Proc:
    """One ``python -m broker`` subprocess; stderr (JSON log lines) kept in ``log``."""

    def __init__(
        self, name: str, argv: Sequence[str], *, log: Path, cwd: Path, ready: str | None = None
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.log = log
        self.cwd = cwd
        self.ready = ready
        """A log event that says the process is working; :meth:`start` waits for it."""
        self.proc: asyncio.subprocess.Process | None = None
        self.runs = 0

    async def start(self) -> Proc:
        """Start (again); returns once the ``ready`` event of this run is logged."""
        await self._spawn()
        if self.ready is not None:
            await self.wait_event(self.ready)
        return self

    async def _spawn(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("ATLAS_")}
        self.runs += 1
        with self.log.open("ab") as err:
            err.write(f'{{"event": "test.started", "run": {self.runs}}}\n'.encode())
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "broker",
                *self.argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=err,
                cwd=self.cwd,
                env=env,
            )

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def events(self, name: str, *, run: int | None = None) -> list[dict[str, Any]]:
        """Log events called ``name``, of every run or of run ``run`` (1-based)."""
        out = []
        current = 0
        for line in self.log.read_bytes().splitlines():
            with contextlib.suppress(orjson.JSONDecodeError):
                item = orjson.loads(line)
                if not isinstance(item, dict):
                    continue
                if item.get("event") == "test.started":
                    current = int(item["run"])
                elif item.get("event") == name and run in (None, current):
                    out.append(item)
        return out

    def tail(self, lines: int = 15) -> str:
        return b"\n".join(self.log.read_bytes().splitlines()[-lines:]).decode(errors="replace")

    async def wait_event(self, name: str, *, within: float = 60, count: int = 1) -> None:
        async def _seen() -> bool:
            if not self.alive:
                raise AssertionError(f"{self.name} exited ({self.returncode}):\n{self.tail()}")
            return len(self.events(name, run=self.runs)) >= count

        try:
            await until(_seen, within=within, what=f"{name} from {self.name}", every=0.1)
        except AssertionError as exc:
            raise AssertionError(f"{exc}; its last lines:\n{self.tail(40)}") from None

    @property
    def returncode(self) -> int | None:
        return None if self.proc is None else self.proc.returncode

    def pause(self) -> None:
        os.kill(self.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.kill(self.pid, signal.SIGCONT)

    async def kill(self) -> None:
        """SIGKILL: no cleanup of any kind (also works on a paused process)."""
        if self.alive:
            assert self.proc is not None
            self.proc.send_signal(signal.SIGKILL)
            await self.proc.wait()

    async def stop(self) -> None:
        """SIGTERM (the CLI's clean stop), SIGKILL if it does not exit in time."""
        if not self.alive:
            return
        assert self.proc is not None
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGCONT)
            self.proc.send_signal(signal.SIGTERM)
        try:
            async with asyncio.timeout(20):
                await self.proc.wait()
        except TimeoutError:
            await self.kill()


class Rig:
    """Configurations, broker and receiver processes of one fault test."""

    def __init__(self, root: Path, community: Community) -> None:
        self.root = root
        self.community = community
        self.procs: list[Proc] = []
        self.digest_key = root / "digest.key"
        # Every broker process of a deployment shares the key of the log's object digests.
        self.digest_key.write_bytes(os.urandom(32))
        self.digest_key.chmod(0o600)
        self.jwks = root / "broker.jwks"
        sig = [j for j in community.public["atlas-broker"] if j["use"] == "sig"]
        self.jwks.write_bytes(orjson.dumps({"keys": sig}))

    def config(
        self,
        name: str,
        *,
        url: str | None,
        workers: int = 2,
        port: int = 0,
        replicas: int = 1,
    ) -> Path:
        """A broker configuration; without ``url`` it runs the embedded nats-server."""
        signing_key = self.community.root / "atlas-broker" / "atlas-broker.sign.pem"
        nats_lines = [f'url = "{url}"'] if url else [f"port = {port}"]
        nats_lines.append(f"replicas = {replicas}")
        text = (
            f'data_dir = "{self.root / name}"\n'
            "[nats]\n" + "\n".join(nats_lines) + "\n"
            f'[broker]\nsigning_key = "{signing_key}"\ndigest_key_file = "{self.digest_key}"\n'
            f"[router]\nworkers = {workers}\nack_wait = 3\n"
        )
        if "monitor" in Settings.model_fields:  # a free port, so that brokers never collide
            text += "[monitor]\nport = 0\n"
        path = self.root / f"{name}.toml"
        path.write_text(text)
        return path

    def _proc(self, name: str, argv: Sequence[str], ready: str | None = None) -> Proc:
        proc = Proc(name, argv, log=self.root / f"{name}.log", cwd=self.root, ready=ready)
        self.procs.append(proc)
        return proc

    def broker(self, config: Path, name: str = "serve") -> Proc:
        """``atlas-broker serve`` (not started; ``start()`` returns once it routes)."""
        argv = ["--config", str(config), "--log-format", "json", "serve"]
        return self._proc(name, argv, ready="router.started")

    def receiver(self, org: str, url: str) -> Proc:
        """``atlas-broker receive`` for ``org`` into ``root/inbox/<org>`` (not started)."""
        return self._proc(
            f"receive-{org}",
            [
                "--nats-url",
                url,
                "--log-format",
                "json",
                "receive",
                "--org",
                org,
                "--key",
                str(self.community.enc_key(org)),
                "--out",
                str(self.inbox(org)),
                "--broker-jwks",
                str(self.jwks),
            ],
        )

    def inbox(self, org: str) -> Path:
        return self.root / "inbox" / org

    async def check(
        self, js: JetStreamContext, load: Load, url: str, receivers: Iterable[str]
    ) -> Verdict:
        """The checker on everything ``load`` got acknowledged and these receivers' inboxes."""
        return await check(
            js,
            community=self.community,
            accepted=load.accepted,
            receivers={org: self.inbox(org) for org in receivers},
            nats_url=url,
            jwks=self.jwks,
        )

    async def aclose(self) -> None:
        for proc in self.procs:
            await proc.kill()


async def prepare_receiver(js: JetStreamContext, org: str) -> None:
    """Create the bridge's consumers ahead, as it would: ``rcv-<org>`` with a short ack
    wait, and ``rct-<org>`` for its receipts."""
    for sub in (
        await durable_pull(
            js, DELIVERIES, f"rcv-{org}", f"atlas.deliver.{org}.*", ack_wait=RECEIVER_ACK_WAIT
        ),
        await durable_pull(js, RECEIPTS, f"rct-{org}", f"atlas.receipt.{org}.*"),
    ):
        await sub.unsubscribe()


async def paused_when(
    proc: Proc, condition: Callable[[], Awaitable[bool]], *, within: float = 60
) -> None:
    """Freeze ``proc`` (SIGSTOP) at a moment ``condition`` holds, so that the fault lands there.

    Checks the condition on a frozen process, so nothing moves while it is looked at; when
    it does not hold, lets the process run a little and tries again. Returns with ``proc``
    still frozen: the caller kills or stops it.
    """
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        await asyncio.sleep(0.02)
        if not proc.alive:
            raise AssertionError(f"{proc.name} exited ({proc.returncode}):\n{proc.tail()}")
        proc.pause()
        if await condition():
            return
        proc.resume()
    raise AssertionError(f"{proc.name} never reached the state the fault needs in {within} s")


# -- load -----------------------------------------------------------------------------------

MEMBERS = ("bank-a", "bank-b")
PARTNERS = ("lea-1", "lea-2", "ngo-x")
"""Every organisation that follows the members, in the community or not."""

# (originator, TLP of each object, audience): a fixed mix in which every recipient has
# something it may receive and something it must not.
SHAPES: tuple[tuple[str, tuple[str, ...], tuple[str, ...]], ...] = (
    ("bank-a", ("clear", "clear"), ()),
    ("bank-b", ("green",), ()),
    ("bank-a", ("amber", "clear"), ("org:lea-2",)),
    ("bank-a", ("red", "green"), ("org:lea-1",)),
    ("bank-b", ("amber", "amber+strict"), ("group:op",)),
    ("bank-a", ("red",), ()),  # RED naming nobody: accepted, delivered to no one
)


class Load:
    """Signs and publishes submissions; keeps what JetStream acknowledged."""

    def __init__(self, js: JetStreamContext, community: Community) -> None:
        self.js = js
        self.community = community
        self.accepted: list[Accepted] = []
        self.retries = 0
        self._keys = {org: load_private_key(community.sign_key(org)) for org in MEMBERS}
        self._limits = LimitSettings()

    async def submit(self, n: int) -> Accepted:
        org, tlps, to = SHAPES[n % len(SHAPES)]
        objects = [indicator(tlp, f"fault {n}.{i}") for i, tlp in enumerate(tlps)]
        signed = make_submission(
            orjson.dumps(bundle(*objects)),
            org=org,
            key=self._keys[org],
            to=to,
            feed=None,
            now=int(time.time()),
            max_bytes=self._limits.max_bundle_bytes,
            max_objects=self._limits.max_objects,
        )
        # The same signed token is sent again until acknowledged: if an unanswered attempt
        # was stored after all, the broker refuses the second copy as a replay.
        async with asyncio.timeout(90):
            while True:
                try:
                    await self.js.publish(
                        submit_subject(org), signed.token, stream=submit_stream(org), timeout=5
                    )
                    break
                except (nats.errors.Error, OSError):
                    self.retries += 1
                    await asyncio.sleep(0.25)
        accepted = Accepted(
            sid=signed.sid,
            org=org,
            to=to,
            objects={o["id"]: tlp for o, tlp in zip(objects, tlps, strict=True)},
        )
        self.accepted.append(accepted)
        return accepted

    async def run(self, count: int, *, every: float = 0.0) -> None:
        start = len(self.accepted)
        for n in range(start, start + count):
            await self.submit(n)
            if every:
                await asyncio.sleep(every)


# -- a 3-node cluster -----------------------------------------------------------------------


class Cluster:
    """Three nats-server processes with routes, JetStream on each (distinct server names)."""

    def __init__(self, root: Path, *, size: int = 3) -> None:
        self.root = root
        self.size = size
        self.client_ports = [free_port() for _ in range(size)]
        self.route_ports = [free_port() for _ in range(size)]
        self.nodes: list[EmbeddedNats | None] = [None] * size

    @property
    def url(self) -> str:
        """Every node, comma-separated (``nats.url`` of a broker on this cluster)."""
        return ",".join(self.urls)

    @property
    def urls(self) -> list[str]:
        return [f"nats://127.0.0.1:{port}" for port in self.client_ports]

    def name(self, node: int) -> str:
        return f"n{node + 1}"

    def _server(self, node: int) -> EmbeddedNats:
        routes = ", ".join(
            f'"nats-route://127.0.0.1:{port}"'
            for i, port in enumerate(self.route_ports)
            if i != node
        )
        extra = (
            f'server_name: "{self.name(node)}"\n'
            'http: "127.0.0.1:-1"\n'
            f'cluster {{\n  name: "atlas-faults"\n  listen: "127.0.0.1:{self.route_ports[node]}"\n'
            f"  routes: [{routes}]\n}}\n"
        )
        # R3 replicas, not fsync on every write, are what keep acknowledged writes here.
        return EmbeddedNats(
            self.root / self.name(node),
            port=self.client_ports[node],
            sync_always=False,
            publish_url=False,
            extra_config=extra,
        )

    async def start(self) -> None:
        for node in range(self.size):
            await self.restart(node, wait=False)
        await self.healthy()

    async def restart(self, node: int, *, wait: bool = True) -> None:
        server = self._server(node)
        await server.start()
        self.nodes[node] = server
        if wait:
            await self.healthy()

    async def kill(self, node: int) -> None:
        server = self.nodes[node]
        assert server is not None
        await server.stop(kill=True)
        self.nodes[node] = None

    def node_named(self, name: str) -> int:
        return next(i for i in range(self.size) if self.name(i) == name)

    def _monitor(self, node: int) -> str:
        ports = next((self.root / self.name(node) / "nats" / "ports").glob("*.ports"))
        return str(orjson.loads(ports.read_bytes())["monitoring"][0])

    async def healthy(self, within: float = 60) -> None:
        """Every running node sees the same meta leader of a full cluster and is current."""

        async def _check() -> bool:
            leaders = set()
            async with httpx.AsyncClient(timeout=2) as client:
                for node, server in enumerate(self.nodes):
                    if server is None:
                        continue
                    try:
                        base = self._monitor(node)
                        health = await client.get(f"{base}/healthz")
                        meta = (await client.get(f"{base}/jsz")).json().get("meta_cluster") or {}
                    except (httpx.HTTPError, StopIteration, ValueError, OSError):
                        return False
                    if health.status_code != 200 or meta.get("cluster_size") != self.size:
                        return False
                    leaders.add(meta.get("leader"))
            return len(leaders) == 1 and None not in leaders

        await until(_check, within=within, what="a healthy cluster with a meta leader", every=0.2)

    async def aclose(self) -> None:
        for server in self.nodes:
            if server is not None:
                await server.stop()


# -- a cuttable link ------------------------------------------------------------------------


class TcpProxy:
    """Relays one loopback port to nats-server; :meth:`cut` drops every connection and
    refuses new ones until :meth:`restore`."""

    def __init__(self, target: str) -> None:
        hostport = target.split("://", 1)[-1]
        host, _, port = hostport.rpartition(":")
        self._target = (host, int(port))
        self._port = 0
        self._server: asyncio.Server | None = None
        self._pumps: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self.connections = 0

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self._port}"

    async def start(self) -> str:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self._port)
        self._port = self._server.sockets[0].getsockname()[1]
        return self.url

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            up_reader, up_writer = await asyncio.open_connection(*self._target)
        except OSError:
            writer.close()
            return
        self._writers.update((writer, up_writer))
        for src, dst in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.create_task(self._pump(src, dst))
            self._pumps.add(task)
            task.add_done_callback(self._pumps.discard)

    async def _pump(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        try:
            while data := await src.read(65536):
                dst.write(data)
                await dst.drain()
        except OSError:
            pass
        finally:
            dst.close()

    async def cut(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for writer in self._writers:
            writer.close()
        self._writers.clear()
        pumps = list(self._pumps)
        for task in pumps:
            task.cancel()
        await asyncio.gather(*pumps, return_exceptions=True)

    async def restore(self) -> None:
        await self.start()

    async def aclose(self) -> None:
        await self.cut()


async def prime(js: JetStreamContext, community: Community, *, replicas: int = 1) -> None:
    """Streams (at ``replicas``) and the community directory, as an operator sets them up."""
    await ensure_streams(js, Streams(replicas=replicas))
    await store_directory(js, community.directory())


async def receive_once(js: JetStreamContext, rig: Rig, orgs: Iterable[str]) -> None:
    """Each organisation's receive bridge, run once to the end, into its inbox."""
    settings = Settings(data_dir=rig.root / "receivers")
    async with asyncio.TaskGroup() as group:
        for org in orgs:
            group.create_task(receive_all(settings, js, rig.community, org, rig.inbox(org)))
