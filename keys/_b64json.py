"""Strict base64url and JSON helpers shared by the JWK and JOSE code.

The compact-serialization paths work on ASCII ``bytes`` end to end (``b64e_pieces``,
``Compact``): a 64 KB view is base64url-encoded twice in a nested JWT, so every avoided
pass, copy or str/bytes round trip shows in the seal/open benchmark.

The base64 work itself is pybase64's (SIMD): about fifteen times faster than
``binascii`` plus a ``translate`` to the URL-safe alphabet, which made the two encodings
of a 64 KB package cost as much as its signature.  pybase64 is lenient where JOSE is
not (it takes the standard alphabet's ``+``/``/`` beside ``-``/``_`` and ignores the
unused bits of the last character), so the strict checks stay here.
"""

from __future__ import annotations

import binascii
import json
from collections import Counter
from typing import Any, NoReturn

import orjson
import pybase64

from ._errors import MalformedPackage

__all__ = [
    "Compact",
    "ascii_bytes",
    "b64d",
    "b64e",
    "b64e_bytes",
    "b64e_pieces",
    "dumps_compact",
    "loads_object",
    "protected_header",
    "split_compact",
]

_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
_URLSAFE = b"-_"
_UNUSED_BITS_MASK = {2: 0x0F, 3: 0x03}


def b64e_bytes(data: bytes | memoryview) -> bytes:
    """base64url without padding (RFC 7515 section 2), as ASCII bytes."""
    encoded = pybase64.b64encode(data, altchars=_URLSAFE)
    padding = -len(data) % 3
    return encoded[:-padding] if padding else encoded


def b64e_pieces(*parts: bytes | memoryview) -> list[bytes]:
    """base64url without padding of the parts' concatenation, as ASCII pieces for the caller
    to join into its token.

    Nothing large is copied: each part is encoded in place from a multiple of three bytes
    on, and only the one or two bytes left at each seam (and at the end, whose padding is
    sliced off) are encoded apart with the start of the next part. So the view a package
    wraps is encoded where it lies, not first copied into its claims.
    """
    pieces: list[bytes] = []
    carry = b""
    for part in parts:
        view = memoryview(part).cast("B")  # bytes, whatever the view's item size
        if carry:
            take = 3 - len(carry)
            carry += bytes(view[:take])
            view = view[take:]
            if len(carry) < 3:  # the part was shorter than the seam
                continue
            pieces.append(pybase64.b64encode(carry, altchars=_URLSAFE))
        whole = len(view) - len(view) % 3
        if whole:
            pieces.append(pybase64.b64encode(view[:whole], altchars=_URLSAFE))
        carry = bytes(view[whole:])
    if carry or not pieces:
        pieces.append(b64e_bytes(carry))
    return pieces


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
    return b"".join(_decode(raw, 0, len(raw), what))


def _decode(raw: bytes, start: int, end: int, what: str) -> list[bytes]:
    """Strictly decode ``raw[start:end]`` (see :func:`b64d`) as one or two pieces.

    The whole quanta decode through a memoryview of ``raw`` and only the last one to three
    characters are padded apart, so the text is never copied whole.
    """
    for refused in (b"+", b"/", b"="):
        if raw.find(refused, start, end) >= 0:
            raise MalformedPackage(f"{what} is not unpadded base64url")
    partial = (end - start) % 4
    whole = end - partial
    try:
        pieces = [pybase64.b64decode(memoryview(raw)[start:whole], _URLSAFE, validate=True)]
        if partial:
            last = raw[whole:end] + b"=" * (4 - partial)
            pieces.append(pybase64.b64decode(last, _URLSAFE, validate=True))
    except (binascii.Error, ValueError) as exc:
        raise MalformedPackage(f"{what} is not unpadded base64url") from exc
    mask = _UNUSED_BITS_MASK.get(partial)
    if mask is not None and _ALPHABET.index(raw[end - 1]) & mask:
        raise MalformedPackage(f"{what} is a non-canonical base64url encoding")
    return pieces


class Compact:
    """A compact JOSE token as ASCII bytes, its parts located but not copied out.

    ``bytes.split`` would copy every part; here each part is decoded from a view of the
    token, with the checks of :func:`b64d` applied to the part.
    """

    __slots__ = ("_bounds", "raw")
    raw: bytes
    _bounds: list[tuple[int, int]]

    def __init__(self, token: str | bytes, count: int, what: str) -> None:
        raw = ascii_bytes(token, what)
        # find() is memchr; count() of one byte walks the token byte by byte, far slower.
        bounds: list[tuple[int, int]] = []
        start = 0
        end = raw.find(b".")
        while end >= 0 and len(bounds) < count:
            bounds.append((start, end))
            start = end + 1
            end = raw.find(b".", start)
        if len(bounds) != count - 1 or end >= 0:
            raise MalformedPackage(f"{what} has {raw.count(b'.') + 1} parts, expected {count}")
        bounds.append((start, len(raw)))
        self.raw, self._bounds = raw, bounds

    def part(self, index: int) -> bytes:
        """The encoded part ``index`` (a copy: for the small header part)."""
        start, end = self._bounds[index]
        return self.raw[start:end]

    def end(self, index: int) -> int:
        """The offset just past part ``index`` (``raw[:end(1)]`` is a JWS signing input)."""
        return self._bounds[index][1]

    def decode_pieces(self, index: int, what: str) -> list[bytes]:
        """Part ``index`` decoded, as pieces for the caller to join (see :func:`b64d`)."""
        start, end = self._bounds[index]
        return _decode(self.raw, start, end, what)

    def decode(self, index: int, what: str) -> bytes:
        """Part ``index`` decoded (see :func:`b64d`)."""
        return b"".join(self.decode_pieces(index, what))


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


def _orjson_object(data: bytes) -> dict[str, Any] | None:
    """The object ``data`` encodes when it is exactly orjson's output for it, else None.

    orjson parses strict UTF-8 JSON without NaN/Infinity about twice as fast as ``json``
    but keeps the last of duplicate members silently.  Serializing the result again
    proves there were none: ``orjson.dumps`` of a dict writes each member once (and its
    string escaping is one-to-one), so output equal to the received bytes means those
    bytes hold no duplicate either.  That is the broker's own serializer, so its packages
    take this path; anything else (other writers, whitespace, ``1e5``, deep nesting past
    orjson's limit, a duplicate) gets None and the strict parse below, which decides.
    """
    try:
        value = orjson.loads(data)
        same = isinstance(value, dict) and orjson.dumps(value) == data
    except (orjson.JSONDecodeError, orjson.JSONEncodeError):
        return None
    return value if same else None


def loads_object(data: bytes, what: str) -> dict[str, Any]:
    """Parse strict UTF-8 JSON that must be an object (no duplicates, no NaN/Infinity)."""
    fast = _orjson_object(data)
    if fast is not None:
        return fast
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
