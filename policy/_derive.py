"""Derived copies: broker-issued objects without the fields a recipient may not see.

STIX forbids changing an object under the same id and version, so the broker never strips
fields in place. When the originator opted in (``Organisation.derived_copies``) it issues a
new object instead. Decisions documented here:

- Only SDOs and SROs whose required properties are known to the broker are derived (the
  table below; ``location`` and ``malware-analysis`` count their either-or properties as
  required). SCOs are never derived: their ids are derived from their values, and they
  have no ``created_by_ref``. Revoked objects, marking-definitions and extension-definitions
  are never derived. Anything else is withheld whole.
- Granular selectors restrict their whole top-level property (``external_references.[1].url``
  removes ``external_references``): it over-removes, never under-removes. A restricted
  property that STIX requires, or one that carries identity, version or markings (``id``,
  ``type``, ``spec_version``, ``created``, ``modified``, ``object_marking_refs``,
  ``granular_markings``, ``revoked``), means the object is withheld instead.
- Granular entries the recipient is not cleared for are dropped with their properties;
  entries it is cleared for keep their selectors into the properties that remain. A
  container may drop withheld ``object_refs``, unless a granular selector points into
  ``object_refs`` (its indices would shift) or nothing would remain.
- The copy's id is a keyed MAC (the router's digest key) of the submission, the original
  (id and modified) and what was removed, written as a version 4 UUID: recipients who get
  the same copy get the same id, and different copies never share one. It is keyed because
  what was removed includes withheld ids: an SCO's id is a UUIDv5 of its value, and an
  unkeyed hash would let a recipient test guesses of the withheld values offline.
  ``created`` and ``modified`` are ``now``; ``created_by_ref`` is the broker's identity,
  whose identity object travels with every view that holds a copy.
- The ``derived-from`` relationship (copy → original) names the original's id. An
  original whose id is a UUIDv5 (``content_derived_id``: a hash of content, such as a
  name, that the copy may leave out) is never derived. A copy is
  only ever made when the recipient is cleared for the original's object-level markings
  (only fields or references were held back), and the original is never an SCO and never
  has a restricted selector on ``id``: the original's id is information at a level the
  recipient is cleared for, so the relationship is safe and always issued. It carries the
  original's ``object_marking_refs``. This is the one documented exception to "a view
  references no withheld object of the bundle".
- Objects that reference an original which was derived are judged against the original,
  which the recipient does not get: they are withheld (containers: derived without it).
  They are never re-pointed at the copy, which would change them under their own id.
"""

from __future__ import annotations

import hmac
import json
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Final

from ._markings import Granular
from ._refs import mentioned_uuids

__all__ = [
    "DERIVABLE",
    "NAMESPACE",
    "broker_identity",
    "can_remove",
    "content_derived_id",
    "derive",
    "derived_from",
    "keyed_uuid",
    "stix_timestamp",
]

NAMESPACE: Final = uuid.uuid5(uuid.NAMESPACE_URL, "urn:atlas-broker:policy")
BROKER_IDENTITY_CREATED: Final = "2024-01-01T00:00:00.000Z"

_LOCATION = frozenset({"region", "country", "latitude", "longitude"})
DERIVABLE: Final[Mapping[str, frozenset[str]]] = {
    "attack-pattern": frozenset({"name"}),
    "campaign": frozenset({"name"}),
    "course-of-action": frozenset({"name"}),
    "grouping": frozenset({"context", "object_refs"}),
    "identity": frozenset({"name"}),
    "incident": frozenset({"name"}),
    "indicator": frozenset({"pattern", "pattern_type", "valid_from"}),
    "infrastructure": frozenset({"name"}),
    "intrusion-set": frozenset({"name"}),
    "location": _LOCATION,
    "malware": frozenset({"name", "is_family"}),
    "malware-analysis": frozenset({"product", "result", "analysis_sco_refs"}),
    "note": frozenset({"content", "object_refs"}),
    "observed-data": frozenset(
        {"first_observed", "last_observed", "number_observed", "object_refs"}
    ),
    "opinion": frozenset({"opinion", "object_refs"}),
    "report": frozenset({"name", "published", "object_refs"}),
    "threat-actor": frozenset({"name"}),
    "tool": frozenset({"name"}),
    "vulnerability": frozenset({"name"}),
    "relationship": frozenset({"relationship_type", "source_ref", "target_ref"}),
    "sighting": frozenset({"sighting_of_ref"}),
}
_NEVER_REMOVED: Final = frozenset(
    {
        "id",
        "type",
        "spec_version",
        "created",
        "modified",
        "object_marking_refs",
        "granular_markings",
        "revoked",
    }
)


def stix_timestamp(now: datetime) -> str:
    """RFC 3339 UTC timestamp with millisecond precision, as STIX writes them."""
    utc = now.astimezone(UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


def can_remove(obj_type: str, props: frozenset[str]) -> bool:
    """Whether a copy of ``obj_type`` may lack ``props`` and stay valid STIX."""
    required = DERIVABLE.get(obj_type)
    if required is None:
        return False
    return not (props & required or props & _NEVER_REMOVED)


def derive(
    obj: Mapping[str, Any],
    *,
    removed_props: frozenset[str],
    removed_refs: frozenset[str],
    granular: tuple[Granular, ...],
    submission_id: str,
    broker_identity_id: str,
    timestamp: str,
    id_key: bytes,
) -> dict[str, Any]:
    """The copy of ``obj`` without ``removed_props`` and the ``removed_refs`` object_refs."""
    obj_type = obj["type"]
    seed = json.dumps(
        [
            "derived",
            submission_id,
            obj["id"],
            str(obj.get("modified", "")),
            sorted(removed_props),
            sorted(removed_refs),
        ],
        separators=(",", ":"),
    )
    copy: dict[str, Any] = {}
    for key, value in obj.items():
        if key in removed_props:
            continue
        copy[key] = value
    if removed_refs:
        gone = {ref.partition("--")[2].lower() for ref in removed_refs}
        copy["object_refs"] = [
            ref for ref in obj["object_refs"] if not (mentioned_uuids(ref) & gone)
        ]
    if "granular_markings" in obj:
        kept = []
        for entry, raw in zip(granular, obj["granular_markings"], strict=True):
            if not entry.tops.isdisjoint(removed_props):
                selectors = [
                    s for s in raw["selectors"] if s.partition(".")[0] not in removed_props
                ]
                if not selectors:
                    continue
                raw = {**raw, "selectors": selectors}
            kept.append(raw)
        if kept:
            copy["granular_markings"] = kept
        else:
            del copy["granular_markings"]
    copy["id"] = f"{obj_type}--{keyed_uuid(id_key, seed)}"
    copy["created_by_ref"] = broker_identity_id
    copy["created"] = timestamp
    copy["modified"] = timestamp
    return copy


def content_derived_id(object_id: str) -> bool:
    """Whether an id's UUID is version 5: a hash of content some producers choose (a name,
    say). The ``derived-from`` relationship names the original's id, so such an original is
    never derived: its id could confirm a guess of what the copy leaves out."""
    try:
        return uuid.UUID(object_id.partition("--")[2]).version == 5
    except ValueError:
        return True  # not a UUID the broker can read: fail closed


def keyed_uuid(key: bytes, seed: str) -> uuid.UUID:
    """A version 4 UUID from HMAC-SHA256(key, seed): stable, and unguessable without key."""
    mac = hmac.digest(key, seed.encode(), "sha256")
    return uuid.UUID(bytes=mac[:16], version=4)


def derived_from(
    copy: Mapping[str, Any], original: Mapping[str, Any], *, timestamp: str, id_key: bytes
) -> dict[str, Any]:
    """The broker's ``derived-from`` relationship from a copy to its original."""
    rel: dict[str, Any] = {
        "type": "relationship",
        "spec_version": "2.1",
        "id": f"relationship--{keyed_uuid(id_key, 'derived-from|' + copy['id'])}",
        "created_by_ref": copy["created_by_ref"],
        "created": timestamp,
        "modified": timestamp,
        "relationship_type": "derived-from",
        "source_ref": copy["id"],
        "target_ref": original["id"],
    }
    if "object_marking_refs" in original:
        rel["object_marking_refs"] = list(original["object_marking_refs"])
    return rel


def broker_identity(identity_id: str, name: str) -> dict[str, Any]:
    """The broker's STIX identity, the ``created_by_ref`` of every derived object."""
    return {
        "type": "identity",
        "spec_version": "2.1",
        "id": identity_id,
        "created": BROKER_IDENTITY_CREATED,
        "modified": BROKER_IDENTITY_CREATED,
        "name": name,
        "identity_class": "system",
    }
