"""How the poller splits a chunk the broker will not sign as one submission."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from adapters._taxii._poller import Poller, PullError, PullStats, Unsignable


def _poller(sign: Any, tmp_path: Path) -> Poller:
    async def publish(token: bytes) -> None:
        raise AssertionError("not published here")

    collection: Any = type("C", (), {"url": "http://member.example/c/"})()
    return Poller(collection, state_path=tmp_path / "state.json", sign=sign, publish=publish)


def _objs(*names: str) -> list[dict[str, Any]]:
    return [{"id": f"indicator--{n}"} for n in names]


def test_objects_fine_alone_but_not_together_are_signed_apart(tmp_path: Path) -> None:
    def sign(objects: list[dict[str, Any]]) -> bytes:
        if len(objects) > 1:  # a conflict between them, not a fault of one
            raise Unsignable("the versions conflict")
        return objects[0]["id"].encode()

    stats = PullStats()
    parts = _poller(sign, tmp_path)._signed(_objs("a", "b", "c"), stats)
    assert [p for p, _ in parts] == [_objs("a"), _objs("b"), _objs("c")]
    assert stats.refused == 0


def test_an_invalid_object_is_skipped_and_the_rest_signed_together(tmp_path: Path) -> None:
    def sign(objects: list[dict[str, Any]]) -> bytes:
        if any(o["id"].endswith("bad") for o in objects):
            raise Unsignable("not STIX 2.1")
        return b"t"

    stats = PullStats()
    parts = _poller(sign, tmp_path)._signed(_objs("a", "bad", "c"), stats)
    assert [p for p, _ in parts] == [_objs("a", "c")] and stats.refused == 1


def test_too_large_together_is_halved(tmp_path: Path) -> None:
    def sign(objects: list[dict[str, Any]]) -> bytes:
        if len(objects) > 2:
            raise Unsignable("over the size limit", too_large=True)
        return b"t"

    parts = _poller(sign, tmp_path)._signed(_objs(*"abcdefg"), PullStats())
    assert sorted(o["id"] for p, _ in parts for o in p) == [o["id"] for o in _objs(*"abcdefg")]
    assert all(len(p) <= 2 for p, _ in parts)


def test_every_object_refused_keeps_the_cursor(tmp_path: Path) -> None:
    def sign(objects: list[dict[str, Any]]) -> bytes:
        raise Unsignable("not STIX 2.1")

    with pytest.raises(PullError, match="refused every one of 2 objects"):
        _poller(sign, tmp_path)._signed(_objs("a", "b"), PullStats())
