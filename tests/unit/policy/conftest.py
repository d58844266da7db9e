"""Fixtures for policy tests (factories return callables)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import pytest

from policy import Directory, Submission, View, evaluate

from ._support import KEY, NOW, Stix, community_doc


@pytest.fixture
def make_directory() -> Callable[..., Directory]:
    """``make_directory(org_changes={"bank-a": {...}}, **top_level_changes)``."""

    def _make(org_changes: dict[str, dict[str, Any]] | None = None, **changes: Any) -> Directory:
        doc = community_doc()
        for org in doc["organisations"]:
            org.update((org_changes or {}).get(org["id"], {}))
        for key, value in changes.items():
            if isinstance(value, dict) and isinstance(doc.get(key), dict):
                doc[key] = {**doc[key], **value}
            else:
                doc[key] = value
        return Directory.from_mapping(doc)

    return _make


@pytest.fixture
def directory(make_directory: Callable[..., Directory]) -> Directory:
    return make_directory()


@pytest.fixture
def derived_directory(make_directory: Callable[..., Directory]) -> Directory:
    """bank-a opted in to derived copies."""
    return make_directory(org_changes={"bank-a": {"derived_copies": True}})


@pytest.fixture
def stix() -> Stix:
    return Stix()


@pytest.fixture
def view_for(directory: Directory) -> Callable[..., View]:
    """``view_for(bundle, recipient, named=..., named_groups=..., directory=..., ...)``."""

    def _view(
        data: dict[str, Any],
        recipient: str,
        *,
        named: Iterable[str] = (),
        named_groups: Iterable[str] = (),
        originator: str = "bank-a",
        directory: Directory = directory,
        received_before: Any = (),
        submission_id: str = "sub-1",
    ) -> View:
        submission = Submission(
            originator=originator,
            submission_id=submission_id,
            named=frozenset(named),
            named_groups=frozenset(named_groups),
        )
        return evaluate(
            data,
            directory=directory,
            submission=submission,
            recipient=recipient,
            now=NOW,
            digest_key=KEY,
            received_before=received_before,
        )

    return _view
