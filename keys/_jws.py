"""Compact JWS (RFC 7515) with EdDSA (Ed25519, RFC 8037) and ES256 (raw r||s)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)

from ._b64json import b64d, b64e, dumps_compact, protected_header, split_compact
from ._errors import (
    InvalidKey,
    KeyRegistryError,
    MalformedPackage,
    SignatureInvalid,
    UnknownSigningKey,
)
from ._jwk import PrivateKey, PublicKey

__all__ = ["jws_sign", "jws_verify"]

_RESERVED: Final = frozenset({"alg", "kid", "crit", "b64"})
_SIG_LEN: Final = 64
_COORD_LEN: Final = 32


def jws_sign(payload: bytes, key: PrivateKey, header_extra: Mapping[str, Any] | None = None) -> str:
    """Sign ``payload`` as a compact JWS; the header is ``alg``, ``kid`` then the extras."""
    if key.use != "sig":
        raise InvalidKey(f"{key.kind} key {key.thumbprint} is not a signing key")
    extra = dict(header_extra or {})
    clash = sorted(_RESERVED.intersection(extra))
    if clash:
        raise KeyRegistryError(f"header_extra may not set {', '.join(clash)}")
    header = {"alg": key.alg, "kid": key.thumbprint, **extra}
    signing_input = b64e(dumps_compact(header)) + "." + b64e(payload)
    signature = _sign(key, signing_input.encode("ascii"))
    return signing_input + "." + b64e(signature)


def _sign(key: PrivateKey, data: bytes) -> bytes:
    raw = key._key
    if isinstance(raw, ed25519.Ed25519PrivateKey):
        return raw.sign(data)
    if isinstance(raw, ec.EllipticCurvePrivateKey):
        r, s = decode_dss_signature(raw.sign(data, ec.ECDSA(hashes.SHA256())))
        return r.to_bytes(_COORD_LEN, "big") + s.to_bytes(_COORD_LEN, "big")
    raise InvalidKey(f"{key.kind} key cannot sign")


def jws_verify(token: str | bytes, keys: Mapping[str, PublicKey]) -> tuple[dict[str, Any], bytes]:
    """Verify a compact JWS over the exact bytes received; return (header, payload).

    The key is chosen only by ``kid`` from ``keys``; ``alg`` must be the key's algorithm
    (for Ed25519 keys also the fully-specified ``Ed25519`` of RFC 9864).
    ``alg: none``, ``crit`` and ``b64`` (RFC 7797) are refused.
    """
    text, (h_part, p_part, s_part) = split_compact(token, 3, "JWS")
    header = protected_header(h_part, "JWS protected header")
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
    signature = b64d(s_part, "JWS signature")
    if len(signature) != _SIG_LEN:
        raise SignatureInvalid(f"JWS signature is {len(signature)} bytes, expected {_SIG_LEN}")
    signing_input = text[: len(h_part) + 1 + len(p_part)].encode("ascii")
    _verify(key, signature, signing_input)
    return header, b64d(p_part, "JWS payload")


def _verify(key: PublicKey, signature: bytes, data: bytes) -> None:
    raw = key._key
    try:
        if isinstance(raw, ed25519.Ed25519PublicKey):
            raw.verify(signature, data)
        elif isinstance(raw, ec.EllipticCurvePublicKey):
            r = int.from_bytes(signature[:_COORD_LEN], "big")
            s = int.from_bytes(signature[_COORD_LEN:], "big")
            raw.verify(encode_dss_signature(r, s), data, ec.ECDSA(hashes.SHA256()))
        else:
            raise SignatureInvalid(f"{key.kind} key cannot verify")
    except InvalidSignature as exc:
        raise SignatureInvalid(
            f"JWS signature does not verify with key {key.thumbprint!r}"
        ) from exc
