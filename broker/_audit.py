"""Reading the dissemination log back (``atlas-broker audit list``)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import nats.errors
import orjson
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from ._bus import LOG
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


async def read_log(js: JetStreamContext, *, batch: int = 256) -> AsyncIterator[LogRecord]:
    """Every entry in stream order, through an ephemeral consumer removed afterwards."""
    info = await js.stream_info(LOG)
    if not info.state.messages:
        return
    config = ConsumerConfig(
        ack_policy=AckPolicy.NONE,
        deliver_policy=DeliverPolicy.ALL,
        filter_subject="atlas.log.entries.>",
        inactive_threshold=30.0,
        mem_storage=True,
    )
    sub = await js.pull_subscribe("atlas.log.entries.>", stream=LOG, config=config)
    index = 0
    try:
        while True:
            try:
                msgs = await sub.fetch(batch, timeout=1.0)
            except nats.errors.TimeoutError:
                return
            for msg in msgs:
                for raw in decode_chunk(msg.data):
                    yield LogRecord(index, msg.metadata.sequence.stream, raw, orjson.loads(raw))
                    index += 1
                if msg.metadata.num_pending == 0:
                    return
    finally:
        await sub.unsubscribe()


def matches(entry: dict[str, Any], *, org: str | None, since: str | None) -> bool:
    if since is not None and str(entry.get("ts", "")) < since:
        return False
    if org is None:
        return True
    src = entry.get("src") or {}
    return org in (entry.get("org"), entry.get("rcpt"), src.get("org"))
