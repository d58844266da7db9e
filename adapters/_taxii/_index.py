"""An append-only index of the objects of one reader's views, in the order they were added.

Entries are keyed by a position that only grows (``stream sequence << 20 | index in the
message``), so paging is a bisection whatever the size of the collection, and a ``next``
token (a position) stays meaningful after a restart and on another server instance.
A ``(id, version)`` pair that arrives again in a later view is kept once, first copy wins.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

__all__ = ["Entry", "ObjectIndex", "Page", "Query", "format_ts", "parse_ts", "version_of"]

POS_SHIFT = 20
"""Objects per message are bounded (limits.max_objects) well below 2**20."""


def format_ts(moment: datetime) -> str:
    """TAXII timestamp, always with microseconds: fixed width, so strings sort as times."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_ts(text: str) -> str:
    """Normalise an RFC 3339 timestamp to ``format_ts``; ``ValueError`` if it is not one."""
    if not text or len(text) > 40 or not text.endswith(("Z", "z")):
        raise ValueError(f"{text!r} is not an RFC 3339 UTC timestamp (…Z)")
    core = text[:-1]
    if "." in core:
        head, _, frac = core.partition(".")
        if not frac.isdigit() or len(frac) > 9:
            raise ValueError(f"{text!r}: bad fraction of a second")
        core = f"{head}.{frac[:6].ljust(6, '0')}"
    else:
        core = f"{core}.000000"
    try:
        moment = datetime.strptime(core, "%Y-%m-%dT%H:%M:%S.%f").replace(tzinfo=UTC)
    except ValueError:
        raise ValueError(f"{text!r} is not an RFC 3339 UTC timestamp") from None
    return format_ts(moment)


@dataclass(frozen=True, slots=True)
class Entry:
    pos: int
    added: str
    id: str
    type: str
    version: str
    spec_version: str
    raw: bytes


@dataclass(frozen=True, slots=True)
class Query:
    """Parsed filters of a GET; ``versions`` holds ``last``/``first``/``all``/timestamps."""

    limit: int
    added_after: str | None = None
    after_pos: int | None = None
    ids: frozenset[str] | None = None
    types: frozenset[str] | None = None
    versions: frozenset[str] = frozenset({"last"})
    spec_versions: frozenset[str] | None = None


@dataclass(frozen=True, slots=True)
class Page:
    entries: Sequence[Entry]
    more: bool

    @property
    def last_pos(self) -> int:
        return self.entries[-1].pos


def version_of(obj: Mapping[str, Any], added: str) -> str:
    for key in ("modified", "created"):
        value = obj.get(key)
        if isinstance(value, str):
            try:
                return parse_ts(value)
            except ValueError:
                continue
    return added


class ObjectIndex:
    def __init__(self) -> None:
        self._entries: list[Entry] = []
        self._pos: list[int] = []
        self._added: list[str] = []
        self._by_id: dict[str, list[int]] = {}
        self._seen: set[tuple[str, str]] = set()
        self._latest: dict[str, int] = {}
        self._first: dict[str, int] = {}
        self.last_seq = 0

    def __len__(self) -> int:
        return len(self._entries)

    def add_message(self, seq: int, added: datetime, objects: Iterable[Any]) -> int:
        """Index the objects of one stored message; returns how many were new."""
        if seq <= self.last_seq:
            return 0
        self.last_seq = seq
        stamp = format_ts(added)
        if self._added and stamp < self._added[-1]:
            stamp = self._added[-1]  # keep date_added monotonic in stream order
        new = 0
        for n, obj in enumerate(objects):
            if not isinstance(obj, dict) or not isinstance(obj.get("id"), str):
                continue
            version = version_of(obj, stamp)
            key = (obj["id"], version)
            if key in self._seen:
                continue
            self._seen.add(key)
            entry = Entry(
                pos=(seq << POS_SHIFT) | n,
                added=stamp,
                id=obj["id"],
                type=str(obj.get("type", "")),
                version=version,
                spec_version=str(obj.get("spec_version", "2.0")),
                raw=orjson.dumps(obj),
            )
            i = len(self._entries)
            self._entries.append(entry)
            self._pos.append(entry.pos)
            self._added.append(stamp)
            self._by_id.setdefault(entry.id, []).append(i)
            latest = self._latest.get(entry.id)
            if latest is None or self._entries[latest].version < version:
                self._latest[entry.id] = i
            first = self._first.get(entry.id)
            if first is None or self._entries[first].version > version:
                self._first[entry.id] = i
            new += 1
        return new

    def has(self, object_id: str) -> bool:
        return object_id in self._by_id

    def _candidates(self, query: Query, object_id: str | None) -> Iterator[int]:
        start = 0
        if query.after_pos is not None:
            start = bisect.bisect_right(self._pos, query.after_pos)
        if query.added_after is not None:
            start = max(start, bisect.bisect_right(self._added, query.added_after))
        ids = {object_id} if object_id is not None else query.ids
        if ids is None:
            yield from range(start, len(self._entries))
            return
        found = sorted(i for one in ids for i in self._by_id.get(one, ()) if i >= start)
        yield from found

    def _keeps(self, i: int, entry: Entry, query: Query, object_id: str | None) -> bool:
        if object_id is None and query.types is not None and entry.type not in query.types:
            return False
        if query.spec_versions is not None and entry.spec_version not in query.spec_versions:
            return False
        versions = query.versions
        if "all" in versions or entry.version in versions:
            return True
        if "last" in versions and self._latest.get(entry.id) == i:
            return True
        return "first" in versions and self._first.get(entry.id) == i

    def page(self, query: Query, object_id: str | None = None) -> Page:
        """At most ``query.limit`` matching entries in date-added order, and whether more match."""
        out: list[Entry] = []
        for i in self._candidates(query, object_id):
            entry = self._entries[i]
            if not self._keeps(i, entry, query, object_id):
                continue
            if len(out) == query.limit:
                return Page(out, more=True)
            out.append(entry)
        return Page(out, more=False)
