"""Fixtures of the fault tests: the community, the rig of processes, a 3-node cluster."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from tests.conftest import Community
from tests.faults.rig import Cluster, Rig


@pytest.fixture
def community(make_community: Callable[..., Community]) -> Community:
    """Two members, two partners in the community, one organisation outside it, a group."""
    made = make_community(
        members=("bank-a", "bank-b"), partners=("lea-1", "lea-2"), outside=("ngo-x",)
    )
    made.doc["groups"] = [{"id": "op", "name": "Operation", "members": ["lea-1", "bank-a"]}]
    return made


@pytest.fixture
async def rig(tmp_path: Path, community: Community) -> AsyncIterator[Rig]:
    root = tmp_path / "rig"
    root.mkdir()
    made = Rig(root, community)
    try:
        yield made
    finally:
        await made.aclose()


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[Cluster]:
    made = Cluster(tmp_path / "cluster")
    try:
        await made.start()
        yield made
    finally:
        await made.aclose()
