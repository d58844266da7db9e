"""The community directory in its JetStream key-value bucket, and the keys it publishes.

``atlas-broker directory load FILE`` validates a TOML file (every JWK included) and puts it
in the bucket; every worker watches the bucket so that a revoked key or a removed
subscription takes effect within seconds everywhere.
"""

from __future__ import annotations

import asyncio
import tomllib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType

import nats.errors
import nats.js.errors
import orjson
import structlog
from nats.js import JetStreamContext

from adapters import cancel_and_wait, check_cancelled
from keys import BrokerKeyring, InvalidKey, PublicKey
from policy import Directory, DirectoryError, OrgKind, PublicKeyEntry

from ._bus import DIRECTORY_BUCKET, ensure_intake
from .errors import DirectoryUnavailable

__all__ = [
    "DirectoryWatcher",
    "ResolvedDirectory",
    "ensure_directory_intake",
    "fetch_directory",
    "intake_orgs",
    "read_directory_file",
    "store_directory",
]

log = structlog.get_logger()

_KEY = "directory"


def read_directory_file(path: Path) -> Directory:
    """Parse and validate a directory TOML file; errors name the offending key path."""
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError as exc:
        raise DirectoryError(f"directory file {path} does not exist") from exc
    except tomllib.TOMLDecodeError as exc:
        raise DirectoryError(f"directory file {path} is not valid TOML: {exc}") from exc
    directory = Directory.from_mapping(data)
    resolve(directory)  # every JWK must parse
    return directory


@dataclass(frozen=True, slots=True)
class OrgKeys:
    signing_until: dict[str, tuple[PublicKey, int | None]]
    """kid -> (key, end of its rotation overlap or None); revoked keys are left out."""
    encryption: PublicKey | None
    """The current encryption key new packages are sealed to."""

    def signing(self, now: int) -> dict[str, PublicKey]:
        """The keys that verify this organisation's submissions at ``now``."""
        return {
            kid: key
            for kid, (key, until) in self.signing_until.items()
            if until is None or until > now
        }


@dataclass(frozen=True, slots=True)
class ResolvedDirectory:
    """A directory with its JWKs parsed once; shared read-only by the workers."""

    directory: Directory
    orgs: dict[str, OrgKeys] = field(default_factory=dict)
    broker_keyring: BrokerKeyring = field(default_factory=lambda: BrokerKeyring({}))
    revision: int = 0


def _parse(entry: PublicKeyEntry, where: str) -> PublicKey:
    try:
        key = PublicKey.from_jwk(entry.jwk, use=entry.use)
    except InvalidKey as exc:
        raise DirectoryError(f"{where}.jwk: {exc}") from exc
    if key.use != entry.use:
        raise DirectoryError(f"{where}: a {key.use} key is listed with use = {entry.use!r}")
    return key


def _epoch(moment: datetime | None) -> int | None:
    if moment is None:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp())


def resolve(directory: Directory, revision: int = 0) -> ResolvedDirectory:
    orgs: dict[str, OrgKeys] = {}
    for i, org in enumerate(directory.organisations):
        signing: dict[str, tuple[PublicKey, int | None]] = {}
        encryption: PublicKey | None = None
        for j, entry in enumerate(org.keys):
            key = _parse(entry, f"organisations[{i}].keys[{j}]")
            if entry.revoked_at is not None:
                continue
            if entry.use == "sig":
                signing[key.thumbprint] = (key, _epoch(entry.not_after))
            elif entry.current:
                encryption = key
        orgs[org.id] = OrgKeys(signing_until=signing, encryption=encryption)
    ring: dict[str, tuple[PublicKey, int | None]] = {}
    for j, entry in enumerate(directory.broker.keys):
        key = _parse(entry, f"broker.keys[{j}]")
        ring[key.thumbprint] = (key, _epoch(entry.revoked_at))
    return ResolvedDirectory(
        directory=directory, orgs=orgs, broker_keyring=BrokerKeyring(ring), revision=revision
    )


async def store_directory(js: JetStreamContext, directory: Directory) -> int:
    """Put ``directory`` in the bucket, with its organisations' intake streams."""
    kv = await js.key_value(DIRECTORY_BUCKET)
    payload = directory.model_dump_json().encode()
    revision = int(await kv.put(_KEY, payload))
    await ensure_intake(js, intake_orgs(directory))
    return revision


def intake_orgs(directory: Directory) -> list[str]:
    """The organisations that publish (submissions, acknowledgements): all but auditors."""
    return [org.id for org in directory.organisations if org.kind != OrgKind.AUDITOR]


async def ensure_directory_intake(js: JetStreamContext) -> int:
    """The intake streams of the stored directory's organisations (none stored: none)."""
    try:
        resolved = await fetch_directory(js)
    except DirectoryUnavailable:
        return 0
    return await ensure_intake(js, intake_orgs(resolved.directory))


async def fetch_directory(js: JetStreamContext) -> ResolvedDirectory:
    try:
        kv = await js.key_value(DIRECTORY_BUCKET)
        entry = await kv.get(_KEY)
    except (nats.js.errors.NotFoundError, nats.js.errors.BucketNotFoundError) as exc:
        raise DirectoryUnavailable(
            "no community directory loaded: run `atlas-broker directory load FILE`"
        ) from exc
    return _decode(entry.value or b"", int(entry.revision or 0))


def _decode(raw: bytes, revision: int) -> ResolvedDirectory:
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise DirectoryError(
            f"the stored directory (revision {revision}) is not JSON ({exc}): load it again "
            "with `atlas-broker directory load FILE`"
        ) from exc
    if not isinstance(doc, dict):
        raise DirectoryError(f"the stored directory (revision {revision}) is not a JSON object")
    directory = Directory.from_mapping(doc)
    return resolve(directory, revision)


class DirectoryWatcher:
    """Keeps ``current`` up to date with the bucket; ``async with`` owns the polling task.

    It polls rather than relying on a KV watch: a watch's ephemeral consumer does not
    survive every reconnect, while a poll every ``interval`` seconds bounds how long a
    revoked key or a removed subscription can stay in force, whatever the network did.
    """

    def __init__(self, js: JetStreamContext, *, interval: float = 1.0) -> None:
        self._js = js
        self._interval = interval
        self._current: ResolvedDirectory | None = None
        self._refused = -1
        """The last revision found invalid (kept out, logged once)."""
        self._task: asyncio.Task[None] | None = None
        self._changed = asyncio.Event()

    @property
    def current(self) -> ResolvedDirectory:
        if self._current is None:
            raise DirectoryUnavailable(
                "no community directory loaded: run `atlas-broker directory load FILE`"
            )
        return self._current

    async def wait_for(self, revision: int) -> ResolvedDirectory:
        """Wait until the watcher applies ``revision`` or a later one (bound it by the caller)."""
        while self._current is None or self._current.revision < revision:
            self._changed.clear()
            await self._changed.wait()
        return self._current

    async def refresh(self) -> None:
        """Read the bucket once; keep the last good directory if the new one is invalid."""
        try:
            kv = await self._js.key_value(DIRECTORY_BUCKET)
            entry = await kv.get(_KEY)
        except nats.js.errors.NotFoundError:
            return
        revision = int(entry.revision or 0)
        if self._current is not None and self._current.revision == revision:
            return
        if revision == self._refused:
            return  # said once; the last good directory stays in force
        try:
            self._current = _decode(entry.value or b"", revision)
        except DirectoryError as exc:
            self._refused = revision
            log.error("directory.invalid", revision=revision, error=str(exc))
            return
        log.info("directory.applied", revision=revision)
        self._changed.set()

    async def _poll(self) -> None:
        while True:
            check_cancelled()
            await asyncio.sleep(self._interval)
            try:
                await self.refresh()
            except (nats.errors.Error, OSError) as exc:
                log.warning("directory.refresh_failed", error=str(exc) or type(exc).__name__)

    async def __aenter__(self) -> DirectoryWatcher:
        await self.refresh()
        self._task = asyncio.create_task(self._poll(), name="directory-poll")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._task is not None:
            await cancel_and_wait(self._task)
