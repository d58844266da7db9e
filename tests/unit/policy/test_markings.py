"""Marking tables and resolution (policy/_markings.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from policy import Tlp
from policy._markings import (
    CANONICAL_TLP_DEFINITIONS,
    PAP_IDS,
    TLP_IDS,
    Granular,
    MarkingTable,
    Marks,
    is_statement_definition,
)

from ._support import NO_LE, PAP_GREEN, TLP1, TLP2

# Copies of the community's published marking definitions (TLP 1.0/2.0, PAP).
DATA = Path(__file__).resolve().parents[2] / "data"


class TestTables:
    def test_tlp_table_maps_both_versions(self) -> None:
        assert TLP_IDS[TLP1["white"]] is Tlp.CLEAR
        assert TLP_IDS[TLP1["amber"]] is Tlp.AMBER
        assert {TLP_IDS[v] for v in TLP2.values()} == set(Tlp)
        assert len(TLP_IDS) == 9

    def test_canonical_definitions_match_published_table(self) -> None:
        source = DATA / "tlp_markings.json"
        expected = {d["id"]: d for d in json.loads(source.read_text())}
        assert {k: dict(v) for k, v in CANONICAL_TLP_DEFINITIONS.items()} == expected

    def test_pap_table_matches_published_table(self) -> None:
        source = DATA / "pap_markings.json"
        table = json.loads(source.read_text())
        assert {v for k, v in table.items() if not k.startswith("_")} == PAP_IDS

    def test_pap_and_tlp_tables_disjoint(self) -> None:
        assert PAP_IDS.isdisjoint(TLP_IDS)


class TestResolve:
    def test_absent_refs_are_no_marks(self) -> None:
        assert MarkingTable(frozenset()).resolve(None) == Marks()

    def test_strictest_tlp_wins_when_several(self) -> None:
        marks = MarkingTable(frozenset()).resolve([TLP2["red"], TLP1["green"], TLP2["amber"]])
        assert marks.tlp is Tlp.RED

    def test_pap_sets_no_level_and_is_known(self) -> None:
        assert MarkingTable(frozenset()).resolve([PAP_GREEN]) == Marks()

    def test_statement_known_when_in_table(self) -> None:
        marks = MarkingTable(frozenset({NO_LE})).resolve([NO_LE, TLP2["green"]])
        assert marks == Marks(tlp=Tlp.GREEN, statements=frozenset({NO_LE}))

    def test_forged_id_is_unknown(self) -> None:
        forged = "marking-definition--11111111-1111-4111-8111-111111111111"
        marks = MarkingTable(frozenset()).resolve([TLP2["clear"], forged])
        assert marks.unknown and marks.tlp is Tlp.CLEAR

    @pytest.mark.parametrize(
        "refs",
        [
            TLP2["clear"],
            {"a": 1},
            [TLP2["clear"], 5],
            [None],
            # Unhashable items once crashed the cache lookup (and with it the router).
            [{"a": 1}],
            [TLP2["clear"], [TLP2["clear"]]],
        ],
    )
    def test_unreadable_when_not_list_of_strings(self, refs: object) -> None:
        assert MarkingTable(frozenset()).resolve(refs).unreadable

    def test_same_marks_object_for_same_refs(self) -> None:
        table = MarkingTable(frozenset())
        assert table.resolve([TLP2["green"]]) is table.resolve([TLP2["green"]])


class TestGranular:
    def test_absent_is_empty(self) -> None:
        assert MarkingTable(frozenset()).granular(None) == ()

    def test_entries_resolved_with_top_level_properties(self) -> None:
        result = MarkingTable(frozenset()).granular(
            [
                {"marking_ref": TLP2["red"], "selectors": ["description", "labels.[0]"]},
                {"lang": "fr", "selectors": ["name"]},
            ]
        )
        assert result == (
            Granular(marks=Marks(tlp=Tlp.RED), tops=frozenset({"description", "labels"})),
            Granular(marks=None, tops=frozenset({"name"})),
        )

    @pytest.mark.parametrize("ref", [{"x": 1}, [TLP2["red"]]])
    def test_unreadable_when_marking_ref_is_a_container(self, ref: object) -> None:
        assert (
            MarkingTable(frozenset()).granular([{"marking_ref": ref, "selectors": ["name"]}])
            is None
        )


class TestStatementDefinition:
    @pytest.mark.parametrize(
        ("obj", "expected"),
        [
            ({"definition_type": "statement", "definition": {"statement": "x"}}, True),
            ({"definition_type": "statement", "definition": {"statement": 1}}, False),
            ({"definition_type": "statement", "definition": "x"}, False),
            ({"definition_type": "tlp", "definition": {"tlp": "green"}}, False),
            ({"name": "statement"}, False),
        ],
    )
    def test_recognises_statement_shape(self, obj: dict[str, object], expected: bool) -> None:
        assert is_statement_definition(obj) is expected
