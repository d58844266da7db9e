"""What the router must remember about objects across submissions (the object ledger).

Per object id (keyed digest, never the raw id: SCO ids reveal their values) one record in
the ``atlas_objects`` bucket::

    {"v": {"<modified>": "<sha256 of canonical content>"}, "r": {"<recipient>": "<tlp>"}}

- ``v`` lets the router refuse a later submission that reuses an id and ``modified`` with
  different content (STIX forbids changing an object without a new version);
- ``r`` records who received a version of the object and at which TLP level, so that a
  revocation reaches those who received an earlier version.

Records are updated with revision checks and merged on conflict, so concurrent workers
never lose each other's writes. Reads and writes of one submission run concurrently.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import nats.js.errors
import orjson
from nats.js import JetStreamContext
from nats.js.kv import KeyValue

from policy import View

from ._bus import OBJECTS_BUCKET

__all__ = ["OBJECTS_BUCKET", "Claim", "Ledger", "ObjectRecord"]

_CONCURRENCY = 64
_ATTEMPTS = 5


@dataclass
class ObjectRecord:
    versions: dict[str, str]
    received: dict[str, str]
    revision: int | None


@dataclass
class Claim:
    """What :meth:`Ledger.claim` found and wrote.

    ``before``: each object's record as it was before this submission (what earlier
    submissions left: who received which version). ``after``: as this claim left it, with
    its revision, so that :meth:`Ledger.record` can write without reading it again.
    """

    before: dict[str, ObjectRecord]
    after: dict[str, ObjectRecord]
    conflicts: list[tuple[str, str]]


class Ledger:
    def __init__(self, js: JetStreamContext, digest_key: bytes) -> None:
        self._js = js
        self._key = digest_key
        self._kv: KeyValue | None = None
        self._limit = asyncio.Semaphore(_CONCURRENCY)

    def key_of(self, object_id: str) -> str:
        return hmac.new(self._key, b"obj|" + object_id.encode(), hashlib.sha256).hexdigest()

    async def _bucket(self) -> KeyValue:
        if self._kv is None:
            self._kv = await self._js.key_value(OBJECTS_BUCKET)
        return self._kv

    async def _get(self, object_id: str) -> ObjectRecord:
        kv = await self._bucket()
        async with self._limit:
            try:
                entry = await kv.get(self.key_of(object_id))
            except nats.js.errors.KeyNotFoundError as absent:
                # A record deleted by hand (the broker never deletes) leaves a marker: the
                # next write must expect the marker's revision to start afresh after it.
                marker = absent.entry
                return ObjectRecord({}, {}, marker.revision if marker is not None else None)
        data: dict[str, Any] = orjson.loads(entry.value or b"{}")
        return ObjectRecord(dict(data.get("v", {})), dict(data.get("r", {})), entry.revision)

    async def load(self, object_ids: Iterable[str]) -> dict[str, ObjectRecord]:
        ids = sorted(set(object_ids))
        records = await asyncio.gather(*(self._get(i) for i in ids))
        return dict(zip(ids, records, strict=True))

    async def claim(self, versions: Mapping[tuple[str, str], str]) -> Claim:
        """Register this submission's versions atomically.

        A version is registered with a revision-checked write, so of two submissions racing
        with the same (id, modified) and different content exactly one wins.
        """
        by_id: dict[str, dict[str, str]] = {}
        for (object_id, modified), digest in versions.items():
            by_id.setdefault(object_id, {})[modified] = digest
        ids = sorted(by_id)
        results = await asyncio.gather(*(self._claim_one(i, by_id[i]) for i in ids))
        claim = Claim({}, {}, [])
        for object_id, (before, after, clashes) in zip(ids, results, strict=True):
            claim.before[object_id] = before
            claim.after[object_id] = after
            claim.conflicts.extend((object_id, modified) for modified in clashes)
        return claim

    async def _claim_one(
        self, object_id: str, versions: dict[str, str]
    ) -> tuple[ObjectRecord, ObjectRecord, list[str]]:
        # Most objects are new: create the record outright, one write and no read. The
        # write expects no record at all, so an existing one makes it fail, never clobbered.
        revision = await self._write(object_id, None, versions, {})
        if revision is not None:
            return ObjectRecord({}, {}, None), ObjectRecord(dict(versions), {}, revision), []
        for _ in range(_ATTEMPTS):
            record = await self._get(object_id)
            clashes = [m for m, d in versions.items() if record.versions.get(m, d) != d]
            new = {m: d for m, d in versions.items() if m not in record.versions}
            if clashes or not new:
                return record, record, clashes
            merged = {**record.versions, **new}
            revision = await self._write(object_id, record.revision, merged, record.received)
            if revision is not None:
                return record, ObjectRecord(merged, dict(record.received), revision), []
        raise nats.js.errors.Error(f"object ledger: too much contention on {object_id[:12]}")

    async def _write(
        self,
        object_id: str,
        revision: int | None,
        versions: dict[str, str],
        received: dict[str, str],
    ) -> int | None:
        """Revision-checked write: the new revision, or None when the record's revision is
        not ``revision`` any more (another worker wrote first). ``revision`` None: the
        write expects no record for the key at all."""
        kv = await self._bucket()
        payload = orjson.dumps({"v": versions, "r": received})
        async with self._limit:
            try:
                return await kv.update(self.key_of(object_id), payload, last=revision)
            except nats.js.errors.KeyWrongLastSequenceError:
                return None

    @staticmethod
    def received_before(records: Mapping[str, ObjectRecord]) -> dict[str, dict[str, str]]:
        out: dict[str, dict[str, str]] = {}
        for object_id, record in records.items():
            for recipient, level in record.received.items():
                out.setdefault(recipient, {})[object_id] = level
        return out

    async def record(
        self,
        versions: Mapping[tuple[str, str], str],
        views: Mapping[str, View],
        digest_of: Mapping[str, str],
        known: Mapping[str, ObjectRecord] | None = None,
    ) -> None:
        """Merge this submission's versions and deliveries into the records.

        ``known``: the records as the claim left them (:attr:`Claim.after`); the first write
        of each builds on it instead of reading the record again, and falls back to reading
        when another worker wrote in between.
        """
        updates: dict[str, tuple[dict[str, str], dict[str, str]]] = {}
        for (object_id, modified), digest in versions.items():
            updates.setdefault(object_id, ({}, {}))[0][modified] = digest
        for recipient, view in views.items():
            for decision in view.decisions:
                delivered_id = digest_of.get(decision.object_digest)
                if decision.action == "delivered" and delivered_id is not None:
                    level = str(decision.tlp) if decision.tlp is not None else "clear"
                    updates.setdefault(delivered_id, ({}, {}))[1][recipient] = level
        known = known or {}
        await asyncio.gather(*(self._merge(i, v, r, known.get(i)) for i, (v, r) in updates.items()))

    async def _merge(
        self,
        object_id: str,
        versions: dict[str, str],
        received: dict[str, str],
        known: ObjectRecord | None,
    ) -> None:
        for _ in range(_ATTEMPTS):
            current = known if known is not None else await self._get(object_id)
            known = None
            merged_v = {**versions, **current.versions}
            merged_r = {**current.received, **received}
            if merged_v == current.versions and merged_r == current.received:
                return
            if await self._write(object_id, current.revision, merged_v, merged_r) is not None:
                return
        raise nats.js.errors.Error(f"object ledger: too much contention on {object_id[:12]}")
