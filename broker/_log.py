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
import orjson
import structlog
from nats.js import JetStreamContext

from keys import canonical_json

from ._bus import LOG, log_subject

__all__ = [
    "CHUNK",
    "ENTRY_VERSION",
    "append_entries",
    "decode_chunk",
    "encode_chunks",
    "submission_outcome",
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


async def submission_outcome(
    js: JetStreamContext, sid: str, token_sha: str
) -> tuple[str, dict[str, Any]] | None:
    """What the router decided for a submission: ("accepted" | "refused", its first log
    entry), or None while it is not decided.

    An accepted submission's entries are logged under its id; a refused one's under the
    first 32 hex digits of its token's SHA-256 (``token_sha``), since a refused token's
    claims, its id among them, are not to be trusted.
    """
    for outcome, subject in (("accepted", sid), ("refused", "r" + token_sha[:32])):
        try:
            msg = await js.get_last_msg(LOG, log_subject(subject) + ".0")
        except nats.js.errors.NotFoundError:
            continue
        lines = decode_chunk(msg.data or b"")
        if lines:
            entry = orjson.loads(lines[0])
            return outcome, entry if isinstance(entry, dict) else {}
    return None


def count_by(entries: Iterable[Mapping[str, Any]], key: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for entry in entries:
        value = str(entry.get(key))
        out[value] = out.get(value, 0) + 1
    return out
