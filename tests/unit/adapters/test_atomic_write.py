"""``atomic_write``: the whole new content or the old, never through a planted link."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from adapters._bridge import atomic_write


def test_replaces_the_content_with_the_mode_asked(tmp_path: Path) -> None:
    target = tmp_path / "b.json"
    target.write_bytes(b"old")
    atomic_write(target, b"new", mode=0o600)
    assert target.read_bytes() == b"new"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["b.json"]


def test_a_link_planted_at_the_old_temporary_name_is_left_alone(tmp_path: Path) -> None:
    # The temporary name was once ".<name>.tmp-<pid>": anyone able to write to the folder
    # could plant a link there and have the bundle written through it.
    victim = tmp_path / "victim"
    victim.write_bytes(b"keep")
    (tmp_path / f".b.json.tmp-{os.getpid()}").symlink_to(victim)
    atomic_write(tmp_path / "b.json", b"bundle")
    assert victim.read_bytes() == b"keep"
    assert (tmp_path / "b.json").read_bytes() == b"bundle"


def test_a_failed_write_leaves_the_old_content_and_no_temporary_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "b.json"
    target.write_bytes(b"old")

    def fail(src: object, dst: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError, match="No space"):
        atomic_write(target, b"new")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["b.json"]
