"""Granular markings and derived copies (policy/_derive.py, policy/_closure.py)."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from policy import Directory, Tlp, View
from policy._derive import NAMESPACE, can_remove, stix_timestamp

from ._support import (
    BROKER_IDENTITY,
    TLP2,
    Stix,
    assert_valid_stix,
    bundle,
    decision_for,
    ids_of,
    objects_of,
)

ViewFor = Callable[..., View]


def _red_description(stix: Stix, **props: Any) -> dict[str, Any]:
    return stix.indicator(
        "green",
        description="seen at victim X",
        granular_markings=[{"marking_ref": TLP2["red"], "selectors": ["description"]}],
        **props,
    )


def _red_at(stix: Stix, selector: str) -> dict[str, Any]:
    """A CLEAR indicator with a RED granular marking at ``selector``."""
    return stix.indicator(
        "clear",
        description="RED-ONLY text",
        external_references=[{"source_name": "x", "url": "https://red.example/"}],
        granular_markings=[{"marking_ref": TLP2["red"], "selectors": [selector]}],
    )


def _copies(view: View, kind: str) -> list[dict[str, Any]]:
    return [
        o
        for o in objects_of(view).values()
        if o["type"] == kind and o.get("created_by_ref") == BROKER_IDENTITY
    ]


class TestGranularWithoutOptIn:
    def test_granular_on_description_withholds_whole_when_not_opted_in(
        self, stix: Stix, view_for: ViewFor
    ) -> None:
        ind = _red_description(stix)
        view = view_for(bundle(ind), "bank-b")
        assert view.bundle is None
        assert decision_for(view, ind).reason == "granular"

    def test_granular_delivered_whole_when_recipient_cleared(
        self, stix: Stix, view_for: ViewFor
    ) -> None:
        ind = _red_description(stix)
        view = view_for(bundle(ind), "bank-b", named={"bank-b"})
        assert objects_of(view)[ind["id"]] == ind
        assert_valid_stix(view)

    def test_an_original_with_a_content_derived_id_is_withheld_not_derived(
        self, stix: Stix, view_for: ViewFor, derived_directory: Directory
    ) -> None:
        """derived-from names the original: a UUIDv5 of the name the copy leaves out would
        confirm a guess of it."""
        name = "Plant 7, Rotterdam"
        place = stix.sdo(
            "location",
            "green",
            id=f"location--{uuid.uuid5(uuid.NAMESPACE_URL, name)}",
            name=name,
            region="europe",
            granular_markings=[{"marking_ref": TLP2["red"], "selectors": ["name"]}],
        )
        view = view_for(bundle(place), "bank-b", directory=derived_directory)
        assert view.bundle is None
        assert decision_for(view, place).action == "withheld"

    def test_a_delivered_objects_decision_gives_the_level_inside_it(
        self, stix: Stix, view_for: ViewFor
    ) -> None:
        ind = _red_description(stix)  # GREEN, with a RED description
        view = view_for(bundle(ind), "bank-b", named={"bank-b"})
        assert decision_for(view, ind).tlp is Tlp.RED
        assert view.delivered_by_tlp == {"red": 1}
        revoked = {**ind, "modified": "2024-06-01T00:00:00.000Z", "revoked": True}
        again = view_for(bundle(revoked), "bank-b", received_before={ind["id"]: Tlp.RED})
        assert decision_for(again, revoked).action == "delivered"

    def test_the_views_tlp_counts_granular_levels_inside(
        self, stix: Stix, view_for: ViewFor, derived_directory: Directory
    ) -> None:
        ind = _red_description(stix)  # GREEN, with a RED description
        whole = view_for(bundle(ind), "bank-b", named={"bank-b"})
        assert whole.tlp is Tlp.RED
        copy = view_for(bundle(ind), "bank-b", directory=derived_directory)
        assert copy.tlp is Tlp.GREEN  # the RED field is not inside

    def test_granular_lang_entry_restricts_nothing(self, stix: Stix, view_for: ViewFor) -> None:
        ind = stix.indicator("clear", granular_markings=[{"lang": "en", "selectors": ["name"]}])
        assert ids_of(view_for(bundle(ind), "bank-b")) == {ind["id"]}

    def test_granular_unknown_marking_withholds_whole(self, stix: Stix, view_for: ViewFor) -> None:
        ind = stix.indicator(
            "clear",
            granular_markings=[
                {"marking_ref": stix.new_id("marking-definition"), "selectors": ["name"]}
            ],
        )
        view = view_for(bundle(ind), "bank-b", named={"bank-b"})
        assert decision_for(view, ind).reason == "granular"

    @pytest.mark.parametrize(
        "granular",
        [
            "description",
            [{"marking_ref": TLP2["red"]}],
            [{"marking_ref": TLP2["red"], "selectors": []}],
            [{"marking_ref": TLP2["red"], "selectors": [""]}],
            [{"marking_ref": TLP2["red"], "selectors": [3]}],
            [{"selectors": ["name"]}],
            [{"marking_ref": 7, "selectors": ["name"]}],
            ["description"],
        ],
    )
    def test_unreadable_granular_markings_withhold(
        self, stix: Stix, view_for: ViewFor, granular: Any
    ) -> None:
        ind = stix.indicator("clear", granular_markings=granular)
        view = view_for(bundle(ind), "bank-b", named={"bank-b"})
        assert decision_for(view, ind).reason == "unreadable-marking"

    @pytest.mark.parametrize(
        "selector",
        [
            "external_references[0].url",  # the index must be a step of its own
            "external_references.[1].url",  # past the end
            "external_references.[0].nope",
            "external_references.[x]",
            "description[0]",
            " description",
            "Description",
            "description.x",
            "name.[0]",
            "external_references.[00]",
        ],
    )
    def test_a_selector_that_names_nothing_withholds_even_with_derived_copies(
        self, stix: Stix, view_for: ViewFor, derived_directory: Directory, selector: str
    ) -> None:
        ind = _red_at(stix, selector)
        view = view_for(bundle(ind), "bank-b", directory=derived_directory)
        assert view.bundle is None
        assert decision_for(view, ind).reason == "unreadable-marking"

    @pytest.mark.parametrize(
        ("selector", "secret"),
        [("external_references.[0].url", "red.example"), ("description", "RED-ONLY")],
    )
    def test_a_selector_in_stix_form_is_derived_without_its_property(
        self,
        stix: Stix,
        view_for: ViewFor,
        derived_directory: Directory,
        selector: str,
        secret: str,
    ) -> None:
        ind = _red_at(stix, selector)
        view = view_for(bundle(ind), "bank-b", directory=derived_directory)
        (made,) = _copies(view, "indicator")
        assert selector.partition(".")[0] not in made and "granular_markings" not in made
        assert secret not in str(view.bundle)


class TestDerivedCopies:
    def test_derived_copy_without_restricted_field_when_opted_in(
        self, stix: Stix, view_for: ViewFor, derived_directory: Directory
    ) -> None:
        ind = _red_description(stix)
        view = view_for(bundle(ind), "bank-b", directory=derived_directory)
        decision = decision_for(view, ind)
        assert (decision.action, decision.reason) == ("derived", "granular")
        assert decision.derived_digest is not None
        (made,) = _copies(view, "indicator")
        assert "description" not in made
        assert "granular_markings" not in made
        assert made["id"] != ind["id"]
        assert made["created"] == made["modified"] == "2024-06-01T12:30:15.123Z"
        assert made["pattern"] == ind["pattern"]
        assert made["object_marking_refs"] == [TLP2["green"]]
        assert (view.delivered, view.withheld, view.derived) == (0, 0, 1)
        assert view.derived_by_tlp == {"green": 1}
        assert_valid_stix(view)

    def test_derived_copy_brings_broker_identity_and_derived_from(
        self, stix: Stix, view_for: ViewFor, derived_directory: Directory
    ) -> None:
        ind = _red_description(stix)
        view = view_for(bundle(ind), "bank-b", directory=derived_directory)
        objects = objects_of(view)
        assert objects[BROKER_IDENTITY]["identity_class"] == "system"
        (made,) = _copies(view, "indicator")
        (rel,) = _copies(view, "relationship")
        assert rel["relationship_type"] == "derived-from"
        assert (rel["source_ref"], rel["target_ref"]) == (made["id"], ind["id"])
        assert rel["object_marking_refs"] == [TLP2["green"]]

    def test_derived_copy_id_deterministic_and_recipient_independent(
        self, stix: Stix, view_for: ViewFor, derived_directory: Directory
    ) -> None:
        ind = _red_description(stix)
        first = view_for(bundle(ind), "bank-b", directory=derived_directory)
        second = view_for(bundle(ind), "vendor-c", directory=derived_directory)
        other_submission = view_for(
            bundle(ind), "bank-b", directory=derived_directory, submission_id="sub-2"
        )
        (a,) = _copies(first, "indicator")
        (b,) = _copies(second, "indicator")
        (c,) = _copies(other_submission, "indicator")
        assert a["id"] == b["id"] != c["id"]
        assert uuid.UUID(a["id"].partition("--")[2]).version == 4

    def test_a_copys_id_gives_no_test_for_guesses_of_what_was_withheld(
        self, stix: Stix, view_for: ViewFor, derived_directory: Directory
    ) -> None:
        """The seed of a copy's id names the withheld references, and an observable's id is
        a UUIDv5 of its value: an unkeyed id let a recipient try every IPv4 address."""
        secret = stix.ipv4("203.0.113.77", tlp="red")
        rep = stix.report([secret, stix.indicator("clear")], "clear")
        view = view_for(bundle(secret, rep), "bank-b", directory=derived_directory)
        (made,) = _copies(view, "report")
        assert secret["id"] not in made["object_refs"]
        copy_uuid = uuid.UUID(made["id"].partition("--")[2])
        for last in range(256):
            guess = stix.ipv4(f"203.0.113.{last}")["id"]
            seed = "|".join(("derived", "sub-1", rep["id"], rep["modified"], "", guess))
            assert uuid.uuid5(NAMESPACE, seed) != copy_uuid
            assert uuid.uuid5(uuid.NAMESPACE_URL, seed) != copy_uuid

    def test_cleared_granular_markings_kept_on_copy(
        self, stix: Stix, view_for: ViewFor, derived_directory: Directory
    ) -> None:
        ind = stix.indicator(
            "clear",
            description="secret",
            labels=["a", "b"],
            granular_markings=[
                {"marking_ref": TLP2["red"], "selectors": ["description", "labels.[1]"]},
                {"marking_ref": TLP2["green"], "selectors": ["name", "labels.[0]"]},
                {"lang": "en", "selectors": ["description"]},
            ],
        )
        view = view_for(bundle(ind), "bank-b", directory=derived_directory)
        (made,) = _copies(view, "indicator")
        assert "labels" not in made and "description" not in made
        assert made["granular_markings"] == [{"marking_ref": TLP2["green"], "selectors": ["name"]}]
        assert_valid_stix(view)

    def test_withheld_whole_when_restricted_field_is_required(
        self, stix: Stix, view_for: ViewFor, derived_directory: Directory
    ) -> None:
        ind = stix.indicator(
            "clear", granular_markings=[{"marking_ref": TLP2["red"], "selectors": ["pattern"]}]
        )
        view = view_for(bundle(ind), "bank-b", directory=derived_directory)
        assert view.bundle is None
        assert decision_for(view, ind).action == "withheld"

    def test_withheld_whole_when_restricted_field_is_markings(
        self, stix: Stix, view_for: ViewFor, derived_directory: Directory
    ) -> None:
        ind = stix.indicator(
            "clear",
            granular_markings=[{"marking_ref": TLP2["red"], "selectors": ["object_marking_refs"]}],
        )
        assert view_for(bundle(ind), "bank-b", directory=derived_directory).bundle is None

    def test_sco_never_derived_when_granular_restricted(
        self, stix: Stix, view_for: ViewFor, derived_directory: Directory
    ) -> None:
        ip = stix.ipv4(
            "192.0.2.1",
            "clear",
            granular_markings=[{"marking_ref": TLP2["red"], "selectors": ["value"]}],
        )
        view = view_for(bundle(ip), "bank-b", directory=derived_directory)
        assert view.bundle is None
        assert decision_for(view, ip).reason == "granular"

    def test_revoked_object_never_derived(
        self, stix: Stix, view_for: ViewFor, derived_directory: Directory
    ) -> None:
        ind = _red_description(stix, revoked=True)
        assert view_for(bundle(ind), "bank-b", directory=derived_directory).bundle is None

    def test_derived_copy_withheld_when_original_creator_withheld(
        self, stix: Stix, view_for: ViewFor, derived_directory: Directory
    ) -> None:
        author = stix.identity("red")
        ind = _red_description(stix, created_by_ref=author["id"])
        view = view_for(bundle(author, ind), "bank-b", directory=derived_directory)
        assert view.bundle is None
        assert decision_for(view, ind).reason == "ref-withheld"

    def test_derived_copy_drops_reference_held_in_removed_field(
        self, stix: Stix, view_for: ViewFor, derived_directory: Directory
    ) -> None:
        secret = stix.identity("red")
        ind = stix.indicator(
            "clear",
            description=f"attributed to {secret['id']}",
            granular_markings=[{"marking_ref": TLP2["red"], "selectors": ["description"]}],
        )
        view = view_for(bundle(secret, ind), "bank-b", directory=derived_directory)
        assert decision_for(view, ind).action == "derived"
        assert secret["id"] not in str(view.bundle)

    def test_references_to_original_withheld_when_original_derived(
        self, stix: Stix, view_for: ViewFor, derived_directory: Directory
    ) -> None:
        ind = _red_description(stix)
        mal = stix.malware("clear")
        rel = stix.relationship(ind, mal, "clear")
        view = view_for(bundle(ind, mal, rel), "bank-b", directory=derived_directory)
        assert decision_for(view, rel).reason == "ref-withheld"
        assert decision_for(view, mal).action == "delivered"


class TestDerivedContainers:
    def test_report_derived_without_withheld_refs_when_opted_in(
        self, stix: Stix, view_for: ViewFor, derived_directory: Directory
    ) -> None:
        ind = stix.indicator("clear")
        secret = stix.indicator("red")
        report = stix.report([ind, secret], "green")
        view = view_for(bundle(ind, secret, report), "bank-b", directory=derived_directory)
        decision = decision_for(view, report)
        assert (decision.action, decision.reason) == ("derived", "ref-withheld")
        (made,) = _copies(view, "report")
        assert made["object_refs"] == [ind["id"]]
        assert secret["id"] not in str(view.bundle)
        assert_valid_stix(view)

    def test_report_withheld_when_every_ref_withheld(
        self, stix: Stix, view_for: ViewFor, derived_directory: Directory
    ) -> None:
        secret = stix.indicator("red")
        report = stix.report([secret], "green")
        view = view_for(bundle(secret, report), "bank-b", directory=derived_directory)
        assert view.bundle is None
        assert decision_for(view, report).reason == "ref-withheld"

    def test_note_derived_without_refs_when_opted_in(
        self, stix: Stix, view_for: ViewFor, derived_directory: Directory
    ) -> None:
        ind = stix.indicator("clear")
        secret = stix.ipv4("198.51.100.1", "amber")
        note = stix.note([ind, secret], "clear")
        view = view_for(bundle(ind, secret, note), "bank-b", directory=derived_directory)
        (made,) = _copies(view, "note")
        assert made["object_refs"] == [ind["id"]]
        assert secret["id"] not in str(view.bundle)

    def test_container_withheld_when_withheld_id_also_in_text(
        self, stix: Stix, view_for: ViewFor, derived_directory: Directory
    ) -> None:
        ind = stix.indicator("clear")
        secret = stix.ipv4("198.51.100.2", "amber")
        note = stix.note([ind, secret], "clear", content=f"about {secret['id']}")
        view = view_for(bundle(ind, secret, note), "bank-b", directory=derived_directory)
        assert decision_for(view, note).action == "withheld"

    def test_container_withheld_when_granular_selector_points_into_object_refs(
        self, stix: Stix, view_for: ViewFor, derived_directory: Directory
    ) -> None:
        ind = stix.indicator("clear")
        secret = stix.indicator("red")
        report = stix.report(
            [ind, secret],
            "clear",
            granular_markings=[{"marking_ref": TLP2["clear"], "selectors": ["object_refs.[0]"]}],
        )
        view = view_for(bundle(ind, secret, report), "bank-b", directory=derived_directory)
        assert decision_for(view, report).action == "withheld"

    def test_container_withheld_when_object_refs_unreadable(
        self, stix: Stix, view_for: ViewFor, derived_directory: Directory
    ) -> None:
        secret = stix.indicator("red")
        report = stix.report([], "clear", object_refs=[secret["id"], 5])
        view = view_for(bundle(secret, report), "bank-b", directory=derived_directory)
        assert decision_for(view, report).action == "withheld"

    def test_container_derived_for_both_granular_and_refs(
        self, stix: Stix, view_for: ViewFor, derived_directory: Directory
    ) -> None:
        ind = stix.indicator("clear")
        secret = stix.indicator("red")
        later = stix.indicator("clear", created_by_ref=secret["id"])
        report = stix.report(
            [ind, secret, later],
            "clear",
            description="private",
            granular_markings=[{"marking_ref": TLP2["amber"], "selectors": ["description"]}],
        )
        view = view_for(bundle(ind, secret, later, report), "bank-b", directory=derived_directory)
        decision = decision_for(view, report)
        assert (decision.action, decision.reason) == ("derived", "granular")
        (made,) = _copies(view, "report")
        assert made["object_refs"] == [ind["id"]]
        assert "description" not in made
        assert_valid_stix(view)

    def test_container_with_restricted_object_refs_cannot_drop_refs(
        self, stix: Stix, view_for: ViewFor, derived_directory: Directory
    ) -> None:
        ind = stix.indicator("clear")
        report = stix.report(
            [ind],
            "clear",
            granular_markings=[{"marking_ref": TLP2["red"], "selectors": ["object_refs"]}],
        )
        view = view_for(bundle(ind, report), "bank-b", directory=derived_directory)
        assert decision_for(view, report).action == "withheld"

    def test_derived_container_withheld_when_creator_later_withheld(
        self, stix: Stix, view_for: ViewFor, derived_directory: Directory
    ) -> None:
        author = stix.identity("red")
        ind = stix.indicator("clear")
        secret = stix.indicator("red")
        report = stix.report([ind, secret], "clear", created_by_ref=author["id"])
        view = view_for(bundle(author, ind, secret, report), "bank-b", directory=derived_directory)
        assert decision_for(view, report).reason == "ref-withheld"
        assert decision_for(view, report).action == "withheld"


class TestHelpers:
    def test_stix_timestamp_is_utc_with_milliseconds(self) -> None:
        moment = datetime(2024, 2, 29, 23, 59, 59, 999999, tzinfo=timezone(timedelta(hours=2)))
        assert stix_timestamp(moment) == "2024-02-29T21:59:59.999Z"

    @pytest.mark.parametrize(
        ("kind", "props", "expected"),
        [
            ("indicator", {"description"}, True),
            ("indicator", {"pattern"}, False),
            ("indicator", {"id"}, False),
            ("ipv4-addr", {"x_note"}, False),
            ("x-custom", {"name"}, False),
            ("location", {"country"}, False),
        ],
    )
    def test_can_remove_knows_required_properties(
        self, kind: str, props: set[str], expected: bool
    ) -> None:
        assert can_remove(kind, frozenset(props)) is expected


class TestDerivedMarkings:
    def test_cleared_granular_entry_kept_when_refs_dropped(
        self, stix: Stix, view_for: ViewFor, derived_directory: Directory
    ) -> None:
        ind = stix.indicator("clear")
        secret = stix.indicator("red")
        report = stix.report(
            [ind, secret],
            "clear",
            granular_markings=[{"marking_ref": TLP2["green"], "selectors": ["name"]}],
        )
        view = view_for(bundle(ind, secret, report), "bank-b", directory=derived_directory)
        (made,) = _copies(view, "report")
        assert made["granular_markings"] == report["granular_markings"]
        assert_valid_stix(view)

    def test_unmarked_original_gives_unmarked_derived_from(
        self, stix: Stix, view_for: ViewFor, make_directory: Callable[..., Directory]
    ) -> None:
        directory = make_directory(
            org_changes={"bank-a": {"derived_copies": True, "default_tlp": "green"}}
        )
        ind = stix.indicator(
            None,
            description="secret",
            granular_markings=[{"marking_ref": TLP2["red"], "selectors": ["description"]}],
        )
        view = view_for(bundle(ind), "bank-b", directory=directory)
        (rel,) = _copies(view, "relationship")
        assert "object_marking_refs" not in rel
        assert_valid_stix(view)


class TestDerivedNonContainers:
    def test_derived_observed_data_withheld_when_its_observable_withheld(
        self, stix: Stix, view_for: ViewFor, derived_directory: Directory
    ) -> None:
        ip = stix.ipv4("203.0.113.50", "red")
        observed = stix.sdo(
            "observed-data",
            "clear",
            first_observed="2024-05-01T00:00:00.000Z",
            last_observed="2024-05-01T00:00:00.000Z",
            number_observed=1,
            object_refs=[ip["id"]],
            labels=["x"],
            granular_markings=[{"marking_ref": TLP2["red"], "selectors": ["labels"]}],
        )
        view = view_for(bundle(ip, observed), "bank-b", directory=derived_directory)
        assert view.bundle is None
        assert decision_for(view, observed).reason == "ref-withheld"

    def test_derived_observed_data_delivered_when_observable_cleared(
        self, stix: Stix, view_for: ViewFor, derived_directory: Directory
    ) -> None:
        ip = stix.ipv4("203.0.113.51", "clear")
        observed = stix.sdo(
            "observed-data",
            "clear",
            first_observed="2024-05-01T00:00:00.000Z",
            last_observed="2024-05-01T00:00:00.000Z",
            number_observed=1,
            object_refs=[ip["id"]],
            labels=["x"],
            granular_markings=[{"marking_ref": TLP2["red"], "selectors": ["labels"]}],
        )
        view = view_for(bundle(ip, observed), "bank-b", directory=derived_directory)
        assert decision_for(view, observed).action == "derived"
        assert_valid_stix(view)
