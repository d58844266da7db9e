"""The receive bridge's side of receipts: verify, keep, acknowledge.

For each receipt on ``atlas.receipt.<org>.*`` the keeper checks it against the package the
bridge opened for that submission (``jti``, ``aud``, ``jwe_sha256`` and the inclusion proof
up to a checkpoint signed by the broker's log key — the check itself is handed in by the
broker, so adapters stay free of it), stores it as ``.atlas/receipts/<submission>.json``
beside the bundle, and, with a signing key, sends back a signed acknowledgement on
``atlas.ack.<org>`` that the broker writes to the log. A receipt for a package not yet
stored waits (nak with delay); one that does not verify is quarantined, never kept.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nats.errors
import nats.js.errors
import orjson
import structlog
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from keys import PrivateKey, jws_sign

from ._bridge import SID_RE, atomic_write
from ._consumer import (
    RECEIPTS,
    TRANSIENT_NATS,
    Backoff,
    check_cancelled,
    durable_pull,
    receipt_consumer,
)
from ._errors import BridgeError

__all__ = ["ReceiptKeeper", "ReceiptStats"]

log = structlog.get_logger()

ACK_TYP = "atlas-ack+jws"
Checker = Callable[[bytes, str, str, str], dict[str, Any]]
"""(receipt bytes, jti, aud, jwe_sha256) -> the logged entry; raises BridgeError."""


@dataclass
class ReceiptStats:
    kept: int = 0
    acknowledged: int = 0
    rejected: int = 0
    waiting: int = 0


class ReceiptKeeper:
    def __init__(
        self,
        js: JetStreamContext,
        *,
        org: str,
        out_dir: Path,
        check: Checker,
        signing_key: PrivateKey | None = None,
    ) -> None:
        self._js = js
        self._org = org
        self._state = out_dir / ".atlas"
        self._check = check
        self._key = signing_key
        (self._state / "receipts").mkdir(parents=True, exist_ok=True)
        (self._state / "quarantine").mkdir(parents=True, exist_ok=True)
        self.stats = ReceiptStats()

    @property
    def consumer(self) -> str:
        return receipt_consumer(self._org).name

    async def _subscription(self) -> JetStreamContext.PullSubscription:
        mine = receipt_consumer(self._org)
        return await durable_pull(self._js, mine.stream, mine.name, mine.filter_subject)

    async def drain(self) -> ReceiptStats:
        """Handle every receipt that is there now (``receive --once``).

        A fetch that times out is not taken as "nothing left" (a loaded server can answer
        late): it stops only once the consumer has nothing pending. Receipts put back to
        wait for their package (nak with delay) are not waited for.
        """
        sub = await self._subscription()
        backoff = Backoff()
        try:
            while True:
                check_cancelled()
                try:
                    try:
                        msgs = await sub.fetch(16, timeout=0.5)
                    except TimeoutError:  # nats-py raises the builtin one too (batched fetch)
                        info = await self._js.consumer_info(RECEIPTS, self.consumer)
                        if not info.num_pending:
                            return self.stats
                        continue
                    for msg in msgs:
                        await self.handle(msg)
                except TRANSIENT_NATS as exc:
                    await backoff.wait("receipts.nats_unavailable", exc)
                    continue
                backoff.reset()
        finally:
            with contextlib.suppress(nats.errors.Error, OSError):
                await sub.unsubscribe()

    async def run(self) -> None:
        backoff = Backoff()
        while True:
            check_cancelled()
            try:
                await self.drain()
            except TRANSIENT_NATS as exc:  # binding the consumer failed: NATS unreachable
                await backoff.wait("receipts.nats_unavailable", exc)
                continue
            backoff.reset()

    async def handle(self, msg: Msg) -> None:
        # The subject names the package (``atlas.receipt.<org>.<package id>``): an id only
        # its recipient knows, so nobody else can ask the stream about that subject. The
        # submission is read from the receipt's entry, and checked below against the
        # package stored under it: an entry naming another submission does not match.
        pkg = msg.subject.rsplit(".", 1)[-1]
        sid = _submission_of(msg.data)
        if not PKG_RE.match(pkg) or sid is None:
            # Never a file name: neither is signed, and either could hold "/" or "..".
            await self._reject(msg, "no-sid", "not a receipt of a package and submission")
            return
        meta_path = self._state / "packages" / f"{sid}.json"
        if not meta_path.exists():
            if meta_path.with_suffix(".quarantined").exists():
                await self._reject(msg, sid, "its package was quarantined: nothing to prove")
                return
            self.stats.waiting += 1
            await msg.nak(delay=5)  # the package itself has not been stored yet
            return
        try:
            meta = orjson.loads(meta_path.read_bytes())
            package = (meta["jti"], meta["aud"], meta["jwe_sha256"])
        except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
            await self._reject(msg, sid, f"the stored package record {meta_path} is damaged: {exc}")
            return
        if package[0] != pkg:
            await self._reject(msg, sid, "the receipt's subject names another package")
            return
        try:
            entry = self._check(msg.data, *package)
        except BridgeError as exc:
            await self._reject(msg, sid, str(exc), error=type(exc).__name__)
            return
        atomic_write(self._state / "receipts" / f"{sid}.json", msg.data, mode=0o600)
        self.stats.kept += 1
        if self._key is not None:
            receipt = orjson.loads(msg.data)
            ack = {
                "v": 1,
                "pkg": entry["pkg"],
                "index": receipt["index"],
                "size": _size_of(receipt["checkpoint"]),
                "jwe_sha256": meta["jwe_sha256"],
            }
            token = jws_sign(orjson.dumps(ack), self._key, {"typ": ACK_TYP, "org": self._org})
            await self._js.publish(f"atlas.ack.{self._org}", token.encode())
            self.stats.acknowledged += 1
        log.info("receipt.kept", sub=sid, index=entry.get("pkg"))
        await msg.ack_sync()

    async def _reject(
        self, msg: Msg, name: str, detail: str, *, error: str = "BridgeError"
    ) -> None:
        """Quarantine a receipt that will never be kept, and ack it so it does not block."""
        self.stats.rejected += 1
        # One file per message: a later rejection for the same submission keeps the first.
        seq = msg.metadata.sequence.stream
        atomic_write(
            self._state / "quarantine" / f"receipt-{name}-{seq}.json",
            orjson.dumps({"subject": msg.subject[:200], "error": error, "detail": detail}),
        )
        log.error("receipt.rejected", sub=name, error=error, detail=detail)
        await msg.ack_sync()


PKG_RE = re.compile(r"^[A-Za-z0-9_-]{16,64}\Z")
"""A package id (``jti``): base64url, never a path."""


def _submission_of(data: bytes) -> str | None:
    """The submission id in a receipt's entry, if it has one of the right form."""
    try:
        entry = orjson.loads(orjson.loads(data)["entry"])
        sid = entry["src"]["submission"]
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return None
    return sid if isinstance(sid, str) and SID_RE.match(sid) else None


def _size_of(checkpoint: str) -> int:
    """The tree size line of a checkpoint note (its second line)."""
    lines = checkpoint.split("\n")
    return int(lines[1]) if len(lines) > 1 and lines[1].isascii() and lines[1].isdigit() else 0
