"""An append-only index of the objects of one reader's views, in the order they were added.

Entries are keyed by a position that only grows (``stream sequence << 20 | index in the
message``), so paging is a bisection whatever the size of the collection, and a ``next``
token (a position) stays meaningful after a restart and on another server instance.
A ``(id, version)`` pair that arrives again in a later view is kept once, first copy wins.
"""

from __future__ import annotations

import bisect
import functools
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NamedTuple

import orjson

__all__ = [
    "Entry",
    "ObjectIndex",
    "Page",
    "Query",
    "format_ts",
    "parse_ts",
    "version_key",
    "version_of",
    "versions_of",
]

POS_SHIFT = 20
"""Objects per message are bounded (limits.max_objects) well below 2**20."""


_CANONICAL = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})T([0-9]{2}):([0-9]{2}):([0-9]{2})(?:\.([0-9]{1,19}))?Z"
)


def format_ts(moment: datetime) -> str:
    """TAXII timestamp, always with microseconds: fixed width, so strings sort as times."""
    m = moment.astimezone(UTC)
    return (
        f"{m.year:04d}-{m.month:02d}-{m.day:02d}T"
        f"{m.hour:02d}:{m.minute:02d}:{m.second:02d}.{m.microsecond:06d}Z"
    )


@functools.lru_cache(maxsize=8192)
def parse_ts(text: str) -> str:
    """Normalise an RFC 3339 UTC timestamp to ``format_ts``; ``ValueError`` if it is not one.

    RFC 3339's own shape only (two-digit fields, four-digit year, ``Z``; ``t`` and ``z`` may
    be lower case): ``2024-1-1T0:0:0Z`` is refused rather than guessed at."""
    if not text or len(text) > 40:
        raise ValueError(f"{text[:40]!r} is not an RFC 3339 UTC timestamp (…Z)")
    fast = _CANONICAL.fullmatch(text.upper())
    if fast is None:
        raise ValueError(f"{text!r} is not an RFC 3339 UTC timestamp (YYYY-MM-DDTHH:MM:SS[.f]Z)")
    year, month, day, hour, minute, second, frac = fast.groups()
    try:
        datetime(int(year), int(month), int(day), int(hour), int(minute), int(second))
    except ValueError:
        raise ValueError(f"{text!r} is not an RFC 3339 UTC timestamp") from None
    micro = (frac or "")[:6].ljust(6, "0")
    return f"{year}-{month}-{day}T{hour}:{minute}:{second}.{micro}Z"


@functools.lru_cache(maxsize=8192)
def version_key(text: str) -> str:
    """An object version as compared: ``parse_ts``, keeping the digits past the microsecond
    when there are any (``…00.0000001Z``), else exactly ``parse_ts``.

    STIX timestamps may be finer than microseconds, and versions that differ only there
    are different versions: the router delivers both. Cut to microseconds, the second
    was merged into the first, left out of ``/versions/``, and a request for it answered
    with the other's content. Order keys with ``_order``, not as strings."""
    dot = text.find(".")
    if dot < 0:
        return parse_ts(text)
    fraction = text[dot + 1 : -1]
    if not (fraction.isascii() and fraction.isdigit()):
        raise ValueError(f"{text[:40]!r} is not an RFC 3339 UTC timestamp (…Z)")
    # As many digits as the object has (the router takes any number): parse_ts checks the
    # rest, given the first six.
    stamp = parse_ts(f"{text[: dot + 1]}{fraction[:6]}{text[-1]}")
    extra = fraction[6:].rstrip("0")
    return f"{stamp[:-1]}{extra}Z" if extra else stamp


def _order(key: str) -> str:
    """A version key without its ``Z``: then a shorter fraction sorts before a longer one
    it starts, as ``.000000`` before ``.0000001`` (``Z`` sorts after every digit)."""
    return key[:-1]


class Entry(NamedTuple):
    """One stored object version. A tuple of atoms: cheap to build, and the garbage
    collector stops tracking it, which matters for collections of 100,000s of objects."""

    pos: int
    added: str
    id: str
    type: str
    version: str
    """As compared (``version_key``)."""
    spec_version: str
    raw: bytes
    written: str
    """The version as the object writes it: what answers show."""


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


def versions_of(obj: Mapping[str, Any], added: str) -> tuple[str, str]:
    """An object's version as compared (``version_key``) and as written in the object.

    TAXII versions are ``modified`` (else ``created``, else the date added). Versions are
    compared as instants, so ``…00.000Z`` and ``…00Z`` are one version, but answered as the
    object writes them: a client comparing them with the object's own ``modified`` finds
    the same string."""
    for key in ("modified", "created"):
        value = obj.get(key)
        if isinstance(value, str):
            try:
                return version_key(value), value
            except ValueError:
                continue
    return added, added


def version_of(obj: Mapping[str, Any], added: str) -> str:
    """An object's version as the object writes it (see ``versions_of``)."""
    return versions_of(obj, added)[1]


_new_entry = tuple.__new__


class ObjectIndex:
    def __init__(self) -> None:
        self._entries: list[Entry] = []
        self._pos: list[int] = []
        self._added: list[str] = []
        self._by_id: dict[str, int] = {}
        """The first entry of each id; ``_later`` holds the others, for ids with several."""
        self._later: dict[str, list[int]] = {}
        self._seen: set[str] = set()
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
        base = seq << POS_SHIFT
        entries, seen, by_id = self._entries, self._seen, self._by_id
        latest, first = self._latest, self._first
        add_entry, add_pos, add_added = entries.append, self._pos.append, self._added.append
        for n, obj in enumerate(objects):
            if not isinstance(obj, dict):
                continue
            object_id = obj.get("id")
            if not isinstance(object_id, str):
                continue
            version, written = versions_of(obj, stamp)
            key = f"{object_id}\0{version}"  # a str: not tracked by the garbage collector
            if key in seen:
                continue
            seen.add(key)
            pos = base | n
            i = len(entries)
            # Built as the tuple it is: Entry(...) goes through a Python-level __new__.
            add_entry(
                _new_entry(
                    Entry,
                    (
                        pos,
                        stamp,
                        object_id,
                        str(obj.get("type", "")),
                        version,
                        str(obj.get("spec_version", "2.0")),
                        orjson.dumps(obj),
                        written,
                    ),
                )
            )
            add_pos(pos)
            add_added(stamp)
            if object_id not in by_id:
                by_id[object_id] = i  # an int, not a list per id: nothing for the GC to scan
                latest[object_id] = first[object_id] = i
            else:
                self._later.setdefault(object_id, []).append(i)
                if _order(entries[latest[object_id]].version) < _order(version):
                    latest[object_id] = i
                if _order(entries[first[object_id]].version) > _order(version):
                    first[object_id] = i
            new += 1
        return new

    def has(self, object_id: str) -> bool:
        return object_id in self._by_id

    def _positions(self, object_id: str) -> list[int]:
        first = self._by_id.get(object_id)
        if first is None:
            return []
        return [first, *self._later.get(object_id, ())]

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
        found = sorted(i for one in ids for i in self._positions(one) if i >= start)
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
