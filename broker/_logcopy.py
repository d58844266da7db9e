"""Where an audit reads the log from: a live LOG stream, or an exported copy on disk.

The copy is a folder an auditor can take away and check with nothing but public keys:

===================  =====================================================================
``entries.jsonl``    every entry exactly as logged (the bytes the Merkle tree hashes), one
                     per line, in log order; line ``i`` (0-based) is log index ``i``
``checkpoints.jsonl`` ``{"seq": <LOG stream seq>, "data": "<checkpoint message JSON>"}``
``cosignatures.jsonl`` ``{"seq": <WITNESS seq>, "note": cosigned note}``
``messages.jsonl``   ``{"seq": s, "first": index, "count": n}`` per LOG entries message
                     (informational: maps indexes back to stream positions)
``manifest.json``    format name and version, origin, counts, export time
===================  =====================================================================
"""

from __future__ import annotations

import abc
import bisect
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import nats.errors
import nats.js.errors
import orjson
from nats.js import JetStreamContext

from ._bus import LOG
from ._checkpoint import CHECKPOINT_SUBJECT, ENTRIES_FILTER, CheckpointMessage, read_stream
from ._log import decode_chunk, timestamp
from ._note import Checkpoint, Note
from ._witness import WITNESS_FILTER, WITNESS_STREAM
from .errors import ConfigError, LogIntegrityError

__all__ = ["COPY_FORMAT", "LiveLog", "LogCopy", "LogSource", "Snapshot", "write_copy"]

COPY_FORMAT = "atlas-log-copy"
COPY_VERSION = 1


@dataclass
class Snapshot:
    checkpoints: list[tuple[int, bytes]] = field(default_factory=list)
    cosignatures: list[tuple[int, str]] = field(default_factory=list)
    origin: str | None = None
    expected_entries: int | None = None
    """A hint for progress bars (largest checkpoint size, or the manifest's count)."""


@dataclass(frozen=True, slots=True)
class Record:
    index: int
    seq: int
    raw: bytes


def _origin_of(checkpoints: list[tuple[int, bytes]]) -> tuple[str | None, int]:
    origin, size = None, 0
    for seq, data in checkpoints:
        try:
            message = CheckpointMessage.decode(data, seq=seq)
            origin = Checkpoint.parse(Note.parse(message.note).text).origin
            size = max(size, message.size)
        except LogIntegrityError:
            continue
    return origin, size


class LogSource(abc.ABC):
    @abc.abstractmethod
    async def snapshot(self) -> Snapshot: ...

    @abc.abstractmethod
    def records(self) -> AsyncIterator[Record]:
        """Every entry in log order (within the snapshot taken first)."""


class LiveLog(LogSource):
    """The LOG (and WITNESS) streams of a running system, frozen at ``snapshot()``."""

    def __init__(self, js: JetStreamContext) -> None:
        self._js = js
        self._end = 0

    async def snapshot(self) -> Snapshot:
        # WITNESS's end first: a cosignature stored by then is of a checkpoint, and so of
        # entries, already in LOG when LOG's end is read next. Read the other way round, a
        # checkpoint made in between and cosigned at once would look like a cut log.
        try:
            witnessed = (await self._js.stream_info(WITNESS_STREAM)).state.last_seq
        except nats.js.errors.NotFoundError:
            witnessed = 0  # no witness has run: nothing cosigned
        info = await self._js.stream_info(LOG)
        self._end = info.state.last_seq
        snap = Snapshot()
        async for msg in read_stream(self._js, CHECKPOINT_SUBJECT, stop_seq=self._end):
            snap.checkpoints.append((msg.metadata.sequence.stream, msg.data))
        if witnessed:
            async for msg in read_stream(
                self._js, WITNESS_FILTER, stream=WITNESS_STREAM, stop_seq=witnessed
            ):
                try:
                    doc = orjson.loads(msg.data)
                except orjson.JSONDecodeError:
                    continue  # a record that is not ours; the ones after it still count
                if isinstance(doc, dict) and isinstance(doc.get("note"), str):
                    snap.cosignatures.append((msg.metadata.sequence.stream, doc["note"]))
        snap.origin, snap.expected_entries = _origin_of(snap.checkpoints)
        return snap

    async def records(self) -> AsyncIterator[Record]:
        index = 0
        async for msg in read_stream(self._js, ENTRIES_FILTER, stop_seq=self._end or None):
            seq = msg.metadata.sequence.stream
            for raw in decode_chunk(msg.data):
                yield Record(index, seq, raw)
                index += 1


class LogCopy(LogSource):
    """An exported copy (see the module docstring); read-only."""

    def __init__(self, path: Path) -> None:
        self.path = path
        manifest = path / "manifest.json"
        try:
            self.manifest: dict[str, Any] = orjson.loads(manifest.read_bytes())
        except (OSError, orjson.JSONDecodeError) as exc:
            raise ConfigError(f"{path} is not an Atlas log copy ({manifest}: {exc})") from exc
        if not isinstance(self.manifest, dict) or self.manifest.get("format") != COPY_FORMAT:
            raise ConfigError(f"{path} is not an Atlas log copy (format {COPY_FORMAT})")

    def _lines(self, name: str) -> Iterator[bytes]:
        file = self.path / name
        if not file.exists():
            return
        with file.open("rb") as fh:
            for line in fh:
                yield line[:-1] if line.endswith(b"\n") else line

    async def snapshot(self) -> Snapshot:
        snap = Snapshot()
        for n, line in enumerate(self._lines("checkpoints.jsonl")):
            try:
                doc = orjson.loads(line)
                snap.checkpoints.append((int(doc["seq"]), str(doc["data"]).encode()))
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
                snap.checkpoints.append((-(n + 1), line))  # reported as a bad checkpoint
        for line in self._lines("cosignatures.jsonl"):
            try:
                doc = orjson.loads(line)
                snap.cosignatures.append((int(doc["seq"]), str(doc["note"])))
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
                snap.cosignatures.append((0, line.decode("utf-8", "replace")))
        snap.origin, size = _origin_of(snap.checkpoints)
        entries = self.manifest.get("entries")
        snap.expected_entries = entries if isinstance(entries, int) else size
        return snap

    async def records(self) -> AsyncIterator[Record]:
        firsts: list[int] = []
        seqs: list[int] = []
        for line in self._lines("messages.jsonl"):
            try:
                doc = orjson.loads(line)
                firsts.append(int(doc["first"]))
                seqs.append(int(doc["seq"]))
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
                break
        for index, raw in enumerate(self._lines("entries.jsonl")):
            at = bisect.bisect_right(firsts, index) - 1
            yield Record(index, seqs[at] if at >= 0 else 0, raw)


def _new_folder(path: Path) -> None:
    try:
        path.mkdir(parents=True, exist_ok=False)
    except FileExistsError as exc:
        raise ConfigError(f"{path} already exists; export into a new folder") from exc


async def write_copy(source: LogSource, path: Path) -> dict[str, Any]:
    """Export ``source`` into a new folder ``path``; returns the manifest.

    Plain blocking file writes: an export is a one-shot job with nothing else on its loop.
    """
    _new_folder(path)
    snap = await source.snapshot()
    with (path / "checkpoints.jsonl").open("wb") as fh:
        for seq, data in snap.checkpoints:
            fh.write(orjson.dumps({"seq": seq, "data": data.decode("utf-8", "replace")}) + b"\n")
    with (path / "cosignatures.jsonl").open("wb") as fh:
        for seq, note in snap.cosignatures:
            fh.write(orjson.dumps({"seq": seq, "note": note}) + b"\n")
    count, last_seq, first = 0, None, 0
    with (
        (path / "entries.jsonl").open("wb") as entries,
        (path / "messages.jsonl").open("wb") as messages,
    ):
        async for record in source.records():
            if record.seq != last_seq:
                if last_seq is not None:
                    messages.write(
                        orjson.dumps({"seq": last_seq, "first": first, "count": count - first})
                        + b"\n"
                    )
                last_seq, first = record.seq, count
            entries.write(record.raw + b"\n")
            count += 1
        if last_seq is not None:
            messages.write(
                orjson.dumps({"seq": last_seq, "first": first, "count": count - first}) + b"\n"
            )
    manifest = {
        "format": COPY_FORMAT,
        "v": COPY_VERSION,
        "origin": snap.origin,
        "entries": count,
        "checkpoints": len(snap.checkpoints),
        "cosignatures": len(snap.cosignatures),
        "exported": timestamp(datetime.now(UTC)),
    }
    (path / "manifest.json").write_bytes(orjson.dumps(manifest, option=orjson.OPT_INDENT_2))
    return manifest
