"""Structural checks of STIX 2.1 bundles at the edges (publish, router, TAXII).

These checks are the cheap gate in front of the policy: the document is JSON, a bundle,
every object has the common properties the router relies on and the properties STIX 2.1
requires of its type (``_REQUIRED``; a STIX pattern is checked for its structure only).
They run on plain dicts parsed with orjson; full schema validation (stix2-validator) is for
tests and tools.

Every value inside an object must also be one the broker can write back out: nested at most
``_MAX_DEPTH`` containers deep, integers within 64 bits and finite numbers. The router parses
submissions with pydantic, which reads ``NaN``, ``Infinity``, ``1e400`` and integers of any
size; orjson cannot serialize those when it seals the recipients' packages.
"""

from __future__ import annotations

import functools
import json
import math
import re
from collections.abc import Iterable, Mapping
from typing import Any

import orjson

from policy import is_observable, observable_id_problem, selector_resolves

from ._errors import AdapterError

__all__ = [
    "InvalidBundle",
    "check_bundle",
    "parse_bundle",
    "parse_json",
    "value_problem",
]

_ID_RE = re.compile(
    r"^[a-z][a-z0-9-]*--[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\Z"
)
MAX_DEPTH = 32
"""Containers an object may nest (deeper is refused as ``invalid-bundle``)."""
_MAX_DEPTH = MAX_DEPTH
_INT_MIN = -(2**63)
_INT_MAX = 2**64 - 1
"""The integers orjson serializes (signed and unsigned 64-bit)."""


class InvalidBundle(AdapterError):
    """The document is not a usable STIX 2.1 bundle; the message says what and where."""


_DIGITS_AS_ZERO = bytes.maketrans(b"123456789", b"000000000")
_LONG_RUN = b"0" * 19


def parse_json(raw: bytes) -> Any:
    """Parse JSON with orjson, keeping integers exact.

    orjson reads an integer beyond 64 bits as a float, which would change the document
    silently (and then pass the 64-bit check). Only a run of 19 or more digits can be one,
    so only then is the document read again with the standard library, which keeps every
    integer as written (and ``check_bundle`` refuses what orjson cannot write back).
    Raises ``orjson.JSONDecodeError``.
    """
    data = orjson.loads(raw)
    # Digits mapped to "0", then one substring search: a tenth of orjson's own parse time
    # here, where a regex scan took six times it.
    if raw.translate(_DIGITS_AS_ZERO).find(_LONG_RUN) >= 0:
        try:
            data = json.loads(raw)
        except RecursionError:
            # orjson reads 1,024 levels, the standard library fewer: the same error.
            raise orjson.JSONDecodeError("nested too deeply", "", 0) from None
    return data


def parse_bundle(
    raw: bytes, *, source: str = "bundle", max_bytes: int, max_objects: int
) -> dict[str, Any]:
    """Parse and check a bundle given as bytes; errors name ``source`` and the location."""
    if len(raw) > max_bytes:
        raise InvalidBundle(
            f"{source}: {len(raw):,} bytes is over the size limit of {max_bytes:,} bytes"
        )
    try:
        data = parse_json(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidBundle(f"{source}: not JSON: {exc}") from exc
    check_bundle(data, source=source, max_objects=max_objects)
    return data  # type: ignore[no-any-return]


BUNDLE_MARKINGS = ("object_marking_refs", "granular_markings")


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
    for name in BUNDLE_MARKINGS:
        if name in data:
            raise InvalidBundle(
                f"{source}: the bundle itself has '{name}': a STIX 2.1 bundle carries no "
                "markings, so nobody would read them; mark the objects"
            )
    objects = data.get("objects", [])
    if not isinstance(objects, list):
        raise InvalidBundle(f"{source}: 'objects' is a {_kind(objects)}, expected a list")
    if len(objects) > max_objects:
        raise InvalidBundle(
            f"{source}: {len(objects):,} objects is over the limit of {max_objects:,} per bundle"
        )
    for i, obj in enumerate(objects):
        problem = _object_problem(obj)
        if problem is not None:
            raise InvalidBundle(f"{source}: objects[{i}]{problem}")


def _object_problem(obj: Any) -> str | None:
    """What is wrong with one object, written to follow ``objects[i]``, or None."""
    # A parsed object is a dict: the abstract isinstance check is for anything else.
    if obj.__class__ is not dict and not isinstance(obj, Mapping):
        return f" is a {_kind(obj)}, expected an object"
    obj_type = obj.get("type")
    if not isinstance(obj_type, str) or not obj_type:
        return ": missing 'type'"
    obj_id = obj.get("id")
    if not isinstance(obj_id, str) or not _ID_RE.match(obj_id):
        return f" ({obj_type}): 'id' {obj_id!r} is not a STIX identifier"
    if not obj_id.startswith(obj_type + "--"):
        return f": id {obj_id!r} does not match type {obj_type!r}"
    if obj.get("spec_version") != "2.1":
        return f" ({obj_id}): 'spec_version' is {obj.get('spec_version')!r}, expected '2.1'"
    problem = (
        _timestamps_problem(obj, obj_type)
        or _required_problem(obj, obj_type)
        or observable_id_problem(obj, obj_id, obj_type)
        or _properties_problem(obj)
    )
    return None if problem is None else f" ({obj_id}): {problem}"


_REQUIRED: dict[str, tuple[tuple[str, str], ...]] = {
    "attack-pattern": (("name", "text"),),
    "campaign": (("name", "text"),),
    "course-of-action": (("name", "text"),),
    "grouping": (("context", "text"), ("object_refs", "refs")),
    "identity": (("name", "text"),),
    "incident": (("name", "text"),),
    "indicator": (("pattern", "text"), ("pattern_type", "text"), ("valid_from", "timestamp")),
    "infrastructure": (("name", "text"),),
    "intrusion-set": (("name", "text"),),
    "malware": (("is_family", "boolean"),),
    "malware-analysis": (("product", "text"),),
    "note": (("content", "text"), ("object_refs", "refs")),
    "observed-data": (
        ("first_observed", "timestamp"),
        ("last_observed", "timestamp"),
        ("number_observed", "count"),
    ),
    "opinion": (("opinion", "text"), ("object_refs", "refs")),
    "report": (("name", "text"), ("published", "timestamp"), ("object_refs", "refs")),
    "threat-actor": (("name", "text"),),
    "tool": (("name", "text"),),
    "vulnerability": (("name", "text"),),
    "relationship": (("relationship_type", "text"), ("source_ref", "ref"), ("target_ref", "ref")),
    "sighting": (("sighting_of_ref", "ref"),),
    "language-content": (("object_ref", "ref"), ("contents", "object")),
    "autonomous-system": (("number", "natural"),),
    "directory": (("path", "text"),),
    "domain-name": (("value", "text"),),
    "email-addr": (("value", "text"),),
    "email-message": (("is_multipart", "boolean"),),
    "ipv4-addr": (("value", "text"),),
    "ipv6-addr": (("value", "text"),),
    "mac-addr": (("value", "text"),),
    "mutex": (("name", "text"),),
    "network-traffic": (("protocols", "texts"),),
    "software": (("name", "text"),),
    "url": (("value", "text"),),
}
"""The properties STIX 2.1 requires of each of its types, beyond the common ones, with the
kind of value each must hold (``_KIND_PROBLEMS``). Recipients' tools refuse an object
without them (stix2 does), so the broker refuses it at the door rather than relay it."""

_KIND_PROBLEMS: dict[str, Any] = {
    "text": lambda v: None if v.__class__ is str else "a string",
    "texts": lambda v: (
        None
        if v.__class__ is list and v and all(i.__class__ is str and i for i in v)
        else "a non-empty list of strings"
    ),
    "boolean": lambda v: None if v is True or v is False else "true or false",
    "count": lambda v: (
        None if v.__class__ is int and 1 <= v <= 999_999_999 else "a whole number from 1"
    ),
    "natural": lambda v: None if v.__class__ is int else "a whole number",
    "ref": lambda v: None if v.__class__ is str else "an identifier",  # checked with refs
    "refs": lambda v: None if v.__class__ is list and v else "a non-empty list of identifiers",
    "object": lambda v: None if v.__class__ is dict and v else "a non-empty object",
    "timestamp": lambda v: None if isinstance(_stamp(v, ""), tuple) else "a STIX timestamp",
}


def _required_problem(obj: Mapping[str, Any], obj_type: str) -> str | None:
    """Why ``obj`` lacks a property its type requires (or holds the wrong kind), or None."""
    for name, kind in _REQUIRED.get(obj_type, ()):
        value = obj.get(name, _ABSENT)
        if value is _ABSENT:
            return f"{obj_type} objects need '{name}'"
        if value.__class__ is str and (kind == "text" or kind == "ref"):
            continue  # what those kinds take, without a call (refs are checked later)
        wrong = _KIND_PROBLEMS[kind](value)
        if wrong is not None:
            return f"'{name}' is {_shown(value)}, expected {wrong}"
    if obj_type == "indicator" and obj["pattern_type"] == "stix":
        pattern = obj["pattern"]
        # Only short patterns are cached: the cache must not keep large strings alive.
        return _short_pattern_problem(pattern) if len(pattern) <= 512 else _pattern_problem(pattern)
    return None


_QUOTED = re.compile(r"'(?:[^'\\]|\\.)*'")


def _pattern_problem(pattern: str) -> str | None:
    """A cheap structural check of a STIX pattern: it opens with an observation ('[' or
    '('), and outside its quoted strings its brackets and parentheses pair up. The full
    grammar is for tools; this refuses what no STIX tool could read."""
    if "\\" in pattern:
        bare = _QUOTED.sub("", pattern)
        unclosed = "'" in bare
    else:
        # Without escapes a quoted string runs from one quote to the next, as _QUOTED
        # reads it: outside the strings is every other piece between quotes, at a third
        # of the regex's cost.
        pieces = pattern.split("'")
        unclosed = len(pieces) % 2 == 0  # an odd number of quotes
        bare = "".join(pieces[::2])
    if unclosed:
        return f"'pattern' {_shown(pattern)} has a quote that is never closed"
    if not bare.lstrip().startswith(("[", "(")):
        return f"'pattern' {_shown(pattern)} does not open with an observation ('[')"
    if bare.count("[") != bare.count("]") or bare.count("(") != bare.count(")"):
        return f"'pattern' {_shown(pattern)} has brackets or parentheses that do not pair up"
    return None


_short_pattern_problem = functools.lru_cache(maxsize=4096)(_pattern_problem)


_TIMESTAMP_RE = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})T([0-9]{2}):([0-9]{2}):([0-9]{2})(?:\.([0-9]+))?Z"
)
_DAYS = (31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)


@functools.lru_cache(maxsize=4096)
def _instant(value: str) -> tuple[str, str] | None:
    """A STIX timestamp as (``YYYY-MM-DDTHH:MM:SS``, fraction digits without trailing
    zeros), which orders as the instants do; None if it is not one (ASCII digits only).
    Cached: the objects of a bundle share few timestamps."""
    match = _TIMESTAMP_RE.fullmatch(value)
    if match is None:
        return None
    year, month, day, hour, minute, second = map(int, match.groups()[:6])
    leap = year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)
    if not (
        year >= 1
        and 1 <= month <= 12
        and 1 <= day <= _DAYS[month - 1] + (month == 2 and leap)
        and hour <= 23
        and minute <= 59
        and second <= 59
    ):
        return None
    return value[:19], (match.group(7) or "").rstrip("0")


VERSIONED_TYPES = frozenset(
    {
        "attack-pattern", "campaign", "course-of-action", "grouping", "identity", "incident",
        "indicator", "infrastructure", "intrusion-set", "location", "malware",
        "malware-analysis", "note", "observed-data", "opinion", "report", "threat-actor",
        "tool", "vulnerability", "relationship", "sighting", "language-content",
        "extension-definition",
    }
)  # fmt: skip
"""STIX 2.1 types that always carry ``created`` and ``modified`` (SDOs, SROs, and the
language-content and extension-definition objects)."""


def _timestamps_problem(obj: Mapping[str, Any], obj_type: str) -> str | None:
    """Why ``created``/``modified`` are missing or not usable STIX timestamps, or None.

    The router tells versions apart by ``modified``, and only the author of an object may
    add versions: an object that has ``created`` (any SDO or SRO, custom ones included)
    must have ``modified`` too, or it would pass as an unversioned observable that nobody
    owns. It must be a real instant, written as STIX writes them
    (``2024-05-01T00:00:00Z``, any fraction of a second), and not before ``created``.
    Marking-definitions have ``created`` and are never versioned.
    """
    created = obj.get("created", _ABSENT)
    modified = obj.get("modified", _ABSENT)
    if obj_type == "language-content" and "object_modified" in obj:
        # It names the version translated: the broker matches it to one, so it must be one.
        named = _stamp(obj["object_modified"], "object_modified")
        if isinstance(named, str):
            return named
    if is_observable(obj_type) and (created is not _ABSENT or modified is not _ABSENT):
        # A 'modified' would make it a versioned object with an owner, and then one member
        # could keep the others from sharing that address.
        return "observables are not versioned: no 'created' or 'modified'"
    if created is _ABSENT:
        if obj_type in VERSIONED_TYPES:
            return f"{obj_type} objects need 'created' and 'modified'"
        if modified is _ABSENT:
            return None  # an observable
    elif modified is _ABSENT and obj_type != "marking-definition":
        return "an object with 'created' needs 'modified' (STIX versions objects by it)"
    first = _stamp(created, "created") if created is not _ABSENT else None
    if isinstance(first, str):
        return first
    if modified is _ABSENT:
        return None
    last = first if modified == created else _stamp(modified, "modified")
    if isinstance(last, str):
        return last
    if first is not None and last is not None and last is not first:
        width = max(len(first[1]), len(last[1]))
        if (last[0], last[1].ljust(width, "0")) < (first[0], first[1].ljust(width, "0")):
            return "'modified' is earlier than 'created'"
    return None


_ABSENT = object()


def _stamp(value: Any, name: str) -> tuple[str, str] | str:
    """The instant of a timestamp property, or the problem with it."""
    # Bounded before the cache sees it: a valid one is 20 to 30-odd characters.
    instant = _instant(value) if isinstance(value, str) and len(value) <= 64 else None
    if instant is None:
        return (
            f"'{name}' {_shown(value)} is not a STIX timestamp "
            "(YYYY-MM-DDTHH:MM:SS[.fraction]Z, in UTC)"
        )
    return instant


def _properties_problem(obj: Mapping[str, Any]) -> str | None:
    """One pass over the properties: references, then values (see ``_value_problem``).

    A top-level ``*_ref`` or ``*_refs`` must hold STIX identifiers (``object_marking_refs``
    aside: markings the broker cannot read withhold the object). The broker compares
    references (who authored an object, what a view must carry): a reference with a space,
    a newline or of another type than the spec says would slip past those comparisons."""
    for name, value in obj.items():
        kind = value.__class__
        if name == "granular_markings":
            problem = _selectors_problem(obj, value)
            if problem is not None:
                return problem
        if "_ref" in name and name != "object_marking_refs":
            # A plain ``*_ref`` holding an identifier is passed here; anything else is
            # judged (and worded) by _ref_problem.
            if not (
                kind is str
                and name.endswith("_ref")
                and name != "created_by_ref"
                and _ID_RE.match(value) is not None
            ):
                problem = _ref_problem(name, value)
                if problem is not None:
                    return problem
        if kind is str:
            continue
        if kind is list:
            for item in value:
                if item.__class__ is not str:
                    break
            else:
                continue  # a list of strings (markings, labels): nothing to relay wrongly
        problem = _value_problem(value, 1)
        if problem is not None:
            return problem
    return None


def _selectors_problem(obj: Mapping[str, Any], markings: Any) -> str | None:
    """A granular selector must name something the object holds (its shape is the policy's
    to judge: markings the broker cannot read withhold the object)."""
    if not isinstance(markings, list):
        return None
    for j, entry in enumerate(markings):
        selectors = entry.get("selectors") if isinstance(entry, Mapping) else None
        for selector in selectors if isinstance(selectors, list) else ():
            if isinstance(selector, str) and selector and not selector_resolves(obj, selector):
                return (
                    f"granular_markings[{j}] selector {_shown(selector)} names nothing in the "
                    "object (a list index is a step of its own: 'external_references.[0].url')"
                )
    return None


def _ref_problem(name: str, value: Any) -> str | None:
    if name.endswith("_ref"):
        refs = [value]
    elif name.endswith("_refs"):
        if not isinstance(value, list):
            return f"'{name}' is a {_kind(value)}, expected a list of identifiers"
        refs = value
    else:
        return None
    for ref in refs:
        if not isinstance(ref, str) or _ID_RE.match(ref) is None:
            return f"'{name}' holds {_shown(ref)}, which is not a STIX identifier"
    if name == "created_by_ref" and not value.startswith("identity--"):
        return f"'created_by_ref' {_shown(value)} is not an identity"
    return None


def value_problem(value: Any) -> str | None:
    """Why a JSON value cannot be relayed as is (nesting, integer range, NaN), or None."""
    return _value_problem(value, 0)


def _value_problem(value: Any, level: int) -> str | None:
    """Why ``value`` (inside ``level`` containers) cannot be relayed, or None."""
    # Concrete types first: parsed JSON is dicts, lists and scalars, and the abstract
    # isinstance checks were a fifth of the bundle check.
    kind = value.__class__
    if kind is dict or (kind is not list and isinstance(value, Mapping)):
        items: Iterable[Any] = value.values()
    elif kind is list or isinstance(value, list):
        items = value
    elif isinstance(value, int):
        return (
            None if _INT_MIN <= value <= _INT_MAX else "holds an integer outside the 64-bit range"
        )
    elif isinstance(value, float) and not math.isfinite(value):
        return "holds a number that is not finite (NaN or Infinity)"
    else:
        return None
    if level >= _MAX_DEPTH:
        return f"nested deeper than {_MAX_DEPTH} levels"
    for item in items:
        if item.__class__ is str:
            continue
        problem = _value_problem(item, level + 1)
        if problem is not None:
            return problem
    return None


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


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
