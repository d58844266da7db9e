"""Compact JWE (RFC 7516) with ECDH-ES+A256KW and A256GCM only.

Key agreement is ECDH with an ephemeral key on the recipient's curve (X25519 per RFC 8037,
or P-256), the key-encryption key comes from the Concat KDF of RFC 7518 section 4.6.2
(AlgorithmID "ECDH-ES+A256KW", keydatalen 256), the random content key is wrapped with
AES key wrap (RFC 3394) and the content is sealed with AES-256-GCM whose AAD is the ASCII
of the encoded protected header.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, x25519
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.concatkdf import ConcatKDFHash
from cryptography.hazmat.primitives.keywrap import InvalidUnwrap, aes_key_unwrap, aes_key_wrap

from ._b64json import b64d, b64e, dumps_compact, protected_header, split_compact
from ._errors import (
    DecryptionFailed,
    InvalidKey,
    KeyRegistryError,
    MalformedPackage,
    WrongRecipientKey,
)
from ._jwk import PrivateKey, PublicKey

__all__ = ["JWE_ALG", "JWE_ENC", "jwe_decrypt", "jwe_encrypt"]

JWE_ALG: Final = "ECDH-ES+A256KW"
JWE_ENC: Final = "A256GCM"
_RESERVED: Final = frozenset({"alg", "enc", "kid", "epk", "zip", "crit", "apu", "apv"})
_CEK_LEN: Final = 32
_WRAPPED_LEN: Final = _CEK_LEN + 8
_IV_LEN: Final = 12
_TAG_LEN: Final = 16


def _concat_kdf(z: bytes, apu: bytes, apv: bytes) -> bytes:
    def prefixed(data: bytes) -> bytes:
        return len(data).to_bytes(4, "big") + data

    other_info = (
        prefixed(JWE_ALG.encode("ascii"))
        + prefixed(apu)
        + prefixed(apv)
        + (_CEK_LEN * 8).to_bytes(4, "big")
    )
    return ConcatKDFHash(hashes.SHA256(), _CEK_LEN, other_info).derive(z)


def _agree(ours: PrivateKey, peer: PublicKey) -> bytes:
    """ECDH shared secret Z; ValueError from a bad/low-order peer is left to the caller."""
    private, raw = ours._key, peer._key
    if isinstance(private, x25519.X25519PrivateKey) and isinstance(raw, x25519.X25519PublicKey):
        return private.exchange(raw)
    if isinstance(private, ec.EllipticCurvePrivateKey) and isinstance(
        raw, ec.EllipticCurvePublicKey
    ):
        return private.exchange(ec.ECDH(), raw)
    raise InvalidKey(f"cannot agree a key between different curves ({peer.kind})")


def jwe_encrypt(
    plaintext: bytes,
    recipient: PublicKey,
    extra_header: Mapping[str, Any] | None = None,
    *,
    apu: bytes = b"",
    apv: bytes = b"",
) -> str:
    """Encrypt to ``recipient`` as compact JWE; header ``alg, enc, kid, <extras>, epk``."""
    if recipient.use != "enc":
        raise InvalidKey(f"{recipient.kind} key {recipient.thumbprint} is not an encryption key")
    extra = dict(extra_header or {})
    clash = sorted(_RESERVED.intersection(extra))
    if clash:
        raise KeyRegistryError(f"extra_header may not set {', '.join(clash)}")
    ephemeral = PrivateKey.generate(recipient.kind)
    try:
        z = _agree(ephemeral, recipient)
    except ValueError as exc:
        raise InvalidKey(f"recipient key {recipient.thumbprint} is a low-order point") from exc
    epk = {k: v for k, v in ephemeral.public.to_jwk().items() if k in ("kty", "crv", "x", "y")}
    header: dict[str, Any] = {
        "alg": JWE_ALG,
        "enc": JWE_ENC,
        "kid": recipient.thumbprint,
        **extra,
        "epk": epk,
    }
    if apu:
        header["apu"] = b64e(apu)
    if apv:
        header["apv"] = b64e(apv)
    cek = os.urandom(_CEK_LEN)
    wrapped = aes_key_wrap(_concat_kdf(z, apu, apv), cek)
    iv = os.urandom(_IV_LEN)
    h_part = b64e(dumps_compact(header))
    sealed = AESGCM(cek).encrypt(iv, plaintext, h_part.encode("ascii"))
    ciphertext, tag = sealed[:-_TAG_LEN], sealed[-_TAG_LEN:]
    return ".".join((h_part, b64e(wrapped), b64e(iv), b64e(ciphertext), b64e(tag)))


def _optional_b64(header: Mapping[str, Any], name: str) -> bytes:
    value = header.get(name)
    if value is None:
        return b""
    if not isinstance(value, str):
        raise MalformedPackage(f"JWE header {name!r} is not a string")
    return b64d(value, f"JWE header {name!r}")


def jwe_decrypt(token: str | bytes, keys: Mapping[str, PrivateKey]) -> tuple[dict[str, Any], bytes]:
    """Decrypt a compact JWE to one of ``keys`` (kid -> key); return (header, plaintext).

    Anything but ``ECDH-ES+A256KW``/``A256GCM`` is refused, as are ``zip``, ``crit``,
    a bad ``epk`` (wrong curve, point not on the curve, low order) and wrong part lengths.
    """
    _, (h_part, k_part, iv_part, c_part, t_part) = split_compact(token, 5, "JWE")
    header = protected_header(h_part, "JWE protected header")
    if header.get("alg") != JWE_ALG:
        raise MalformedPackage(f"JWE alg {header.get('alg')!r} is not {JWE_ALG!r}")
    if header.get("enc") != JWE_ENC:
        raise MalformedPackage(f"JWE enc {header.get('enc')!r} is not {JWE_ENC!r}")
    if "zip" in header:
        raise MalformedPackage("compressed JWE ('zip') is refused")
    if "crit" in header:
        raise MalformedPackage("JWE header has 'crit'; no critical extensions are supported")
    kid = header.get("kid")
    if not isinstance(kid, str):
        raise MalformedPackage("JWE protected header has no string 'kid'")
    key = keys.get(kid)
    if key is None or key.use != "enc":
        raise WrongRecipientKey(f"JWE is encrypted to key {kid!r}, which is not one of ours")
    epk_jwk = header.get("epk")
    if not isinstance(epk_jwk, dict):
        raise MalformedPackage("JWE protected header has no 'epk' object")
    try:
        epk = PublicKey.from_jwk(epk_jwk, use="enc")
    except InvalidKey as exc:
        raise MalformedPackage(f"JWE epk is invalid: {exc}") from exc
    if epk.kind != key.kind:
        raise MalformedPackage(f"JWE epk is a {epk.crv} key, the recipient key is {key.kind}")
    apu = _optional_b64(header, "apu")
    apv = _optional_b64(header, "apv")
    wrapped = b64d(k_part, "JWE encrypted key")
    iv = b64d(iv_part, "JWE initialization vector")
    ciphertext = b64d(c_part, "JWE ciphertext")
    tag = b64d(t_part, "JWE authentication tag")
    for what, value, size in (
        ("encrypted key", wrapped, _WRAPPED_LEN),
        ("initialization vector", iv, _IV_LEN),
        ("authentication tag", tag, _TAG_LEN),
    ):
        if len(value) != size:
            raise MalformedPackage(f"JWE {what} is {len(value)} bytes, expected {size}")
    try:
        z = _agree(key, epk)
    except ValueError as exc:
        raise MalformedPackage("JWE epk is a low-order point") from exc
    try:
        cek = aes_key_unwrap(_concat_kdf(z, apu, apv), wrapped)
        plaintext = AESGCM(cek).decrypt(iv, ciphertext + tag, h_part.encode("ascii"))
    except (InvalidUnwrap, InvalidTag) as exc:
        raise DecryptionFailed("JWE content key or authentication tag does not verify") from exc
    return header, plaintext
