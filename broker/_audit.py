"""Reading the dissemination log back (``atlas-broker audit list``)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import orjson
from nats.js import JetStreamContext

from ._checkpoint import ENTRIES_FILTER, read_stream
from ._log import decode_chunk

__all__ = ["LogRecord", "read_log"]


@dataclass(frozen=True, slots=True)
class LogRecord:
    index: int
    """Position of the entry in the log (0-based, stream order)."""
    seq: int
    """Stream sequence of the LOG message carrying it."""
    raw: bytes
    """The exact canonical bytes written (what the Merkle tree hashes)."""
    entry: dict[str, Any]


async def read_log(js: JetStreamContext) -> AsyncIterator[LogRecord]:
    """Every entry in stream order (an ephemeral consumer that stops at the current end)."""
    index = 0
    async for msg in read_stream(js, ENTRIES_FILTER):
        for raw in decode_chunk(msg.data):
            yield LogRecord(index, msg.metadata.sequence.stream, raw, orjson.loads(raw))
            index += 1


def matches(entry: dict[str, Any], *, org: str | None, since: str | None) -> bool:
    if since is not None and str(entry.get("ts", "")) < since:
        return False
    if org is None:
        return True
    src = entry.get("src") or {}
    return org in (entry.get("org"), entry.get("rcpt"), src.get("org"))
