"""Compact JWS (RFC 7515) with EdDSA (Ed25519, RFC 8037) and ES256 (raw r||s)."""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Mapping
from typing import Any, Final, cast

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.utils import (
    Prehashed,
    decode_dss_signature,
    encode_dss_signature,
)

from ._b64json import Compact, b64e_bytes, b64e_pieces, dumps_compact, protected_header
from ._errors import (
    InvalidKey,
    KeyRegistryError,
    MalformedPackage,
    SignatureInvalid,
    UnknownSigningKey,
)
from ._jwk import PrivateKey, PublicKey

__all__ = ["jws_compact", "jws_sign", "jws_verify"]

_RESERVED: Final = frozenset({"alg", "kid", "crit", "b64"})
_SIG_LEN: Final = 64
_COORD_LEN: Final = 32
_ECDSA_SHA256: Final = ec.ECDSA(hashes.SHA256())
_ECDSA_PREHASHED: Final = ec.ECDSA(Prehashed(hashes.SHA256()))


@functools.lru_cache(maxsize=256)
def _encoded_header(alg: str, kid: str, typ: str) -> bytes:
    """The encoded ``{"alg", "kid", "typ"}`` header, the same for every package of a key."""
    return b64e_bytes(dumps_compact({"alg": alg, "kid": kid, "typ": typ}))


def jws_compact(
    payload: bytes | tuple[bytes | memoryview, ...],
    key: PrivateKey,
    header_extra: Mapping[str, Any] | None = None,
) -> bytes:
    """:func:`jws_sign` as ASCII bytes (no str round trip on the sealing path).

    ``payload`` may be given as parts, signed as their concatenation without it ever being
    built (``seal`` passes the claims around the serialized view this way).
    """
    if key.use != "sig":
        raise InvalidKey(f"{key.kind} key {key.thumbprint} is not a signing key")
    extra = dict(header_extra or {})
    clash = sorted(_RESERVED.intersection(extra))
    if clash:
        raise KeyRegistryError(f"header_extra may not set {', '.join(clash)}")
    typ = extra.get("typ")
    if extra.keys() == {"typ"} and isinstance(typ, str):
        encoded = _encoded_header(key.alg, key.thumbprint, typ)
    else:
        encoded = b64e_bytes(dumps_compact({"alg": key.alg, "kid": key.thumbprint, **extra}))
    parts = payload if isinstance(payload, tuple) else (payload,)
    pieces = (encoded, b".", *b64e_pieces(*parts))
    if key.kind == "ES256":
        # ECDSA hashes first, so it signs the pieces' digest: the signing input (4/3 of the
        # payload) is never copied into one buffer, only the token is.
        digest = hashlib.sha256()
        for piece in pieces:
            digest.update(piece)
        signature = _sign_digest(key, digest.digest())
        return b"".join((*pieces, b".", b64e_bytes(signature)))
    signing_input = b"".join(pieces)
    return b"".join((signing_input, b".", b64e_bytes(_sign(key, signing_input))))


def jws_sign(payload: bytes, key: PrivateKey, header_extra: Mapping[str, Any] | None = None) -> str:
    """Sign ``payload`` as a compact JWS; the header is ``alg``, ``kid`` then the extras."""
    return jws_compact(payload, key, header_extra).decode("ascii")


def _sign(key: PrivateKey, data: bytes) -> bytes:
    # Dispatch on the kind string: isinstance against cryptography's ABCs costs more.
    if key.kind == "Ed25519":
        return cast(ed25519.Ed25519PrivateKey, key._key).sign(data)
    if key.kind == "ES256":
        return _sign_digest(key, hashlib.sha256(data).digest())
    raise InvalidKey(f"{key.kind} key cannot sign")


def _sign_digest(key: PrivateKey, digest: bytes) -> bytes:
    """ES256 over a SHA-256 digest, as JWS's raw r||s."""
    der = cast(ec.EllipticCurvePrivateKey, key._key).sign(digest, _ECDSA_PREHASHED)
    r, s = decode_dss_signature(der)
    return r.to_bytes(_COORD_LEN, "big") + s.to_bytes(_COORD_LEN, "big")


def jws_verify(token: str | bytes, keys: Mapping[str, PublicKey]) -> tuple[dict[str, Any], bytes]:
    """Verify a compact JWS over the exact bytes received; return (header, payload).

    The key is chosen only by ``kid`` from ``keys``; ``alg`` must be the key's algorithm
    (for Ed25519 keys also the fully-specified ``Ed25519`` of RFC 9864).
    ``alg: none``, ``crit`` and ``b64`` (RFC 7797) are refused.
    """
    compact = Compact(token, 3, "JWS")
    header = protected_header(compact.part(0), "JWS protected header")
    alg = header.get("alg")
    if not isinstance(alg, str):
        raise MalformedPackage("JWS protected header has no string 'alg'")
    if alg.lower() == "none":
        raise SignatureInvalid("JWS alg 'none' (unsecured JWS) is refused")
    if "crit" in header:
        raise MalformedPackage("JWS header has 'crit'; no critical extensions are supported")
    if "b64" in header:
        raise MalformedPackage("JWS header has 'b64'; unencoded payloads are not supported")
    kid = header.get("kid")
    if not isinstance(kid, str):
        raise MalformedPackage("JWS protected header has no string 'kid'")
    key = keys.get(kid)
    if key is None:
        raise UnknownSigningKey(f"JWS signing key {kid!r} is not a known key")
    if key.use != "sig" or (key.alg != alg and (alg, key.kind) != ("Ed25519", "Ed25519")):
        raise SignatureInvalid(f"JWS alg {alg!r} does not match {key.kind} key {kid!r}")
    signature = compact.decode(2, "JWS signature")
    if len(signature) != _SIG_LEN:
        raise SignatureInvalid(f"JWS signature is {len(signature)} bytes, expected {_SIG_LEN}")
    # The signing input is the received bytes up to the second dot, viewed, not copied.
    _verify(key, signature, memoryview(compact.raw)[: compact.end(1)])
    return header, compact.decode(1, "JWS payload")


def _verify(key: PublicKey, signature: bytes, data: bytes | memoryview) -> None:
    raw = key._key
    try:
        if isinstance(raw, ed25519.Ed25519PublicKey):
            raw.verify(signature, data)
        elif isinstance(raw, ec.EllipticCurvePublicKey):
            r = int.from_bytes(signature[:_COORD_LEN], "big")
            s = int.from_bytes(signature[_COORD_LEN:], "big")
            raw.verify(encode_dss_signature(r, s), data, _ECDSA_SHA256)
        else:
            raise SignatureInvalid(f"{key.kind} key cannot verify")
    except InvalidSignature as exc:
        raise SignatureInvalid(
            f"JWS signature does not verify with key {key.thumbprint!r}"
        ) from exc
