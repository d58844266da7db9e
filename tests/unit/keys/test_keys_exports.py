"""The public surface of ``keys`` stays sorted and complete."""

from __future__ import annotations

import types

import keys


def _isort_key(name: str) -> tuple[int, str]:
    # ruff RUF022 order: CONSTANTS, then Classes, then functions.
    if name.isupper():
        return (0, name)
    if name[0].isupper():
        return (1, name)
    return (2, name)


class TestExports:
    def test_all_is_sorted_when_read(self) -> None:
        assert keys.__all__ == sorted(keys.__all__, key=_isort_key)

    def test_all_lists_every_public_name_when_imported(self) -> None:
        public = {
            name
            for name, value in vars(keys).items()
            if not name.startswith("_") and not isinstance(value, types.ModuleType)
        }
        assert public == set(keys.__all__)

    def test_every_export_resolves_when_accessed(self) -> None:
        for name in keys.__all__:
            assert getattr(keys, name) is not None
