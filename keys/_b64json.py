"""Strict base64url and JSON helpers shared by the JWK and JOSE code.

The compact-serialization paths work on ASCII ``bytes`` end to end (``b64e_bytes``,
``split_compact``): a 64 KB view is base64url-encoded twice in a nested JWT, so every
avoided copy or str/bytes round trip shows in the seal/open benchmark.
"""

from __future__ import annotations

import binascii
import json
from collections import Counter
from typing import Any, NoReturn

from ._errors import MalformedPackage

__all__ = [
    "ascii_bytes",
    "b64d",
    "b64e",
    "b64e_bytes",
    "dumps_compact",
    "loads_object",
    "protected_header",
    "split_compact",
]

_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
_UNUSED_BITS_MASK = {2: 0x0F, 3: 0x03}
_TO_URLSAFE = bytes.maketrans(b"+/", b"-_")
_FROM_URLSAFE = bytes.maketrans(b"-_", b"+/")


def b64e_bytes(data: bytes | memoryview) -> bytes:
    """base64url without padding (RFC 7515 section 2), as ASCII bytes.

    ``translate`` without a delete set is the fast table path; the padding is sliced off.
    """
    encoded = binascii.b2a_base64(data, newline=False).translate(_TO_URLSAFE)
    padding = -len(data) % 3
    return encoded[:-padding] if padding else encoded


def b64e(data: bytes) -> str:
    """base64url without padding (RFC 7515 section 2)."""
    return b64e_bytes(data).decode("ascii")


def b64d(text: str | bytes, what: str) -> bytes:
    """Decode unpadded base64url strictly, raising :class:`MalformedPackage`.

    Refuses padding, whitespace, the standard alphabet's ``+``/``/`` and non-canonical
    encodings (non-zero unused bits in the last character), so one byte string has
    exactly one encoding and a flipped character never decodes to the same bytes.
    """
    if isinstance(text, str):
        if not text.isascii():
            raise MalformedPackage(f"{what} is not unpadded base64url")
        raw = text.encode("ascii")
    else:
        raw = text
    if b"+" in raw or b"/" in raw or b"=" in raw:
        raise MalformedPackage(f"{what} is not unpadded base64url")
    try:
        data = binascii.a2b_base64(
            raw.translate(_FROM_URLSAFE) + b"=" * (-len(raw) % 4), strict_mode=True
        )
    except (binascii.Error, ValueError) as exc:
        raise MalformedPackage(f"{what} is not unpadded base64url") from exc
    mask = _UNUSED_BITS_MASK.get(len(raw) % 4)
    if mask is not None and _ALPHABET.index(raw[-1]) & mask:
        raise MalformedPackage(f"{what} is a non-canonical base64url encoding")
    return data


def dumps_compact(obj: Any) -> bytes:
    """JSON with no whitespace, for JOSE headers (member order as given)."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        counts = Counter(name for name, _ in pairs)
        name = next(name for name, count in counts.items() if count > 1)
        raise MalformedPackage(f"duplicate member {name!r}")
    return result


def _no_constant(name: str) -> NoReturn:
    raise MalformedPackage(f"non-standard JSON constant {name}")


def loads_object(data: bytes, what: str) -> dict[str, Any]:
    """Parse strict UTF-8 JSON that must be an object (no duplicates, no NaN/Infinity)."""
    try:
        text = data.decode("utf-8")
        value = json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constant)
    except MalformedPackage as exc:
        raise MalformedPackage(f"{what}: {exc}") from exc
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise MalformedPackage(f"{what} is not valid UTF-8 JSON") from exc
    if not isinstance(value, dict):
        raise MalformedPackage(f"{what} is not a JSON object")
    return value


def ascii_bytes(token: str | bytes, what: str) -> bytes:
    """The token as ASCII ``bytes`` (no copy when it already is), else MalformedPackage."""
    if isinstance(token, bytes | bytearray | memoryview):
        raw = bytes(token)
        if not raw.isascii():
            raise MalformedPackage(f"{what} is not ASCII")
        return raw
    if isinstance(token, str):
        if not token.isascii():
            raise MalformedPackage(f"{what} is not ASCII")
        return token.encode("ascii")
    raise MalformedPackage(f"{what} is {type(token).__name__}, not str or bytes")


def split_compact(token: str | bytes, count: int, what: str) -> tuple[bytes, list[bytes]]:
    """Return the ASCII bytes of a compact JOSE token and its ``count`` dot-separated parts."""
    raw = ascii_bytes(token, what)
    parts = raw.split(b".")
    if len(parts) != count:
        raise MalformedPackage(f"{what} has {len(parts)} parts, expected {count}")
    return raw, parts


def protected_header(part: bytes, what: str, limit: int = 8192) -> dict[str, Any]:
    """Decode and parse a protected header, refusing oversized ones before parsing."""
    if len(part) > limit:
        raise MalformedPackage(f"{what} is longer than {limit} characters")
    return loads_object(b64d(part, what), what)
