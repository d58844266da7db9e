"""Dissemination log entries: float-free canonical JSON (RFC 8785), never content.

Every decision of the router becomes one entry; the entries of one submission go to LOG in
chunks of at most ``CHUNK`` entries, each chunk on its own subject
``atlas.log.entries.<submission>.<n>`` published with an expected last subject sequence of
0. A redelivered submission therefore cannot log twice, and the stream order is the log
order. Object ids never appear: the policy hands over keyed digests.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import nats.js.errors
import structlog
from nats.js import JetStreamContext

from keys import canonical_json

__all__ = [
    "CHUNK",
    "ENTRY_VERSION",
    "append_entries",
    "decode_chunk",
    "encode_chunks",
    "timestamp",
]

log = structlog.get_logger()

ENTRY_VERSION = 1
CHUNK = 256
EXPECT_NEW_SUBJECT = {"Nats-Expected-Last-Subject-Sequence": "0"}
WRONG_LAST_SEQUENCE = 10071


def timestamp(moment: datetime) -> str:
    """RFC 3339 UTC with microseconds: sortable and float-free."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def encode_chunks(entries: Sequence[Mapping[str, Any]]) -> list[bytes]:
    """Canonical JSON entries, newline separated, ``CHUNK`` per message."""
    lines = [canonical_json({"v": ENTRY_VERSION, **entry}) for entry in entries]
    return [b"\n".join(lines[i : i + CHUNK]) for i in range(0, len(lines), CHUNK)]


def decode_chunk(payload: bytes) -> list[bytes]:
    """The entries of one LOG message, as the exact canonical bytes that were written."""
    return [line for line in payload.split(b"\n") if line]


async def append_entries(
    js: JetStreamContext, subject_base: str, entries: Sequence[Mapping[str, Any]]
) -> int:
    """Append ``entries`` once; a chunk already written by an earlier attempt is kept.

    Returns the number of chunks newly written.
    """
    written = 0
    for n, chunk in enumerate(encode_chunks(entries)):
        try:
            await js.publish(f"{subject_base}.{n}", chunk, headers=dict(EXPECT_NEW_SUBJECT))
            written += 1
        except nats.js.errors.BadRequestError as exc:
            if exc.err_code != WRONG_LAST_SEQUENCE:
                raise
            log.info("log.chunk_exists", subject=f"{subject_base}.{n}")
    return written


def count_by(entries: Iterable[Mapping[str, Any]], key: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for entry in entries:
        value = str(entry.get(key))
        out[value] = out.get(value, 0) + 1
    return out
