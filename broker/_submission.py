"""Signed submissions: what a member publishes on ``atlas.submit.<org>``.

The message is a compact JWS (``typ: atlas-sub+jws``) by the member's signing key over an
envelope that binds the bundle to its audience, so nobody on the way can widen who it is
named to::

    {"v": 1, "sid": "<32 hex>", "org": "<org id>", "iat": <epoch s>,
     "to": ["org:ec3", "group:op-x"], "feed": null, "bundle": {...STIX 2.1 bundle...}}

``sid`` is chosen by the member and is unique per organisation: the broker dedupes on
``<org>.<sid>`` in its own bucket, never on a stream-wide message id.

Size and object count are limited on every path (``limits.max_bundle_bytes``,
``limits.max_objects``): ``make_submission`` refuses before signing (the CLI, the TAXII
front and the poller use it), the SUBMISSIONS stream refuses larger messages, and
``open_submission`` refuses again in the router (``too-large``, ``too-many-objects``) in
case the stream was configured by a process with larger limits. Every message names the
setting, the limit and the value.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from adapters import InvalidBundle, check_bundle, parse_json
from keys import (
    PrivateKey,
    PublicKey,
    SubmissionSignatureInvalid,
    sign_submission,
    verify_submission,
)

from .errors import SubmissionError

__all__ = [
    "Envelope",
    "SignedSubmission",
    "SubmissionRefused",
    "SubmissionTooLarge",
    "TooManyObjects",
    "make_submission",
    "open_submission",
    "over_object_limit",
    "over_size_limit",
]

SID_RE = re.compile(r"^[0-9a-f]{32}\Z")
_AUDIENCE_RE = re.compile(r"^(org|group):[a-z0-9][a-z0-9_-]{0,62}\Z")
MAX_CLOCK_SKEW = 300


class SubmissionTooLarge(SubmissionError):
    """The bundle, or its signed submission, is over ``limits.max_bundle_bytes``."""


class TooManyObjects(SubmissionError):
    """The bundle holds more than ``limits.max_objects`` objects."""


class SubmissionRefused(SubmissionError):
    """The router refuses a submission; ``reason`` is the code written to the log."""

    def __init__(self, reason: str, msg: str) -> None:
        super().__init__(msg)
        self.reason = reason


class Envelope(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    v: int = Field(ge=1, le=1)
    sid: str
    org: str
    iat: int
    to: tuple[str, ...] = ()
    feed: str | None = None
    via: Literal["taxii", "taxii-pull"] | None = None
    """Submitted on the member's behalf by a broker edge (signed with a broker key)."""
    bundle: dict[str, Any]

    @field_validator("sid")
    @classmethod
    def _sid(cls, value: str) -> str:
        if not SID_RE.match(value):
            raise ValueError("must be 32 lowercase hex characters")
        return value

    @field_validator("to")
    @classmethod
    def _audience(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for item in value:
            if not _AUDIENCE_RE.match(item):
                raise ValueError(f"{item!r} is not org:<id> or group:<id>")
        return value


def over_size_limit(what: str, size: int, max_bytes: int) -> str | None:
    """The error text when ``size`` bytes exceed ``limits.max_bundle_bytes``, else None."""
    if size <= max_bytes:
        return None
    return (
        f"{what} is {size:,} bytes, over the size limit of {max_bytes:,} bytes "
        "(limits.max_bundle_bytes)"
    )


def over_object_limit(what: str, bundle: Any, max_objects: int) -> str | None:
    """The error text when a bundle holds more than ``limits.max_objects`` objects."""
    objects = bundle.get("objects") if isinstance(bundle, Mapping) else None
    if not isinstance(objects, list) or len(objects) <= max_objects:
        return None
    return (
        f"{what} holds {len(objects):,} objects, over the limit of {max_objects:,} per bundle "
        "(limits.max_objects)"
    )


@dataclass(frozen=True, slots=True)
class SignedSubmission:
    sid: str
    token: bytes


def parse_audience(text: str | None) -> tuple[str, ...]:
    """``"org:ec3,group:op-x"`` -> ``("org:ec3", "group:op-x")``; bare ids mean ``org:``."""
    if not text:
        return ()
    out = []
    for raw in text.split(","):
        item = raw.strip()
        if not item:
            continue
        if ":" not in item:
            item = f"org:{item}"
        if not _AUDIENCE_RE.match(item):
            raise SubmissionError(f"--to: {item!r} is not org:<id> or group:<id>")
        out.append(item)
    return tuple(out)


def make_submission(
    bundle: bytes | bytearray | memoryview | dict[str, Any],
    *,
    org: str,
    key: PrivateKey,
    to: tuple[str, ...],
    feed: str | None,
    now: int,
    max_bytes: int,
    max_objects: int,
    source: str = "bundle",
    via: Literal["taxii", "taxii-pull"] | None = None,
) -> SignedSubmission:
    """Check ``bundle`` and sign it for ``org``; errors say what and where.

    ``bundle`` is the bundle's JSON, or the bundle already parsed (by ``parse_json``, so
    integers are exact): the TAXII front parses each envelope once and hands it on. The size
    limit applies to the JSON given and to the signed submission.

    With ``via`` the submission is made on the member's behalf by a broker edge (the TAXII
    server or poller) and ``key`` is a broker signing key listed in the directory.
    """
    if isinstance(bundle, bytes | bytearray | memoryview):
        raw = bytes(bundle)
        too_large = over_size_limit(source, len(raw), max_bytes)
        if too_large is not None:
            raise SubmissionTooLarge(too_large)
        try:
            bundle = parse_json(raw)
        except orjson.JSONDecodeError as exc:
            raise SubmissionError(f"{source}: not JSON: {exc}") from exc
    too_many = over_object_limit(source, bundle, max_objects)
    if too_many is not None:
        raise TooManyObjects(too_many)
    try:
        check_bundle(bundle, source=source, max_objects=max_objects)
    except InvalidBundle as exc:
        raise SubmissionError(str(exc)) from exc
    sid = secrets.token_hex(16)
    envelope: dict[str, Any] = {
        "v": 1,
        "sid": sid,
        "org": org,
        "iat": now,
        "to": list(to),
        "feed": feed,
        "bundle": bundle,
    }
    if via is not None:
        envelope["via"] = via
    token = sign_submission(orjson.dumps(envelope), key, org=org, now=now).encode()
    too_large = over_size_limit(f"{source}: the signed submission", len(token), max_bytes)
    if too_large is not None:
        raise SubmissionTooLarge(too_large)
    return SignedSubmission(sid=sid, token=token)


def open_submission(
    token: bytes,
    *,
    subject_org: str,
    signing_keys: dict[str, PublicKey] | None,
    now: int,
    max_age: int,
    max_objects: int,
    broker_keys: Mapping[str, PublicKey] | None = None,
    max_bytes: int | None = None,
) -> Envelope:
    """Verify and parse a submission received on ``atlas.submit.<subject_org>``.

    A member signs its own submissions. A broker edge (TAXII) signs on a member's behalf with
    a broker key and must say so in ``via``; a member's key can never claim ``via``.
    """
    too_large = over_size_limit("the submission", len(token), max_bytes or len(token))
    if too_large is not None:
        raise SubmissionRefused("too-large", too_large)
    if signing_keys is None:
        raise SubmissionRefused("unknown-org", f"{subject_org!r} is not in the directory")
    edge_keys = {k: v for k, v in (broker_keys or {}).items() if k not in signing_keys}
    if not signing_keys and not edge_keys:
        raise SubmissionRefused("no-signing-key", f"{subject_org!r} has no valid signing key")
    try:
        header, payload = verify_submission(token, {**signing_keys, **edge_keys})
    except SubmissionSignatureInvalid as exc:
        raise SubmissionRefused("bad-signature", str(exc)) from exc
    if header.get("org") != subject_org:
        raise SubmissionRefused(
            "org-mismatch", f"signed for {header.get('org')!r}, published as {subject_org!r}"
        )
    try:
        envelope = Envelope.model_validate_json(payload)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(p) for p in first["loc"])
        raise SubmissionRefused("malformed", f"envelope {loc}: {first['msg']}") from exc
    if envelope.org != subject_org:
        raise SubmissionRefused(
            "org-mismatch", f"envelope names {envelope.org!r}, published as {subject_org!r}"
        )
    by_edge = header.get("kid") in edge_keys
    if by_edge and envelope.via is None:
        raise SubmissionRefused("bad-signature", "signed by a broker key without saying via")
    if not by_edge and envelope.via is not None:
        raise SubmissionRefused("bad-signature", f"'via: {envelope.via}' needs a broker key")
    if envelope.iat > now + MAX_CLOCK_SKEW:
        raise SubmissionRefused("stale", f"iat {envelope.iat} lies in the future")
    if envelope.iat < now - max_age:
        raise SubmissionRefused("stale", f"iat {envelope.iat} is older than {max_age} s")
    too_many = over_object_limit("the bundle", envelope.bundle, max_objects)
    if too_many is not None:
        raise SubmissionRefused("too-many-objects", too_many)
    try:
        check_bundle(envelope.bundle, max_objects=max_objects)
    except InvalidBundle as exc:
        raise SubmissionRefused("invalid-bundle", str(exc)) from exc
    return envelope
