"""Per-bundle work shared by every recipient: shape checks, versions, markings, references.

Decisions documented here:

- A bundle that is not a JSON object of type ``bundle``, whose ``objects`` is not a list, or
  that holds an element which is not a JSON object with a string ``type`` and an ``id`` of the
  form ``<type>--<uuid>`` (and a string ``modified`` when present) is rejected whole
  (``BundleRejected``): there is no safe way to account for an object one cannot name.
  An object that claims the broker's own STIX identity id is rejected too, so that nobody
  can speak as the broker.
- Versions are keyed by ``(id, modified or "")``. Two copies with the same key and the same
  canonical content are one object; different content is rejected. Well-known TLP
  marking-definitions are exempt: their content is never read.
- Containers for marking inheritance are ``report``, ``grouping`` and ``observed-data``. An
  object without a TLP marking of its own (PAP or statement markings alone do not count)
  takes the strictest of the originator's default (else AMBER) and the effective TLP of
  every container of the submission that lists it in ``object_refs``, transitively, and
  the statement markings of those containers too. This is the fail-closed reading of the
  design: a container can raise an unmarked object's level, never lower it below the
  default. A container whose own markings are unknown or unreadable passes that on: its
  unmarked contents are withheld as ``unknown-marking``.
- A marking-definition object of the bundle that is neither a statement (see
  ``_markings``), nor a PAP id, nor a well-known TLP id is an unknown marking itself: it is
  withheld (``unknown-marking``), and the closure withholds whatever mentions it.
- Marking-definition and extension-definition objects without TLP markings of their own get
  no default level: they are metadata that travels only with the objects that use them, so
  their exposure is bounded by their users'. When they carry TLP markings, those apply;
  when a container lists them, its markings apply as to any unmarked object.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from ._directory import Directory, Organisation
from ._errors import BundleRejected, PolicyError
from ._markings import (
    CANONICAL_TLP_DEFINITIONS,
    NO_MARKS,
    PAP_IDS,
    TLP_IDS,
    UNREADABLE,
    Granular,
    MarkingTable,
    Marks,
    is_statement_definition,
    selector_resolves,
)
from ._refs import Finder
from ._tlp import Tlp

__all__ = [
    "DEFINITION_TYPES",
    "REF_CONTAINERS",
    "Entry",
    "PreparedBundle",
    "canonical_digest",
    "normal_timestamp",
    "prepare",
    "stix_objects",
]

INHERIT_CONTAINERS = frozenset({"report", "grouping", "observed-data"})
REF_CONTAINERS = frozenset({"report", "grouping", "note", "opinion"})
_EMPTY: frozenset[str] = frozenset()
_ABSENT: Any = object()
DEFINITION_TYPES = frozenset({"marking-definition", "extension-definition"})

_ID_RE = re.compile(
    r"^([a-z0-9][a-z0-9-]*)--"
    r"([0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12})\Z"
)


@dataclass(slots=True, eq=False)
class Entry:
    """One object version of the bundle and everything recipient-independent about it."""

    obj: dict[str, Any]
    id: str
    type: str
    modified: str
    digest: str
    marks: Marks
    granular: tuple[Granular, ...] | None
    props: dict[str, frozenset[str]]
    refs: frozenset[str]
    object_refs: frozenset[str]
    marking_refs: frozenset[str]
    definition: bool
    revoked: bool
    canonical: Mapping[str, Any] | None = None
    items: tuple[frozenset[str], ...] | None = None
    """Containers: the ids of the bundle each ``object_refs`` item names (None: unreadable)."""
    level: Tlp | None = None
    unknown: bool = False
    mclass: int = 0
    uses: frozenset[str] = frozenset()
    """The ids of definitions (marking- and extension-definitions) of the bundle it mentions."""
    rank: int = -1
    """``level.rank``, or -1 without a level."""
    tlp_key: str = "none"
    """``level.value``, or ``"none"``: the key of the per-TLP counts."""
    version_ref: tuple[str, str | None] | None = None
    """A ``language-content``'s ``(object_ref, object_modified)``: the id lower-cased, the
    modified normalised, None when absent or not a string. It translates that version."""


@dataclass(slots=True, eq=False)
class PreparedBundle:
    entries: list[Entry]
    """Sorted by (id, modified): the delivery order."""
    by_id: dict[str, list[int]]
    referrers: dict[str, list[int]]
    decision_order: list[int]
    """Entry indices sorted by digest: the decision order."""
    table: MarkingTable
    originator: Organisation
    finder: Finder
    classes: list[tuple[Marks, Tlp | None, bool, tuple[Granular, ...] | None]]
    """Distinct (marks, level, unknown, granular) combinations; ``Entry.mclass`` indexes it."""
    definitions: set[str]
    by_version: dict[tuple[str, str], int]
    """(lower-cased id, normalised modified) → entry index."""
    versions_of: dict[str, list[int]]
    """Lower-cased id → the entry indices of its versions."""


def stix_objects(bundle: object) -> list[tuple[dict[str, Any], str, str, str]]:
    """Check the bundle's shape; return (object, id, type, modified-or-empty) per element."""
    if not isinstance(bundle, Mapping) or bundle.get("type") != "bundle":
        raise BundleRejected("not a STIX bundle: expected a JSON object with type 'bundle'")
    for name in ("object_marking_refs", "granular_markings"):
        if name in bundle:
            # STIX 2.1 bundles carry no markings: whatever they say, it applies to nothing.
            raise BundleRejected(f"the bundle itself has '{name}': mark the objects instead")
    objects = bundle.get("objects", [])
    if not isinstance(objects, list):
        raise BundleRejected("bundle 'objects' is not a list")
    out: list[tuple[dict[str, Any], str, str, str]] = []
    for i, obj in enumerate(objects):
        if not isinstance(obj, dict):
            raise BundleRejected(f"objects[{i}] is not a JSON object")
        obj_type = obj.get("type")
        obj_id = obj.get("id")
        if not isinstance(obj_type, str) or not isinstance(obj_id, str):
            raise BundleRejected(f"objects[{i}] has no string 'type' and 'id'")
        match = _ID_RE.match(obj_id)
        if match is None or match.group(1) != obj_type:
            raise BundleRejected(f"objects[{i}].id is not of the form '{obj_type}--<uuid>'")
        modified = obj.get("modified", "")
        if not isinstance(modified, str):
            raise BundleRejected(f"objects[{i}].modified is not a string")
        out.append((obj, obj_id, obj_type, modified))
    return out


_TIMESTAMP_RE = re.compile(
    r"([0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2})(?:\.([0-9]+))?Z"
)


def normal_timestamp(value: str) -> str:
    """A STIX timestamp without trailing zeros in its fraction; anything else unchanged."""
    match = _TIMESTAMP_RE.fullmatch(value)
    if match is None:
        return value
    fraction = (match.group(2) or "").rstrip("0")
    return f"{match.group(1)}.{fraction}Z" if fraction else f"{match.group(1)}Z"


def canonical_digest(obj: Mapping[str, Any]) -> str:
    """SHA-256 of the object's canonical JSON (sorted keys, no whitespace, UTF-8)."""
    try:
        text = json.dumps(
            obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
        )
    except (TypeError, ValueError) as exc:
        raise BundleRejected("an object holds a value that is not plain JSON") from exc
    except RecursionError as exc:
        raise BundleRejected("an object is nested too deeply to compare") from exc
    return hashlib.sha256(text.encode()).hexdigest()


def _dedupe(
    items: list[tuple[dict[str, Any], str, str, str]],
) -> dict[tuple[str, str], tuple[dict[str, Any], str, str, str]]:
    unique: dict[tuple[str, str], tuple[dict[str, Any], str, str, str]] = {}
    for item in items:
        # ``…:00.000Z`` and ``…:00Z`` are one instant: one version (as version_digests says).
        key = (item[1], normal_timestamp(item[3]))
        first = unique.get(key)
        if first is None:
            unique[key] = item
        elif (
            first[0] != item[0]
            and item[1] not in TLP_IDS
            and canonical_digest(first[0]) != canonical_digest(item[0])
        ):
            raise BundleRejected(
                f"two objects share an id and modified but differ in content (type {item[2]!r})"
            )
    return unique


def prepare(
    bundle: object, *, directory: Directory, originator: str, digest_key: bytes
) -> PreparedBundle:
    org = directory.organisation(originator)
    if org is None:
        raise PolicyError(f"originator {originator!r} is not in the directory")
    unique = _dedupe(stix_objects(bundle))
    broker_id = directory.broker.stix_identity
    by_uuid: dict[str, tuple[str, ...]] = {}
    statements = {rule.marking for rule in directory.statement_rules}
    for (obj_id, _), (obj, _, obj_type, _) in unique.items():
        if obj_id.lower() == broker_id.lower():
            raise BundleRejected("an object claims the broker's own identity id")
        uuid = obj_id.partition("--")[2].lower()
        known = by_uuid.get(uuid, ())
        if obj_id not in known:
            by_uuid[uuid] = (*known, obj_id)
        if (
            obj_type == "marking-definition"
            and obj_id not in TLP_IDS
            and is_statement_definition(obj)
        ):
            statements.add(obj_id)
    table = MarkingTable(frozenset(statements))
    entries: list[Entry] = []
    mac = hmac.new(digest_key, digestmod="sha256")
    finder = Finder(by_uuid)
    for key in sorted(unique):
        obj, obj_id, obj_type, modified = unique[key]
        entries.append(_entry(obj, obj_id, obj_type, modified, table, finder, mac))
    by_id: dict[str, list[int]] = {}
    referrers: dict[str, list[int]] = {}
    definitions: set[str] = set()
    for index, entry in enumerate(entries):
        by_id.setdefault(entry.id, []).append(index)
        if entry.definition:
            definitions.add(entry.id)
        for ref in entry.refs:
            referrers.setdefault(ref, []).append(index)
    _inherit(entries, by_id, org.default_tlp or Tlp.AMBER)
    for entry in entries:
        if (
            entry.type == "marking-definition"
            and entry.canonical is None
            and entry.id not in table.statement_ids
            and entry.id not in PAP_IDS
        ):
            # A definition the broker cannot read (custom, or a forged "TLP" one) is itself
            # an unknown marking: withheld, and so is anything that mentions it.
            entry.unknown = True
        if entry.refs and not entry.refs.isdisjoint(definitions):
            entry.uses = entry.refs & definitions
        if entry.level is not None:
            entry.rank = entry.level.rank
            entry.tlp_key = entry.level.value
    order = sorted(range(len(entries)), key=lambda i: entries[i].digest)
    # Marks objects are shared per distinct marking list (MarkingTable caches them), so their
    # identity is a cheap key while the bundle is being prepared.
    class_index: dict[tuple[int, Tlp | None, bool, int], int] = {}
    classes: list[tuple[Marks, Tlp | None, bool, tuple[Granular, ...] | None]] = []
    for entry in entries:
        mkey = (id(entry.marks), entry.level, entry.unknown, id(entry.granular))
        mclass = class_index.get(mkey)
        if mclass is None:
            mclass = class_index[mkey] = len(classes)
            classes.append((entry.marks, entry.level, entry.unknown, entry.granular))
        entry.mclass = mclass
    by_version: dict[tuple[str, str], int] = {}
    versions_of: dict[str, list[int]] = {}
    for i, e in enumerate(entries):
        by_version[(e.id.lower(), normal_timestamp(e.modified))] = i
        versions_of.setdefault(e.id.lower(), []).append(i)
    return PreparedBundle(
        entries,
        by_id,
        referrers,
        order,
        table,
        org,
        finder,
        classes,
        definitions,
        by_version,
        versions_of,
    )


def _entry(
    obj: dict[str, Any],
    obj_id: str,
    obj_type: str,
    modified: str,
    table: MarkingTable,
    finder: Finder,
    mac: hmac.HMAC,
) -> Entry:
    keyed = mac.copy()
    keyed.update(f"{obj_id}|{modified}".encode())
    digest = keyed.hexdigest()
    canonical = CANONICAL_TLP_DEFINITIONS.get(obj_id)
    if canonical is not None:
        # The bundle's copy of a well-known TLP definition is replaced; nothing of it is read.
        return Entry(
            obj=obj,
            id=obj_id,
            type=obj_type,
            modified=modified,
            digest=digest,
            marks=Marks(),
            granular=(),
            props={},
            refs=frozenset(),
            object_refs=frozenset(),
            marking_refs=frozenset(),
            definition=True,
            revoked=False,
            canonical=canonical,
        )
    props = finder.mentions(obj, obj_id)
    refs = object_refs = marking_refs = _EMPTY
    if props:
        if len(props) == 1:
            refs = next(iter(props.values()))
        else:
            refs = frozenset().union(*props.values())
        object_refs = props.get("object_refs", _EMPTY)
        if "object_marking_refs" in props or "granular_markings" in props:
            marking_refs = props.get("object_marking_refs", _EMPTY) | props.get(
                "granular_markings", _EMPTY
            )
    items = None
    if obj_type in REF_CONTAINERS:
        listed = obj.get("object_refs")
        if isinstance(listed, list) and all(isinstance(ref, str) for ref in listed):
            items = tuple(_item_ids(ref, finder, obj_id) for ref in listed)
    # An explicit null is unreadable (see ``_markings``); only an absent property means none.
    marks = obj.get("object_marking_refs", _ABSENT)
    marks = NO_MARKS if marks is _ABSENT else UNREADABLE if marks is None else table.resolve(marks)
    version_ref = None
    if obj_type == "language-content":
        target, when = obj.get("object_ref"), obj.get("object_modified")
        if isinstance(target, str):
            version_ref = (
                target.lower(),
                normal_timestamp(when) if isinstance(when, str) else None,
            )
    granular = obj.get("granular_markings", _ABSENT)
    if granular is not _ABSENT:
        granular = None if granular is None else table.granular(granular)
        if granular and not all(
            selector_resolves(obj, selector)
            for raw in obj["granular_markings"]
            for selector in raw["selectors"]
        ):
            granular = None  # a selector that names nothing: unreadable (fail closed)
    return Entry(
        obj,
        obj_id,
        obj_type,
        modified,
        digest,
        marks,
        () if granular is _ABSENT else granular,
        props,
        refs,
        object_refs,
        marking_refs,
        obj_type in DEFINITION_TYPES,
        obj.get("revoked") is True,
        None,
        items,
        version_ref=version_ref,
    )


def _item_ids(ref: str, finder: Finder, self_id: str) -> frozenset[str]:
    found: set[str] = set()
    finder.add(ref, found)
    found.discard(self_id)
    return frozenset(found) if found else _EMPTY


def _inherit(entries: list[Entry], by_id: Mapping[str, list[int]], default: Tlp) -> None:
    """Effective markings per entry: its own; unmarked, the strictest of default and
    containers.

    An entry without a TLP marking of its own takes the strictest TLP of the originator's
    default and of every container listing it, transitively, and every statement marking
    of those containers (a report marked "not for law enforcement" says so of what it
    lists). Definitions get no default, but do take their containers' markings: a
    definition listed in a RED report is RED. The broker's canonical TLP definitions and
    the well-known PAP definitions take nothing: their content is public.
    """
    unmarked: list[bool] = []
    statements: list[frozenset[str]] = []
    for entry in entries:
        entry.unknown = entry.marks.unknown or entry.marks.unreadable
        own = entry.marks.tlp
        statements.append(entry.marks.statements)
        if own is not None or entry.canonical is not None or entry.id in PAP_IDS:
            entry.level = own
            unmarked.append(False)
        else:
            entry.level = None if entry.definition else default
            unmarked.append(True)
    work = [i for i, e in enumerate(entries) if e.type in INHERIT_CONTAINERS and e.object_refs]
    while work:
        index = work.pop()
        container = entries[index]
        passed = statements[index]
        for ref in container.object_refs:
            for j in by_id[ref]:
                if not unmarked[j]:
                    continue
                target = entries[j]
                changed = False
                if container.level is not None and (
                    target.level is None or container.level.rank > target.level.rank
                ):
                    target.level = container.level
                    changed = True
                if container.unknown and not target.unknown:
                    target.unknown = True
                    changed = True
                if not passed <= statements[j]:
                    statements[j] = statements[j] | passed
                    changed = True
                if changed and target.type in INHERIT_CONTAINERS:
                    work.append(j)
    shared: dict[tuple[int, frozenset[str]], Marks] = {}
    for entry, effective in zip(entries, statements, strict=True):
        if effective != entry.marks.statements:
            key = (id(entry.marks), effective)
            marks = shared.get(key)
            if marks is None:
                marks = shared[key] = replace(entry.marks, statements=effective)
            entry.marks = marks
