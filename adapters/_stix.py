"""Structural checks of STIX 2.1 bundles at the edges (publish, router, TAXII).

These checks are the cheap gate in front of the policy: the document is JSON, a bundle,
and every object has the common properties the router relies on. They run on plain dicts
parsed with orjson; full schema validation (stix2-validator) is for tests and tools.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import orjson

from ._errors import AdapterError

__all__ = ["InvalidBundle", "check_bundle", "parse_bundle"]

_ID_RE = re.compile(
    r"^[a-z][a-z0-9-]*--[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
)
_MAX_DEPTH = 32


class InvalidBundle(AdapterError):
    """The document is not a usable STIX 2.1 bundle; the message says what and where."""


def parse_bundle(
    raw: bytes, *, source: str = "bundle", max_bytes: int, max_objects: int
) -> dict[str, Any]:
    """Parse and check a bundle given as bytes; errors name ``source`` and the location."""
    if len(raw) > max_bytes:
        raise InvalidBundle(
            f"{source}: {len(raw):,} bytes is over the size limit of {max_bytes:,} bytes"
        )
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidBundle(f"{source}: not JSON: {exc}") from exc
    check_bundle(data, source=source, max_objects=max_objects)
    return data  # type: ignore[no-any-return]


def check_bundle(data: Any, *, source: str = "bundle", max_objects: int) -> None:
    if not isinstance(data, Mapping):
        raise InvalidBundle(
            f"{source}: not a STIX bundle: the top level is a {_kind(data)}, not an object"
        )
    if data.get("type") != "bundle":
        raise InvalidBundle(
            f"{source}: not a STIX bundle: 'type' is {data.get('type')!r}, expected 'bundle'"
        )
    bundle_id = data.get("id")
    if (
        not isinstance(bundle_id, str)
        or not bundle_id.startswith("bundle--")
        or not _ID_RE.match(bundle_id)
    ):
        raise InvalidBundle(f"{source}: 'id' {bundle_id!r} is not a bundle id (bundle--<uuid>)")
    if "spec_version" in data:
        raise InvalidBundle(
            f"{source}: a bundle with 'spec_version' is STIX 2.0; Atlas takes STIX 2.1 bundles"
        )
    objects = data.get("objects", [])
    if not isinstance(objects, list):
        raise InvalidBundle(f"{source}: 'objects' is a {_kind(objects)}, expected a list")
    if len(objects) > max_objects:
        raise InvalidBundle(
            f"{source}: {len(objects):,} objects is over the limit of {max_objects:,} per bundle"
        )
    for i, obj in enumerate(objects):
        where = f"{source}: objects[{i}]"
        if not isinstance(obj, Mapping):
            raise InvalidBundle(f"{where} is a {_kind(obj)}, expected an object")
        obj_type = obj.get("type")
        if not isinstance(obj_type, str) or not obj_type:
            raise InvalidBundle(f"{where}: missing 'type'")
        obj_id = obj.get("id")
        if not isinstance(obj_id, str) or not _ID_RE.match(obj_id):
            raise InvalidBundle(f"{where} ({obj_type}): 'id' {obj_id!r} is not a STIX identifier")
        if not obj_id.startswith(obj_type + "--"):
            raise InvalidBundle(f"{where}: id {obj_id!r} does not match type {obj_type!r}")
        if obj.get("spec_version") != "2.1":
            raise InvalidBundle(
                f"{where} ({obj_id}): 'spec_version' is {obj.get('spec_version')!r}, expected '2.1'"
            )
        if _depth(obj) > _MAX_DEPTH:
            raise InvalidBundle(f"{where} ({obj_id}): nested deeper than {_MAX_DEPTH} levels")


def _depth(value: Any, level: int = 0) -> int:
    if level > _MAX_DEPTH:
        return level
    if isinstance(value, Mapping):
        return max((_depth(v, level + 1) for v in value.values()), default=level + 1)
    if isinstance(value, list):
        return max((_depth(v, level + 1) for v in value), default=level + 1)
    return level


def _kind(value: Any) -> str:
    return {
        dict: "object",
        list: "list",
        str: "string",
        int: "number",
        float: "number",
        bool: "boolean",
        type(None): "null",
    }.get(type(value), type(value).__name__)
