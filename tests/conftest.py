"""Shared fixtures: a private real nats-server per test, and a community factory."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nats
import pytest
import structlog
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext

from broker._bus import ensure_streams
from broker._config import Settings
from broker._directory_store import store_directory
from broker._embedded import EmbeddedNats
from broker._service import run_router, streams_for
from broker.cli import await_chain
from keys import PrivateKey, generate_org_keys, load_private_key
from policy import Directory

TLP2 = {
    "clear": "marking-definition--94868c89-83c2-464b-929b-a1a8aa3c8487",
    "green": "marking-definition--bab4a63c-aed9-4cf5-a766-dfca5abac2bb",
    "amber": "marking-definition--55d920b0-5e8b-4f79-9ee9-91f868d9b421",
    "amber+strict": "marking-definition--939a9414-2ddd-4d32-a0cd-375ea402b003",
    "red": "marking-definition--e828b379-4e03-4974-9ac4-e53a884c97c1",
}


@pytest.fixture(autouse=True)
def _quiet_logs() -> Iterator[None]:
    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(40),
        cache_logger_on_first_use=False,
    )
    yield
    structlog.reset_defaults()


@pytest.fixture
async def nats_server(tmp_path: Path) -> AsyncIterator[EmbeddedNats]:
    """A real nats-server process on a free loopback port, its store in tmp_path."""
    server = EmbeddedNats(tmp_path / "nats-data", publish_url=False)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture
async def nc(nats_server: EmbeddedNats) -> AsyncIterator[NATS]:
    client = await nats.connect(nats_server.url, max_reconnect_attempts=2)
    try:
        yield client
    finally:
        with contextlib.suppress(Exception):
            await client.close()


@pytest.fixture
async def js(nc: NATS) -> JetStreamContext:
    context = nc.jetstream()
    await ensure_streams(context)
    return context


def stix_identity(org: str) -> str:
    """The STIX identity id the test directories give an organisation."""
    return f"identity--{uuid.uuid5(uuid.NAMESPACE_URL, f'https://atlas.test/orgs/{org}')}"


@dataclass
class Community:
    """Keys on disk and a directory document that tests adjust before loading."""

    root: Path
    doc: dict[str, Any]
    broker_key: PrivateKey
    public: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    def sign_key(self, org: str) -> Path:
        return self.root / org / f"{org}.sign.pem"

    def enc_key(self, org: str) -> Path:
        pem = self.root / org / f"{org}.enc.pem"
        return pem if pem.exists() else self.root / org / f"{org}.enc.jwk"

    def org(self, org_id: str) -> dict[str, Any]:
        return next(o for o in self.doc["organisations"] if o["id"] == org_id)

    def directory(self) -> Directory:
        return Directory.from_mapping(self.doc)


@pytest.fixture
def make_community(tmp_path: Path) -> Callable[..., Community]:
    """Factory: ``make_community(members=[...], partners=[...], outside=[...])``."""

    def _make(
        members: tuple[str, ...] = ("bank-a", "bank-b"),
        partners: tuple[str, ...] = ("lea-1", "lea-2"),
        outside: tuple[str, ...] = (),
        partners_in_community: bool = True,
        enc: str = "X25519",
    ) -> Community:
        root = tmp_path / "keys"
        public: dict[str, list[dict[str, Any]]] = {}
        for org in (*members, *partners, *outside, "atlas-broker"):
            generated = generate_org_keys(org, root / org, enc=enc)
            public[org] = [generated.sign_jwk, generated.enc_jwk]
        orgs = []
        for org in (*members, *partners, *outside):
            orgs.append(
                {
                    "id": org,
                    "name": org.upper(),
                    "kind": "member" if org in members else "partner",
                    "in_community": org not in outside,
                    "stix_identity": stix_identity(org),
                    "keys": [{"jwk": jwk, "use": jwk["use"]} for jwk in public[org]],
                }
            )
        doc = {
            "community": {
                "id": "test",
                "name": "Test community",
                "partners_in_community": partners_in_community,
            },
            "broker": {
                "id": "atlas-broker",
                "keys": [
                    {"jwk": j, "use": "sig"} for j in public["atlas-broker"] if j["use"] == "sig"
                ],
            },
            "organisations": orgs,
            "groups": [],
            "subscriptions": [
                {"recipient": r, "originators": ["*"]} for r in (*partners, *outside)
            ],
        }
        broker_key = load_private_key(root / "atlas-broker" / "atlas-broker.sign.pem")
        return Community(root=root, doc=doc, broker_key=broker_key, public=public)

    return _make


@pytest.fixture
def settings_for(tmp_path: Path) -> Callable[..., Settings]:
    def _make(community: Community, url: str, **extra: Any) -> Settings:
        return Settings(
            data_dir=tmp_path / "broker-data",
            nats={"url": url},  # type: ignore[arg-type]
            broker={"signing_key": community.root / "atlas-broker" / "atlas-broker.sign.pem"},  # type: ignore[arg-type]
            **extra,
        )

    return _make


@pytest.fixture
async def running_router(
    js: JetStreamContext, nats_server: EmbeddedNats, settings_for: Callable[..., Settings]
) -> AsyncIterator[Callable[[Community], Any]]:
    """Start the in-process router for a community (``extra`` settings as for
    ``settings_for``); stopped at teardown."""
    tasks: list[asyncio.Task[None]] = []

    async def _start(community: Community, **extra: Any) -> Settings:
        settings = settings_for(community, nats_server.url, **extra)
        await ensure_streams(js, streams_for(settings))
        await store_directory(js, community.directory())
        ready = asyncio.Event()
        tasks.append(
            asyncio.create_task(
                run_router(js, settings, signing_key=community.broker_key, ready=ready)
            )
        )
        await ready.wait()
        return settings

    yield _start
    await stop_within(tasks, seconds=30)


async def stop_within(tasks: list[asyncio.Task[Any]], *, seconds: float) -> None:
    """Cancel ``tasks`` and wait for them; fail naming where every task waits if they
    have not stopped within ``seconds`` (a hang in teardown becomes a readable error)."""
    for task in tasks:
        task.cancel()
    if not tasks:
        return
    done, pending = await asyncio.wait(tasks, timeout=seconds)
    for task in done:
        if not task.cancelled() and task.exception() is not None:
            raise task.exception()  # type: ignore[misc]
    if pending:
        chains = "\n".join(
            f"task {t.get_name()}:\n" + "".join(f"  {line}\n" for line in await_chain(t))
            for t in asyncio.all_tasks()
            if t is not asyncio.current_task()
        )
        pytest.fail(f"{len(pending)} task(s) still running {seconds} s after cancel:\n{chains}")
