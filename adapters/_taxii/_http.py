"""TAXII 2.1 on the wire: media types, error messages, query-parameter parsing.

Every response of the TAXII endpoints, errors included, is ``application/taxii+json;
version=2.1``; errors use the TAXII error message (title, description, http_status).
Malformed filters are 400s with a message naming the parameter, never 500s.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

import orjson
from starlette.datastructures import QueryParams
from starlette.responses import Response

from ._index import Query, parse_ts, version_key

__all__ = [
    "MAX_PAGE",
    "TAXII_MEDIA_TYPE",
    "TaxiiHttpError",
    "accepts_taxii",
    "is_taxii_content_type",
    "parse_query",
    "taxii_response",
]

TAXII_MEDIA_TYPE = "application/taxii+json;version=2.1"
STIX_MEDIA_TYPE = "application/stix+json;version=2.1"
MAX_PAGE = 1000
DEFAULT_PAGE = 100
_TYPE_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,249}\Z")
_SPEC_RE = re.compile(r"^[0-9]{1,2}\.[0-9]{1,2}\Z")
_FILTERS = {
    "objects": {"id", "type", "version", "spec_version"},
    "object": {"version", "spec_version"},
    "versions": {"spec_version"},
}


class TaxiiHttpError(Exception):
    def __init__(
        self, status: int, title: str, description: str, headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(f"{status} {title}: {description}")
        self.status = status
        self.title = title
        self.description = description
        self.headers = dict(headers or {})

    def response(self) -> Response:
        body = {
            "title": self.title,
            "description": self.description,
            "http_status": str(self.status),
        }
        return taxii_response(body, self.status, self.headers)


def taxii_response(
    body: object | bytes, status: int = 200, headers: Mapping[str, str] | None = None
) -> Response:
    data = body if isinstance(body, bytes) else orjson.dumps(body)
    # Answers carry TLP-marked intelligence and who may read it: no cache keeps them.
    return Response(
        data,
        status_code=status,
        headers={"Cache-Control": "no-store", **(headers or {})},
        media_type=TAXII_MEDIA_TYPE,
    )


def _media_params(value: str) -> tuple[str, dict[str, str]]:
    kind, *params = (part.strip() for part in value.split(";"))
    out: dict[str, str] = {}
    for param in params:
        name, _, val = param.partition("=")
        out[name.strip().lower()] = val.strip().strip('"')
    return kind.lower(), out


def accepts_taxii(header: str | None) -> bool:
    """``Accept``: TAXII 2.1 with or without a version; absent or wildcards are accepted.

    A range with ``q=0`` is the client saying "not this" (RFC 9110, 12.4.2)."""
    if not header:
        return True
    for item in header.split(","):
        kind, params = _media_params(item)
        if _refused(params.get("q")):
            continue
        if kind in ("*/*", "application/*"):
            return True
        if kind == "application/taxii+json" and params.get("version", "2.1") == "2.1":
            return True
    return False


def _refused(quality: str | None) -> bool:
    """A qvalue of zero (``0``, ``0.0``, ``0.000``)."""
    if quality is None:
        return False
    whole, _, fraction = quality.partition(".")
    return whole == "0" and set(fraction) <= {"0"} and len(fraction) <= 3


def is_taxii_content_type(header: str | None) -> bool:
    if not header:
        return False
    kind, params = _media_params(header)
    # JSON is UTF-8 (RFC 8259 8.1): a body declared in another charset would be read as
    # something its sender did not write.
    return (
        kind == "application/taxii+json"
        and params.get("version", "2.1") == "2.1"
        and params.get("charset", "utf-8").lower() in ("utf-8", "utf8", "us-ascii")
    )


def _one(params: QueryParams, name: str) -> str | None:
    values = params.getlist(name)
    if not values:
        return None
    if len(values) > 1:
        raise TaxiiHttpError(400, "Bad filter", f"'{name}' may be given only once")
    return values[0]


def _list(params: QueryParams, name: str) -> Sequence[str] | None:
    values = [v.strip() for raw in params.getlist(name) for v in raw.split(",")]
    if not params.getlist(name):
        return None
    if not all(values):
        raise TaxiiHttpError(400, "Bad filter", f"'{name}' holds an empty value")
    return values


def parse_query(params: QueryParams, endpoint: str) -> tuple[Query, str | None]:
    """The filters of a GET, and the raw ``next`` token (decoded by the caller)."""
    allowed = _FILTERS.get(endpoint, set())
    for key in params:
        if key.startswith("match[") and (not key.endswith("]") or key[6:-1] not in allowed):
            raise TaxiiHttpError(
                400, "Unsupported filter", f"'{key}' is not a filter of this endpoint"
            )
    limit_text = _one(params, "limit")
    limit = DEFAULT_PAGE
    if limit_text is not None:
        if (
            not (limit_text.isascii() and limit_text.isdigit())
            or len(limit_text) > 64
            or int(limit_text) < 1
        ):
            raise TaxiiHttpError(
                400, "Bad filter", "'limit' must be a positive integer (at most 64 digits)"
            )
        limit = min(int(limit_text), MAX_PAGE)  # past the largest page: the largest page
    added_after = _one(params, "added_after")
    if added_after is not None:
        try:
            added_after = parse_ts(added_after)
        except ValueError as exc:
            raise TaxiiHttpError(400, "Bad filter", f"'added_after': {exc}") from None
    ids = _list(params, "match[id]")
    types = _list(params, "match[type]")
    if types is not None and not all(_TYPE_RE.match(t) for t in types):
        raise TaxiiHttpError(400, "Bad filter", "'match[type]' holds an invalid STIX type")
    versions: set[str] = {"last"} if endpoint != "versions" else {"all"}
    raw_versions = _list(params, "match[version]")
    if raw_versions is not None:
        versions = set()
        for value in raw_versions:
            if value in ("last", "first", "all"):
                versions.add(value)
                continue
            try:
                versions.add(version_key(value))
            except ValueError as exc:
                raise TaxiiHttpError(400, "Bad filter", f"'match[version]': {exc}") from None
    specs = _list(params, "match[spec_version]")
    if specs is not None and not all(_SPEC_RE.match(s) for s in specs):
        raise TaxiiHttpError(400, "Bad filter", "'match[spec_version]' must be like 2.1")
    query = Query(
        limit=limit,
        added_after=added_after,
        ids=frozenset(ids) if ids is not None else None,
        types=frozenset(types) if types is not None else None,
        versions=frozenset(versions),
        spec_versions=frozenset(specs) if specs is not None else None,
    )
    return query, _one(params, "next")
