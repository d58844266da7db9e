"""Key lifecycle on the directory: rotate, revoke, list — every event logged.

The directory in its bucket is the single source of truth for which keys are current; a
change is a revision-checked update (two operators cannot overwrite each other's change)
and every worker applies it within its polling interval. Each key event is a LOG entry.

- ``rotate``: a new key becomes current; the previous current key of the same use stays
  valid for opening and verifying until ``not_after`` (the overlap), then drops out.
- ``revoke``: from ``revoked_at`` on, nothing is sealed to the key, no submission signed
  with it is accepted, and (for a broker key) no package it signed after that time opens.
- ``load`` (``directory load FILE``): the file replaces the stored directory, except that
  it may not make a revoked key valid again (or revoked later): the file on disk does not
  know of revocations made with ``keys revoke``, and reloading it must not undo them.
  Keys the file drops (a rotation's new key, say) are named to the operator, and the
  load is logged.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import nats.js.errors
import orjson
from nats.js import JetStreamContext

from adapters import delivery_consumer, ensure_durable, receipt_consumer
from keys import InvalidKey, PublicKey
from policy import Directory, DirectoryError, OrgKind, PublicKeyEntry

from ._bus import DIRECTORY_BUCKET, ensure_intake, log_subject
from ._directory_store import intake_orgs, resolve
from ._log import append_entries, timestamp
from ._witness import ensure_witness_stream

__all__ = [
    "DirectoryLoad",
    "KeyEvent",
    "ensure_party_consumers",
    "key_rows",
    "load_directory",
    "revoke_key",
    "rotate_key",
]

_KEY = "directory"
BROKER = "atlas-broker"


@dataclass(frozen=True, slots=True)
class KeyEvent:
    event: Literal["rotate", "revoke"]
    org: str
    kid: str
    use: str
    revision: int


async def _load(js: JetStreamContext) -> tuple[Directory, int]:
    kv = await js.key_value(DIRECTORY_BUCKET)
    try:
        entry = await kv.get(_KEY)
    except nats.js.errors.NotFoundError as exc:
        raise DirectoryError("no community directory loaded: run `directory load FILE`") from exc
    return Directory.from_mapping(orjson.loads(entry.value or b"")), int(entry.revision or 0)


async def _store(js: JetStreamContext, directory: Directory, revision: int) -> int:
    resolve(directory)  # never store a directory whose keys do not parse
    kv = await js.key_value(DIRECTORY_BUCKET)
    try:
        return int(await kv.update(_KEY, directory.model_dump_json().encode(), last=revision))
    except nats.js.errors.KeyWrongLastSequenceError as exc:
        raise DirectoryError(
            "the directory changed while this key operation ran; run it again"
        ) from exc


@dataclass(frozen=True, slots=True)
class DirectoryLoad:
    revision: int
    added: tuple[str, ...]
    """``<org>/<kid>`` of keys the stored directory did not have."""
    dropped: tuple[str, ...]
    """``<org>/<kid>`` of keys the stored directory had and the new one does not."""


def _all_keys(directory: Directory) -> dict[tuple[str, str], PublicKeyEntry]:
    owners = [(directory.broker.id, directory.broker.keys)]
    owners += [(o.id, o.keys) for o in directory.organisations]
    return {(owner, _kid(entry)): entry for owner, entries in owners for entry in entries}


async def load_directory(
    js: JetStreamContext, directory: Directory, *, source: str, now: datetime | None = None
) -> DirectoryLoad:
    """Store ``directory`` in place of the stored one; refused if it undoes a revocation."""
    now = now or datetime.now(UTC)
    resolve(directory)  # never store a directory whose keys do not parse
    try:
        stored, revision = await _load(js)
    except DirectoryError:
        stored, revision = None, 0
    old = _all_keys(stored) if stored is not None else {}
    new = _all_keys(directory)
    undone = [
        f"{owner}'s key {kid} (revoked at {entry.revoked_at.isoformat()})"
        for (owner, kid), entry in old.items()
        if entry.revoked_at is not None
        and (owner, kid) in new
        and (
            new[(owner, kid)].revoked_at is None or new[(owner, kid)].revoked_at > entry.revoked_at  # type: ignore[operator]
        )
    ]
    if undone:
        raise DirectoryError(
            f"{source} would make revoked keys valid again: {'; '.join(undone[:5])}"
            + (f" and {len(undone) - 5} more" if len(undone) > 5 else "")
            + ". Copy their revoked_at into the file (`atlas-broker directory show --json` "
            "shows it), or remove those keys from it"
        )
    payload = directory.model_dump_json().encode()
    kv = await js.key_value(DIRECTORY_BUCKET)
    try:
        if stored is None:
            new_revision = int(await kv.create(_KEY, payload))
        else:
            new_revision = int(await kv.update(_KEY, payload, last=revision))
    except nats.js.errors.KeyWrongLastSequenceError:
        raise DirectoryError(
            "the directory changed while it was being loaded; run it again"
        ) from None
    result = DirectoryLoad(
        revision=new_revision,
        added=tuple(f"{o}/{k}" for o, k in sorted(new.keys() - old.keys())),
        dropped=tuple(f"{o}/{k}" for o, k in sorted(old.keys() - new.keys())),
    )
    sha = hashlib.sha256(payload).hexdigest()
    entry = {
        "type": "directory",
        "ts": timestamp(now),
        "event": "load",
        "directory_revision": new_revision,
        "directory_sha256": sha,
        "keys_added": list(result.added),
        "keys_dropped": list(result.dropped),
    }
    digest = hashlib.sha256(f"load|{new_revision}|{sha}".encode()).hexdigest()
    await append_entries(js, log_subject("d" + digest[:32]), [entry])
    await ensure_intake(js, intake_orgs(directory))
    await ensure_party_consumers(js, directory)
    await ensure_witness_stream(js)
    return result


async def ensure_party_consumers(js: JetStreamContext, directory: Directory) -> int:
    """Each organisation's durable consumers on its deliveries and receipts; how many were
    made. Under the generated NATS configuration organisations may only use them."""
    made = 0
    for org in directory.organisations:
        if org.kind == OrgKind.AUDITOR:
            continue
        for mine in (delivery_consumer(org.id), receipt_consumer(org.id)):
            made += await ensure_durable(js, mine.stream, mine.name, mine.filter_subject)
    return made


def _entries(directory: Directory, org: str) -> tuple[PublicKeyEntry, ...]:
    if org == BROKER or org == directory.broker.id:
        return directory.broker.keys
    found = directory.organisation(org)
    if found is None:
        raise DirectoryError(f"unknown organisation {org!r}")
    return found.keys


def _replace(directory: Directory, org: str, keys: tuple[PublicKeyEntry, ...]) -> Directory:
    if org == BROKER or org == directory.broker.id:
        broker = directory.broker.model_copy(update={"keys": keys})
        return Directory.from_mapping({**directory.model_dump(), "broker": broker.model_dump()})
    orgs = [
        o.model_dump()
        if o.id != org
        else {**o.model_dump(), "keys": [k.model_dump() for k in keys]}
        for o in directory.organisations
    ]
    return Directory.from_mapping({**directory.model_dump(), "organisations": orgs})


def _kid(entry: PublicKeyEntry) -> str:
    return PublicKey.from_jwk(entry.jwk, use=entry.use).thumbprint


async def _log_event(js: JetStreamContext, event: KeyEvent, now: datetime, **extra: Any) -> None:
    entry = {
        "type": "key",
        "ts": timestamp(now),
        "event": event.event,
        "org": event.org,
        "kid": event.kid,
        "use": event.use,
        "directory_revision": event.revision,
        **extra,
    }
    digest = hashlib.sha256(f"{event.event}|{event.org}|{event.kid}|{event.revision}".encode())
    await append_entries(js, log_subject("k" + digest.hexdigest()[:32]), [entry])


async def rotate_key(
    js: JetStreamContext,
    *,
    org: str,
    jwk: dict[str, str],
    overlap: timedelta,
    now: datetime | None = None,
) -> KeyEvent:
    """Make ``jwk`` the current key of its use; the previous one stays valid for ``overlap``."""
    now = now or datetime.now(UTC)
    directory, revision = await _load(js)
    raw_use = jwk.get("use")
    if raw_use == "sig":
        use: Literal["sig", "enc"] = "sig"
    elif raw_use == "enc":
        use = "enc"
    else:
        raise DirectoryError('the new JWK must say its use: "sig" or "enc"')
    public = {k: v for k, v in jwk.items() if k in ("kty", "crv", "x", "y")}
    try:
        new_kid = PublicKey.from_jwk(public, use=use).thumbprint
    except InvalidKey as exc:
        raise DirectoryError(f"new key: {exc}") from exc
    keys = []
    for entry in _entries(directory, org):
        if _kid(entry) == new_kid:
            raise DirectoryError(f"key {new_kid} is already in the directory for {org!r}")
        if entry.use == use and entry.current and entry.revoked_at is None:
            entry = entry.model_copy(update={"current": False, "not_after": now + overlap})
        keys.append(entry)
    keys.append(PublicKeyEntry(jwk=public, use=use, current=True))
    stored = await _store(js, _replace(directory, org, tuple(keys)), revision)
    event = KeyEvent("rotate", org, new_kid, use, stored)
    await _log_event(js, event, now, overlap_s=int(overlap.total_seconds()))
    return event


async def revoke_key(
    js: JetStreamContext, *, org: str, kid: str, now: datetime | None = None
) -> KeyEvent:
    """Revoke key ``kid`` of ``org`` (or of the broker) from ``now`` on."""
    now = now or datetime.now(UTC)
    directory, revision = await _load(js)
    keys, found = [], None
    for entry in _entries(directory, org):
        if _kid(entry) == kid:
            if entry.revoked_at is not None:
                raise DirectoryError(f"key {kid} of {org!r} is already revoked")
            found = entry = entry.model_copy(update={"revoked_at": now, "current": False})
        keys.append(entry)
    if found is None:
        raise DirectoryError(f"{org!r} has no key {kid}")
    stored = await _store(js, _replace(directory, org, tuple(keys)), revision)
    event = KeyEvent("revoke", org, kid, found.use, stored)
    await _log_event(js, event, now)
    return event


def key_state(entry: PublicKeyEntry, now: datetime) -> str:
    """revoked | current | overlap (valid until ``not_after``) | expired | valid."""
    if entry.revoked_at is not None and entry.revoked_at <= now:
        return "revoked"
    if entry.current:
        return "current"
    if entry.not_after is not None:
        return "overlap" if now < entry.not_after else "expired"
    return "valid"


def key_rows(
    directory: Directory, org: str | None = None, *, now: datetime | None = None
) -> list[dict[str, str]]:
    """One row per key for ``keys list``; an unknown ``org`` is an error naming it."""
    owners = [(BROKER, directory.broker.keys)] + [(o.id, o.keys) for o in directory.organisations]
    if org is not None and org not in {owner for owner, _ in owners}:
        raise DirectoryError(f"unknown organisation {org!r}")
    moment = now or datetime.now(UTC)
    rows = []
    for owner, entries in owners:
        if org is not None and owner != org:
            continue
        for entry in entries:
            state = key_state(entry, moment)
            rows.append(
                {
                    "org": owner,
                    "use": entry.use,
                    "kid": _kid(entry),
                    "kty": entry.jwk.get("crv", entry.jwk.get("kty", "")),
                    "state": state,
                    "not_after": entry.not_after.isoformat() if entry.not_after else "",
                    "revoked_at": entry.revoked_at.isoformat() if entry.revoked_at else "",
                }
            )
    return rows
