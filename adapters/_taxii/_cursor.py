"""Opaque, stateless ``next`` tokens: a position in the index, bound to its collection.

``base64url(position (8 bytes) || HMAC-SHA256(key, collection || position)[:16])``: any
server instance holding the same key can continue a listing, after a restart too, and a
client cannot forge or move a token to another collection.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import struct

from .._errors import AdapterError

__all__ = ["CursorCodec", "InvalidCursor"]


class InvalidCursor(AdapterError):
    """A ``next`` value this server did not issue (or for another collection)."""


class CursorCodec:
    def __init__(self, key: bytes) -> None:
        if len(key) < 16:
            raise ValueError("the cursor key needs at least 16 bytes")
        self._key = key

    def _mac(self, collection: str, packed: bytes) -> bytes:
        return hmac.new(self._key, collection.encode() + b"\0" + packed, hashlib.sha256).digest()[
            :16
        ]

    def encode(self, collection: str, pos: int) -> str:
        packed = struct.pack(">Q", pos)
        return base64.urlsafe_b64encode(packed + self._mac(collection, packed)).decode().rstrip("=")

    def decode(self, collection: str, token: str) -> int:
        if not token or len(token) > 64:
            raise InvalidCursor("'next' is not a value this server issued")
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        except (binascii.Error, ValueError):
            raise InvalidCursor("'next' is not a value this server issued") from None
        if len(raw) != 24 or not hmac.compare_digest(raw[8:], self._mac(collection, raw[:8])):
            raise InvalidCursor("'next' is not a value this server issued for this collection")
        return int(struct.unpack(">Q", raw[:8])[0])
