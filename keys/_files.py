"""Private key files, created 0600 and never overwritten, loaded only if private.

Ed25519, ES256, X25519 and P-256 keys are PKCS#8 PEM (passphrase: cryptography's
``BestAvailableEncryption``); X-Wing keys are a private AKP JWK, or with a passphrase the
PBES2 JWE of it (see ``_jwkfile``).  The loader tells them apart by content.
"""

from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization

from ._errors import InvalidKey, KeyFileError
from ._jwk import KeyUse, PrivateKey
from ._jwkfile import dump_jwk_file, is_jwk_file, load_jwk_file
from ._xwing import XWingPrivateKey

__all__ = ["GeneratedKeys", "generate_org_keys", "load_private_key", "write_private_key"]

_MAX_KEY_FILE: Final = 64 * 1024
_ORG_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
_SUFFIX_USE: Final[dict[str, KeyUse]] = {".sign.pem": "sig", ".enc.pem": "enc"}
_ENC_SUFFIX: Final[dict[str, str]] = {
    "X25519": ".enc.pem",
    "P-256": ".enc.pem",
    "X-Wing": ".enc.jwk",
}


def _serialize(key: PrivateKey, passphrase: bytes | None) -> bytes:
    raw = key._key
    if isinstance(raw, XWingPrivateKey):
        return dump_jwk_file(key, passphrase)
    encryption: serialization.KeySerializationEncryption = (
        serialization.NoEncryption()
        if passphrase is None
        else serialization.BestAvailableEncryption(passphrase)
    )
    return raw.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
    )


def write_private_key(
    path: str | os.PathLike[str], key: PrivateKey, *, passphrase: bytes | None = None
) -> None:
    """Write ``key`` to a new file of mode 0600 (never overwrites).

    PKCS#8 PEM, except X-Wing keys: their private JWK (a PBES2 JWE of it with a passphrase).
    """
    if passphrase is not None and not passphrase:
        raise KeyFileError(f"empty passphrase for {os.fspath(path)}; pass None or a real one")
    pem = _serialize(key, passphrase)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags, 0o600)
    except FileExistsError as exc:
        raise KeyFileError(
            f"key file {os.fspath(path)} already exists; refusing to overwrite"
        ) from exc
    except OSError as exc:
        raise KeyFileError(f"cannot create key file {os.fspath(path)}: {exc.strerror}") from exc
    try:
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), 0o600)
            handle.write(pem)
            handle.flush()
            os.fsync(handle.fileno())
    except OSError as exc:
        Path(path).unlink(missing_ok=True)
        raise KeyFileError(f"cannot write key file {os.fspath(path)}: {exc.strerror}") from exc


def _check_key_file(fd: int, name: str) -> None:
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        raise KeyFileError(f"key file {name} is not a regular file")
    mode = stat.S_IMODE(info.st_mode)
    if mode & 0o077:
        raise KeyFileError(
            f"key file {name} has mode {mode:04o}; it must not be accessible by group or "
            f"others (chmod 600 {name})"
        )


def load_private_key(
    path: str | os.PathLike[str],
    *,
    passphrase: bytes | None = None,
    use: KeyUse | None = None,
) -> PrivateKey:
    """Load a private key file, refusing files readable or writable by group/others.

    PKCS#8 PEM, or an X-Wing JWK file (JSON, or a PBES2 JWE when encrypted).  P-256 keys
    serve signing (ES256) or encryption: ``use`` says which; without it the file name
    decides (``*.sign.pem`` -> sig, ``*.enc.pem`` -> enc).
    """
    name = os.fspath(path)
    try:
        # O_NONBLOCK: a FIFO planted at the path must not hang startup.
        fd = os.open(name, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise KeyFileError(f"cannot open key file {name}: {exc.strerror}") from exc
    try:
        _check_key_file(fd, name)
    except KeyFileError:
        os.close(fd)
        raise
    with os.fdopen(fd, "rb") as handle:
        data = handle.read(_MAX_KEY_FILE + 1)
    if len(data) > _MAX_KEY_FILE:
        raise KeyFileError(f"key file {name} is larger than {_MAX_KEY_FILE} bytes")
    if is_jwk_file(data):
        key = load_jwk_file(data, name, passphrase)
        if use not in (None, "enc"):
            raise KeyFileError(f"key file {name} holds an X-Wing encryption key, not {use!r}")
        return key
    try:
        raw = serialization.load_pem_private_key(data, password=passphrase)
    except TypeError as exc:
        state = "encrypted but no passphrase was given" if passphrase is None else "not encrypted"
        raise KeyFileError(f"key file {name} is {state}") from exc
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise KeyFileError(
            f"cannot load key file {name}: wrong passphrase or not a PEM private key"
        ) from exc
    if use is None:
        use = next((u for sfx, u in _SUFFIX_USE.items() if name.endswith(sfx)), None)
    try:
        return PrivateKey.from_cryptography(raw, use=use)
    except InvalidKey as exc:
        raise KeyFileError(f"key file {name}: {exc}") from exc


@dataclass(frozen=True, slots=True)
class GeneratedKeys:
    """What :func:`generate_org_keys` wrote: the public JWKs to publish and the file paths."""

    org_id: str
    sign_jwk: dict[str, str]
    enc_jwk: dict[str, str]
    sign_path: Path
    enc_path: Path


def generate_org_keys(
    org_id: str,
    out_dir: str | os.PathLike[str],
    *,
    sign: Literal["Ed25519", "ES256"] = "Ed25519",
    enc: Literal["X25519", "P-256", "X-Wing"] = "X25519",
    passphrase: bytes | None = None,
) -> GeneratedKeys:
    """Generate a signing and an encryption key for ``org_id`` into ``out_dir``.

    Writes ``<org_id>.sign.pem`` and ``<org_id>.enc.pem`` (``<org_id>.enc.jwk`` for an
    X-Wing key; 0600; ``out_dir`` is created 0700 if missing) and returns the public JWKs
    with ``kid`` = RFC 7638 thumbprint.  Nothing is written if either file already exists.
    """
    if not _ORG_ID.fullmatch(org_id):
        raise KeyFileError(f"org id {org_id!r} is not usable in a file name")
    if sign not in ("Ed25519", "ES256") or enc not in _ENC_SUFFIX:
        raise InvalidKey(f"unsupported key kinds sign={sign!r} enc={enc!r}")
    directory = Path(out_dir)
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise KeyFileError(f"cannot create key directory {directory}: {exc.strerror}") from exc
    sign_path = directory / f"{org_id}.sign.pem"
    enc_path = directory / f"{org_id}{_ENC_SUFFIX[enc]}"
    for existing in (sign_path, enc_path):
        if existing.exists() or existing.is_symlink():
            raise KeyFileError(f"key file {existing} already exists; refusing to overwrite")
    sign_key = PrivateKey.generate(sign)
    enc_key = PrivateKey.generate(enc)
    write_private_key(sign_path, sign_key, passphrase=passphrase)
    try:
        write_private_key(enc_path, enc_key, passphrase=passphrase)
    except KeyFileError:
        sign_path.unlink(missing_ok=True)
        raise
    return GeneratedKeys(
        org_id=org_id,
        sign_jwk=sign_key.public.to_jwk(),
        enc_jwk=enc_key.public.to_jwk(),
        sign_path=sign_path,
        enc_path=enc_path,
    )
