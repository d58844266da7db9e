"""Public and private keys, their JWK form and RFC 7638 thumbprints.

Five kinds of key are supported:

========  ========  =====  ==================
kind      JWK       use    alg
========  ========  =====  ==================
Ed25519   OKP       sig    EdDSA
ES256     EC P-256  sig    ES256
X25519    OKP       enc    ECDH-ES+A256KW
P-256     EC P-256  enc    ECDH-ES+A256KW
X-Wing    AKP       enc    HPKE-9-KE
========  ========  =====  ==================

X-Wing is the post-quantum hybrid ML-KEM-768 + X25519 (see ``_xwing``); its JWK is the
RFC 9964 "AKP" form with ``pub`` and its thumbprint hashes ``alg``, ``kty`` and ``pub``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any, Final, Literal, NoReturn, TypeAlias, get_args

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, x25519
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

from ._b64json import b64d, b64e
from ._canonical import canonical_json
from ._errors import InvalidKey, MalformedPackage
from ._xwing import (
    HPKE_ALG,
    HPKE_KEM_NAME,
    XWingPrivateKey,
    XWingPublicKey,
    xwing_public_from_jwk,
)

__all__ = ["KeyKind", "KeyUse", "PrivateKey", "PublicKey", "jwk_thumbprint"]

KeyKind: TypeAlias = Literal["Ed25519", "ES256", "X25519", "P-256", "X-Wing"]
KeyUse: TypeAlias = Literal["sig", "enc"]
_PublicCrypto: TypeAlias = (
    ed25519.Ed25519PublicKey | x25519.X25519PublicKey | ec.EllipticCurvePublicKey | XWingPublicKey
)
_PrivateCrypto: TypeAlias = (
    ed25519.Ed25519PrivateKey
    | x25519.X25519PrivateKey
    | ec.EllipticCurvePrivateKey
    | XWingPrivateKey
)

# kind -> (kty, crv (the HPKE KEM name for AKP), use, alg)
_KINDS: Final[dict[str, tuple[str, str, KeyUse, str]]] = {
    "Ed25519": ("OKP", "Ed25519", "sig", "EdDSA"),
    "ES256": ("EC", "P-256", "sig", "ES256"),
    "X25519": ("OKP", "X25519", "enc", "ECDH-ES+A256KW"),
    "P-256": ("EC", "P-256", "enc", "ECDH-ES+A256KW"),
    "X-Wing": ("AKP", HPKE_KEM_NAME, "enc", HPKE_ALG),
}
_ALG_USE: Final[dict[str, KeyUse]] = {
    "EdDSA": "sig",
    "Ed25519": "sig",
    "ES256": "sig",
    "ECDH-ES+A256KW": "enc",
    "ECDH-ES": "enc",
    HPKE_ALG: "enc",
}
# "alg" values a published JWK may carry for each kind (RFC 9864 "Ed25519" included).
_JWK_ALGS: Final[dict[str, frozenset[str]]] = {
    "Ed25519": frozenset({"EdDSA", "Ed25519"}),
    "ES256": frozenset({"ES256"}),
    "X25519": frozenset({"ECDH-ES+A256KW", "ECDH-ES"}),
    "P-256": frozenset({"ECDH-ES+A256KW", "ECDH-ES"}),
    "X-Wing": frozenset({HPKE_ALG}),
}
_THUMBPRINT_MEMBERS: Final[dict[str, tuple[str, ...]]] = {
    "AKP": ("alg", "kty", "pub"),
    "EC": ("crv", "kty", "x", "y"),
    "OKP": ("crv", "kty", "x"),
    "RSA": ("e", "kty", "n"),
    "oct": ("k", "kty"),
}
_PRIVATE_MEMBERS: Final = ("d", "p", "q", "dp", "dq", "qi", "oth", "k", "priv")


def jwk_thumbprint(jwk: Mapping[str, Any]) -> str:
    """RFC 7638 JWK thumbprint (SHA-256, base64url) of any AKP, EC, OKP, RSA or oct JWK."""
    kty = jwk.get("kty")
    if not isinstance(kty, str) or kty not in _THUMBPRINT_MEMBERS:
        raise InvalidKey(f"JWK kty {kty!r} is not one of AKP, EC, OKP, RSA, oct")
    required = {}
    for name in _THUMBPRINT_MEMBERS[kty]:
        value = jwk.get(name)
        if not isinstance(value, str):
            raise InvalidKey(f"{kty} JWK member {name!r} is missing or not a string")
        required[name] = value
    return b64e(hashlib.sha256(canonical_json(required)).digest())


def _kind_for(crv: str, use: KeyUse) -> KeyKind:
    for kind, (_, k_crv, k_use, _) in _KINDS.items():
        if k_crv == crv and k_use == use:
            return kind  # type: ignore[return-value]
    raise InvalidKey(f"curve {crv} cannot be used for {use!r}")


def _coord(jwk: Mapping[str, Any], name: str, crv: str) -> bytes:
    value = jwk.get(name)
    if not isinstance(value, str):
        raise InvalidKey(f"{crv} JWK member {name!r} is missing or not a string")
    try:
        raw = b64d(value, f"{crv} JWK member {name!r}")
    except MalformedPackage as exc:
        raise InvalidKey(str(exc)) from exc
    if len(raw) != 32:
        raise InvalidKey(f"{crv} JWK member {name!r} is {len(raw)} bytes, expected 32")
    return raw


def _resolve_use(jwk: Mapping[str, Any], crv: str, use: KeyUse | None) -> KeyUse:
    hints: list[KeyUse] = []
    if use is not None:
        hints.append(use)
    jwk_use = jwk.get("use")
    if jwk_use is not None:
        if jwk_use not in get_args(KeyUse):
            raise InvalidKey(f"JWK use {jwk_use!r} is not 'sig' or 'enc'")
        hints.append(jwk_use)
    alg = jwk.get("alg")
    if alg is not None:
        if alg not in _ALG_USE:
            raise InvalidKey(f"JWK alg {alg!r} is not supported")
        hints.append(_ALG_USE[alg])
    if crv == "Ed25519":
        hints.append("sig")
    elif crv == "X25519":
        hints.append("enc")
    if not hints:
        raise InvalidKey(f"{crv} JWK needs 'use' or 'alg' to tell signing from encryption")
    if len(set(hints)) != 1:
        raise InvalidKey(f"{crv} JWK has contradictory use/alg ({', '.join(hints)})")
    kind = _kind_for(crv, hints[0])
    if alg is not None and alg not in _JWK_ALGS[kind]:
        raise InvalidKey(f"JWK alg {alg!r} does not fit a {crv} key")
    return hints[0]


def _kind_of_crypto(key: _PublicCrypto, use: KeyUse | None) -> KeyKind:
    if isinstance(key, ed25519.Ed25519PublicKey):
        kind: KeyKind = "Ed25519"
    elif isinstance(key, x25519.X25519PublicKey):
        kind = "X25519"
    elif isinstance(key, XWingPublicKey):
        kind = "X-Wing"
    elif isinstance(key, ec.EllipticCurvePublicKey):
        if not isinstance(key.curve, ec.SECP256R1):
            raise InvalidKey(f"unsupported curve {key.curve.name}; only P-256 is supported")
        if use is None:
            raise InvalidKey("a P-256 key needs use='sig' or use='enc'")
        return _kind_for("P-256", use)
    else:
        raise InvalidKey(f"unsupported key type {type(key).__name__}")
    if use is not None and use != _KINDS[kind][2]:
        raise InvalidKey(f"an {kind} key cannot be used for {use!r}")
    return kind


class PublicKey:
    """An immutable public key of one of the supported kinds."""

    __slots__ = ("_jwk", "_key", "_kind", "_thumbprint")
    _key: _PublicCrypto
    _kind: KeyKind
    _jwk: dict[str, str]
    _thumbprint: str | None

    def __init__(self, key: _PublicCrypto, kind: KeyKind) -> None:
        """Prefer :meth:`from_jwk` / :meth:`from_cryptography`; ``kind`` must fit ``key``."""
        try:
            fits = kind in _KINDS and _kind_of_crypto(key, _KINDS[kind][2]) == kind
        except InvalidKey:
            fits = False
        if not fits:
            raise InvalidKey(f"a {type(key).__name__} is not a {kind!r} key")
        kty, crv, _, alg = _KINDS[kind]
        jwk = {"kty": kty, "crv": crv}
        if isinstance(key, XWingPublicKey):
            jwk = {"kty": kty, "alg": alg, "pub": b64e(key.raw)}
        elif isinstance(key, ec.EllipticCurvePublicKey):
            point = key.public_bytes(
                serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
            )
            jwk["x"], jwk["y"] = b64e(point[1:33]), b64e(point[33:])
        else:
            raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
            jwk["x"] = b64e(raw)
        object.__setattr__(self, "_key", key)
        object.__setattr__(self, "_kind", kind)
        object.__setattr__(self, "_jwk", jwk)
        # Computed on first use: an ephemeral key (a JWE epk) never needs one.
        object.__setattr__(self, "_thumbprint", None)

    def __setattr__(self, name: str, value: object) -> NoReturn:
        raise AttributeError(f"{type(self).__name__} is immutable")

    def __delattr__(self, name: str) -> NoReturn:
        raise AttributeError(f"{type(self).__name__} is immutable")

    @classmethod
    def from_jwk(cls, jwk: Mapping[str, Any], *, use: KeyUse | None = None) -> PublicKey:
        """Validate a public JWK (kty/crv/x/y or AKP pub, valid point, no private members)."""
        if not isinstance(jwk, Mapping):
            raise InvalidKey("JWK is not a JSON object")
        private = [name for name in _PRIVATE_MEMBERS if name in jwk]
        if private:
            raise InvalidKey(f"public JWK contains private member(s) {', '.join(private)}")
        kty, crv = jwk.get("kty"), jwk.get("crv")
        if kty == "AKP":
            return cls(xwing_public_from_jwk(jwk, use), "X-Wing")
        if (kty, crv) not in {("OKP", "Ed25519"), ("OKP", "X25519"), ("EC", "P-256")}:
            raise InvalidKey(f"unsupported JWK kty/crv {kty!r}/{crv!r}")
        crv = str(crv)
        resolved = _resolve_use(jwk, crv, use)
        x = _coord(jwk, "x", crv)
        key: _PublicCrypto
        if kty == "OKP":
            if "y" in jwk:
                raise InvalidKey(f"{crv} JWK must not have a 'y' member")
            if crv == "Ed25519":
                key = ed25519.Ed25519PublicKey.from_public_bytes(x)
            else:
                key = x25519.X25519PublicKey.from_public_bytes(x)
        else:
            y = _coord(jwk, "y", crv)
            try:
                key = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), b"\x04" + x + y)
            except ValueError as exc:
                raise InvalidKey("P-256 JWK point is not on the curve") from exc
        return cls(key, _kind_for(crv, resolved))

    @classmethod
    def from_cryptography(cls, key: _PublicCrypto, *, use: KeyUse | None = None) -> PublicKey:
        """Wrap a ``cryptography`` public key (``use`` is required for P-256)."""
        return cls(key, _kind_of_crypto(key, use))

    @property
    def kind(self) -> KeyKind:
        return self._kind

    @property
    def use(self) -> KeyUse:
        return _KINDS[self._kind][2]

    @property
    def alg(self) -> str:
        return _KINDS[self._kind][3]

    @property
    def crv(self) -> str:
        """The curve; for X-Wing the HPKE KEM name ``MLKEM768-X25519``."""
        return _KINDS[self._kind][1]

    @property
    def thumbprint(self) -> str:
        """RFC 7638 thumbprint; used as ``kid`` everywhere."""
        thumbprint = self._thumbprint
        if thumbprint is None:
            thumbprint = jwk_thumbprint(self._jwk)
            object.__setattr__(self, "_thumbprint", thumbprint)
        return thumbprint

    def to_jwk(self) -> dict[str, str]:
        """The public JWK with ``kid`` (= thumbprint), ``use`` and ``alg``."""
        return {**self._jwk, "kid": self.thumbprint, "use": self.use, "alg": self.alg}

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, PublicKey):
            return NotImplemented
        return (self._kind, self.thumbprint) == (other._kind, other.thumbprint)

    def __hash__(self) -> int:
        return hash((self._kind, self.thumbprint))

    def __repr__(self) -> str:
        return f"PublicKey(kind={self._kind!r}, kid={self.thumbprint!r})"


class PrivateKey:
    """An immutable private key; its repr shows only the kind and the public thumbprint."""

    __slots__ = ("_key", "_public")
    _key: _PrivateCrypto
    _public: PublicKey

    def __init__(self, key: _PrivateCrypto, kind: KeyKind) -> None:
        object.__setattr__(self, "_key", key)
        object.__setattr__(self, "_public", PublicKey(key.public_key(), kind))

    def __setattr__(self, name: str, value: object) -> NoReturn:
        raise AttributeError(f"{type(self).__name__} is immutable")

    def __delattr__(self, name: str) -> NoReturn:
        raise AttributeError(f"{type(self).__name__} is immutable")

    @classmethod
    def generate(cls, kind: KeyKind) -> PrivateKey:
        """A fresh key: Ed25519/ES256 for signing, X25519/P-256/X-Wing for encryption."""
        key: _PrivateCrypto
        if kind == "Ed25519":
            key = ed25519.Ed25519PrivateKey.generate()
        elif kind == "X25519":
            key = x25519.X25519PrivateKey.generate()
        elif kind == "X-Wing":
            key = XWingPrivateKey.generate()
        elif kind in ("ES256", "P-256"):
            key = ec.generate_private_key(ec.SECP256R1())
        else:
            raise InvalidKey(f"unknown key kind {kind!r}; use one of {', '.join(_KINDS)}")
        return cls(key, kind)

    @classmethod
    def from_xwing_seed(cls, seed: bytes) -> PrivateKey:
        """The X-Wing key whose private key is the 32-byte ``seed`` (its JWK ``priv``)."""
        return cls(XWingPrivateKey(seed), "X-Wing")

    @classmethod
    def from_cryptography(cls, key: PrivateKeyTypes, *, use: KeyUse | None = None) -> PrivateKey:
        """Wrap a ``cryptography`` private key (``use`` is required for P-256)."""
        if not isinstance(
            key, ed25519.Ed25519PrivateKey | x25519.X25519PrivateKey | ec.EllipticCurvePrivateKey
        ):
            raise InvalidKey(f"unsupported key type {type(key).__name__}")
        return cls(key, _kind_of_crypto(key.public_key(), use))

    @property
    def public(self) -> PublicKey:
        return self._public

    @property
    def kind(self) -> KeyKind:
        return self._public.kind

    @property
    def use(self) -> KeyUse:
        return self._public.use

    @property
    def alg(self) -> str:
        return self._public.alg

    @property
    def thumbprint(self) -> str:
        return self._public.thumbprint

    def sign_raw(self, data: bytes) -> bytes:
        """A bare Ed25519 signature of ``data`` (for formats outside JOSE: signed notes)."""
        if not isinstance(self._key, ed25519.Ed25519PrivateKey):
            raise InvalidKey(f"sign_raw needs an Ed25519 key, not {self.kind}")
        return self._key.sign(data)

    def __repr__(self) -> str:
        return f"PrivateKey(kind={self.kind!r}, kid={self.thumbprint!r})"

    def __reduce__(self) -> NoReturn:
        raise TypeError("PrivateKey cannot be pickled; write it with write_private_key()")
