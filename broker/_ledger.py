"""What the router must remember about objects across submissions (the object ledger).

Per object id (keyed digest, never the raw id: SCO ids reveal their values) one record in
the ``atlas_objects`` bucket::

    {"v": {"<modified>": "<sha256 of canonical content>"}, "r": {"<recipient>": "<tlp>"},
     "o": "<owner>"}

- ``v`` lets the router refuse a later submission that reuses an id and ``modified`` with
  different content (STIX forbids changing an object without a new version);
- ``r`` records who received a version of the object and at which TLP level, so that a
  revocation reaches those who received an earlier version;
- ``o`` is the object's owner: the member that authored it (its identity, or named by
  created_by_ref), else the organisation that registered its first version, or ``*`` for a
  third party's object. Only the owner adds versions (supersede, revoke); ``*`` takes
  versions that still name a third party. Others may relay a registered version, unchanged.
  Records written before owners were kept have none; the next version sets it.

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

from policy import Tlp

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
    written: dict[str, tuple[ObjectRecord, int]] = field(default_factory=dict)
    """Per object this claim wrote: its record before, and the revision written."""


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
        submitter: str,
        *,
        authors: Mapping[str, str | None] | None = None,
        sovereign: Collection[str] = (),
        received: Mapping[str, Mapping[str, str]] | None = None,
    ) -> Claim:
        """Register this submission's versions and receivers in one write per object (none
        when nothing changes).

        A version is registered with a revision-checked write, so of two submissions racing
        with the same (id, modified) and different content exactly one wins. Who may add a
        version new to the ledger (see ``policy.authors``): for an id in ``authors`` with a
        member, that member only (others may relay what is registered); with ``None``,
        anyone; for an id not in ``authors``, the organisation that registered its first
        version; ids in ``sovereign`` (members' directory identities) their member, whoever
        registered them first. Once a record has an owner, a new version's own
        created_by_ref cannot change it (see ``_claim_one``). An id refused that way is
        listed in :attr:`Claim.foreign` and not written.

        ``received``: object id → recipient → TLP level of what this submission's packages
        carry (the router calls this after sealing, before storing the packages). When the
        claim finds conflicts or foreign ids, call :meth:`undo`: the objects it did write
        must not stay registered for a submission that is refused.
        """
        by_id: dict[str, dict[str, str]] = {}
        for (object_id, modified), digest in versions.items():
            by_id.setdefault(object_id, {})[modified] = digest
        ids = sorted(by_id)
        rules = authors or {}
        receivers = received or {}
        own = frozenset(sovereign)
        results = await asyncio.gather(
            *(
                self._claim_one(
                    i,
                    by_id[i],
                    dict(receivers.get(i, {})),
                    submitter,
                    rules.get(i, _FIRST),
                    i in own,
                )
                for i in ids
            )
        )
        claim = Claim({}, [])
        for object_id, (before, clashes, foreign, revision) in zip(ids, results, strict=True):
            claim.before[object_id] = before
            claim.conflicts.extend((object_id, modified) for modified in clashes)
            if foreign:
                claim.foreign.append(object_id)
            if revision is not None:
                claim.written[object_id] = (before, revision)
        return claim

    async def undo(self, claim: Claim) -> None:
        """Put back what ``claim`` wrote (a refused submission registers nothing).

        Revision-checked: a record another submission wrote since (merging on top of this
        claim's write) is left as it is, this claim's part in it included."""
        kv = await self._bucket()

        async def _one(object_id: str, before: ObjectRecord, revision: int) -> None:
            key = self.key_of(object_id)
            async with self._limit:
                try:
                    if not before.versions and not before.received:
                        await kv.delete(key, last=revision)
                    else:
                        await kv.update(key, _payload(before), last=revision)
                except nats.js.errors.KeyWrongLastSequenceError:
                    pass
                except nats.js.errors.BadRequestError as exc:
                    # kv.delete does not translate the wrong-last-sequence answer.
                    if exc.err_code not in _WRONG_LAST:
                        raise

        await asyncio.gather(*(_one(i, b, r) for i, (b, r) in claim.written.items()))

    async def _claim_one(
        self,
        object_id: str,
        versions: dict[str, str],
        received: dict[str, str],
        submitter: str,
        author: str | object | None,
        sovereign: bool,
    ) -> tuple[ObjectRecord, list[str], bool, int | None]:
        """(record before, clashing versions, foreign, revision written or None).

        Who may add a version: the owner the record holds decides, not what the new
        version says of itself (its created_by_ref is the submitter's to choose). A
        record owned by a member takes versions from that member only; one owned by
        nobody (a third party's object, ``NOBODY``) only versions that still name a third
        party; a record without owner (written before owners were kept) the first comer.
        ``sovereign``: the id is a member's directory identity, whose owner the directory
        decides whatever the record says.
        """
        if author is _FIRST:
            want = submitter
        elif author is None:
            want = NOBODY
        else:
            want = str(author)
        may_add = want in (submitter, NOBODY)
        if may_add:
            # Most objects are new: create the record outright, one write and no read. The
            # write expects no record at all, so an existing one makes it fail, never
            # clobbered.
            record = ObjectRecord(dict(versions), received, None, want)
            revision = await self._write(object_id, None, record)
            if revision is not None:
                return ObjectRecord({}, {}, None), [], False, revision
        for _ in range(_ATTEMPTS):
            record = await self._get(object_id)
            clashes = [m for m, d in versions.items() if record.versions.get(m, d) != d]
            if clashes:
                return record, clashes, False, None
            new = {m: d for m, d in versions.items() if m not in record.versions}
            if sovereign:
                allowed = want == submitter
                keeper: str | None = want
            else:
                allowed = may_add and record.owner in (None, want)
                keeper = record.owner or (want if new else None)
            if new and not allowed:
                return record, [], True, None
            merged_r = _merge_received(record.received, received)
            if not new and merged_r == record.received and keeper == record.owner:
                return record, [], False, None
            after = ObjectRecord({**record.versions, **new}, merged_r, None, keeper)
            revision = await self._write(object_id, record.revision, after)
            if revision is not None:
                return record, [], False, revision
        raise nats.js.errors.Error(f"object ledger: too much contention on {object_id[:12]}")

    async def _write(
        self, object_id: str, revision: int | None, record: ObjectRecord
    ) -> int | None:
        """Revision-checked write: the new revision, or None when the record's revision is
        not ``revision`` any more (another worker wrote first). ``revision`` None: the
        write expects no record for the key at all."""
        kv = await self._bucket()
        async with self._limit:
            try:
                return await kv.update(self.key_of(object_id), _payload(record), last=revision)
            except nats.js.errors.KeyWrongLastSequenceError:
                return None

    @staticmethod
    def received_before(records: Mapping[str, ObjectRecord]) -> dict[str, dict[str, str]]:
        out: dict[str, dict[str, str]] = {}
        for object_id, record in records.items():
            for recipient, level in record.received.items():
                out.setdefault(recipient, {})[object_id] = level
        return out


_WRONG_LAST = (10071, 10164)
"""JetStream's error codes for a write whose expected last sequence did not hold."""
NOBODY = "*"
"""The owner of a third party's object: no member may add a version that stops naming one."""
_FIRST = object()
"""No author named in the object: its owner is whoever registered its first version."""
_RANK = {level.value: level.rank for level in Tlp}


def _payload(record: ObjectRecord) -> bytes:
    data: dict[str, Any] = {"v": record.versions, "r": record.received}
    if record.owner is not None:
        data["o"] = record.owner
    return orjson.dumps(data)


def _merge_received(old: Mapping[str, str], new: Mapping[str, str]) -> dict[str, str]:
    """Receivers of both; for one in both, the higher TLP level (what a revocation of the
    object may be judged against must not drop because someone relayed it lower)."""
    out = dict(old)
    for recipient, level in new.items():
        if _RANK.get(level, -1) > _RANK.get(out.get(recipient, ""), -1):
            out[recipient] = level
    return out
