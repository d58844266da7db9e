"""X-Wing private key files: the private AKP JWK, or a passphrase JWE of it.

There is no PKCS#8 form of an X-Wing key in ``cryptography``, so X-Wing key files use the
JOSE forms a partner's library can also read:

- plain: the private JWK of draft-ietf-jose-hpke-pq-pqt-01 section 4 as one line of JSON,
  ``{"kty": "AKP", "alg": "HPKE-9-KE", "kid", "use": "enc", "pub", "priv"}`` where
  ``priv`` is the 32-byte seed (``pub`` is checked against it on load);
- encrypted (a passphrase was given): an encrypted JWK (RFC 7517 section 7), i.e. the
  compact JWE of the plain form with ``{"alg": "PBES2-HS512+A256KW", "enc": "A256GCM",
  "cty": "jwk+json", "p2s": <16 random bytes>, "p2c": 300000}`` (RFC 7518 section 4.8:
  PBKDF2-HMAC-SHA512 over ``UTF8(alg) || 0x00 || p2s``, AES key wrap of a random
  content key, AES-256-GCM with the encoded header as AAD).  300,000 iterations is above
  OWASP's 210,000 for PBKDF2-HMAC-SHA512 and the most joserfc accepts by default
  (jwcrypto needs ``jwcrypto.jwa.default_max_pbkdf2_iterations`` raised).

The file-system rules (0600, never overwritten, refused when group/others can read it)
are those of ``_files``; this module only converts keys to and from bytes.
"""

from __future__ import annotations

import os
from typing import Any, Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.pbkdf2 import PBKDF2HMAC
from cryptography.hazmat.primitives.keywrap import InvalidUnwrap, aes_key_unwrap, aes_key_wrap

from ._b64json import b64d, b64e, dumps_compact, loads_object, protected_header, split_compact
from ._errors import InvalidKey, KeyFileError, MalformedPackage
from ._jwk import PrivateKey
from ._xwing import XWingPrivateKey, xwing_private_jwk, xwing_seed_from_jwk

__all__ = ["PBES2_ALG", "PBES2_COUNT", "dump_jwk_file", "is_jwk_file", "load_jwk_file"]

PBES2_ALG: Final = "PBES2-HS512+A256KW"
PBES2_COUNT: Final = 300_000
_MIN_COUNT: Final = 1_000
_MAX_COUNT: Final = 10_000_000
_SALT_LEN: Final = 16
_CTY: Final = frozenset({"jwk+json", "application/jwk+json"})


def is_jwk_file(data: bytes) -> bool:
    """True for the JSON (``{``) or compact-JWE (``eyJ``) forms, False for PEM."""
    head = data.lstrip()
    return head.startswith((b"{", b"eyJ"))


def _kek(passphrase: bytes, salt_input: bytes, count: int) -> bytes:
    salt = PBES2_ALG.encode("ascii") + b"\x00" + salt_input
    return PBKDF2HMAC(hashes.SHA512(), 32, salt, count).derive(passphrase)


def dump_jwk_file(key: PrivateKey, passphrase: bytes | None) -> bytes:
    """The file bytes for an X-Wing ``key`` (encrypted when ``passphrase`` is given)."""
    raw = key._key
    if not isinstance(raw, XWingPrivateKey):
        raise InvalidKey(f"only X-Wing keys are written as JWK files, not {key.kind}")
    jwk = {**xwing_private_jwk(raw), "kid": key.thumbprint, "use": "enc"}
    plain = dumps_compact(jwk)
    if passphrase is None:
        return plain + b"\n"
    salt = os.urandom(_SALT_LEN)
    header = {
        "alg": PBES2_ALG,
        "enc": "A256GCM",
        "cty": "jwk+json",
        "p2s": b64e(salt),
        "p2c": PBES2_COUNT,
    }
    cek = os.urandom(32)
    wrapped = aes_key_wrap(_kek(passphrase, salt, PBES2_COUNT), cek)
    iv = os.urandom(12)
    h_part = b64e(dumps_compact(header))
    sealed = AESGCM(cek).encrypt(iv, plain, h_part.encode("ascii"))
    parts = (h_part, b64e(wrapped), b64e(iv), b64e(sealed[:-16]), b64e(sealed[-16:]))
    return ".".join(parts).encode("ascii") + b"\n"


def _count(header: dict[str, Any]) -> int:
    count = header.get("p2c")
    if not isinstance(count, int) or isinstance(count, bool):
        raise MalformedPackage("'p2c' is not an integer")
    if not _MIN_COUNT <= count <= _MAX_COUNT:
        raise MalformedPackage(f"'p2c' {count} is outside {_MIN_COUNT}..{_MAX_COUNT}")
    return count


def _decrypt(text: bytes, passphrase: bytes, name: str) -> bytes:
    _, (h_part, k_part, iv_part, c_part, t_part) = split_compact(text, 5, "encrypted key")
    header = protected_header(h_part, "encrypted key header")
    if (header.get("alg"), header.get("enc")) != (PBES2_ALG, "A256GCM"):
        raise MalformedPackage(f"encryption is not {PBES2_ALG} with A256GCM")
    cty = header.get("cty")
    if not isinstance(cty, str) or cty.lower() not in _CTY:
        raise MalformedPackage(f"cty {cty!r} is not 'jwk+json'")
    unknown = sorted(set(header) - {"alg", "enc", "cty", "p2s", "p2c", "kid"})
    if unknown:
        raise MalformedPackage(f"unsupported header member(s) {', '.join(unknown)}")
    p2s = header.get("p2s")
    salt = b64d(p2s if isinstance(p2s, str) else "", "'p2s'")
    if len(salt) < 8:
        raise MalformedPackage("'p2s' is shorter than 8 bytes")
    count = _count(header)
    wrapped = b64d(k_part, "encrypted key")
    iv = b64d(iv_part, "initialization vector")
    ciphertext = b64d(c_part, "ciphertext") + b64d(t_part, "authentication tag")
    try:
        cek = aes_key_unwrap(_kek(passphrase, salt, count), wrapped)
    except (InvalidUnwrap, ValueError) as exc:
        raise KeyFileError(f"cannot load key file {name}: wrong passphrase") from exc
    try:
        return AESGCM(cek).decrypt(iv, ciphertext, h_part)
    except (InvalidTag, ValueError) as exc:
        raise KeyFileError(f"key file {name} is corrupt (authentication failed)") from exc


def load_jwk_file(data: bytes, name: str, passphrase: bytes | None) -> PrivateKey:
    """Parse the bytes of an X-Wing key file written by :func:`dump_jwk_file`."""
    text = data.strip()
    try:
        if text.startswith(b"{"):
            if passphrase is not None:
                raise KeyFileError(f"key file {name} is not encrypted")
            plain = text
        elif passphrase is None:
            raise KeyFileError(f"key file {name} is encrypted but no passphrase was given")
        else:
            plain = _decrypt(text, passphrase, name)
        jwk = loads_object(plain, "private JWK")
        if jwk.get("kty") != "AKP":
            raise InvalidKey(f"JWK kty {jwk.get('kty')!r} is not 'AKP'")
        key = PrivateKey(xwing_seed_from_jwk(jwk), "X-Wing")
        if jwk.get("kid", key.thumbprint) != key.thumbprint:
            raise InvalidKey("JWK 'kid' is not the key's RFC 7638 thumbprint")
    except (MalformedPackage, InvalidKey) as exc:
        raise KeyFileError(f"cannot load key file {name}: {exc}") from exc
    return key
