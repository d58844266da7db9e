"""The OpenAPI 3.0 description of the TAXII API, served at ``/openapi.json``."""

from __future__ import annotations

from typing import Any

__all__ = ["openapi_document"]

_MT = "application/taxii+json;version=2.1"


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"content": {_MT: {"schema": schema}}}


_ERROR = {"$ref": "#/components/schemas/Error"}
_ERRORS = {
    str(code): {"description": text, **_json(_ERROR)}
    for code, text in (
        (400, "Malformed request or filter"),
        (401, "Missing or wrong credentials"),
        (403, "Not allowed on this collection"),
        (404, "Unknown resource, or not yours"),
        (405, "Method not allowed"),
        (406, "Accept header not satisfiable"),
    )
}
_RETRY_AFTER = {
    "Retry-After": {
        "description": "Seconds to wait",
        "schema": {"type": "integer", "minimum": 1},
    }
}
_ERRORS["429"] = {
    "description": "Too many failed logins for this organisation from this address",
    "headers": _RETRY_AFTER,
    **_json(_ERROR),
}
_ERRORS["503"] = {
    "description": "Too many logins waiting for their secret check, or (POST) the store "
    "could not be written; retry later",
    "headers": _RETRY_AFTER,
    **_json(_ERROR),
}


def _param(name: str, schema: dict[str, Any], where: str = "query") -> dict[str, Any]:
    return {"name": name, "in": where, "required": where == "path", "schema": schema}


_LIMIT = _param("limit", {"type": "integer", "minimum": 1})
_ADDED_AFTER = _param("added_after", {"type": "string", "format": "date-time"})
_NEXT = _param("next", {"type": "string"})
_MATCH = [
    _param("match[id]", {"type": "string"}),
    _param("match[type]", {"type": "string"}),
    _param("match[version]", {"type": "string"}),
    _param("match[spec_version]", {"type": "string"}),
]
_COLLECTION = _param("collectionId", {"type": "string"}, "path")
_OBJECT = _param("objectId", {"type": "string"}, "path")


_DATE_ADDED = {
    f"X-TAXII-Date-Added-{end}": {
        "description": f"date_added of the {end.lower()} object of the page",
        "schema": {"type": "string", "format": "date-time"},
    }
    for end in ("First", "Last")
}


def _get(
    summary: str, schema: dict[str, Any], params: list[dict[str, Any]], *, paged: bool = False
) -> dict[str, Any]:
    ok: dict[str, Any] = {"description": summary, **_json(schema)}
    if paged:
        ok["headers"] = _DATE_ADDED
    return {
        "get": {
            "summary": summary,
            "parameters": params,
            "responses": {"200": ok, **_ERRORS},
        }
    }


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _strings() -> dict[str, Any]:
    return {"type": "array", "items": {"type": "string"}}


def openapi_document(*, api_root: str, title: str) -> dict[str, Any]:
    root = f"/{api_root}"
    envelope = {"$ref": "#/components/schemas/Envelope"}
    return {
        "openapi": "3.0.3",
        "info": {
            "title": title,
            "version": "2.1",
            "description": "TAXII 2.1 (OASIS) server of the Atlas broker. Every response, "
            f"errors included, is {_MT}; errors use the TAXII error message.",
        },
        "security": [{"basic": []}, {"bearer": []}],
        "paths": {
            "/taxii2/": _get("Server discovery", _ref("Discovery"), []),
            f"{root}/": _get("API root information", _ref("ApiRoot"), []),
            f"{root}/collections/": _get("Collections", _ref("Collections"), []),
            f"{root}/collections/{{collectionId}}/": _get(
                "One collection", {"$ref": "#/components/schemas/Collection"}, [_COLLECTION]
            ),
            f"{root}/collections/{{collectionId}}/objects/": {
                **_get(
                    "Objects, by date added",
                    envelope,
                    [_COLLECTION, _LIMIT, _ADDED_AFTER, _NEXT, *_MATCH],
                    paged=True,
                ),
                "post": {
                    "summary": "Add objects (to the audience the collection names)",
                    "parameters": [_COLLECTION],
                    "requestBody": {"required": True, **_json(envelope)},
                    "responses": {
                        "202": {
                            "description": "Stored; see the status resource",
                            **_json({"$ref": "#/components/schemas/Status"}),
                        },
                        **_ERRORS,
                        **{
                            str(code): {"description": text, **_json(_ERROR)}
                            for code, text in (
                                (413, "Body too large"),
                                (415, "Content-Type is not TAXII 2.1"),
                                (422, "Not valid STIX"),
                                (
                                    500,
                                    "Not confirmed: the store did not confirm the submission "
                                    "and it may have been stored; do not post it again before "
                                    "checking",
                                ),
                            )
                        },
                        "429": {
                            "description": "Over the organisation's submission rate, or too "
                            "many failed logins from this address",
                            "headers": _RETRY_AFTER,
                            **_json(_ERROR),
                        },
                    },
                },
            },
            f"{root}/collections/{{collectionId}}/objects/{{objectId}}/": {
                **_get(
                    "One object's versions",
                    envelope,
                    [_COLLECTION, _OBJECT, _LIMIT, _ADDED_AFTER, _NEXT, *_MATCH[2:]],
                    paged=True,
                ),
                "delete": {
                    "summary": "Delete an object: always refused (403), Atlas collections are "
                    "read-only or write-only for each organisation",
                    "parameters": [_COLLECTION, _OBJECT],
                    "responses": _ERRORS,
                },
            },
            f"{root}/collections/{{collectionId}}/objects/{{objectId}}/versions/": _get(
                "Versions of an object",
                _ref("Versions"),
                [_COLLECTION, _OBJECT, _LIMIT, _ADDED_AFTER, _NEXT, _MATCH[3]],
                paged=True,
            ),
            f"{root}/collections/{{collectionId}}/manifest/": _get(
                "Manifest",
                _ref("Manifest"),
                [_COLLECTION, _LIMIT, _ADDED_AFTER, _NEXT, *_MATCH],
                paged=True,
            ),
            f"{root}/status/{{statusId}}/": _get(
                "Status of an add request (your own only)",
                {"$ref": "#/components/schemas/Status"},
                [_param("statusId", {"type": "string"}, "path")],
            ),
        },
        "components": {
            "securitySchemes": {
                "basic": {"type": "http", "scheme": "basic"},
                "bearer": {"type": "http", "scheme": "bearer"},
            },
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["title"],
                    "properties": {
                        "title": {"type": "string"},
                        "description": {"type": "string"},
                        "http_status": {"type": "string"},
                    },
                },
                "Discovery": {
                    "type": "object",
                    "required": ["title"],
                    "properties": {
                        "title": {"type": "string"},
                        "description": {"type": "string"},
                        "contact": {"type": "string"},
                        "default": {"type": "string"},
                        "api_roots": _strings(),
                    },
                },
                "ApiRoot": {
                    "type": "object",
                    "required": ["title", "versions", "max_content_length"],
                    "properties": {
                        "title": {"type": "string"},
                        "description": {"type": "string"},
                        "versions": _strings(),
                        "max_content_length": {"type": "integer"},
                    },
                },
                "Collections": {
                    "type": "object",
                    "properties": {"collections": {"type": "array", "items": _ref("Collection")}},
                },
                "Manifest": {
                    "type": "object",
                    "properties": {
                        "more": {"type": "boolean"},
                        "next": {"type": "string"},
                        "objects": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "required": ["id", "date_added", "version"],
                                "properties": {
                                    "id": {"type": "string"},
                                    "date_added": {"type": "string", "format": "date-time"},
                                    "version": {"type": "string"},
                                    "media_type": {"type": "string"},
                                },
                            },
                        },
                    },
                },
                "Versions": {
                    "type": "object",
                    "properties": {
                        "more": {"type": "boolean"},
                        "next": {"type": "string"},
                        "versions": _strings(),
                    },
                },
                "Envelope": {
                    "type": "object",
                    "properties": {
                        "more": {"type": "boolean"},
                        "next": {"type": "string"},
                        "objects": {"type": "array", "items": {"type": "object"}},
                    },
                },
                "Collection": {
                    "type": "object",
                    "required": ["id", "title", "can_read", "can_write"],
                    "properties": {
                        "id": {"type": "string"},
                        "title": {"type": "string"},
                        "can_read": {"type": "boolean"},
                        "can_write": {"type": "boolean"},
                    },
                },
                "Status": {
                    "type": "object",
                    "required": ["id", "status", "total_count"],
                    "properties": {
                        "id": {"type": "string"},
                        "status": {"type": "string", "enum": ["pending", "complete"]},
                        "total_count": {"type": "integer"},
                    },
                },
            },
        },
    }
