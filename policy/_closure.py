"""One recipient's pass over a prepared bundle: clearance, then the reference closure.

Decisions documented here:

- An object is first judged on its own markings: unreadable or unknown markings, a
  registered statement rule that denies the recipient, a TLP level above the recipient's
  clearance, a granular marking it is not cleared for (withheld whole, or derived when the
  originator opted in and the copy can be valid STIX).
- Then the closure, to a fixed point: an id of the bundle is visible when at least one of
  its versions is delivered as is. An object that references an id of the bundle that is
  not visible is withheld (``ref-withheld``; ``marking-restricted`` when that id is one of
  its markings, i.e. a marking-definition that is itself restricted), except that a
  report, grouping, note or opinion whose only such references are in ``object_refs`` is
  derived without them when the originator opted in. A derived copy still answers for its
  original's ``created_by_ref``: the broker does not launder content whose author the
  recipient may not see. References to ids outside the bundle are allowed: they reveal
  nothing the originator did not put at the referencing object's own level.
- A ``language-content`` translates one version, ``(object_ref, object_modified)``: when
  the bundle holds that version and it is not delivered as is, the translation is withheld
  (``ref-withheld``), even when another version of the id is delivered. Without
  ``object_modified``, or naming a version the bundle does not hold, it goes out only if
  every version of the id the bundle holds does.
- The closure only ever withholds more, so it has a single least fixed point whatever the
  order of work; reason codes are assigned after it, from the final state, so that they do
  not depend on the order either.
- Marking-definition and extension-definition objects that passed are delivered only if a
  delivered object (or a delivered definition, transitively) references them; otherwise
  they are withheld with ``marking-unused`` / ``extension-unused``.
- Revocation: a revoked version whose id the recipient received before is judged against
  the higher of the recipient's clearance and the level it received earlier, when the
  router passes ``received_before`` as a mapping of id to TLP level (a ``Tlp`` or its string
  value; anything else counts as unknown). With plain ids the
  earlier level is unknown and is taken as CLEAR, so nothing beyond the normal rules is
  granted (fail closed). Markings, statement rules, granular markings and references are
  applied to revocations as to any object, and revocations are never derived.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any, Final

from ._bundle import Entry, PreparedBundle
from ._derive import can_remove, content_derived_id, derive
from ._markings import Granular, Marks
from ._tlp import Tlp

__all__ = ["DELIVERED", "DERIVED", "WITHHELD", "Clearance", "Outcome", "run"]

DELIVERED: Final = 0
DERIVED: Final = 1
WITHHELD: Final = 2


@dataclass(frozen=True, slots=True)
class Clearance:
    """What one recipient is cleared for in one submission."""

    rank: int
    """Highest TLP rank it may receive."""
    denied_statements: frozenset[str]
    derive: bool
    """The originator opted in to derived copies."""
    received_before: Collection[str]
    submission_id: str
    broker_identity: str
    timestamp: str
    id_key: bytes
    """Keys the ids of derived copies (``_derive.keyed_uuid``)."""


@dataclass(slots=True)
class Outcome:
    status: list[int]
    reasons: list[str]
    copies: dict[int, dict[str, Any]]


def _marks_reason(marks: Marks, rank: int, denied: frozenset[str]) -> str | None:
    if marks.unknown:
        return "unknown-marking"
    if marks.statements & denied:
        return "statement-rule"
    if marks.tlp is not None and marks.tlp.rank > rank:
        return "red-not-named" if marks.tlp is Tlp.RED else "tlp-audience"
    return None


def _class_result(
    cls: tuple[Marks, Tlp | None, bool, tuple[Granular, ...] | None],
    rank: int,
    denied: frozenset[str],
) -> tuple[str | None, frozenset[str]]:
    """(reason to withhold or None, properties to remove) for one class of markings."""
    marks, level, unknown, granular = cls
    if marks.unreadable or granular is None:
        return "unreadable-marking", frozenset()
    if unknown:
        return "unknown-marking", frozenset()
    if marks.statements & denied:
        return "statement-rule", frozenset()
    if level is not None and level.rank > rank:
        return ("red-not-named" if level is Tlp.RED else "tlp-audience"), frozenset()
    removed: set[str] = set()
    for entry in granular:
        if entry.marks is not None and _marks_reason(entry.marks, rank, denied) is not None:
            removed |= entry.tops
    return None, frozenset(removed)


_LEVELS: Final = {level.value: level for level in Tlp}


def _revocation_rank(entry: Entry, clearance: Clearance) -> int:
    before = clearance.received_before
    if isinstance(before, Mapping):
        recorded: object = before.get(entry.id)
        # A Tlp, or its value as the router's ledger stores it ("amber", ...).
        if isinstance(recorded, str) and recorded in _LEVELS:
            return max(clearance.rank, _LEVELS[recorded].rank)
    return clearance.rank


_EMPTY: frozenset[str] = frozenset()


class _Pass:
    __slots__ = ("bundle", "clearance", "reasons", "removed_props", "removed_refs", "status")

    def __init__(self, bundle: PreparedBundle, clearance: Clearance) -> None:
        self.bundle = bundle
        self.clearance = clearance
        n = len(bundle.entries)
        self.status = [DELIVERED] * n
        self.reasons = ["cleared"] * n
        self.removed_props: dict[int, frozenset[str]] = {}
        self.removed_refs: dict[int, frozenset[str]] = {}

    def _answers(self, i: int, *, listed: bool) -> set[str]:
        """Ids of the bundle a derived entry's copy answers for (an over-approximation).

        The original's ``created_by_ref`` always counts; ``object_refs`` only when ``listed``.
        """
        entry = self.bundle.entries[i]
        props = self.removed_props.get(i, _EMPTY)
        out: set[str] = set(entry.props.get("created_by_ref", _EMPTY))
        for prop, ids in entry.props.items():
            if prop not in props and prop != "object_refs":
                out |= ids
        if listed and "object_refs" not in props:
            if entry.items is None:
                # Not a container the broker can trim (or unreadable): all of it counts.
                out |= entry.props.get("object_refs", _EMPTY)
            else:
                gone = self.removed_refs.get(i, _EMPTY)
                for item in entry.items:
                    if gone.isdisjoint(item):
                        out |= item
        return out

    def _may_drop(self, i: int, gone: str) -> bool:
        """Whether a container can be derived without the ``object_refs`` items naming gone."""
        entry = self.bundle.entries[i]
        if (
            entry.items is None
            or entry.revoked
            or not self.clearance.derive
            or content_derived_id(entry.id)
            or "object_refs" in self.removed_props.get(i, _EMPTY)
            or any("object_refs" in g.tops for g in entry.granular or ())
            or gone in self._answers(i, listed=False)
        ):
            return False
        removed = self.removed_refs.get(i, _EMPTY) | {gone}
        if all(not removed.isdisjoint(item) for item in entry.items):
            return False
        self.removed_refs[i] = removed
        return True

    def _translated_version_delivered(self, i: int) -> bool:
        """Whether the version a translation names goes out as is: the one it names when
        the bundle holds it, else every version of the id the bundle holds (a translation
        without ``object_modified``, or naming another, may be of any of them)."""
        bundle = self.bundle
        target, when = bundle.entries[i].version_ref or ("", None)
        named = bundle.by_version.get((target, when)) if when is not None else None
        found = [named] if named is not None else bundle.versions_of.get(target, [])
        return all(self.status[j] == DELIVERED for j in found)

    def judge(self) -> None:
        bundle = self.bundle
        clearance = self.clearance
        rank = clearance.rank
        denied = clearance.denied_statements
        results = [_class_result(cls, rank, denied) for cls in bundle.classes]
        before = clearance.received_before
        status = self.status
        reasons = self.reasons
        for i, entry in enumerate(bundle.entries):
            if entry.revoked and entry.id in before:
                reason, props = _class_result(
                    bundle.classes[entry.mclass], _revocation_rank(entry, clearance), denied
                )
                if reason is None and entry.level is not None and entry.level.rank > rank:
                    reasons[i] = "revocation"
            else:
                reason, props = results[entry.mclass]
            if reason is not None:
                status[i] = WITHHELD
                reasons[i] = reason
            elif props:
                reasons[i] = "granular"
                if (
                    clearance.derive
                    and not entry.revoked
                    and can_remove(entry.type, props)
                    and not content_derived_id(entry.id)
                ):
                    status[i] = DERIVED
                    self.removed_props[i] = props
                else:
                    status[i] = WITHHELD

    def close(self) -> None:
        bundle = self.bundle
        entries = bundle.entries
        status = self.status
        reasons = self.reasons
        visible = dict.fromkeys(bundle.by_id, 0)
        for i, entry in enumerate(entries):
            if status[i] == DELIVERED:
                visible[entry.id] += 1
        queue = [entry_id for entry_id, count in visible.items() if count == 0]
        referrers = bundle.referrers
        translations = [i for i, entry in enumerate(entries) if entry.version_ref is not None]
        more = True
        while more:
            while queue:
                gone = queue.pop()
                for i in referrers.get(gone, ()):
                    state = status[i]
                    if state == WITHHELD or (
                        state == DERIVED and gone not in self._answers(i, listed=True)
                    ):
                        continue
                    entry = entries[i]
                    if gone in entry.object_refs and self._may_drop(i, gone):
                        if state == DERIVED:
                            continue
                        status[i] = DERIVED
                        reasons[i] = "ref-withheld"
                    else:
                        status[i] = WITHHELD
                        reasons[i] = "ref-withheld"
                    if state == DELIVERED:
                        visible[entry.id] -= 1
                        if visible[entry.id] == 0:
                            queue.append(entry.id)
            # A translation names one version: it goes only where that version goes as is.
            more = False
            for i in translations:
                if status[i] == WITHHELD or self._translated_version_delivered(i):
                    continue
                more = True
                state, status[i], reasons[i] = status[i], WITHHELD, "ref-withheld"
                if state == DELIVERED:
                    visible[entries[i].id] -= 1
                    if visible[entries[i].id] == 0:
                        queue.append(entries[i].id)
        for i, entry in enumerate(entries):
            if reasons[i] == "ref-withheld" and status[i] == WITHHELD:
                if any(visible[ref] == 0 for ref in entry.marking_refs):
                    reasons[i] = "marking-restricted"

    def copies(self) -> tuple[dict[int, dict[str, Any]], dict[int, frozenset[str]]]:
        """The derived copies, and the ids of the bundle each one mentions."""
        bundle = self.bundle
        clearance = self.clearance
        copies: dict[int, dict[str, Any]] = {}
        mentions: dict[int, frozenset[str]] = {}
        for i, state in enumerate(self.status):
            if state != DERIVED:
                continue
            entry = bundle.entries[i]
            copy = derive(
                entry.obj,
                removed_props=self.removed_props.get(i, _EMPTY),
                removed_refs=self.removed_refs.get(i, _EMPTY),
                granular=entry.granular or (),
                submission_id=clearance.submission_id,
                broker_identity_id=clearance.broker_identity,
                timestamp=clearance.timestamp,
                id_key=clearance.id_key,
            )
            copies[i] = copy
            found = bundle.finder.mentions(copy, entry.id)
            mentions[i] = frozenset().union(*found.values()) if found else _EMPTY
        return copies, mentions

    def used_definitions(self, mentions: Mapping[int, frozenset[str]]) -> set[int]:
        """Entries of definitions that a delivered object or copy uses, transitively."""
        bundle = self.bundle
        entries = bundle.entries
        status = self.status
        pending: list[str] = []
        for i, entry in enumerate(entries):
            if entry.uses and status[i] == DELIVERED and not entry.definition:
                pending.extend(entry.uses)
        for found in mentions.values():
            pending.extend(found & bundle.definitions)
        used: set[int] = set()
        seen: set[str] = set()
        while pending:
            ref = pending.pop()
            if ref in seen:
                continue
            seen.add(ref)
            for j in bundle.by_id[ref]:
                if status[j] == DELIVERED:
                    used.add(j)
                    pending.extend(entries[j].uses)
        return used


def run(bundle: PreparedBundle, clearance: Clearance) -> Outcome:
    """Judge every entry for one recipient, close over references, settle definitions."""
    one = _Pass(bundle, clearance)
    one.judge()
    one.close()
    copies, mentions = one.copies()
    used = one.used_definitions(mentions)
    for i, entry in enumerate(bundle.entries):
        if entry.definition and one.status[i] == DELIVERED and i not in used:
            one.status[i] = WITHHELD
            one.reasons[i] = (
                "marking-unused" if entry.type == "marking-definition" else "extension-unused"
            )
    return Outcome(one.status, one.reasons, copies)
