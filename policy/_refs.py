"""Finding the ids an object mentions, wherever they are.

Decision: an object references every object of the bundle whose id, or whose UUID alone,
occurs anywhere in it: in any ``*_ref`` / ``*_refs`` property at any depth (``created_by_ref``,
``object_refs``, ``sample_refs``, ``where_sighted_refs``, ``granular_markings[].marking_ref``,
``object_marking_refs``, refs inside ``extensions``), in dictionary keys (``extensions`` is
keyed by extension-definition ids), and in free text (a description that quotes an SCO id
would otherwise carry a withheld observable's value, since SCO ids are UUIDv5 of their
values). Matching on the bare UUID, case-insensitively, errs on the side of withholding.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

__all__ = ["Finder", "mentioned_uuids"]

_UUID_RE = re.compile(
    r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
)
_findall = _UUID_RE.findall


def _scan_str(text: str, out: set[str]) -> None:
    if len(text) >= 36 and "-" in text:
        for found in _findall(text):
            out.add(found.lower())


def mentioned_uuids(value: object) -> set[str]:
    """Every UUID that occurs in ``value`` (strings, dict keys, nested lists and dicts)."""
    out: set[str] = set()
    stack: list[object] = [value]
    pop = stack.pop
    push = stack.append
    while stack:
        item = pop()
        if isinstance(item, str):
            _scan_str(item, out)
        elif isinstance(item, dict):
            for key, sub in item.items():
                if isinstance(key, str):
                    _scan_str(key, out)
                if isinstance(sub, str):
                    _scan_str(sub, out)
                else:
                    push(sub)
        elif isinstance(item, list):
            for sub in item:
                if isinstance(sub, str):
                    _scan_str(sub, out)
                else:
                    push(sub)
    return out


class Finder:
    """Finds the ids of one bundle's objects in text, remembering strings it has seen."""

    __slots__ = ("_by_uuid", "_memo")

    def __init__(self, by_uuid: Mapping[str, tuple[str, ...]]) -> None:
        self._by_uuid = by_uuid
        self._memo: dict[str, tuple[str, ...]] = {}

    def _scan(self, text: str) -> tuple[str, ...]:
        by_uuid = self._by_uuid
        cut = text.find("--")
        if 0 < cut < 36 and len(text) == cut + 38:
            # "<type>--<uuid>": the only place a UUID can be is after the "--".
            return by_uuid.get(text[cut + 2 :].lower(), ())
        found: tuple[str, ...] = ()
        if "-" in text:
            for uuid in _findall(text):
                found += by_uuid.get(uuid.lower(), ())
        return found

    def add(self, text: str, out: set[str]) -> None:
        """Add to ``out`` the ids whose UUID occurs in ``text``."""
        if len(text) < 36:
            return
        found = self._memo.get(text)
        if found is None:
            found = self._memo[text] = self._scan(text)
        if found:
            out.update(found)

    def nested(self, value: dict[Any, Any] | list[Any], out: set[str]) -> None:
        """Add the ids mentioned anywhere inside a list or dict."""
        by_uuid = self._by_uuid
        for uuid in mentioned_uuids(value):
            targets = by_uuid.get(uuid)
            if targets is not None:
                out.update(targets)

    def mentions(self, obj: Mapping[str, Any], self_id: str) -> dict[str, frozenset[str]]:
        """For each top-level property: the ids of bundle objects it mentions (not self_id)."""
        out: dict[str, frozenset[str]] = {}
        ids: set[str] = set()
        memo = self._memo
        scan = self._scan
        for key, value in obj.items():
            if isinstance(value, str):
                # Inlined ``add``: this loop runs for every property of every object.
                if len(value) >= 36 and key != "id":
                    found = memo.get(value)
                    if found is None:
                        found = memo[value] = scan(value)
                    if found:
                        ids.update(found)
            elif isinstance(value, list):
                for item in value:
                    if isinstance(item, str):
                        if len(item) >= 36:
                            found = memo.get(item)
                            if found is None:
                                found = memo[item] = scan(item)
                            if found:
                                ids.update(found)
                    elif isinstance(item, dict | list):
                        self.nested(item, ids)
            elif isinstance(value, dict):
                self.nested(value, ids)
            if len(key) >= 36:
                self.add(key, ids)
            if ids:
                ids.discard(self_id)
                if ids:
                    out[key] = frozenset(ids)
                    ids = set()
        return out
