"""Atlas packages: a signed JWT (JWS) nested in a JWE to one recipient (RFC 7519 §5.2).

Inner JWS header ``{"alg", "kid": <broker key thumbprint>, "typ": "atlas-pkg+jwt"}``; claims
``iss, aud, rcpt_kid, jti, iat, exp, src, tlp, stix``.  Outer compact JWE
``{"alg": "ECDH-ES+A256KW", "enc": "A256GCM", "kid": <recipient key>, "cty": "JWT", "epk"}``
to an X25519/P-256 key, or ``{"alg": "HPKE-9-KE", "enc", "kid", "cty", "ek"}`` to an X-Wing
(post-quantum) key.  Each package goes to exactly one key: a recipient whose current key is
X-Wing gets only the HPKE form (the router picks the key).  docs/package-format.md is the
full specification.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import orjson

from ._b64json import ascii_bytes, loads_object
from ._errors import (
    InvalidKey,
    KeyRegistryError,
    MalformedPackage,
    PackageExpired,
    PackageReplayed,
    RevokedSigningKey,
    WrongAudience,
    WrongIssuer,
    WrongRecipientKey,
)
from ._jwe import jwe_compact, jwe_decrypt
from ._jwk import PrivateKey, PublicKey
from ._jws import jws_compact, jws_verify
from ._replay import ReplayGuard

__all__ = [
    "MAX_PACKAGE_SIZE",
    "PACKAGE_TYP",
    "BrokerKeyring",
    "OpenedPackage",
    "SealedPackage",
    "SerializedView",
    "open_package",
    "seal",
]

PACKAGE_TYP: Final = "atlas-pkg+jwt"
MAX_PACKAGE_SIZE: Final = 16 * 1024 * 1024
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")
_MAX_JTI = 128


def _default_dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


class BrokerKeyring(Mapping[str, tuple[PublicKey, int | None]]):
    """The broker's signing keys: kid (thumbprint) -> (public key, revoked_at or None)."""

    __slots__ = ("_entries", "_public")

    def __init__(self, entries: Mapping[str, tuple[PublicKey, int | None]]) -> None:
        checked: dict[str, tuple[PublicKey, int | None]] = {}
        for kid, (key, revoked_at) in entries.items():
            if kid != key.thumbprint:
                raise InvalidKey(f"key ring kid {kid!r} is not the key's thumbprint")
            if key.use != "sig":
                raise InvalidKey(f"key ring entry {kid!r} is a {key.kind} key, not a signing key")
            if revoked_at is not None and not _is_int(revoked_at):
                raise InvalidKey(f"key ring entry {kid!r}: revoked_at must be int epoch seconds")
            checked[kid] = (key, revoked_at)
        self._entries = checked
        self._public = {kid: key for kid, (key, _) in checked.items()}

    @classmethod
    def of(cls, *keys: PublicKey) -> BrokerKeyring:
        """A key ring of unrevoked keys."""
        return cls({key.thumbprint: (key, None) for key in keys})

    def __getitem__(self, kid: str) -> tuple[PublicKey, int | None]:
        return self._entries[kid]

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def public_keys(self) -> Mapping[str, PublicKey]:
        return self._public


@dataclass(frozen=True, slots=True)
class SealedPackage:
    data: bytes
    """The compact JWE as ASCII bytes, as it is published."""
    jti: str
    rcpt_kid: str
    signing_kid: str
    iat: int
    exp: int

    # Derived on request, like OpenedPackage's: the digest is the dissemination log's
    # (SHA-256 of a 64 KiB view's 117 KB token costs as much as the ES256 signature), and
    # a publisher needs the bytes, not a str.
    @property
    def token(self) -> str:
        """The compact JWE as text."""
        return self.data.decode("ascii")

    @property
    def jwe_sha256(self) -> str:
        """Hex SHA-256 of the token's ASCII bytes (what the dissemination log records)."""
        return hashlib.sha256(self.data).hexdigest()


@dataclass(frozen=True, slots=True, init=False)
class SerializedView:
    """A view serialized once (orjson), to be sealed and stored as the same bytes.

    It is made only from a dict, so its bytes are the JSON of one object, and ``seal``
    writes the claims around them without parsing them again."""

    data: bytes

    def __init__(self, view: dict[str, Any]) -> None:
        if not isinstance(view, dict):
            raise KeyRegistryError("cannot seal package: the view is not a JSON object")
        try:
            data = orjson.dumps(view)
        except orjson.JSONEncodeError as exc:
            raise KeyRegistryError(f"cannot seal package: the view is not JSON ({exc})") from exc
        object.__setattr__(self, "data", data)


@dataclass(frozen=True, slots=True)
class OpenedPackage:
    claims: dict[str, Any]
    stix: dict[str, Any]
    jti: str
    iss: str
    aud: str
    iat: int
    exp: int
    src: dict[str, Any]
    tlp: str
    rcpt_kid: str
    signing_kid: str
    jws_header: dict[str, Any]
    jwe_header: dict[str, Any]
    _token: bytes = field(repr=False)
    _inner: bytes = field(repr=False)

    # Derived on request: opening needs neither, and hashing a 64 KiB view's token
    # (117 KB) costs more than its AES-GCM and key agreement together.
    @property
    def jwe_sha256(self) -> str:
        """Hex SHA-256 of the token's bytes as received (as in the dissemination log)."""
        return hashlib.sha256(self._token).hexdigest()

    @property
    def inner_jws(self) -> str:
        """The exact signed JWT, e.g. to keep as evidence of what the broker sent."""
        return self._inner.decode("ascii")


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _src_problem(src: object) -> str | None:
    if not isinstance(src, dict):
        return "src is not an object"
    for name in ("org", "submission"):
        if not isinstance(src.get(name), str) or not src[name]:
            return f"src.{name} is missing or not a non-empty string"
    digest = src.get("sha256")
    if not isinstance(digest, str) or not _SHA256_HEX.fullmatch(digest):
        return "src.sha256 is not 64 lowercase hex digits"
    return None


TLP_LEVELS: Final = ("clear", "green", "amber", "amber+strict", "red")
"""The ``tlp`` claim: TLP 2.0 levels, lowercase, as the package format writes them."""

_CLAIMS: Final[dict[str, type]] = {
    "iss": str,
    "aud": str,
    "rcpt_kid": str,
    "jti": str,
    "tlp": str,
    "stix": dict,
}


def _claims_problem(claims: Mapping[str, Any]) -> str | None:
    for name, kind in _CLAIMS.items():
        if not isinstance(claims.get(name), kind):
            return f"claim {name!r} is missing or not a JSON {kind.__name__}"
    for name in ("iat", "exp"):
        if not _is_int(claims.get(name)):
            return f"claim {name!r} is missing or not an integer"
    if not 0 < len(claims["jti"]) <= _MAX_JTI:
        return f"claim 'jti' must have 1 to {_MAX_JTI} characters"
    if claims["tlp"] not in TLP_LEVELS:
        return f"claim 'tlp' {claims['tlp']!r} is not one of {', '.join(TLP_LEVELS)}"
    return _src_problem(claims.get("src"))


def seal(
    *,
    stix: dict[str, Any] | SerializedView,
    iss: str,
    aud: str,
    src: dict[str, Any],
    tlp: str,
    signing_key: PrivateKey,
    recipient_key: PublicKey,
    now: int,
    ttl: int,
    jti: str | None = None,
    dumps: Callable[[Any], bytes] = _default_dumps,
) -> SealedPackage:
    """Sign the recipient's view as a JWT with the broker key and encrypt it to the recipient.

    ``recipient_key`` is the one key this copy is for: X25519/P-256 (ECDH-ES+A256KW) or
    X-Wing (HPKE-9-KE); the signed ``rcpt_kid`` names it.

    ``dumps`` serializes the claims (``orjson.dumps`` is a drop-in); the receiver verifies
    the bytes as sent, so the serializer never needs to be canonical.  ``stix`` may be a
    :class:`SerializedView`: a caller that also stores the view as JSON serializes it once,
    and the claims are written around its bytes.
    """
    if signing_key.use != "sig":
        raise InvalidKey(f"signing_key is a {signing_key.kind} key, not a signing key")
    if recipient_key.use != "enc":
        raise InvalidKey(f"recipient_key is a {recipient_key.kind} key, not an encryption key")
    if not _is_int(now) or not _is_int(ttl) or ttl <= 0:
        raise KeyRegistryError("now must be int epoch seconds and ttl a positive int")
    claims: dict[str, Any] = {
        "iss": iss,
        "aud": aud,
        "rcpt_kid": recipient_key.thumbprint,
        "jti": secrets.token_urlsafe(16) if jti is None else jti,
        "iat": now,
        "exp": now + ttl,
        "src": src,
        "tlp": tlp,
        "stix": {} if isinstance(stix, SerializedView) else stix,
    }
    problem = _claims_problem(claims)
    if problem is not None:
        raise KeyRegistryError(f"cannot seal package: {problem}")
    try:
        serialized = dumps(claims)
    except (TypeError, ValueError) as exc:  # orjson.JSONEncodeError is a TypeError
        raise KeyRegistryError(f"cannot seal package: claims are not JSON ({exc})") from exc
    payload: bytes | tuple[memoryview, bytes, bytes] = serialized
    if isinstance(stix, SerializedView):
        payload = _spliced(serialized, stix.data)
    inner = jws_compact(payload, signing_key, {"typ": PACKAGE_TYP})
    token = jwe_compact(inner, recipient_key, {"cty": "JWT"})
    return SealedPackage(
        data=token,
        jti=claims["jti"],
        rcpt_kid=recipient_key.thumbprint,
        signing_kid=signing_key.thumbprint,
        iat=now,
        exp=claims["exp"],
    )


def _spliced(payload: object, stix: bytes) -> tuple[memoryview, bytes, bytes]:
    """Claims serialized with ``"stix": {}`` last, the serialized view put in its place:
    as parts, which the JWS signs and encodes without joining them first."""
    if not isinstance(payload, bytes) or not payload.endswith(b'"stix":{}}'):
        raise KeyRegistryError("cannot seal package: dumps must write compact JSON bytes")
    return (memoryview(payload)[:-3], stix, b"}")


def _typ_ok(typ: object) -> bool:
    # RFC 7515 4.1.9: media type names are case-insensitive, "application/" may be omitted.
    if not isinstance(typ, str):
        return False
    typ = typ.lower()
    return typ in (PACKAGE_TYP, "application/" + PACKAGE_TYP)


def open_package(
    token: str | bytes,
    *,
    recipient: str,
    decryption_keys: Mapping[str, PrivateKey],
    broker_keys: BrokerKeyring,
    now: int,
    replay: ReplayGuard | None,
    leeway: int = 60,
    issuer: str | None = None,
    mark_seen: bool = True,
    max_size: int = MAX_PACKAGE_SIZE,
) -> OpenedPackage:
    """Decrypt, verify and check a package addressed to organisation ``recipient``.

    Order: size, JWE decrypt, ``cty``, JWS verify against ``broker_keys``, claims,
    revocation (revoked at or before ``iat``), ``typ``, ``iss`` (when ``issuer`` is given),
    ``aud``, ``rcpt_kid``, ``iat`` not in the future, ``exp``, replay.  With
    ``mark_seen=False`` the caller adds ``jti`` to ``replay`` itself once the package is
    durably handled (so a crash in between does not drop a redelivered package).
    """
    if len(token) > max_size:
        raise MalformedPackage(f"package is {len(token)} bytes, more than {max_size}")
    raw = ascii_bytes(token, "JWE")
    jwe_header, inner = jwe_decrypt(raw, decryption_keys)
    if jwe_header.get("cty") != "JWT":
        raise MalformedPackage(f"JWE cty {jwe_header.get('cty')!r} is not 'JWT'")
    jws_header, payload = jws_verify(inner, broker_keys.public_keys)
    claims = loads_object(payload, "package claims")
    problem = _claims_problem(claims)
    if problem is not None:
        raise MalformedPackage(f"package claims: {problem}")
    signing_kid: str = jws_header["kid"]
    revoked_at = broker_keys[signing_kid][1]
    if revoked_at is not None and revoked_at <= claims["iat"]:
        raise RevokedSigningKey(
            f"broker key {signing_kid!r} was revoked at {revoked_at}, "
            f"at or before the package's iat {claims['iat']}"
        )
    if not _typ_ok(jws_header.get("typ")):
        raise MalformedPackage(f"JWT typ {jws_header.get('typ')!r} is not {PACKAGE_TYP!r}")
    if issuer is not None and claims["iss"] != issuer:
        raise WrongIssuer(f"package iss {claims['iss']!r} is not {issuer!r}")
    if claims["aud"] != recipient:
        raise WrongAudience(f"package is addressed to {claims['aud']!r}, not {recipient!r}")
    if claims["rcpt_kid"] != jwe_header["kid"]:
        raise WrongRecipientKey(
            f"package was signed for key {claims['rcpt_kid']!r} but encrypted to "
            f"{jwe_header['kid']!r} (forwarded or re-encrypted)"
        )
    if claims["iat"] > now + leeway:
        raise MalformedPackage(f"package iat {claims['iat']} is in the future (now {now})")
    if claims["exp"] + leeway <= now:
        raise PackageExpired(f"package expired at {claims['exp']} (now {now})")
    jti: str = claims["jti"]
    if replay is not None:
        if replay.seen(jti, claims["exp"]):
            raise PackageReplayed(f"package {jti!r} was already opened")
        if mark_seen:
            replay.add(jti, claims["exp"])
    return OpenedPackage(
        claims=claims,
        stix=claims["stix"],
        jti=jti,
        iss=claims["iss"],
        aud=claims["aud"],
        iat=claims["iat"],
        exp=claims["exp"],
        src=claims["src"],
        tlp=claims["tlp"],
        rcpt_kid=claims["rcpt_kid"],
        signing_kid=signing_kid,
        jws_header=jws_header,
        jwe_header=jwe_header,
        _token=raw,
        _inner=inner,
    )
