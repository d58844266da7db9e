"""The TAXII 2.1 edge: the server front (ASGI), the poller and the push client.

The server depends only on the ``TaxiiBackend`` port; the broker supplies the NATS-backed
implementation, tests and benchmarks the in-memory one.
"""

from ._app import create_app
from ._auth import Credentials, CredentialsError, hash_secret, new_token, set_secret
from ._cursor import CursorCodec, InvalidCursor
from ._http import TAXII_MEDIA_TYPE
from ._index import ObjectIndex, Query, format_ts, parse_ts, version_key, version_of
from ._memory import MemoryBackend
from ._port import (
    CollectionInfo,
    StatusRecord,
    SubmitRefused,
    TaxiiBackend,
    collection_id,
    collections_for,
)
from ._serve import HttpLimits, bind_listener, is_loopback, serve_http, serve_socket

__all__ = [
    "TAXII_MEDIA_TYPE",
    "CollectionInfo",
    "Credentials",
    "CredentialsError",
    "CursorCodec",
    "HttpLimits",
    "InvalidCursor",
    "MemoryBackend",
    "ObjectIndex",
    "Query",
    "StatusRecord",
    "SubmitRefused",
    "TaxiiBackend",
    "bind_listener",
    "collection_id",
    "collections_for",
    "create_app",
    "format_ts",
    "hash_secret",
    "is_loopback",
    "new_token",
    "parse_ts",
    "serve_http",
    "serve_socket",
    "set_secret",
    "version_key",
    "version_of",
]
