"""What the router must remember about objects across submissions (the object ledger).

Per object id (keyed digest, never the raw id: SCO ids reveal their values) one record in
the ``atlas_objects`` bucket::

    {"v": {"<modified>": "<sha256 of canonical content>"}, "r": {"<recipient>": "<tlp>"},
     "o": "<owner>"}

- ``v`` lets the router refuse a later submission that reuses an id and ``modified`` with
  different content (STIX forbids changing an object without a new version);
- ``r`` records who received a version of the object and at which TLP level, so that a
  revocation reaches those who received an earlier version;
- ``o`` is the organisation that registered the object's first version: only it may add
  versions later (supersede or revoke). Another organisation may relay a version that is
  already registered, unchanged, but never add one. Records written before owners were kept
  have none; the next organisation to add a version becomes the owner.

A submission writes each of its objects once, after its packages are sealed and before they
are stored: versions, owner and receivers together (a new object: one create, no read).
Records are updated with revision checks and merged on conflict, so concurrent workers
never lose each other's writes. Reads and writes of one submission run concurrently.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import nats.js.errors
import orjson
from nats.js import JetStreamContext
from nats.js.kv import KeyValue

from ._bus import OBJECTS_BUCKET

__all__ = ["OBJECTS_BUCKET", "Claim", "Ledger", "ObjectRecord"]

_CONCURRENCY = 64
_ATTEMPTS = 5


@dataclass
class ObjectRecord:
    versions: dict[str, str]
    received: dict[str, str]
    revision: int | None
    owner: str | None = None


@dataclass
class Claim:
    """What :meth:`Ledger.claim` found.

    ``before``: each object's record as it was before this submission (what earlier
    submissions left). ``conflicts``: (id, modified) registered before with other content.
    ``foreign``: ids whose new versions were not registered because the submitter may not
    add versions of them (the id belongs to another organisation, or the submitter may only
    relay it).
    """

    before: dict[str, ObjectRecord]
    conflicts: list[tuple[str, str]]
    foreign: list[str] = field(default_factory=list)


class Ledger:
    def __init__(self, js: JetStreamContext, digest_key: bytes) -> None:
        self._js = js
        self._key = digest_key
        self._kv: KeyValue | None = None
        self._limit = asyncio.Semaphore(_CONCURRENCY)

    def key_of(self, object_id: str) -> str:
        # RFC 4122: UUIDs are case-insensitive on input, so X--ABCD and x--abcd are one object.
        object_type, sep, uuid = object_id.partition("--")
        normal = f"{object_type}{sep}{uuid.lower()}"
        return hmac.new(self._key, b"obj|" + normal.encode(), hashlib.sha256).hexdigest()

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
        owner = data.get("o")
        return ObjectRecord(
            dict(data.get("v", {})),
            dict(data.get("r", {})),
            entry.revision,
            owner if isinstance(owner, str) else None,
        )

    async def load(self, object_ids: Iterable[str]) -> dict[str, ObjectRecord]:
        ids = sorted(set(object_ids))
        records = await asyncio.gather(*(self._get(i) for i in ids))
        return dict(zip(ids, records, strict=True))

    async def claim(
        self,
        versions: Mapping[tuple[str, str], str],
        owner: str,
        *,
        relay_only: Collection[str] = (),
        received: Mapping[str, Mapping[str, str]] | None = None,
    ) -> Claim:
        """Register this submission's versions and receivers, for ``owner``, in one write
        per object (none when nothing changes).

        A version is registered with a revision-checked write, so of two submissions racing
        with the same (id, modified) and different content exactly one wins. A version new
        to the ledger is registered only when ``owner`` owns the id (or it is new); ids in
        ``relay_only`` never get new versions from this submission. Either refusal lists
        the id in :attr:`Claim.foreign`; versions already registered pass unchanged. An
        object refused for any reason is not written at all, receivers included.

        ``received``: object id → recipient → TLP level of what this submission's packages
        carry (the router calls this after sealing, before storing the packages).
        """
        by_id: dict[str, dict[str, str]] = {}
        for (object_id, modified), digest in versions.items():
            by_id.setdefault(object_id, {})[modified] = digest
        ids = sorted(by_id)
        only = frozenset(relay_only)
        receivers = received or {}
        results = await asyncio.gather(
            *(
                self._claim_one(i, by_id[i], dict(receivers.get(i, {})), owner, i in only)
                for i in ids
            )
        )
        claim = Claim({}, [])
        for object_id, (before, clashes, foreign) in zip(ids, results, strict=True):
            claim.before[object_id] = before
            claim.conflicts.extend((object_id, modified) for modified in clashes)
            if foreign:
                claim.foreign.append(object_id)
        return claim

    async def _claim_one(
        self,
        object_id: str,
        versions: dict[str, str],
        received: dict[str, str],
        owner: str,
        relay_only: bool,
    ) -> tuple[ObjectRecord, list[str], bool]:
        if not relay_only:
            # Most objects are new: create the record outright, one write and no read. The
            # write expects no record at all, so an existing one makes it fail, never
            # clobbered.
            if await self._write(object_id, None, versions, received, owner) is not None:
                return ObjectRecord({}, {}, None), [], False
        for _ in range(_ATTEMPTS):
            record = await self._get(object_id)
            clashes = [m for m, d in versions.items() if record.versions.get(m, d) != d]
            if clashes:
                return record, clashes, False
            new = {m: d for m, d in versions.items() if m not in record.versions}
            if new and (relay_only or record.owner not in (None, owner)):
                return record, [], True
            merged_r = {**record.received, **received}
            if not new and merged_r == record.received:
                return record, [], False
            keeper = record.owner if record.owner is not None or not new else owner
            merged_v = {**record.versions, **new}
            written = await self._write(object_id, record.revision, merged_v, merged_r, keeper)
            if written is not None:
                return record, [], False
        raise nats.js.errors.Error(f"object ledger: too much contention on {object_id[:12]}")

    async def _write(
        self,
        object_id: str,
        revision: int | None,
        versions: dict[str, str],
        received: dict[str, str],
        owner: str | None,
    ) -> int | None:
        """Revision-checked write: the new revision, or None when the record's revision is
        not ``revision`` any more (another worker wrote first). ``revision`` None: the
        write expects no record for the key at all."""
        kv = await self._bucket()
        record: dict[str, Any] = {"v": versions, "r": received}
        if owner is not None:
            record["o"] = owner
        payload = orjson.dumps(record)
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
