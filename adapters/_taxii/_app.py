"""The TAXII 2.1 server: an ASGI app over a ``TaxiiBackend``.

One API root (``/<api_root>/``). Collections are audiences: an organisation writes to the
community or to one of its groups, and a recipient that reads over TAXII reads its own
views. Routing is done here rather than by the framework so that every answer, a 404 or a
405 included, is a TAXII message with the TAXII media type.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import math
from collections.abc import Awaitable, Callable, Sequence

import orjson
import structlog
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from .._stix import MAX_DEPTH, parse_json, value_problem
from ._auth import Credentials, FailedLogins, LoginsBusy, claimed_org
from ._cursor import CursorCodec, InvalidCursor
from ._http import (
    STIX_MEDIA_TYPE,
    TAXII_MEDIA_TYPE,
    TaxiiHttpError,
    accepts_taxii,
    is_taxii_content_type,
    parse_query,
    taxii_response,
)
from ._index import ObjectIndex, Page, Query
from ._openapi import openapi_document
from ._port import CollectionInfo, StatusRecord, SubmitRefused, TaxiiBackend

__all__ = ["create_app"]

log = structlog.get_logger()

_QUOTA_RETRY = 3600
"""Seconds a client over its organisation's daily allowance is told to wait (the oldest of
a day's submissions age out of the intake stream one by one, within a day)."""

_CHALLENGE = 'Basic realm="atlas-taxii", charset="UTF-8", Bearer realm="atlas-taxii"'


def _network(host: str) -> str:
    """An IPv6 client by its /64 (one host has them all), anything else as it is."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)  # an IPv4 client of a dual-stack listener
    if address.version == 6:
        return str(ipaddress.ip_network(f"{address}/64", strict=False))
    return str(address)


def _quoted(text: str) -> str:
    """A name from the request, quoted for an error message and cut short when long."""
    shown = repr(text)
    return shown if len(shown) <= 80 else shown[:76] + "..." + shown[-1]


def _status_body(record: StatusRecord) -> dict[str, object]:
    items = [{"id": i, "version": v} for i, v in record.objects]
    body: dict[str, object] = {
        "id": record.id,
        "status": "pending" if record.outcome == "pending" else "complete",
        "request_timestamp": record.request_timestamp,
        "total_count": len(items),
        "success_count": 0,
        "failure_count": 0,
        "pending_count": 0,
    }
    if record.outcome == "pending":
        body.update(pending_count=len(items), pendings=items)
    elif record.outcome == "accepted":
        body.update(success_count=len(items), successes=items)
    else:
        message = f"refused by the broker: {record.reason}"
        body.update(
            failure_count=len(items), failures=[{**item, "message": message} for item in items]
        )
    if not items:
        for key in ("successes", "failures", "pendings"):
            body.pop(key, None)
    return body


class _Server:
    def __init__(
        self,
        backend: TaxiiBackend,
        credentials: Credentials,
        *,
        cursor_key: bytes,
        api_root: str,
        title: str,
        rate_limit: Callable[[str], float] | None = None,
        public_url: str | None = None,
    ) -> None:
        self.backend = backend
        self.public_url = public_url
        self.failed_logins = FailedLogins()
        self.network_logins = FailedLogins(limit=30)
        """Failed logins from one network whatever organisation they name."""
        self.rate_limit = rate_limit
        """Seconds ``org`` must wait before its next POST (0: go ahead; takes a token)."""
        self.credentials = credentials
        self.cursors = CursorCodec(cursor_key)
        self.api_root = api_root
        self.title = title

    async def authenticate(self, request: Request) -> str:
        values = request.headers.getlist("authorization")
        if len(values) > 1 or any("," in value for value in values):
            # A singleton field (RFC 9110 11.6.2), and no credentials of ours hold a comma:
            # several (or several joined by a proxy) would let a proxy reading the last and
            # this server the first disagree on who the caller is.
            raise TaxiiHttpError(400, "Bad request", "send one Authorization header, not several")
        header = request.headers.get("authorization", "")
        scheme, _, value = header.partition(" ")
        user: str | None = None
        token = ""
        if scheme.lower() == "basic":
            try:
                user, _, token = base64.b64decode(value, validate=True).decode().partition(":")
            except (binascii.Error, UnicodeDecodeError, ValueError):
                user, token = "", ""
            if not user:
                token = ""
        elif scheme.lower() in ("bearer", "token"):
            token = value.strip()
        # Keyed on the organisation the token names (Basic and Bearer alike) and the
        # client's network. Only failures that cost a scrypt check count: a flood of cheap
        # refusals (a token over 512 characters, a Basic user the token does not name)
        # cannot push an organisation's failures out of the bounded table.
        claimed = claimed_org(user, token)
        head, dot, _ = token.partition(".")
        costly = len(token) <= 512 and user in (None, head if dot else "")
        peer = _network(request.client.host if request.client is not None else "-")
        key = (peer, claimed)
        org: str | None = None
        if token and (org := self.credentials.cached(user, token)) is not None:
            return org  # verified minutes ago: never held up by someone else's guesses
        if token:
            network = (peer, "")  # every organisation from this network together
            wait = max(self.failed_logins.wait(key), self.network_logins.wait(network))
            if wait > 0:
                raise TaxiiHttpError(
                    429,
                    "Too many failed logins",
                    f"too many failed logins for {claimed or 'this login'!r} or from this "
                    f"address: retry in "
                    f"{math.ceil(wait)} s",
                    {"Retry-After": str(math.ceil(wait))},
                )
            if costly and self.credentials.busy:
                # Refused before it is counted: not checked, so not a failure, and a flood
                # of them cannot push real failures out of the bounded tables.
                raise TaxiiHttpError(
                    503,
                    "Busy",
                    "too many logins are being checked; retry in a second",
                    {"Retry-After": "1"},
                )
            if costly:
                # Counted before the check, so that concurrent guesses count as they start;
                # a success takes its own attempt back.
                self.failed_logins.failed(key)
                self.network_logins.failed(network)
            try:
                org = await self.credentials.verify(user, token)
            except LoginsBusy as exc:
                if costly:  # not checked, so not a failure
                    self.failed_logins.forgive(key)
                    self.network_logins.forgive(network)
                raise TaxiiHttpError(503, "Busy", str(exc), {"Retry-After": "1"}) from None
            if org is None:
                log.warning("taxii.login_failed", org=claimed or None, peer=peer)
            elif costly:
                self.failed_logins.succeeded(key)
                self.network_logins.forgive(network)
        if org is None:
            raise TaxiiHttpError(
                401,
                "Unauthorized",
                "valid credentials are required (HTTP Basic with your organisation id and "
                "token, or 'Authorization: Bearer <token>')",
                {"WWW-Authenticate": _CHALLENGE},
            )
        return org

    async def __call__(self, request: Request) -> Response:
        try:
            return await self.dispatch(request)
        except TaxiiHttpError as exc:
            return exc.response()
        except ClientDisconnect:
            # The client went away mid-body: nothing was submitted, and nobody reads this.
            log.info("taxii.client_disconnected", path=request.url.path)
            return TaxiiHttpError(400, "Incomplete request", "the client disconnected").response()
        except Exception:  # every answer stays a TAXII message
            log.exception("taxii.internal_error", path=request.url.path)
            return TaxiiHttpError(
                500, "Internal error", "the server could not process the request"
            ).response()

    async def dispatch(self, request: Request) -> Response:
        org = await self.authenticate(request)
        if not accepts_taxii(request.headers.get("accept")):
            raise TaxiiHttpError(
                406, "Not acceptable", f"this server answers only with {TAXII_MEDIA_TYPE}"
            )
        parts = [p for p in request.scope["path"].split("/") if p]
        handler, allowed = self.route(parts)
        if handler is None:
            raise TaxiiHttpError(404, "Not found", "no such TAXII endpoint")
        # HEAD is GET without the body (uvicorn leaves the body out).
        method = "GET" if request.method == "HEAD" else request.method
        if method not in allowed:
            shown = [m for a in allowed for m in ((a, "HEAD") if a == "GET" else (a,))]
            raise TaxiiHttpError(
                405,
                "Method not allowed",
                f"{request.method} is not supported here; use {', '.join(shown)}",
                {"Allow": ", ".join(shown)},
            )
        with structlog.contextvars.bound_contextvars(org=org):
            return await handler(request, org, parts)

    def route(
        self, parts: Sequence[str]
    ) -> tuple[Callable[[Request, str, Sequence[str]], Awaitable[Response]] | None, list[str]]:
        if parts == ["taxii2"]:
            return self.discovery, ["GET"]
        if not parts or parts[0] != self.api_root:
            return None, []
        rest = list(parts[1:])
        shape = tuple(
            "*" if i in (1, 3) and rest[:1] == ["collections"] else p for i, p in enumerate(rest)
        )
        table: dict[
            tuple[str, ...],
            tuple[Callable[[Request, str, Sequence[str]], Awaitable[Response]], list[str]],
        ] = {
            (): (self.root_info, ["GET"]),
            ("collections",): (self.collections, ["GET"]),
            ("collections", "*"): (self.collection, ["GET"]),
            ("collections", "*", "objects"): (self.objects, ["GET", "POST"]),
            ("collections", "*", "objects", "*"): (self.object, ["GET", "DELETE"]),
            ("collections", "*", "objects", "*", "versions"): (self.versions, ["GET"]),
            ("collections", "*", "manifest"): (self.manifest, ["GET"]),
        }
        if len(rest) == 2 and rest[0] == "status":
            return self.status, ["GET"]
        found = table.get(shape)
        return (found[0], found[1]) if found else (None, [])

    async def discovery(self, request: Request, org: str, parts: Sequence[str]) -> Response:
        base = self.public_url or str(request.base_url).rstrip("/")
        root = f"{base}/{self.api_root}/"
        return taxii_response(
            {
                "title": self.title,
                "description": "Atlas broker: STIX 2.1 sharing under TLP. Write to the "
                "community or a group; partners read their own views.",
                "default": root,
                "api_roots": [root],
            }
        )

    async def root_info(self, request: Request, org: str, parts: Sequence[str]) -> Response:
        return taxii_response(
            {
                "title": f"{self.title}: {self.api_root}",
                "versions": [TAXII_MEDIA_TYPE],
                "max_content_length": self.backend.max_content_length,
            }
        )

    @staticmethod
    def _collection_body(info: CollectionInfo) -> dict[str, object]:
        return {
            "id": info.id,
            "title": info.title,
            "description": info.description,
            "can_read": info.can_read,
            "can_write": info.can_write,
            "media_types": [STIX_MEDIA_TYPE],
        }

    async def collections(self, request: Request, org: str, parts: Sequence[str]) -> Response:
        found = await self.backend.collections(org)
        body = {"collections": [self._collection_body(c) for c in found]} if found else {}
        return taxii_response(body)

    async def _find(self, org: str, collection_id: str) -> CollectionInfo:
        for info in await self.backend.collections(org):
            if info.id == collection_id:
                return info
        raise TaxiiHttpError(404, "Not found", f"no collection {_quoted(collection_id)} for you")

    async def collection(self, request: Request, org: str, parts: Sequence[str]) -> Response:
        return taxii_response(self._collection_body(await self._find(org, parts[2])))

    async def _readable(self, org: str, collection_id: str) -> tuple[CollectionInfo, ObjectIndex]:
        info = await self._find(org, collection_id)
        if not info.can_read or info.reader is None:
            raise TaxiiHttpError(
                403, "Forbidden", f"collection {_quoted(collection_id)} is write-only for you"
            )
        return info, await self.backend.index(info.reader)

    def _query(self, request: Request, endpoint: str, collection_id: str) -> Query:
        query, token = parse_query(request.query_params, endpoint)
        if token is None:
            return query
        try:
            pos = self.cursors.decode(collection_id, token)
        except InvalidCursor as exc:
            raise TaxiiHttpError(400, "Bad filter", str(exc)) from None
        return Query(
            limit=query.limit,
            added_after=query.added_after,
            after_pos=pos,
            ids=query.ids,
            types=query.types,
            versions=query.versions,
            spec_versions=query.spec_versions,
        )

    def _paged(self, page: Page, collection_id: str, key: str, items: list[bytes]) -> Response:
        headers: dict[str, str] = {}
        parts = [b'"more":' + (b"true" if page.more else b"false")]
        if page.more:
            parts.append(
                b'"next":' + orjson.dumps(self.cursors.encode(collection_id, page.last_pos))
            )
        if page.entries:
            headers["X-TAXII-Date-Added-First"] = page.entries[0].added
            headers["X-TAXII-Date-Added-Last"] = page.entries[-1].added
            parts.append(f'"{key}":['.encode() + b",".join(items) + b"]")
        return taxii_response(b"{" + b",".join(parts) + b"}", headers=headers)

    async def objects(self, request: Request, org: str, parts: Sequence[str]) -> Response:
        if request.method == "POST":
            return await self.add_objects(request, org, parts[2])
        info, index = await self._readable(org, parts[2])
        page = index.page(self._query(request, "objects", info.id))
        return self._paged(page, info.id, "objects", [e.raw for e in page.entries])

    async def manifest(self, request: Request, org: str, parts: Sequence[str]) -> Response:
        info, index = await self._readable(org, parts[2])
        page = index.page(self._query(request, "objects", info.id))
        items = [
            orjson.dumps(
                {
                    "id": e.id,
                    "date_added": e.added,
                    "version": e.written,
                    "media_type": STIX_MEDIA_TYPE,
                }
            )
            for e in page.entries
        ]
        return self._paged(page, info.id, "objects", items)

    async def object(self, request: Request, org: str, parts: Sequence[str]) -> Response:
        object_id = parts[4]
        if request.method == "DELETE":
            await self._find(org, parts[2])
            raise TaxiiHttpError(
                403,
                "Forbidden",
                "objects can be deleted only from a collection that is both readable and "
                "writable for you; Atlas collections are one or the other, and what was "
                "disseminated stays in the dissemination log",
            )
        info, index = await self._readable(org, parts[2])
        if not index.has(object_id):
            raise TaxiiHttpError(
                404, "Not found", f"no object {_quoted(object_id)} in this collection"
            )
        page = index.page(self._query(request, "object", info.id), object_id)
        return self._paged(page, info.id, "objects", [e.raw for e in page.entries])

    async def versions(self, request: Request, org: str, parts: Sequence[str]) -> Response:
        object_id = parts[4]
        info, index = await self._readable(org, parts[2])
        if not index.has(object_id):
            raise TaxiiHttpError(
                404, "Not found", f"no object {_quoted(object_id)} in this collection"
            )
        page = index.page(self._query(request, "versions", info.id), object_id)
        return self._paged(
            page, info.id, "versions", [orjson.dumps(e.written) for e in page.entries]
        )

    async def add_objects(self, request: Request, org: str, collection_id: str) -> Response:
        info = await self._find(org, collection_id)
        if not info.can_write:
            raise TaxiiHttpError(
                403, "Forbidden", f"collection {_quoted(collection_id)} is read-only for you"
            )
        if not is_taxii_content_type(request.headers.get("content-type")):
            raise TaxiiHttpError(
                415, "Unsupported media type", f"send the envelope as {TAXII_MEDIA_TYPE}"
            )
        if self.rate_limit is not None and (wait := self.rate_limit(org)) > 0:
            raise TaxiiHttpError(
                429,
                "Too many requests",
                f"{org} is over its submission rate; retry in {wait:.1f} s",
                headers={"Retry-After": str(max(1, math.ceil(wait)))},
            )
        limit = self.backend.max_content_length
        declared = request.headers.get("content-length", "")
        if declared.isascii() and declared.isdigit() and int(declared) > limit:
            raise TaxiiHttpError(413, "Too large", f"the body exceeds {limit:,} bytes")
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > limit:
                raise TaxiiHttpError(413, "Too large", f"the body exceeds {limit:,} bytes")
        try:
            envelope = parse_json(bytes(body))
        except orjson.JSONDecodeError as exc:
            raise TaxiiHttpError(400, "Invalid JSON", f"the body is not JSON: {exc}") from None
        objects = envelope.get("objects") if isinstance(envelope, dict) else None
        if not isinstance(objects, list) or not objects:
            raise TaxiiHttpError(
                400, "Invalid envelope", 'expected a TAXII envelope {"objects": [ ... ]}'
            )
        try:
            written = orjson.dumps(objects)  # what the backend stores must serialize
        except orjson.JSONEncodeError:
            # orjson writes at most 255 levels and 64-bit integers: say which it was.
            problem = next(
                (f"objects[{i}]: {p}" for i, o in enumerate(objects) if (p := value_problem(o))),
                f"an object is nested deeper than {MAX_DEPTH} levels",
            )
            raise TaxiiHttpError(422, "Not accepted", problem) from None
        if len(written) > limit:  # numbers can grow when written back (1e15 -> 1000000000000000.0)
            raise TaxiiHttpError(
                413, "Too large", f"the objects take {len(written):,} bytes as JSON, over {limit:,}"
            )
        try:
            record = await self.backend.submit(org, objects, info.audience)
        except SubmitRefused as exc:
            if exc.kind == "unavailable":
                raise TaxiiHttpError(503, "Unavailable", str(exc), {"Retry-After": "5"}) from None
            if exc.kind == "over-quota":
                later = {"Retry-After": str(_QUOTA_RETRY)}
                raise TaxiiHttpError(429, "Too many requests", str(exc), later) from None
            if exc.kind == "uncertain":
                raise TaxiiHttpError(500, "Not confirmed", str(exc)) from None
            status = 413 if exc.kind == "too-large" else 422
            raise TaxiiHttpError(status, "Not accepted", str(exc)) from None
        log.info("taxii.submitted", status_id=record.id, objects=len(record.objects))
        return taxii_response(_status_body(record), 202)

    async def status(self, request: Request, org: str, parts: Sequence[str]) -> Response:
        record = await self.backend.status(org, parts[2])
        if record is None:
            raise TaxiiHttpError(404, "Not found", f"no status {_quoted(parts[2])} of yours")
        return taxii_response(_status_body(record))


def create_app(
    backend: TaxiiBackend,
    credentials: Credentials,
    *,
    cursor_key: bytes,
    api_root: str = "atlas",
    title: str = "Atlas broker TAXII 2.1",
    rate_limit: Callable[[str], float] | None = None,
    public_url: str | None = None,
) -> ASGIApp:
    """The ASGI app: ``GET /openapi.json``, and TAXII for every other path and method.

    ``rate_limit(org)`` gives the seconds an organisation must wait before its next POST
    (0: go ahead); a positive answer is a 429 with ``Retry-After``. ``public_url``: the
    address discovery advertises (default: the request's own).
    """
    server = _Server(
        backend,
        credentials,
        cursor_key=cursor_key,
        api_root=api_root,
        title=title,
        rate_limit=rate_limit,
        public_url=public_url,
    )
    document = openapi_document(api_root=api_root, title=title)

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return  # no lifespan, no websockets
        request = Request(scope, receive)
        if "transfer-encoding" in request.headers and "content-length" in request.headers:
            # RFC 9112 6.3: ought to be an error. A proxy in front that framed the body by
            # its length would see another request boundary than this server (smuggling);
            # the connection is closed after the answer, so nothing left on it is read.
            response: Response = TaxiiHttpError(
                400,
                "Bad request",
                "a request may not carry both Transfer-Encoding and Content-Length",
                {"Connection": "close"},
            ).response()
        elif b"%2f" in (scope.get("raw_path") or b"").lower():
            # Routed on the decoded path, "<id>%2Fobjects" would be the objects endpoint to
            # us and one path segment to a proxy's rules in front.
            response = TaxiiHttpError(
                404, "Not found", "no resource has an encoded '/' (%2F) in its path"
            ).response()
        elif scope["path"] == "/openapi.json" and request.method in ("GET", "HEAD"):
            response = JSONResponse(document)
        else:
            response = await server(request)
        await response(scope, receive, send)

    return app
