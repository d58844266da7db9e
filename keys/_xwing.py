"""X-Wing keys: the ML-KEM-768 + X25519 hybrid KEM of HPKE (KEM id 0x647a, "MLKEM768-X25519").

A private key is a 32-byte seed (draft-connolly-cfrg-xwing-kem, draft-ietf-hpke-pq-05
section 5): ``SHAKE256(seed, 96)`` gives the 64-byte ML-KEM-768 seed ``d || z`` (FIPS 203
``KeyGen_internal``) followed by the X25519 private scalar.  The public key is the
1184-byte ML-KEM-768 encapsulation key followed by the 32-byte X25519 public key; an
encapsulation ("ek" in JOSE) is the 1088-byte ML-KEM ciphertext followed by the 32-byte
ephemeral X25519 key.

JOSE form (draft-ietf-jose-hpke-pq-pqt-01 section 4, RFC 9964 "AKP" key type):
``{"kty": "AKP", "alg": "HPKE-9-KE", "pub": <1216 bytes>, "priv": <32-byte seed>}``,
thumbprint over ``alg``, ``kty``, ``pub`` (RFC 7638 with RFC 9964 section 5).

The algorithm name: draft-skokan-jose-hpke-pq-pqt-00 to -03 registered this suite
(MLKEM768-X25519, SHAKE256, AES-256-GCM) as ``HPKE-10-KE``; -04 renumbered the table and
the working-group draft keeps ``HPKE-9-KE`` for it, while ``HPKE-10-KE`` now names
MLKEM1024-P384.  We emit and accept only ``HPKE-9-KE``.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from typing import Any, Final, NoReturn

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hpke
from cryptography.hazmat.primitives.asymmetric import mlkem, x25519

from ._b64json import b64d, b64e
from ._errors import InvalidKey, MalformedPackage

__all__ = [
    "HPKE_ALG",
    "HPKE_KEM_NAME",
    "PUBLIC_LEN",
    "SEED_LEN",
    "XWingPrivateKey",
    "XWingPublicKey",
    "xwing_private_jwk",
    "xwing_public_from_jwk",
    "xwing_seed_from_jwk",
]

HPKE_ALG: Final = "HPKE-9-KE"
HPKE_KEM_NAME: Final = "MLKEM768-X25519"
SEED_LEN: Final = 32
_MLKEM_PUBLIC_LEN: Final = 1184
PUBLIC_LEN: Final = _MLKEM_PUBLIC_LEN + 32


def _unsupported(exc: UnsupportedAlgorithm) -> NoReturn:
    raise InvalidKey(
        "this cryptography backend has no ML-KEM-768; X-Wing keys need cryptography's "
        "standard wheels (AWS-LC or BoringSSL)"
    ) from exc


def _as_seed(value: object) -> bytes:
    if not isinstance(value, bytes | bytearray) or len(value) != SEED_LEN:
        raise InvalidKey(f"an X-Wing private key is a {SEED_LEN}-byte seed")
    return bytes(value)


class XWingPublicKey:
    """An X-Wing encapsulation key (1216 bytes), validated on construction."""

    __slots__ = ("_hpke", "_raw")
    _hpke: hpke.MLKEM768X25519PublicKey
    _raw: bytes

    def __init__(self, raw: bytes) -> None:
        if len(raw) != PUBLIC_LEN:
            raise InvalidKey(f"X-Wing public key is {len(raw)} bytes, expected {PUBLIC_LEN}")
        try:
            pq = mlkem.MLKEM768PublicKey.from_public_bytes(raw[:_MLKEM_PUBLIC_LEN])
        except UnsupportedAlgorithm as exc:
            _unsupported(exc)
        except ValueError as exc:
            raise InvalidKey("X-Wing public key has an invalid ML-KEM-768 part") from exc
        classical = x25519.X25519PublicKey.from_public_bytes(raw[_MLKEM_PUBLIC_LEN:])
        object.__setattr__(self, "_raw", bytes(raw))
        object.__setattr__(self, "_hpke", hpke.MLKEM768X25519PublicKey(pq, classical))

    def __setattr__(self, name: str, value: object) -> NoReturn:
        raise AttributeError(f"{type(self).__name__} is immutable")

    @property
    def raw(self) -> bytes:
        return self._raw

    @property
    def hpke_key(self) -> hpke.MLKEM768X25519PublicKey:
        return self._hpke


class XWingPrivateKey:
    """An X-Wing decapsulation key held as its 32-byte seed; never shown by repr."""

    __slots__ = ("_hpke", "_public", "_seed")
    _hpke: hpke.MLKEM768X25519PrivateKey
    _public: XWingPublicKey
    _seed: bytes

    def __init__(self, seed: bytes) -> None:
        seed = _as_seed(seed)
        expanded = hashlib.shake_256(seed).digest(96)
        try:
            pq = mlkem.MLKEM768PrivateKey.from_seed_bytes(expanded[:64])
        except UnsupportedAlgorithm as exc:
            _unsupported(exc)
        classical = x25519.X25519PrivateKey.from_private_bytes(expanded[64:])
        public = pq.public_key().public_bytes_raw() + classical.public_key().public_bytes_raw()
        object.__setattr__(self, "_seed", seed)
        object.__setattr__(self, "_hpke", hpke.MLKEM768X25519PrivateKey(pq, classical))
        object.__setattr__(self, "_public", XWingPublicKey(public))

    @classmethod
    def generate(cls) -> XWingPrivateKey:
        return cls(os.urandom(SEED_LEN))

    def __setattr__(self, name: str, value: object) -> NoReturn:
        raise AttributeError(f"{type(self).__name__} is immutable")

    def __repr__(self) -> str:
        return "XWingPrivateKey(<seed hidden>)"

    def __reduce__(self) -> NoReturn:
        raise TypeError("X-Wing private keys cannot be pickled")

    def public_key(self) -> XWingPublicKey:
        return self._public

    @property
    def seed(self) -> bytes:
        return self._seed

    @property
    def hpke_key(self) -> hpke.MLKEM768X25519PrivateKey:
        return self._hpke


def _member(jwk: Mapping[str, Any], name: str) -> bytes:
    value = jwk.get(name)
    if not isinstance(value, str):
        raise InvalidKey(f"AKP JWK member {name!r} is missing or not a string")
    try:
        return b64d(value, f"AKP JWK member {name!r}")
    except MalformedPackage as exc:
        raise InvalidKey(str(exc)) from exc


def xwing_public_from_jwk(jwk: Mapping[str, Any], use: str | None) -> XWingPublicKey:
    """Validate a public ``AKP`` JWK for ``HPKE-9-KE`` (an encryption key)."""
    alg = jwk.get("alg")
    if alg != HPKE_ALG:
        raise InvalidKey(f"AKP JWK alg {alg!r} is not supported (only {HPKE_ALG!r})")
    for hint in (use, jwk.get("use")):
        if hint is not None and hint != "enc":
            raise InvalidKey(f"an {HPKE_ALG} key cannot be used for {hint!r}")
    return XWingPublicKey(_member(jwk, "pub"))


def xwing_seed_from_jwk(jwk: Mapping[str, Any]) -> XWingPrivateKey:
    """Rebuild a private key from a private ``AKP`` JWK; ``pub`` must match the seed."""
    public = xwing_public_from_jwk(jwk, None)
    key = XWingPrivateKey(_member(jwk, "priv"))
    if key.public_key().raw != public.raw:
        raise InvalidKey("AKP JWK 'pub' does not belong to its 'priv' seed")
    return key


def xwing_private_jwk(key: XWingPrivateKey) -> dict[str, str]:
    """The private ``AKP`` JWK (``kty, alg, pub, priv``) of ``key``: handle with care."""
    return {
        "kty": "AKP",
        "alg": HPKE_ALG,
        "pub": b64e(key.public_key().raw),
        "priv": b64e(key.seed),
    }
