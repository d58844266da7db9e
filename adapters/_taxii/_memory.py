"""An in-memory ``TaxiiBackend``: for unit tests, the OpenAPI fuzzing and the benchmarks.

No policy runs here: a POST is accepted at once and its objects are added to the views of
every configured reader, so the HTTP layer can be exercised without NATS.
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from .._stix import InvalidBundle, check_bundle
from ._index import ObjectIndex, format_ts, version_of
from ._port import CollectionInfo, StatusRecord, SubmitRefused, collections_for

__all__ = ["MemoryBackend"]


class MemoryBackend:
    def __init__(
        self,
        *,
        members: Mapping[str, Sequence[str]],
        readers: Sequence[str] = (),
        community: str = "test",
        max_content_length: int = 1024 * 1024,
        max_objects: int = 10_000,
    ) -> None:
        self.max_content_length = max_content_length
        self._members = {org: tuple(groups) for org, groups in members.items()}
        self._readers = tuple(readers)
        self._community = community
        self._max_objects = max_objects
        self._indexes = {reader: ObjectIndex() for reader in readers}
        self._statuses: dict[str, StatusRecord] = {}
        self._seq = 0
        self.submitted: list[tuple[str, tuple[str, ...], list[dict[str, Any]]]] = []

    async def collections(self, org: str) -> Sequence[CollectionInfo]:
        return collections_for(
            self._community,
            member=org in self._members,
            groups=self._members.get(org, ()),
            reader=org if org in self._readers else None,
        )

    def add_view(
        self, reader: str, objects: list[dict[str, Any]], when: datetime | None = None
    ) -> None:
        self._seq += 1
        self._indexes[reader].add_message(self._seq, when or datetime.now(UTC), objects)

    async def submit(self, org: str, objects: list[Any], audience: tuple[str, ...]) -> StatusRecord:
        bundle = {"type": "bundle", "id": f"bundle--{uuid.uuid4()}", "objects": objects}
        try:
            check_bundle(bundle, source="envelope", max_objects=self._max_objects)
        except InvalidBundle as exc:
            raise SubmitRefused("invalid", str(exc)) from exc
        now = datetime.now(UTC)
        stamp = format_ts(now)
        record = StatusRecord(
            id=str(uuid.UUID(secrets.token_hex(16))),
            org=org,
            request_timestamp=stamp,
            objects=[(o["id"], version_of(o, stamp)) for o in objects],
            outcome="accepted",
        )
        self._statuses[record.id] = record
        self.submitted.append((org, audience, objects))
        for reader in self._readers:
            self.add_view(reader, objects, now)
        return record

    async def status(self, org: str, status_id: str) -> StatusRecord | None:
        record = self._statuses.get(status_id)
        return record if record is not None and record.org == org else None

    async def index(self, reader: str) -> ObjectIndex:
        return self._indexes[reader]
