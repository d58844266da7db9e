"""TLP levels (TLP 2.0 vocabulary) and their order of restriction."""

from __future__ import annotations

from enum import StrEnum

__all__ = ["Tlp"]


class Tlp(StrEnum):
    """TLP 2.0 levels; ``rank`` orders them from least to most restrictive."""

    CLEAR = "clear"
    GREEN = "green"
    AMBER = "amber"
    AMBER_STRICT = "amber+strict"
    RED = "red"

    @property
    def rank(self) -> int:
        return _RANK[self]

    @classmethod
    def strictest(cls, levels: list[Tlp] | tuple[Tlp, ...] | set[Tlp]) -> Tlp:
        return max(levels, key=lambda level: level.rank)


_RANK = {Tlp.CLEAR: 0, Tlp.GREEN: 1, Tlp.AMBER: 2, Tlp.AMBER_STRICT: 3, Tlp.RED: 4}
