"""A recipient's view of a submission: the router's entry points.

Decisions documented here:

- Clearance is one TLP rank per recipient and submission, and TLP levels nest: named one by
  one in the submission (``Submission.named``) → up to RED; named through a group → up to
  AMBER; in the originator's community → up to GREEN (a partner only when the community
  includes partners; nobody when the originator itself is outside the community, since it
  then has no community here); anyone else the broker delivers to → CLEAR. A named
  organisation outside the community therefore receives GREEN objects too: the originator
  addressed it explicitly, for stricter levels.
- AMBER and AMBER+STRICT with nobody named reach nobody but the originator, which is never
  a recipient (``tlp-audience``); RED with nobody named is ``red-not-named`` for everyone,
  and the router tells the originator from that reason code.
- Auditors never receive content: every object is withheld from them (``auditor``), and
  ``recipients`` never lists them. Evaluating for the originator, or for an organisation that
  is not in the directory, is a programming error (``PolicyError``).
- The view's bundle id is a UUIDv5 of the submission id and the recipient. Objects come in
  (id, modified) order, then derived copies and their ``derived-from`` relationships by id,
  then the broker's identity when there is a copy: the view does not depend on the order of
  the input. Delivered objects are the input's own dicts (shared, not copied): treat views as
  read-only.
- One decision per distinct input object version, sorted by digest. The digest is
  HMAC-SHA256 under the router's key of ``"<id>|<modified or ''>"``: never a raw id, since
  SCO ids reveal their values. A derived decision also carries the digest of the copy.

Reason codes (``Decision.reason``):

========================  ===========================================================
``cleared``               delivered: the recipient is cleared for everything in it
``revocation``            delivered: a revoked version, to a recipient that received an
                          earlier version at that level (``received_before``)
``tlp-audience``          withheld: TLP level above the recipient's clearance
``red-not-named``         withheld: TLP:RED and the recipient was not named
``unknown-marking``       withheld: a marking id the broker cannot read (fail closed)
``unreadable-marking``    withheld: markings not of the STIX shape
``marking-restricted``    withheld: one of its marking-definitions is itself withheld
``statement-rule``        withheld: a community rule on a statement marking denies it
``granular``              withheld whole, or derived: granular marking not cleared
``ref-withheld``          withheld, or derived (containers): references a withheld object
``marking-unused``        withheld: a marking-definition no delivered object uses
``extension-unused``      withheld: an extension-definition no delivered object uses
``auditor``               withheld: auditors never receive content
========================  ===========================================================
"""

from __future__ import annotations

import copy
import hmac
import uuid
from collections.abc import Collection, Iterable, Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from ._bundle import PreparedBundle, canonical_digest, normal_timestamp, prepare, stix_objects
from ._closure import DELIVERED, DERIVED, WITHHELD, Clearance, run
from ._derive import NAMESPACE, broker_identity, derived_from, stix_timestamp
from ._directory import Directory, OrgKind
from ._errors import BundleRejected, PolicyError
from ._markings import TLP_IDS
from ._observables import identifying
from ._tlp import Tlp

__all__ = [
    "Decision",
    "Submission",
    "View",
    "authors",
    "evaluate",
    "evaluate_all",
    "normal_timestamp",
    "recipients",
    "version_digests",
]

Action = Literal["delivered", "withheld", "derived"]
_ACTIONS: tuple[Action, Action, Action] = ("delivered", "derived", "withheld")
_BY_RANK = {level.rank: level for level in Tlp}


@dataclass(frozen=True, slots=True)
class Submission:
    """What the router knows about one submission."""

    originator: str
    submission_id: str
    named: frozenset[str] = frozenset()
    """Organisations the originator named one by one (``--to org:X``)."""
    named_groups: frozenset[str] = frozenset()
    """Groups the originator named (``--to group:Y``)."""
    feed: str | None = None


@dataclass(frozen=True, slots=True)
class Decision:
    """One per input object version per recipient; goes to the log, never content."""

    object_digest: str
    object_type: str
    action: Action
    reason: str
    tlp: Tlp | None
    """The object's effective level; for a delivered object, the highest level inside it
    (a granular marking above its own level counts): the level the recipient was given."""
    derived_digest: str | None = None
    """For a derived copy: the keyed digest of the copy's id and modified."""


@dataclass(frozen=True, slots=True)
class View:
    recipient: str
    bundle: dict[str, Any] | None
    """A STIX 2.1 bundle, or None when nothing is delivered."""
    decisions: tuple[Decision, ...]
    tlp: Tlp | None
    """Highest TLP level inside: of the delivered and derived objects and of the granular
    markings they carry."""
    delivered: int
    withheld: int
    derived: int
    delivered_by_tlp: Mapping[str, int] = field(default_factory=dict)
    withheld_by_tlp: Mapping[str, int] = field(default_factory=dict)
    derived_by_tlp: Mapping[str, int] = field(default_factory=dict)
    """Counts per TLP level (``"clear"`` … ``"red"``, ``"none"`` when it has no level)."""


def recipients(directory: Directory, submission: Submission) -> frozenset[str]:
    """Subscribers of the originator or feed plus the organisations named (directly or through
    named groups), without the originator, auditors, and ids not in the directory."""
    if directory.organisation(submission.originator) is None:
        raise PolicyError(f"originator {submission.originator!r} is not in the directory")
    candidates = (
        directory.subscribers(submission.originator, submission.feed)
        | submission.named
        | _group_members(directory, submission.named_groups)
    )
    out: set[str] = set()
    for org_id in candidates:
        org = directory.organisation(org_id)
        if org is not None and org.kind != OrgKind.AUDITOR and org_id != submission.originator:
            out.add(org_id)
    return frozenset(out)


def _group_members(directory: Directory, groups: Iterable[str]) -> frozenset[str]:
    return directory.expand(f"group:{group}" for group in groups)


def _clearance(
    directory: Directory,
    submission: Submission,
    prepared: PreparedBundle,
    recipient: str,
    timestamp: str,
    received_before: Collection[str],
    id_key: bytes,
) -> Clearance | None:
    org = directory.organisation(recipient)
    if org is None:
        raise PolicyError(f"recipient {recipient!r} is not in the directory")
    if recipient == submission.originator:
        raise PolicyError("the originator is never a recipient of its own submission")
    if org.kind == OrgKind.AUDITOR:
        return None
    originator = prepared.originator
    if recipient in submission.named:
        level = Tlp.RED
    elif recipient in _group_members(directory, submission.named_groups):
        level = Tlp.AMBER
    elif (
        originator.in_community
        and org.in_community
        and (org.kind != OrgKind.PARTNER or directory.community.partners_in_community)
    ):
        level = Tlp.GREEN
    else:
        level = Tlp.CLEAR
    denied = frozenset(
        rule.marking
        for rule in directory.statement_rules
        if org.kind in rule.deny_kinds or org.id in rule.deny_orgs
    )
    return Clearance(
        rank=level.rank,
        denied_statements=denied,
        derive=originator.derived_copies,
        received_before=received_before,
        submission_id=submission.submission_id,
        broker_identity=directory.broker.stix_identity,
        timestamp=timestamp,
        id_key=id_key,
    )


def _timestamp(now: datetime) -> str:
    if now.tzinfo is None or now.utcoffset() is None:
        raise PolicyError("now must be a timezone-aware datetime")
    return stix_timestamp(now)


def _view(
    prepared: PreparedBundle,
    *,
    directory: Directory,
    submission: Submission,
    recipient: str,
    timestamp: str,
    digest_key: bytes,
    received_before: Collection[str],
) -> View:
    entries = prepared.entries
    if not isinstance(received_before, Mapping | AbstractSet):
        received_before = frozenset(received_before)
    id_key = hmac.digest(digest_key, b"atlas-broker derived ids", "sha256")
    clearance = _clearance(
        directory, submission, prepared, recipient, timestamp, received_before, id_key
    )
    if clearance is None:
        status = [WITHHELD] * len(entries)
        reasons = ["auditor"] * len(entries)
        copies: dict[int, dict[str, Any]] = {}
    else:
        outcome = run(prepared, clearance)
        status, reasons, copies = outcome.status, outcome.reasons, outcome.copies
    objects: list[dict[str, Any]] = []
    for i, entry in enumerate(entries):
        if status[i] == DELIVERED:
            if entry.canonical is not None:
                objects.append(copy.deepcopy(dict(entry.canonical)))
            else:
                objects.append(entry.obj)
    if copies:
        derived = sorted(copies.items(), key=lambda item: item[1]["id"])
        objects.extend(made for _, made in derived)
        relations = [
            derived_from(made, entries[i].obj, timestamp=timestamp, id_key=id_key)
            for i, made in derived
        ]
        relations.sort(key=lambda rel: rel["id"])
        objects.extend(relations)
        objects.append(broker_identity(directory.broker.stix_identity, directory.broker.name))
    bundle: dict[str, Any] | None = None
    if objects:
        seed = f"view|{submission.submission_id}|{recipient}"
        bundle = {
            "type": "bundle",
            "id": f"bundle--{uuid.uuid5(NAMESPACE, seed)}",
            "objects": objects,
        }
    decisions: list[Decision] = []
    counts: tuple[dict[str, int], dict[str, int], dict[str, int]] = ({}, {}, {})
    top = -1
    for i in prepared.decision_order:
        entry = entries[i]
        state = status[i]
        level, key = entry.level, entry.tlp_key
        if state == DELIVERED:
            inside = _granular_rank(entry.obj)
            if inside > entry.rank:  # a field above the object's own level went out with it
                level = _BY_RANK[inside]
                key = level.value
            top = max(top, entry.rank, inside)
        elif state == DERIVED:
            top = max(top, entry.rank, _granular_rank(copies[i]))
        bucket = counts[state]
        bucket[key] = bucket.get(key, 0) + 1
        copy_digest = None
        if state == DERIVED:
            copy_digest = hmac.digest(
                digest_key, f"{copies[i]['id']}|{timestamp}".encode(), "sha256"
            ).hex()
        decisions.append(
            Decision(entry.digest, entry.type, _ACTIONS[state], reasons[i], level, copy_digest)
        )
    return View(
        recipient=recipient,
        bundle=bundle,
        decisions=tuple(decisions),
        tlp=_BY_RANK.get(top),
        delivered=sum(counts[DELIVERED].values()),
        withheld=sum(counts[WITHHELD].values()),
        derived=sum(counts[DERIVED].values()),
        delivered_by_tlp=counts[DELIVERED],
        withheld_by_tlp=counts[WITHHELD],
        derived_by_tlp=counts[DERIVED],
    )


def _granular_rank(obj: Mapping[str, Any]) -> int:
    """The highest TLP rank among an object's granular markings (-1: none): what the view's
    ``tlp`` (the highest level inside) must count besides the object's own level."""
    top = -1
    markings = obj.get("granular_markings")
    for entry in markings if isinstance(markings, list) else ():
        ref = entry.get("marking_ref") if isinstance(entry, dict) else None
        level = TLP_IDS.get(ref) if isinstance(ref, str) else None
        if level is not None and level.rank > top:
            top = level.rank
    return top


def evaluate(
    bundle: Mapping[str, Any],
    *,
    directory: Directory,
    submission: Submission,
    recipient: str,
    now: datetime,
    digest_key: bytes,
    received_before: Collection[str] = (),
) -> View:
    """The recipient's view of one bundle (already parsed to plain dicts).

    ``received_before`` names what the recipient received in earlier submissions: a mapping
    of id to the TLP level it was delivered at (a ``Tlp`` or its string value, as the
    router's ledger keeps it), or bare ids (the level is then unknown and taken as CLEAR).
    Only revoked versions use it. Raises ``BundleRejected`` when the bundle cannot be
    evaluated at all, ``PolicyError`` when asked for the originator, an
    unknown organisation, or with a naive ``now``.
    """
    timestamp = _timestamp(now)
    prepared = prepare(
        bundle, directory=directory, originator=submission.originator, digest_key=digest_key
    )
    return _view(
        prepared,
        directory=directory,
        submission=submission,
        recipient=recipient,
        timestamp=timestamp,
        digest_key=digest_key,
        received_before=received_before,
    )


def evaluate_all(
    bundle: Mapping[str, Any],
    *,
    directory: Directory,
    submission: Submission,
    recipients: Iterable[str],
    now: datetime,
    digest_key: bytes,
    received_before: Mapping[str, Collection[str]] | None = None,
) -> dict[str, View]:
    """Every recipient's view, sharing the per-bundle work (markings, reference graph).

    ``received_before`` maps a recipient to what it received earlier (see ``evaluate``).
    """
    timestamp = _timestamp(now)
    prepared = prepare(
        bundle, directory=directory, originator=submission.originator, digest_key=digest_key
    )
    before = received_before or {}
    return {
        recipient: _view(
            prepared,
            directory=directory,
            submission=submission,
            recipient=recipient,
            timestamp=timestamp,
            digest_key=digest_key,
            received_before=before.get(recipient, ()),
        )
        for recipient in sorted(set(recipients))
    }


def version_digests(bundle: Mapping[str, Any]) -> dict[tuple[str, str], str]:
    """(id, modified or "") → SHA-256 of the object's canonical JSON, per versioned object.

    For the router's checks across submissions: an (id, modified) never comes back with
    other content, and only an id's owner adds versions. ``modified`` is normalised
    (``…:00.000Z``, ``…:00Z`` and ``…:00.000000000Z`` are one instant, one version). Two
    objects of the bundle with the same key and different content raise ``BundleRejected``.
    Well-known TLP marking-definitions are left out (the broker never reads their content).
    Cyber observables (no ``modified``) are not versioned by STIX and two members
    legitimately send one id with other optional properties: for them the digest covers
    only their id-contributing properties, which may never differ (observables of a type
    without such properties are left out).
    """
    out: dict[tuple[str, str], str] = {}
    for obj, obj_id, obj_type, modified in stix_objects(bundle):
        if obj_id in TLP_IDS:
            continue
        if modified or obj_type == "marking-definition":
            digest = canonical_digest(obj)
        else:
            # An observable: only what identifies it must never differ (see _observables).
            fields = identifying(obj, obj_type)
            if not fields:
                continue
            digest = canonical_digest(fields)
        key = (obj_id, normal_timestamp(modified))
        if out.setdefault(key, digest) != digest:
            raise BundleRejected(
                f"two objects share an id and modified but differ in content (type {obj_type!r})"
            )
    return out


def authors(bundle: Mapping[str, Any], *, directory: Directory) -> dict[str, str | None]:
    """Who may add versions of an object, where the object says so itself.

    - an object that is a member's directory identity, or whose ``created_by_ref`` names
      one, is that member's (the broker's identity counts as the broker's): only it may
      create or version it, whoever registered it first; others may relay a version the
      ledger already holds, never add one;
    - an object whose ``created_by_ref`` names anyone else (MITRE's ATT&CK objects, a
      vendor's published reports) belongs to no member: ``None``, anyone may relay its
      versions, and the first to send one does not get to keep the others out;
    - an object without ``created_by_ref`` is not listed: it belongs to the organisation
      that registered its first version (the router's ledger keeps that).

    Identities compare case-insensitively (UUIDs are).
    """
    identities = {
        **directory.identity_owners(),
        directory.broker.stix_identity.lower(): directory.broker.id,
    }
    out: dict[str, str | None] = {}
    for obj, obj_id, _, _ in stix_objects(bundle):
        owner = identities.get(obj_id.lower())
        if owner is not None:
            out[obj_id] = owner
            continue
        author = obj.get("created_by_ref")
        if isinstance(author, str):
            out[obj_id] = identities.get(author.lower())
    return out
