"""Strict base64url and JSON helpers shared by the JWK and JOSE code."""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any, NoReturn

from ._errors import MalformedPackage

__all__ = ["b64d", "b64e", "dumps_compact", "loads_object", "protected_header", "split_compact"]

_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
_UNUSED_BITS_MASK = {2: 0x0F, 3: 0x03}


def b64e(data: bytes) -> str:
    """base64url without padding (RFC 7515 section 2)."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64d(text: str, what: str) -> bytes:
    """Decode unpadded base64url strictly, raising :class:`MalformedPackage`.

    Refuses padding, whitespace, the standard alphabet's ``+``/``/`` and non-canonical
    encodings (non-zero unused bits in the last character), so one byte string has
    exactly one encoding and a flipped character never decodes to the same bytes.
    """
    if "+" in text or "/" in text or "=" in text or not text.isascii():
        raise MalformedPackage(f"{what} is not unpadded base64url")
    try:
        data = base64.b64decode(text + "=" * (-len(text) % 4), altchars=b"-_", validate=True)
    except (binascii.Error, ValueError) as exc:
        raise MalformedPackage(f"{what} is not unpadded base64url") from exc
    mask = _UNUSED_BITS_MASK.get(len(text) % 4)
    if mask is not None and _ALPHABET.index(text[-1]) & mask:
        raise MalformedPackage(f"{what} is a non-canonical base64url encoding")
    return data


def dumps_compact(obj: Any) -> bytes:
    """JSON with no whitespace, for JOSE headers (member order as given)."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for name, value in pairs:
        if name in result:
            raise MalformedPackage(f"duplicate member {name!r}")
        result[name] = value
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


def split_compact(token: str | bytes, count: int, what: str) -> tuple[str, list[str]]:
    """Return the ASCII text of a compact JOSE token and its ``count`` dot-separated parts."""
    if isinstance(token, bytes | bytearray | memoryview):
        try:
            text = bytes(token).decode("ascii")
        except UnicodeDecodeError as exc:
            raise MalformedPackage(f"{what} is not ASCII") from exc
    elif isinstance(token, str):
        if not token.isascii():
            raise MalformedPackage(f"{what} is not ASCII")
        text = token
    else:
        raise MalformedPackage(f"{what} is {type(token).__name__}, not str or bytes")
    parts = text.split(".")
    if len(parts) != count:
        raise MalformedPackage(f"{what} has {len(parts)} parts, expected {count}")
    return text, parts


def protected_header(part: str, what: str, limit: int = 8192) -> dict[str, Any]:
    """Decode and parse a protected header, refusing oversized ones before parsing."""
    if len(part) > limit:
        raise MalformedPackage(f"{what} is longer than {limit} characters")
    return loads_object(b64d(part, what), what)
