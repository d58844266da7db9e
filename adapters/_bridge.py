"""The partner receive bridge: open packages at the partner's premises and store them.

A partner runs ``atlas-broker receive``; it consumes its durable consumer on DELIVERIES
(``rcv-<org>``, filtered to ``atlas.deliver.<org>.*``), opens each package with its own
private key (verifying the broker's signature on the exact bytes received), writes the
STIX bundle to its folder atomically (temp file, fsync, rename) and acks only after that.
A package that can never be opened (bad signature, forwarded, expired) is quarantined with
the reason beside it and acked: it stays in DELIVERIES for anyone to inspect, and it does
not block the packages behind it. A package this receiver cannot open because of its own
configuration (signed by a broker key missing from its key set, sealed to an encryption
key it was not given) is held instead: left unacked in the stream until the configuration
is fixed, never quarantined (a wrong ``--key`` would otherwise throw away the backlog).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import re
import secrets
import stat
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nats.errors
import nats.js.errors
import orjson
import structlog
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from keys import (
    BrokerKeyring,
    KeyNotHeld,
    OpenedPackage,
    PackageError,
    PrivateKey,
    UnknownSigningKey,
    open_package,
)

from ._consumer import (
    DELIVERIES,
    TRANSIENT_NATS,
    Backoff,
    cancel_and_wait,
    check_cancelled,
    delivery_consumer,
    durable_pull,
    keep_in_progress,
)
from ._errors import BridgeError

__all__ = ["DiskReplayGuard", "ReceiveStats", "Receiver", "atomic_write"]

log = structlog.get_logger()

HOLD_DELAY = 30.0
"""Seconds before a held package (see above) is delivered again."""
PUSH_RETRY = 30.0
"""Seconds before a package whose push failed is delivered (and pushed) again."""
PUSH_KEEPALIVE = 15.0
"""Seconds between in-progress notices while a package is pushed (the ack wait is 60 s)."""
SID_RE = re.compile(r"^[0-9a-f]{32}\Z")
"""A submission id, as the broker writes it into subjects and claims (and file names here)."""


def atomic_write(path: Path, data: bytes, *, mode: int = 0o640) -> None:
    """Write ``data`` so that ``path`` holds either the old or the whole new content.

    The temporary file gets an unguessable name and is created exclusively, never through
    a link: someone else able to write to the folder cannot aim the write elsewhere.
    """
    tmp = path.with_name(f".{path.name}.tmp-{secrets.token_hex(8)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


class DiskReplayGuard:
    """Package ids already opened, kept on disk until their ``exp`` has passed.

    Kept ``leeway`` seconds longer: ``open_package`` accepts a package until ``exp`` plus
    that clock-skew leeway, so an id forgotten at ``exp`` could be replayed in between.
    """

    def __init__(
        self, path: Path, *, now: Callable[[], float] = time.time, leeway: int = 60
    ) -> None:
        self._path = path
        self._now = now
        self._leeway = leeway
        self._seen: dict[str, int] = {}
        if path.exists():
            for line in path.read_bytes().splitlines():
                with contextlib.suppress(orjson.JSONDecodeError, KeyError, TypeError):
                    item = orjson.loads(line)
                    self._seen[str(item["jti"])] = int(item["exp"])
        self._compact()

    def _compact(self) -> None:
        cutoff = int(self._now()) - self._leeway
        live = {jti: exp for jti, exp in self._seen.items() if exp > cutoff}
        if len(live) != len(self._seen) or not self._path.exists():
            self._seen = live
            self._path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(
                self._path,
                b"".join(orjson.dumps({"jti": j, "exp": e}) + b"\n" for j, e in live.items()),
                mode=0o600,
            )

    def seen(self, jti: str, exp: int) -> bool:
        return jti in self._seen

    def add(self, jti: str, exp: int) -> None:
        self._seen[jti] = exp
        # Never through a link planted in its place (it would append to whatever it names).
        fd = os.open(self._path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "ab") as fh:
            fh.write(orjson.dumps({"jti": jti, "exp": exp}) + b"\n")
            fh.flush()
            os.fsync(fh.fileno())


@dataclass
class ReceiveStats:
    received: int = 0
    duplicates: int = 0
    quarantined: int = 0
    held: int = 0
    """Packages left in the stream: this receiver's keys cannot open them (see the log)."""
    push_failed: int = 0
    """Packages stored but left in the stream: the push to the partner's server failed."""
    write_failed: int = 0
    """Packages left in the stream: they could not be written to the output folder."""
    objects: int = 0
    receipts: int = 0
    by_tlp: dict[str, int] = field(default_factory=dict)
    files: list[Path] = field(default_factory=list)


class Receiver:
    """Consumes one organisation's deliveries into ``out_dir``."""

    def __init__(
        self,
        js: JetStreamContext,
        *,
        org: str,
        decryption_keys: Mapping[str, PrivateKey],
        broker_keys: Callable[[], BrokerKeyring],
        out_dir: Path,
        clock: Callable[[], float] = time.time,
        batch: int = 16,
        push: Callable[[dict[str, Any]], Awaitable[None]] | None = None,
    ) -> None:
        self._js = js
        self._org = org
        self._keys = decryption_keys
        self._broker_keys = broker_keys
        self._out = out_dir
        self._clock = clock
        self._batch = batch
        self._push = push
        """After a bundle is stored, hand it on (``--push``); the ack waits for it."""
        self._state = out_dir / ".atlas"
        try:
            self._folders()
        except OSError as exc:
            raise BridgeError(f"cannot write to the output folder {out_dir}: {exc}") from exc
        self._replay = DiskReplayGuard(self._state / "replay.jsonl", now=clock)
        self.stats = ReceiveStats()
        self._held: set[int] = set()

    @property
    def consumer(self) -> str:
        return delivery_consumer(self._org).name

    async def _subscription(self) -> JetStreamContext.PullSubscription:
        mine = delivery_consumer(self._org)
        return await durable_pull(self._js, mine.stream, mine.name, mine.filter_subject)

    async def pending(self) -> int:
        info = await self._js.consumer_info(DELIVERIES, self.consumer)
        return int(info.num_pending or 0) + int(info.num_ack_pending or 0)

    async def run(self, *, once: bool = False, idle_timeout: float = 2.0) -> ReceiveStats:
        """Receive until cancelled, or with ``once`` until nothing is pending."""
        sub = await self._subscription()
        backoff = Backoff()
        try:
            while True:
                check_cancelled()
                try:
                    try:
                        msgs = await sub.fetch(self._batch, timeout=1.0)
                    except TimeoutError:  # nats-py raises the builtin one too (batched fetch)
                        # Once: done when all that is left is what this receiver holds.
                        if once and await self.pending() <= len(self._held):
                            return self.stats
                        continue
                    for msg in msgs:
                        await self.handle(msg)
                except TRANSIENT_NATS as exc:
                    # NATS unreachable or a stream leader moving: whatever was not acked
                    # comes again, so wait and go on rather than exit.
                    await backoff.wait("receive.nats_unavailable", exc)
                    continue
                backoff.reset()
        finally:
            with contextlib.suppress(nats.errors.Error, OSError):
                await sub.unsubscribe()

    async def handle(self, msg: Msg) -> None:
        subject_sid = msg.subject.rsplit(".", 1)[-1]
        token = msg.data
        try:
            opened = open_package(
                token,
                recipient=self._org,
                decryption_keys=self._keys,
                broker_keys=self._broker_keys(),
                now=int(self._clock()),
                replay=None,  # checked below, and recorded only once the bundle is stored
            )
        except (UnknownSigningKey, KeyNotHeld) as exc:
            await self._hold(msg, exc)
            return
        except PackageError as exc:
            self._quarantine(msg, exc)
            await msg.ack_sync()
            return
        self._held.discard(msg.metadata.sequence.stream)
        src = opened.claims.get("src")
        signed_sid = src.get("submission") if isinstance(src, dict) else None
        if not (isinstance(signed_sid, str) and SID_RE.match(signed_sid)) or (
            signed_sid != subject_sid
        ):
            # The subject is not signed, the claims are: a package republished under another
            # subject is refused here, and the subject never names a file.
            self._quarantine(
                msg,
                BridgeError(
                    f"package for submission {str(signed_sid)[:40]!r} arrived on subject "
                    f"{msg.subject[:120]!r}"
                ),
            )
            await msg.ack_sync()
            return
        if self._replay.seen(opened.jti, int(opened.claims["exp"])):
            self.stats.duplicates += 1
            log.info("package.duplicate", sub=subject_sid, jti=opened.jti)
            await msg.ack_sync()
            return
        try:
            self._store(subject_sid, token, opened)
        except OSError as exc:
            await self._write_failed(msg, subject_sid, exc)
            return
        if self._push is not None:
            # A partner's server may take minutes (requests time out per read, and the
            # status is polled): keep the package ours meanwhile.
            keepalive = asyncio.create_task(keep_in_progress(msg, PUSH_KEEPALIVE))
            try:
                await self._push(opened.stix)
            except BridgeError as exc:
                # Not acked: the package comes again (stored again, the same bytes) and is
                # pushed again, while the packages behind it go on.
                seq = msg.metadata.sequence.stream
                if seq not in self._held:
                    self._held.add(seq)
                    self.stats.push_failed += 1
                log.error("receive.push_failed", sub=subject_sid, error=str(exc))
                await msg.nak(delay=PUSH_RETRY)
                return
            finally:
                await cancel_and_wait(keepalive)
        try:
            self._replay.add(opened.jti, int(opened.claims["exp"]))
        except OSError as exc:
            await self._write_failed(msg, subject_sid, exc)
            return
        await msg.ack_sync()

    async def _write_failed(self, msg: Msg, sid: str, exc: OSError) -> None:
        """The output folder, not NATS, failed: the package is left in the stream (it comes
        again) and the error said as it is. Waited out as a NATS outage, it kept
        ``--once`` running for ever under a warning about NATS."""
        seq = msg.metadata.sequence.stream
        if seq not in self._held:
            self._held.add(seq)
            self.stats.write_failed += 1
        log.error("receive.write_failed", sub=sid, out=str(self._out), error=str(exc))
        with contextlib.suppress(nats.errors.Error):
            await msg.nak(delay=PUSH_RETRY)

    def _folders(self) -> None:
        """The output folder and the receiver's state in it (made again if removed)."""
        # Made for the owner and its group, as the bundles in it (0640): the file names are
        # submission ids, not for every local user to list.
        self._out.mkdir(parents=True, exist_ok=True, mode=0o750)
        self._state.mkdir(exist_ok=True, mode=0o700)
        state = os.lstat(self._state)
        if stat.S_ISLNK(state.st_mode) or state.st_uid != os.getuid():
            # Packages, receipts and the replay cache would be kept wherever it leads.
            raise BridgeError(
                f"{self._state} is a link or not this user's folder: the receiver keeps its "
                "state (packages, replay cache) only in a folder of its own; remove it"
            )
        if stat.S_IMODE(state.st_mode) & 0o077:
            log.warning("receive.state_mode_fixed", path=str(self._state))
            os.chmod(self._state, 0o700)
        (self._state / "packages").mkdir(exist_ok=True)
        (self._state / "quarantine").mkdir(exist_ok=True)

    def _store(self, sid: str, token: bytes, opened: OpenedPackage) -> None:
        self._folders()  # the folder may have been removed while receiving
        src = opened.claims.get("src", {})
        bundle_path = self._out / f"{sid}.json"
        atomic_write(bundle_path, orjson.dumps(opened.stix, option=orjson.OPT_INDENT_2))
        meta: dict[str, Any] = {
            "jti": opened.jti,
            "iss": opened.claims.get("iss"),
            "aud": opened.claims.get("aud"),
            "iat": opened.claims.get("iat"),
            "exp": opened.claims.get("exp"),
            "src": src,
            "tlp": opened.claims.get("tlp"),
            "jwe_sha256": hashlib.sha256(token).hexdigest(),
            "rcpt_kid": opened.claims.get("rcpt_kid"),
        }
        atomic_write(self._state / "packages" / f"{sid}.json", orjson.dumps(meta), mode=0o600)
        atomic_write(self._state / "packages" / f"{sid}.jwe", token, mode=0o600)
        objects = opened.stix.get("objects", [])
        self.stats.received += 1
        self.stats.objects += len(objects)
        self.stats.files.append(bundle_path)
        tlp = str(opened.claims.get("tlp"))
        self.stats.by_tlp[tlp] = self.stats.by_tlp.get(tlp, 0) + 1
        log.info("package.stored", sub=sid, objects=len(objects), tlp=tlp)

    async def _hold(self, msg: Msg, exc: PackageError) -> None:
        seq = msg.metadata.sequence.stream
        if seq not in self._held:
            self._held.add(seq)
            self.stats.held += 1
            fix = (
                "the broker key set (--broker-jwks, or the directory) lacks the broker key "
                "that signed it"
                if isinstance(exc, UnknownSigningKey)
                else "it is sealed to an encryption key not given with --key (after a "
                "rotation, give the old key too until its packages are read)"
            )
            log.error("package.held", seq=seq, error=type(exc).__name__, detail=str(exc), fix=fix)
        await msg.nak(delay=HOLD_DELAY)

    def _quarantine(self, msg: Msg, exc: PackageError | BridgeError) -> None:
        self._folders()
        seq = msg.metadata.sequence.stream
        qdir = self._state / "quarantine"
        atomic_write(qdir / f"{seq}.jwe", msg.data, mode=0o600)
        atomic_write(
            qdir / f"{seq}.reason.json",
            orjson.dumps({"subject": msg.subject, "error": type(exc).__name__, "detail": str(exc)}),
            mode=0o600,
        )
        sid = msg.subject.rsplit(".", 1)[-1]
        if SID_RE.match(sid):
            # Tells the receipt keeper not to wait for this package any longer.
            atomic_write(self._state / "packages" / f"{sid}.quarantined", str(seq).encode())
        self.stats.quarantined += 1
        log.error("package.rejected", seq=seq, error=type(exc).__name__, detail=str(exc))
