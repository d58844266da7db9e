"""The port the TAXII server depends on, and the value types that cross it.

The server never imports ``broker``: the broker hands it a ``TaxiiBackend``. The in-memory
``MemoryBackend`` (unit tests, benchmarks) and the NATS-backed one in the broker implement
the same protocol and pass the same contract tests.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from .._errors import AdapterError
from ._index import ObjectIndex

__all__ = [
    "CollectionInfo",
    "StatusRecord",
    "SubmitRefused",
    "TaxiiBackend",
    "collection_id",
    "collections_for",
]

_NAMESPACE = uuid.UUID("5f0c7e8e-3a57-4c1e-9a53-2f5d6c1a7b10")


@dataclass(frozen=True, slots=True)
class CollectionInfo:
    """One collection as an organisation sees it.

    ``audience`` is what a POST is addressed to (``()`` = the community, ``("group:x",)``);
    ``reader`` is the recipient whose views a readable collection serves.
    """

    id: str
    title: str
    description: str
    can_read: bool
    can_write: bool
    audience: tuple[str, ...] = ()
    reader: str | None = None


@dataclass(frozen=True, slots=True)
class StatusRecord:
    """What became of one POST: objects as ``(id, version)``; outcome from the log."""

    id: str
    org: str
    request_timestamp: str
    objects: Sequence[tuple[str, str]]
    outcome: Literal["pending", "accepted", "refused"] = "pending"
    reason: str | None = None
    detail: dict[str, str] = field(default_factory=dict)


class SubmitRefused(AdapterError):
    """The backend cannot answer a POST with a status; ``kind`` picks the HTTP status.

    ``too-large`` (413), ``invalid`` (422): refused before storing. ``unavailable`` (503
    with ``Retry-After``): the store could not be written, nothing was accepted.
    ``uncertain`` (500, no ``Retry-After``): the submission was or may have been stored, so
    the client must not simply post again; the message says what is known. ``over-quota``
    (429 with ``Retry-After``): the organisation sent its allowance for now, nothing was
    accepted."""

    def __init__(
        self,
        kind: Literal["too-large", "invalid", "unavailable", "uncertain", "over-quota"],
        msg: str,
    ) -> None:
        super().__init__(msg)
        self.kind = kind


class TaxiiBackend(Protocol):
    """What the TAXII server needs from the broker."""

    max_content_length: int
    """Largest POST body accepted, in bytes (advertised in the API root)."""

    async def collections(self, org: str) -> Sequence[CollectionInfo]:
        """The collections ``org`` may see, readable or writable."""
        ...

    async def submit(self, org: str, objects: list[Any], audience: tuple[str, ...]) -> StatusRecord:
        """Check, sign and store a submission; return only once it is durably stored.

        ``objects``: the envelope's objects as parsed (``parse_json``: integers exact) and
        known to serialize. Raises ``SubmitRefused``.
        """
        ...

    async def status(self, org: str, status_id: str) -> StatusRecord | None:
        """The status of ``org``'s own POST, or ``None`` (unknown, or another org's)."""
        ...

    async def index(self, reader: str) -> ObjectIndex:
        """The objects of ``reader``'s views, caught up with what is stored."""
        ...


@functools.lru_cache(maxsize=4096)
def collection_id(community: str, label: str) -> str:
    """Stable across restarts and server instances: a UUIDv5 of community and audience."""
    return str(uuid.uuid5(_NAMESPACE, f"{community}/{label}"))


def collections_for(
    community: str, *, member: bool, groups: Iterable[str], reader: str | None
) -> list[CollectionInfo]:
    """A member writes to the community and to each of its groups; a reader reads its views."""
    out: list[CollectionInfo] = []
    if member:
        out.append(
            CollectionInfo(
                id=collection_id(community, "community"),
                title="community",
                description="Share with the community (TLP decides who receives each object)",
                can_read=False,
                can_write=True,
                audience=(),
            )
        )
        for group in sorted(groups):
            out.append(
                CollectionInfo(
                    id=collection_id(community, f"group:{group}"),
                    title=f"group:{group}",
                    description=f"Share with group {group} (named audience for AMBER)",
                    can_read=False,
                    can_write=True,
                    audience=(f"group:{group}",),
                )
            )
    if reader is not None:
        out.append(
            CollectionInfo(
                id=collection_id(community, f"views:{reader}"),
                title=f"views:{reader}",
                description="What the broker delivered to you, object by object as TLP allowed",
                can_read=True,
                can_write=False,
                reader=reader,
            )
        )
    return out
