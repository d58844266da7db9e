"""Marking resolution: which markings an object carries, read only from ids the broker trusts.

Decisions documented here:

- TLP is read from a fixed table of marking-definition ids (TLP 1.0 and 2.0, copied from
  ``shared/tlp_markings.json``). TLP 1.0 WHITE reads as CLEAR and 1.0 AMBER as AMBER (not
  STRICT). The name and content of a marking-definition object in a bundle are never read:
  a custom marking-definition named "TLP:GREEN" under another id is an unknown marking.
- A marking-definition object in the bundle that carries a well-known TLP id is never
  delivered as sent (its content is untrusted); the broker's canonical copy of that
  definition travels in its place, and only when a delivered object uses it.
- PAP ids (``shared/pap_markings.json``) are known markings that never restrict audience;
  PAP marking-definition objects in the bundle pass through unchanged, like any other
  definition, under their own markings.
- Statement markings are known when a community rule is registered for the id, or when the
  bundle defines the id as a marking-definition with ``definition_type: "statement"`` and a
  string ``definition.statement``. Any other marking id (not TLP, not PAP, not a statement)
  is unknown, and an object carrying it is withheld (fail closed).
- ``object_marking_refs`` or ``granular_markings`` that are not of the STIX shape (a list of
  strings; a list of objects with a non-empty list of string ``selectors`` and a string
  ``marking_ref`` or ``lang``), or with a selector that names nothing in the object
  (``selector_resolves``), are unreadable, and the object is withheld. So is an explicit
  JSON ``null`` for either property: STIX has no null values, and absent is not the same
  claim as null.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Final

from ._tlp import Tlp

__all__ = [
    "CANONICAL_TLP_DEFINITIONS",
    "NO_MARKS",
    "PAP_IDS",
    "TLP_IDS",
    "UNREADABLE",
    "Granular",
    "MarkingTable",
    "Marks",
    "selector_resolves",
]

_TLP2_EXTENSION = "extension-definition--60a3c5c5-0d10-413e-aab3-9e08dde9e88d"

TLP_IDS: Final[Mapping[str, Tlp]] = MappingProxyType(
    {
        # TLP 1.0 (STIX 2.1 spec, section 7.2.1.4), read as TLP 2.0.
        "marking-definition--613f2e26-407d-48c7-9eca-b8e91df99dc9": Tlp.CLEAR,  # WHITE
        "marking-definition--34098fce-860f-48ae-8e50-ebd3cc5e41da": Tlp.GREEN,
        "marking-definition--f88d31f6-486f-44da-b317-01333bde0b82": Tlp.AMBER,
        "marking-definition--5e57c739-391a-4eb3-b6be-7d15ca92d5ed": Tlp.RED,
        # TLP 2.0 (extension-definition--60a3c5c5-0d10-413e-aab3-9e08dde9e88d).
        "marking-definition--94868c89-83c2-464b-929b-a1a8aa3c8487": Tlp.CLEAR,
        "marking-definition--bab4a63c-aed9-4cf5-a766-dfca5abac2bb": Tlp.GREEN,
        "marking-definition--55d920b0-5e8b-4f79-9ee9-91f868d9b421": Tlp.AMBER,
        "marking-definition--939a9414-2ddd-4d32-a0cd-375ea402b003": Tlp.AMBER_STRICT,
        "marking-definition--e828b379-4e03-4974-9ac4-e53a884c97c1": Tlp.RED,
    }
)

PAP_IDS: Final[frozenset[str]] = frozenset(
    {
        "marking-definition--a3bea94c-b469-41dc-9cfe-d6e7daba7730",  # PAP:WHITE
        "marking-definition--c43594d1-4b11-4c59-93ab-1c9b14d53ce9",  # PAP:GREEN
        "marking-definition--60f8932b-e51e-4458-b265-a2e8be9a80ab",  # PAP:AMBER
        "marking-definition--740d36e5-7714-4c30-961a-3ae632ceee0e",  # PAP:RED
        "marking-definition--ad15a0cd-55b6-4588-a14c-a66105329b92",  # PAP:CLEAR
    }
)


def _tlp1(uuid: str, name: str, created: str = "2017-01-20T00:00:00.000Z") -> dict[str, Any]:
    return {
        "type": "marking-definition",
        "spec_version": "2.1",
        "id": f"marking-definition--{uuid}",
        "created": created,
        "definition_type": "tlp",
        "name": f"TLP:{name.upper()}",
        "definition": {"tlp": name},
    }


def _tlp2(uuid: str, level: str) -> dict[str, Any]:
    return {
        "type": "marking-definition",
        "spec_version": "2.1",
        "id": f"marking-definition--{uuid}",
        "created": "2022-10-01T00:00:00.000Z",
        "name": f"TLP:{level.upper()}",
        "extensions": {_TLP2_EXTENSION: {"extension_type": "property-extension", "tlp_2_0": level}},
    }


_CANONICAL = (
    _tlp1("613f2e26-407d-48c7-9eca-b8e91df99dc9", "white"),
    _tlp1("34098fce-860f-48ae-8e50-ebd3cc5e41da", "green"),
    _tlp1("f88d31f6-486f-44da-b317-01333bde0b82", "amber"),
    _tlp1("5e57c739-391a-4eb3-b6be-7d15ca92d5ed", "red"),
    _tlp2("94868c89-83c2-464b-929b-a1a8aa3c8487", "clear"),
    _tlp2("bab4a63c-aed9-4cf5-a766-dfca5abac2bb", "green"),
    _tlp2("55d920b0-5e8b-4f79-9ee9-91f868d9b421", "amber"),
    _tlp2("939a9414-2ddd-4d32-a0cd-375ea402b003", "amber+strict"),
    _tlp2("e828b379-4e03-4974-9ac4-e53a884c97c1", "red"),
)

CANONICAL_TLP_DEFINITIONS: Final[Mapping[str, Mapping[str, Any]]] = MappingProxyType(
    {d["id"]: MappingProxyType(d) for d in _CANONICAL}
)


@dataclass(frozen=True, slots=True)
class Marks:
    """What a list of marking ids means, as far as the broker trusts it."""

    tlp: Tlp | None = None
    """Strictest TLP level among the ids (None: no TLP marking)."""
    statements: frozenset[str] = frozenset()
    unknown: bool = False
    unreadable: bool = False


NO_MARKS: Final = Marks()
UNREADABLE: Final = Marks(unreadable=True)


@dataclass(frozen=True, slots=True)
class Granular:
    """One readable ``granular_markings`` entry."""

    marks: Marks | None
    """None for a ``lang``-only entry, which restricts nothing."""
    tops: frozenset[str]
    """Top-level properties the selectors point into."""


class MarkingTable:
    """Classifies marking ids for one bundle (statement definitions vary per bundle)."""

    __slots__ = ("_cache", "statement_ids")

    def __init__(self, statement_ids: frozenset[str]) -> None:
        self.statement_ids = statement_ids
        self._cache: dict[tuple[str, ...], Marks] = {}

    def resolve(self, refs: object) -> Marks:
        """Resolve an ``object_marking_refs`` value (absent: ``None``)."""
        if refs is None:
            return NO_MARKS
        if not isinstance(refs, list) or not all(isinstance(ref, str) for ref in refs):
            return UNREADABLE
        key = tuple(refs)
        marks = self._cache.get(key)
        if marks is None:
            marks = self._resolve(key)
            self._cache[key] = marks
        return marks

    def _resolve(self, refs: tuple[str, ...]) -> Marks:
        level: Tlp | None = None
        statements: set[str] = set()
        unknown = False
        for ref in refs:
            tlp = TLP_IDS.get(ref)
            if tlp is not None:
                if level is None or tlp.rank > level.rank:
                    level = tlp
            elif ref in self.statement_ids:
                statements.add(ref)
            elif ref not in PAP_IDS:
                unknown = True
        return Marks(tlp=level, statements=frozenset(statements), unknown=unknown)

    def granular(self, value: object) -> tuple[Granular, ...] | None:
        """Resolve a ``granular_markings`` value; None when it is unreadable."""
        if value is None:
            return ()
        if not isinstance(value, list):
            return None
        out: list[Granular] = []
        for entry in value:
            if not isinstance(entry, dict):
                return None
            selectors = entry.get("selectors")
            if not isinstance(selectors, list) or not selectors:
                return None
            tops: set[str] = set()
            for selector in selectors:
                if not isinstance(selector, str) or not selector:
                    return None
                tops.add(selector.partition(".")[0])
            ref = entry.get("marking_ref")
            if ref is None:
                if not isinstance(entry.get("lang"), str):
                    return None
                out.append(Granular(marks=None, tops=frozenset(tops)))
                continue
            marks = self.resolve([ref])
            if marks.unreadable:
                return None
            out.append(Granular(marks=marks, tops=frozenset(tops)))
        return tuple(out)


def selector_resolves(obj: Mapping[str, Any], selector: str) -> bool:
    """Whether a granular ``selector`` names something the object holds (STIX 2.1 7.2.3.1).

    Steps are separated by ``.``; a list index is a step of its own, ``[n]``
    (``external_references.[0].url``). A selector that names nothing (``description[0]``,
    a misspelt or absent property, an index past the end) restricts nothing that the
    broker could find, so it is unreadable: the object is withheld, never derived.
    """
    node: Any = obj
    for step in selector.split("."):
        if step.startswith("[") and step.endswith("]"):
            index = step[1:-1]
            if not (isinstance(node, list) and index.isdigit() and index.isascii()):
                return False
            if index != "0" and index.startswith("0"):
                return False  # one index, one spelling: stix2 refuses "[01]"
            if int(index) >= len(node):
                return False
            node = node[int(index)]
        elif isinstance(node, dict) and step in node:
            node = node[step]
        else:
            return False
    return True


def is_statement_definition(obj: Mapping[str, Any]) -> bool:
    """A marking-definition of the STIX ``statement`` type, as defined in the bundle."""
    if obj.get("definition_type") != "statement":
        return False
    definition = obj.get("definition")
    return isinstance(definition, dict) and isinstance(definition.get("statement"), str)
