"""The audit jobs behind ``atlas-broker audit``: verify, query, export, report.

Each works on a :class:`~broker._logcopy.LogSource` (a live LOG stream or a copy on disk)
and only public keys; the CLI parses arguments and calls these.
"""

from __future__ import annotations

import csv
import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import nats.errors
import nats.js.errors
import orjson
from nats.js import JetStreamContext

from keys import PublicKey

from ._auditor import LogVerifier, Problem, VerifyResult
from ._checkpoint import read_stream
from ._log import timestamp
from ._logcopy import LogCopy, LogSource, Record, Snapshot
from ._note import NoteVerifier
from ._report import ReportStats
from ._router import PKG_ID_HEADER
from .errors import CheckpointInvalid, ConfigError

__all__ = [
    "CSV_COLUMNS",
    "Query",
    "flatten",
    "log_verifiers",
    "normalise_time",
    "verify_log",
    "write_entries",
]

Progress = Callable[[int, int | None], None]
"""``progress(entries_done, entries_expected)``."""

CSV_COLUMNS = (
    "index", "seq", "ts", "type", "result", "originator", "recipient", "tlp", "reason",
    "obj_type", "pkg", "submission", "objects_delivered", "objects_withheld",
    "objects_derived", "jwe_sha256",
)  # fmt: skip
_PROGRESS_EVERY = 5000


def normalise_time(text: str | None) -> str | None:
    """An RFC 3339 time or date as the log writes it, so that strings compare as times."""
    if text is None:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError as exc:
        raise ConfigError(f"time {text!r} is not RFC 3339 (e.g. 2026-11-02T09:30:00Z)") from exc
    return timestamp(moment if moment.tzinfo else moment.replace(tzinfo=UTC))


def log_verifiers(
    vkeys: Sequence[str],
    jwks: Path | None,
    origin: str | None,
    *,
    cosigner: bool = False,
) -> list[NoteVerifier]:
    """Note verifiers from ``name+id+key`` strings and/or a JWK set (named ``origin``)."""
    verifiers = [NoteVerifier.from_vkey(v) for v in vkeys]
    if jwks is not None:
        if origin is None:
            raise ConfigError("a JWK set needs the log origin (no checkpoint names one)")
        try:
            doc = orjson.loads(jwks.read_bytes())
            keys = [PublicKey.from_jwk(jwk) for jwk in doc["keys"]]
        except (OSError, orjson.JSONDecodeError, KeyError, TypeError) as exc:
            raise ConfigError(f"{jwks}: not a JWK set ({exc})") from exc
        signing = [key for key in keys if key.kind == "Ed25519"]
        if not signing:
            raise ConfigError(
                f"{jwks}: no Ed25519 key in the set; the log's checkpoints are signed with "
                "the broker's Ed25519 key"
            )
        for key in signing:
            try:
                verifiers.append(NoteVerifier.from_public_key(origin, key, cosigner=cosigner))
            except CheckpointInvalid as exc:
                raise ConfigError(f"{jwks}: {exc}") from exc
    return verifiers


async def verify_log(
    source: LogSource,
    *,
    log_keys: Sequence[NoteVerifier],
    witness_keys: Sequence[NoteVerifier] = (),
    deliveries: JetStreamContext | None = None,
    grace: float = 60.0,
    progress: Progress | None = None,
    on_record: Callable[[Record, bool], None] | None = None,
) -> VerifyResult:
    """Verify everything the source holds; see :mod:`broker._auditor`.

    ``on_record`` sees each entry and whether a signed checkpoint claims to cover it.
    """
    if not log_keys:
        raise ConfigError("no log key: give --log-key or --broker-jwks")
    snap = await source.snapshot()
    verifier = LogVerifier(
        snap.checkpoints,
        log_keys=log_keys,
        witness_keys=witness_keys,
        cosigned_notes=snap.cosignatures,
        origin=snap.origin,
        track_deliveries=deliveries is not None,
    )
    done, signed = 0, verifier.signed_size
    async for record in source.records():
        verifier.feed(record.raw)
        if on_record is not None:
            on_record(record, record.index < signed)
        done += 1
        if progress is not None and done % _PROGRESS_EVERY == 0:
            progress(done, snap.expected_entries)
    if progress is not None:
        progress(done, snap.expected_entries)
    if deliveries is not None:
        try:
            await _check_deliveries(deliveries, verifier, grace)
        except (nats.errors.NoRespondersError, nats.js.errors.ServiceUnavailableError) as exc:
            verifier.result.deliveries_unreadable = (
                f"DELIVERIES is not readable by this NATS user ({type(exc).__name__}): stored "
                "packages were not compared with their entries"
            )
    result = verifier.finish()
    if isinstance(source, LogCopy):
        result.problems += _copy_shortfalls(source.manifest, snap, result.entries)
    return result


def _copy_shortfalls(manifest: dict[str, Any], snap: Snapshot, entries: int) -> list[Problem]:
    """A copy holding fewer entries, checkpoints or cosignatures than its manifest lists.

    The manifest is not signed, so this proves nothing on its own; but files removed or cut
    behind it (a copy reduced to its manifest verified "OK: 0 entries") are a finding."""
    found = {
        "entries": entries,
        "checkpoints": len(snap.checkpoints),
        "cosignatures": len(snap.cosignatures),
    }
    return [
        Problem(
            entries if name == "entries" else None,
            f"the copy's manifest lists {listed} {name} but its files hold {found[name]} "
            "(files removed or cut since the export)",
        )
        for name in found
        if isinstance(listed := manifest.get(name), int) and found[name] < listed
    ]


async def _check_deliveries(js: JetStreamContext, verifier: LogVerifier, grace: float) -> None:
    now = datetime.now(UTC)
    async for msg in read_stream(js, "atlas.deliver.>", stream="DELIVERIES"):
        meta = msg.metadata
        pkg = (msg.headers or {}).get(PKG_ID_HEADER, "")
        recent = (now - meta.timestamp).total_seconds() < grace
        if recent and not verifier.has_delivery(pkg):
            verifier.result.deliveries_pending += 1  # being routed: its entry comes next
            continue
        verifier.check_delivery(
            pkg,
            msg.subject.split(".")[2],
            hashlib.sha256(msg.data).hexdigest(),
            f"DELIVERIES seq {meta.sequence.stream} ({msg.subject})",
        )


@dataclass(frozen=True, slots=True)
class Query:
    org: str | None = None
    originator: str | None = None
    recipient: str | None = None
    tlp: str | None = None
    action: str | None = None
    reason: str | None = None
    since: str | None = None
    until: str | None = None

    def matches(self, entry: dict[str, Any]) -> bool:
        src = entry.get("src")
        src = src if isinstance(src, dict) else {}
        originator = src.get("org") or entry.get("org")
        ts = str(entry.get("ts", ""))
        checks = (
            self.org is None or self.org in (originator, entry.get("rcpt"), entry.get("org")),
            self.originator is None or originator == self.originator,
            self.recipient is None or entry.get("rcpt") == self.recipient,
            self.tlp is None or str(entry.get("tlp")).lower() == self.tlp.lower(),
            self.action is None or self.action in (entry.get("type"), entry.get("result")),
            self.reason is None or entry.get("reason") == self.reason,
            self.since is None or ts >= self.since,
            self.until is None or ts < self.until,
        )
        return all(checks)


def flatten(record: Record, entry: dict[str, Any]) -> dict[str, Any]:
    src = entry.get("src")
    src = src if isinstance(src, dict) else {}
    objects = entry.get("objects")
    counts: dict[str, Any] = objects if isinstance(objects, dict) else {}
    return {
        "index": record.index,
        "seq": record.seq,
        "ts": entry.get("ts"),
        "type": entry.get("type"),
        "result": entry.get("result"),
        "originator": src.get("org") or entry.get("org"),
        "recipient": entry.get("rcpt"),
        "tlp": entry.get("tlp"),
        "reason": entry.get("reason"),
        "obj_type": entry.get("obj_type"),
        "pkg": entry.get("pkg"),
        "submission": src.get("submission") or entry.get("sub"),
        "objects_delivered": counts.get("delivered", objects if isinstance(objects, int) else None),
        "objects_withheld": counts.get("withheld"),
        "objects_derived": counts.get("derived"),
        "jwe_sha256": entry.get("jwe_sha256"),
    }


async def write_entries(
    source: LogSource,
    out: IO[str],
    *,
    fmt: str,
    query: Query = Query(),
    progress: Progress | None = None,
) -> int:
    """Matching entries as CSV, JSON lines (flattened, with index and seq) or raw lines."""
    if fmt not in ("csv", "jsonl", "raw"):
        raise ConfigError(f"export format {fmt!r}: use csv, jsonl or log")
    snap = await source.snapshot()
    writer = csv.DictWriter(out, fieldnames=CSV_COLUMNS) if fmt == "csv" else None
    if writer is not None:
        writer.writeheader()
    count = done = 0
    async for record in source.records():
        done += 1
        if progress is not None and done % _PROGRESS_EVERY == 0:
            progress(done, snap.expected_entries)
        try:
            entry = orjson.loads(record.raw)
        except orjson.JSONDecodeError:
            continue
        if not isinstance(entry, dict) or not query.matches(entry):
            continue
        count += 1
        if fmt == "raw":
            out.write(record.raw.decode("utf-8", "replace") + "\n")
        elif writer is not None:
            writer.writerow({k: _cell(v) for k, v in flatten(record, entry).items()})
        else:
            row = {"index": record.index, "seq": record.seq, "entry": entry}
            out.write(orjson.dumps(row).decode() + "\n")
    return count


_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _cell(value: Any) -> Any:
    """A CSV cell a spreadsheet shows as text: one starting like a formula (``=HYPERLINK…``,
    ``+``, ``-``, ``@``) gets a leading ``'`` (OWASP's advice for CSV injection). The log
    holds text members chose; an auditor opening the export must not run it."""
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value


async def collect_report(
    source: LogSource,
    *,
    log_keys: Sequence[NoteVerifier],
    witness_keys: Sequence[NoteVerifier] = (),
    deliveries: JetStreamContext | None = None,
    progress: Progress | None = None,
) -> tuple[ReportStats, VerifyResult | None]:
    """Statistics for the report, and the verification result when keys were given.

    With keys, entries no signed checkpoint covers are counted apart, in ``stats.unsigned``:
    in a copy anyone can append lines, and the page must not add them to the signed totals.
    """
    stats = ReportStats()
    unsigned = stats.unsigned = ReportStats()

    def _take(record: Record, signed: bool = True) -> None:
        try:
            entry = orjson.loads(record.raw)
        except orjson.JSONDecodeError:
            return
        if isinstance(entry, dict):
            (stats if signed else unsigned).add(entry)

    if not log_keys:
        snap = await source.snapshot()
        done = 0
        async for record in source.records():
            _take(record)
            done += 1
            if progress is not None and done % _PROGRESS_EVERY == 0:
                progress(done, snap.expected_entries)
        return stats, None
    result = await verify_log(
        source,
        log_keys=log_keys,
        witness_keys=witness_keys,
        deliveries=deliveries,
        progress=progress,
        on_record=_take,
    )
    return stats, result
