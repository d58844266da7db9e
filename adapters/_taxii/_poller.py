"""Pulling a member's TAXII 2.1 collection (taxii2-client) into the broker.

The cursor is the ``date_added`` of the last object submitted and the (id, version) pairs
already submitted at that instant, kept in a state file written atomically. Each pull asks
for what was added from that instant on (``added_after`` one microsecond before it) and
drops the pairs it already submitted there: a server that adds two objects at the same
instant one after the other, with a pull in between, has the second one pulled next time
(``added_after`` the instant itself would skip it for good). Objects are taken from the
manifest in date-added order and submitted in chunks of a fixed size (a cut within an
instant is safe: the cursor keeps what it submitted there). The signed submission is
written to the state file *before* it is published and the cursor advanced after: a restart
republishes the very same submission (the router refuses a replay of the same signed
submission), so nothing is sent twice or skipped.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import orjson
import requests
import structlog
from taxii2client.exceptions import TAXIIServiceException
from taxii2client.v21 import Collection, as_pages

from .._bridge import atomic_write
from .._errors import AdapterError
from ._index import format_ts, parse_ts, version_key, versions_of

__all__ = ["Poller", "PullError", "PullStats", "Unsignable"]

log = structlog.get_logger()


class PullError(AdapterError):
    """The member's server could not be read (unreachable, an HTTP error, no answer in time,
    or an answer that is not TAXII 2.1); the cursor is where it was."""


class Unsignable(AdapterError):
    """These objects cannot be submitted: too large together (``too_large``), or not what
    the broker takes (not valid STIX 2.1); raised by the ``sign`` callback."""

    def __init__(self, msg: str, *, too_large: bool = False) -> None:
        super().__init__(msg)
        self.too_large = too_large


@dataclass
class PullStats:
    objects: int = 0
    submissions: int = 0
    refused: int = 0
    """Objects the broker would not take (each logged ``pull.object_refused``), skipped."""


_T = TypeVar("_T")
MAX_PAGES = 10_000
"""Pages of one listing (100 entries each) a pull reads before giving up."""


def _manifest_entry(entry: object) -> bool:
    return isinstance(entry, dict) and all(
        isinstance(entry.get(k), str) for k in ("id", "date_added", "version")
    )


def _just_before(ts: str) -> str:
    """The instant one microsecond before ``ts`` (as TAXII writes it), or ``ts`` itself
    when it is not a timestamp we can read (the server then answers as it sees fit)."""
    try:
        moment = datetime.strptime(parse_ts(ts), "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
        return format_ts(moment - timedelta(microseconds=1))
    except (ValueError, OverflowError):  # year 1 at midnight has no instant before it
        return ts


def _norm(ts: str) -> str:
    try:
        return parse_ts(ts)
    except ValueError:
        return ts


def _norm_version(ts: str) -> str:
    """A version as the index compares it (``version_key``): finer than microseconds kept."""
    try:
        return version_key(ts)
    except ValueError:
        return ts


class Poller:
    def __init__(
        self,
        collection: Collection,
        *,
        state_path: Path,
        sign: Callable[[list[dict[str, Any]]], bytes],
        publish: Callable[[bytes], Awaitable[None]],
        per_request: int = 100,
        chunk: int = 200,
    ) -> None:
        self._collection = collection
        self._state_path = state_path
        self._sign = sign
        self._publish = publish
        self._per_request = per_request
        self._chunk = chunk

    def state(self) -> dict[str, Any]:
        if not self._state_path.exists():
            return {"added_after": None, "pending": None}
        data: dict[str, Any] = orjson.loads(self._state_path.read_bytes())
        return data

    def _save(self, state: dict[str, Any]) -> None:
        self._state_path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(self._state_path, orjson.dumps(state), mode=0o600)

    def _manifest(self, added_after: str | None) -> list[dict[str, Any]]:
        kwargs: dict[str, Any] = {"added_after": added_after} if added_after else {}
        out: list[dict[str, Any]] = []
        for page in self._pages(self._collection.get_manifest, **kwargs):
            entries = page.get("objects", []) if isinstance(page, dict) else None
            if not isinstance(entries, list) or not all(map(_manifest_entry, entries)):
                raise PullError(
                    f"{self._collection.url}: a manifest page is not TAXII 2.1 (each entry "
                    "needs string 'id', 'date_added' and 'version')"
                )
            out += entries
        return sorted(out, key=lambda m: _norm(m["date_added"]))

    def _pages(self, fetch: Callable[..., Any], **kwargs: Any) -> Iterator[Any]:
        """``as_pages``, stopped with PullError past ``MAX_PAGES`` (a server whose ``more``
        never ends would otherwise be read forever)."""
        pages = as_pages(fetch, per_request=self._per_request, **kwargs)
        for n, page in enumerate(pages):
            if n >= MAX_PAGES:
                raise PullError(
                    f"{self._collection.url}: more than {MAX_PAGES:,} pages in one read; the "
                    "server keeps answering 'more'"
                )
            yield page

    async def _remote(self, call: Callable[..., _T], *args: Any) -> _T:
        """Run one blocking exchange with the member's server; its failures as PullError."""
        try:
            return await asyncio.to_thread(call, *args)
        except (requests.RequestException, TAXIIServiceException) as exc:
            raise PullError(f"pull from {self._collection.url} failed: {exc}") from exc
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            # taxii2-client reading an answer that is not TAXII 2.1 (a list where an object
            # belongs, "objects": null, no Content-Type, ...)
            raise PullError(
                f"pull from {self._collection.url} failed: the answer is not TAXII 2.1 "
                f"({type(exc).__name__}: {exc})"
            ) from exc

    def _objects(
        self, added_after: str | None, wanted: set[tuple[str, str]]
    ) -> list[dict[str, Any]]:
        kwargs: dict[str, Any] = {"added_after": added_after} if added_after else {}
        ids = sorted({i for i, _ in wanted})
        found: dict[tuple[str, str], dict[str, Any]] = {}
        for start in range(0, len(ids), 50):
            for page in self._pages(
                self._collection.get_objects, id=ids[start : start + 50], version="all", **kwargs
            ):
                found_objects = page.get("objects", []) if isinstance(page, dict) else []
                for obj in found_objects if isinstance(found_objects, list) else []:
                    if not isinstance(obj, dict):
                        continue  # not an object: never one of those wanted
                    key = (
                        obj.get("id"),
                        versions_of(obj, "")[0],
                    )  # as compared, like _norm_version
                    if key in wanted:
                        found.setdefault(key, obj)
        return list(found.values())

    def _signed(
        self, objects: list[dict[str, Any]], stats: PullStats
    ) -> list[tuple[list[dict[str, Any]], bytes]]:
        """Sign ``objects`` as one submission or several; objects the broker refuses are
        logged and skipped, so one bad object never holds the member's feed back.

        Too large together: signed in halves. Refused for what one of them is: each is
        checked alone, the refused ones skipped and the rest signed together. If every
        object of a chunk is refused, that says more about the broker or the server than
        about the objects (a limit set too low, a member serving STIX 2.0): PullError, and
        the cursor stays where it is."""
        if not objects:
            return []
        try:
            return [(objects, self._sign(objects))]
        except Unsignable as exc:
            if len(objects) > 1 and exc.too_large:
                half = len(objects) // 2
                return self._signed(objects[:half], stats) + self._signed(objects[half:], stats)
            if len(objects) == 1:
                stats.refused += 1
                log.warning(
                    "pull.object_refused", id=str(objects[0].get("id"))[:120], error=str(exc)
                )
                return []
            first = exc
        kept: list[dict[str, Any]] = []
        refused: list[tuple[dict[str, Any], Unsignable]] = []
        for obj in objects:
            try:
                self._sign([obj])
                kept.append(obj)
            except Unsignable as why:
                refused.append((obj, why))
        if not refused:
            # Each is fine alone, not all together (two versions that conflict, say): sign
            # them apart; the router decides between them as between any two submissions.
            half = len(objects) // 2
            return self._signed(objects[:half], stats) + self._signed(objects[half:], stats)
        if not kept:
            raise PullError(
                f"{self._collection.url}: the broker refused every one of {len(objects)} "
                f"objects ({first}); the cursor stays until that is fixed"
            )
        for obj, reason in refused:
            stats.refused += 1
            log.warning("pull.object_refused", id=str(obj.get("id"))[:120], error=str(reason))
        return self._signed(kept, stats)

    def _chunks(self, manifest: list[dict[str, Any]]) -> Iterable[list[dict[str, Any]]]:
        # Any cut is safe, within an instant too: the cursor keeps what it submitted there.
        for start in range(0, len(manifest), self._chunk):
            yield manifest[start : start + self._chunk]

    async def pull_once(self) -> PullStats:
        stats = PullStats()
        state = self.state()
        if state.get("pending"):
            # Submissions signed before a crash: publish the very same bytes again (the
            # router routes a submission once, and logs a second copy as a replay).
            pending = state["pending"]
            for token in pending.get("tokens") or [pending["token"]]:
                await self._publish(base64.b64decode(token))
                stats.submissions += 1
            state = {k: v for k, v in pending.items() if k not in ("token", "tokens")}
            state["pending"] = None
            self._save(state)
        cursor: str | None = state["added_after"]
        seen = {(i, v) for i, v in state.get("seen", ())}
        # A state written before "seen" existed: the cursor's instant stays excluded once.
        query = _just_before(cursor) if cursor and "seen" in state else cursor
        manifest = await self._remote(self._manifest, query)
        if cursor is not None:
            at = _norm(cursor)
            manifest = [
                m
                for m in manifest
                if _norm(m["date_added"]) > at
                or (
                    _norm(m["date_added"]) == at
                    and (m["id"], _norm_version(m["version"])) not in seen
                )
            ]
        for chunk in self._chunks(manifest):
            wanted = {(m["id"], _norm_version(m["version"])) for m in chunk}
            objects = await self._remote(self._objects, query, wanted)
            newest = max((m["date_added"] for m in chunk), key=_norm)
            at_newest = {
                (m["id"], _norm_version(m["version"]))
                for m in chunk
                if _norm(m["date_added"]) == _norm(newest)
            }
            if cursor is not None and _norm(newest) == _norm(cursor):
                at_newest |= seen
            after = {"added_after": newest, "seen": sorted(at_newest)}
            parts = self._signed(objects, stats)
            if parts:
                tokens = [base64.b64encode(token).decode() for _, token in parts]
                self._save({**state, "pending": {"tokens": tokens, **after}})
                for part, token in parts:
                    await self._publish(token)
                    stats.submissions += 1
                    stats.objects += len(part)
            if len(objects) != len(wanted):
                log.warning("pull.objects_missing", wanted=len(wanted), got=len(objects))
            state = {**after, "pending": None}
            self._save(state)
            cursor, seen = newest, at_newest
        return stats
