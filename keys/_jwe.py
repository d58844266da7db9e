"""Compact JWE (RFC 7516): ECDH-ES+A256KW or HPKE-9-KE key management, A256GCM content.

ECDH-ES+A256KW: key agreement is ECDH with an ephemeral key on the recipient's curve
(X25519 per RFC 8037, or P-256), the key-encryption key comes from the Concat KDF of
RFC 7518 section 4.6.2 (AlgorithmID "ECDH-ES+A256KW", keydatalen 256) and the random
content key is wrapped with AES key wrap (RFC 3394).

HPKE-9-KE (X-Wing recipients): Key Encryption of draft-ietf-jose-hpke-encrypt-20
section 6 with the suite of draft-ietf-jose-hpke-pq-pqt-01 section 3.3 (KEM
MLKEM768-X25519 0x647a, KDF SHAKE256 0x0011, AEAD AES-256-GCM 0x0002), HPKE base mode
(draft-ietf-hpke-hpke single-shot Seal): the HPKE plaintext is the content key, the HPKE
``info`` is the Recipient_structure ``"JOSE-HPKE rcpt" || 0xFF || "A256GCM" || 0xFF``
(no recipient_extra_info), the HPKE ``aad`` is empty, the encapsulated secret travels
base64url-encoded in the protected header parameter ``ek`` and the HPKE ciphertext
(content key + 16-byte tag) is the JWE Encrypted Key.  ``psk_id`` (PSK mode) is refused.

Either way the content is sealed with AES-256-GCM whose AAD is the ASCII of the encoded
protected header, so ``ek``/``epk`` and every other header member are authenticated.
"""

from __future__ import annotations

import functools
import hashlib
import os
from collections.abc import Mapping
from typing import Any, Final, cast

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hpke, serialization
from cryptography.hazmat.primitives.asymmetric import ec, x25519
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.keywrap import InvalidUnwrap, aes_key_unwrap, aes_key_wrap

from ._b64json import (
    Compact,
    b64d,
    b64e,
    b64e_bytes,
    b64e_pieces,
    dumps_compact,
    protected_header,
)
from ._errors import (
    DecryptionFailed,
    InvalidKey,
    KeyNotHeld,
    KeyRegistryError,
    MalformedPackage,
)
from ._jwk import PrivateKey, PublicKey
from ._xwing import HPKE_ALG, XWingPrivateKey, XWingPublicKey

__all__ = [
    "HPKE_ALG",
    "HPKE_INFO",
    "JWE_ALG",
    "JWE_ENC",
    "jwe_compact",
    "jwe_decrypt",
    "jwe_encrypt",
]

JWE_ALG: Final = "ECDH-ES+A256KW"
JWE_ENC: Final = "A256GCM"
HPKE_INFO: Final = b"JOSE-HPKE rcpt\xff" + JWE_ENC.encode("ascii") + b"\xff"
_HPKE_SUITE: Final = hpke.Suite(hpke.KEM.MLKEM768_X25519, hpke.KDF.SHAKE256, hpke.AEAD.AES_256_GCM)
_HPKE_ENC_LEN: Final = 1120
_RESERVED: Final = frozenset(
    {"alg", "enc", "kid", "epk", "zip", "crit", "apu", "apv", "ek", "psk_id"}
)
# Members that belong to the other key-management algorithm and are refused.
_FOREIGN: Final[dict[str, tuple[str, ...]]] = {
    JWE_ALG: ("ek", "psk_id"),
    HPKE_ALG: ("epk", "apu", "apv", "psk_id"),
}
_ECDH: Final = ec.ECDH()
_CEK_LEN: Final = 32
_WRAPPED_LEN: Final = _CEK_LEN + 8
_HPKE_WRAPPED_LEN: Final = _CEK_LEN + 16
_IV_LEN: Final = 12
_TAG_LEN: Final = 16


def _prefixed(data: bytes) -> bytes:
    return len(data).to_bytes(4, "big") + data


_ALG_ID: Final = _prefixed(JWE_ALG.encode("ascii"))
_KEYDATALEN: Final = (_CEK_LEN * 8).to_bytes(4, "big")
_OTHER_INFO_NO_APU_APV: Final = _ALG_ID + _prefixed(b"") + _prefixed(b"") + _KEYDATALEN


def _concat_kdf(z: bytes, apu: bytes, apv: bytes) -> bytes:
    """The Concat KDF of RFC 7518 section 4.6.2 with SHA-256 for a 256-bit key.

    One round: ``SHA-256(00000001 || Z || OtherInfo)`` is the whole KEK (NIST SP 800-56A
    single-step KDF), the value ``ConcatKDFHash`` derives (a test holds them equal)
    without building its three objects per package.
    """
    if apu or apv:
        other_info = _ALG_ID + _prefixed(apu) + _prefixed(apv) + _KEYDATALEN
    else:
        other_info = _OTHER_INFO_NO_APU_APV
    return hashlib.sha256(b"\x00\x00\x00\x01" + z + other_info).digest()


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


# The wrap functions write their header members as compact JSON text directly: every
# value is base64url or a fixed name, which JSON writes as is, so the text is what
# dumps_compact would give (a test holds them equal) at a fraction of its cost.


def _wrap_ecdh(cek: bytes, recipient: PublicKey, apu: bytes, apv: bytes) -> tuple[str, bytes]:
    # The ephemeral key is made on the raw primitives: no PublicKey, no thumbprint.
    if recipient.kind == "X25519":
        ephemeral = x25519.X25519PrivateKey.generate()
        try:
            z = ephemeral.exchange(cast(x25519.X25519PublicKey, recipient._key))
        except ValueError as exc:
            raise InvalidKey(f"recipient key {recipient.thumbprint} is a low-order point") from exc
        x = b64e(ephemeral.public_key().public_bytes_raw())
        trailer = f'"epk":{{"kty":"OKP","crv":"X25519","x":"{x}"}}'
    else:
        # An encryption key that is neither X25519 nor X-Wing is a P-256 key.
        ec_peer = cast(ec.EllipticCurvePublicKey, recipient._key)
        ec_ephemeral = ec.generate_private_key(ec.SECP256R1())
        z = ec_ephemeral.exchange(_ECDH, ec_peer)
        point = ec_ephemeral.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
        x, y = b64e(point[1:33]), b64e(point[33:])
        trailer = f'"epk":{{"kty":"EC","crv":"P-256","x":"{x}","y":"{y}"}}'
    if apu:
        trailer += f',"apu":"{b64e(apu)}"'
    if apv:
        trailer += f',"apv":"{b64e(apv)}"'
    return trailer, aes_key_wrap(_concat_kdf(z, apu, apv), cek)


def _wrap_hpke(cek: bytes, recipient: PublicKey, raw: XWingPublicKey) -> tuple[str, bytes]:
    try:
        sealed = _HPKE_SUITE.encrypt(cek, raw.hpke_key, info=HPKE_INFO)
    except ValueError as exc:  # the X25519 half is a low-order point
        raise InvalidKey(f"recipient key {recipient.thumbprint} is unusable: {exc}") from exc
    return f'"ek":"{b64e(sealed[:_HPKE_ENC_LEN])}"', sealed[_HPKE_ENC_LEN:]


@functools.lru_cache(maxsize=256)
def _header_start(alg: str, kid: str, extra: tuple[tuple[str, str], ...]) -> bytes:
    """``{"alg","enc","kid",<extras>`` without its closing brace: fixed per key and extras."""
    return dumps_compact({"alg": alg, "enc": JWE_ENC, "kid": kid, **dict(extra)})[:-1]


def jwe_encrypt(
    plaintext: bytes,
    recipient: PublicKey,
    extra_header: Mapping[str, Any] | None = None,
    *,
    apu: bytes = b"",
    apv: bytes = b"",
) -> str:
    """Encrypt to ``recipient`` as compact JWE (see :func:`jwe_compact`)."""
    return jwe_compact(plaintext, recipient, extra_header, apu=apu, apv=apv).decode("ascii")


def jwe_compact(
    plaintext: bytes,
    recipient: PublicKey,
    extra_header: Mapping[str, Any] | None = None,
    *,
    apu: bytes = b"",
    apv: bytes = b"",
) -> bytes:
    """Encrypt to ``recipient`` as compact JWE, returned as ASCII bytes.

    Header ``alg, enc, kid, <extras>`` then ``epk`` (and ``apu``/``apv`` when given) for
    X25519/P-256 recipients, or ``ek`` for X-Wing recipients (``alg: HPKE-9-KE``; HPKE
    takes no ``apu``/``apv``).
    """
    if recipient.use != "enc":
        raise InvalidKey(f"{recipient.kind} key {recipient.thumbprint} is not an encryption key")
    extra = dict(extra_header or {})
    clash = sorted(_RESERVED.intersection(extra))
    if clash:
        raise KeyRegistryError(f"extra_header may not set {', '.join(clash)}")
    cek = os.urandom(_CEK_LEN)
    raw = recipient._key
    if isinstance(raw, XWingPublicKey):
        if apu or apv:
            raise KeyRegistryError(f"apu/apv are not used with {HPKE_ALG}")
        trailer, encrypted_key = _wrap_hpke(cek, recipient, raw)
    else:
        trailer, encrypted_key = _wrap_ecdh(cek, recipient, apu, apv)
    items = tuple(extra.items())
    if all(isinstance(value, str) for _, value in items):
        start = _header_start(recipient.alg, recipient.thumbprint, items)
    else:
        fixed = {"alg": recipient.alg, "enc": JWE_ENC, "kid": recipient.thumbprint, **extra}
        start = dumps_compact(fixed)[:-1]
    iv = os.urandom(_IV_LEN)
    h_part = b64e_bytes(b"".join((start, b",", trailer.encode("ascii"), b"}")))
    sealed = memoryview(AESGCM(cek).encrypt(iv, plaintext, h_part))
    ciphertext, tag = sealed[:-_TAG_LEN], sealed[-_TAG_LEN:]
    # One join builds the token: no intermediate copy of the encoded ciphertext.
    return b"".join(
        (
            h_part,
            b".",
            b64e_bytes(encrypted_key),
            b".",
            b64e_bytes(iv),
            b".",
            *b64e_pieces(ciphertext),
            b".",
            b64e_bytes(tag),
        )
    )


def _optional_b64(header: Mapping[str, Any], name: str) -> bytes:
    value = header.get(name)
    if value is None:
        return b""
    if not isinstance(value, str):
        raise MalformedPackage(f"JWE header {name!r} is not a string")
    return b64d(value, f"JWE header {name!r}")


def _check_size(what: str, value: bytes, size: int) -> None:
    if len(value) != size:
        raise MalformedPackage(f"JWE {what} is {len(value)} bytes, expected {size}")


def _unwrap_ecdh(header: Mapping[str, Any], key: PrivateKey, wrapped: bytes) -> bytes:
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
    _check_size("encrypted key", wrapped, _WRAPPED_LEN)
    try:
        z = _agree(key, epk)
    except ValueError as exc:
        raise MalformedPackage("JWE epk is a low-order point") from exc
    try:
        return aes_key_unwrap(_concat_kdf(z, apu, apv), wrapped)
    except InvalidUnwrap as exc:
        raise DecryptionFailed("JWE content key does not verify (key unwrap failed)") from exc


def _unwrap_hpke(header: Mapping[str, Any], key: XWingPrivateKey, wrapped: bytes) -> bytes:
    if not isinstance(header.get("ek"), str):
        raise MalformedPackage("JWE protected header has no string 'ek'")
    encapsulated = _optional_b64(header, "ek")
    _check_size("encapsulated secret 'ek'", encapsulated, _HPKE_ENC_LEN)
    _check_size("encrypted key", wrapped, _HPKE_WRAPPED_LEN)
    try:
        return _HPKE_SUITE.decrypt(encapsulated + wrapped, key.hpke_key, info=HPKE_INFO)
    except (InvalidTag, ValueError) as exc:
        raise DecryptionFailed("JWE content key does not verify (HPKE open failed)") from exc


def jwe_decrypt(token: str | bytes, keys: Mapping[str, PrivateKey]) -> tuple[dict[str, Any], bytes]:
    """Decrypt a compact JWE to one of ``keys`` (kid -> key); return (header, plaintext).

    Only ``ECDH-ES+A256KW`` (X25519/P-256 keys) and ``HPKE-9-KE`` (X-Wing keys) with
    ``A256GCM`` are accepted, and ``alg`` must be the algorithm of the key ``kid`` names.
    Refused: ``zip``, ``crit``, ``psk_id``, members of the other algorithm (``ek`` with
    ECDH, ``epk``/``apu``/``apv`` with HPKE), a bad ``epk`` (wrong curve, point not on
    the curve, low order) and wrong part lengths.
    """
    compact = Compact(token, 5, "JWE")
    h_part = compact.part(0)
    header = protected_header(h_part, "JWE protected header")
    alg = header.get("alg")
    if alg not in _FOREIGN:
        raise MalformedPackage(f"JWE alg {alg!r} is not {JWE_ALG!r} or {HPKE_ALG!r}")
    if header.get("enc") != JWE_ENC:
        raise MalformedPackage(f"JWE enc {header.get('enc')!r} is not {JWE_ENC!r}")
    if "zip" in header:
        raise MalformedPackage("compressed JWE ('zip') is refused")
    if "crit" in header:
        raise MalformedPackage("JWE header has 'crit'; no critical extensions are supported")
    foreign = [name for name in _FOREIGN[alg] if name in header]
    if foreign:
        raise MalformedPackage(f"JWE header member(s) {', '.join(foreign)} not used with {alg}")
    kid = header.get("kid")
    if not isinstance(kid, str):
        raise MalformedPackage("JWE protected header has no string 'kid'")
    key = keys.get(kid)
    if key is None or key.use != "enc":
        raise KeyNotHeld(f"JWE is encrypted to key {kid!r}, which is not one of ours")
    if key.alg != alg:
        raise MalformedPackage(f"JWE alg {alg!r} does not fit our {key.kind} key {kid!r}")
    encrypted_key = compact.decode(1, "JWE encrypted key")
    iv = compact.decode(2, "JWE initialization vector")
    ciphertext = compact.decode_pieces(3, "JWE ciphertext")
    tag = compact.decode(4, "JWE authentication tag")
    _check_size("initialization vector", iv, _IV_LEN)
    _check_size("authentication tag", tag, _TAG_LEN)
    raw = key._key
    if isinstance(raw, XWingPrivateKey):
        cek = _unwrap_hpke(header, raw, encrypted_key)
    else:
        cek = _unwrap_ecdh(header, key, encrypted_key)
    try:
        # AES-GCM takes ciphertext || tag: one join, which also joins the decoded pieces.
        plaintext = AESGCM(cek).decrypt(iv, b"".join((*ciphertext, tag)), h_part)
    except InvalidTag as exc:
        raise DecryptionFailed("JWE authentication tag does not verify") from exc
    return header, plaintext
