"""Reference closure, definitions, statements and revocations (policy/_closure.py)."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest

from policy import Directory, Tlp, View

from ._support import (
    NO_LE,
    PAP_GREEN,
    TLP2,
    TS,
    Stix,
    assert_valid_stix,
    bundle,
    decision_for,
    ids_of,
    objects_of,
)

ViewFor = Callable[..., View]


class TestReferenceClosure:
    def test_relationship_withheld_when_crossing_to_higher_level(
        self, stix: Stix, view_for: ViewFor
    ) -> None:
        ind = stix.indicator("green")
        mal = stix.malware("amber")
        rel = stix.relationship(ind, mal, "green")
        view = view_for(bundle(ind, mal, rel), "bank-b")
        assert ids_of(view) == {ind["id"]}
        assert decision_for(view, rel).reason == "ref-withheld"
        assert decision_for(view, mal).reason == "tlp-audience"

    def test_relationship_delivered_when_both_ends_cleared(
        self, stix: Stix, view_for: ViewFor
    ) -> None:
        ind = stix.indicator("green")
        mal = stix.malware("amber")
        rel = stix.relationship(ind, mal, "green")
        view = view_for(bundle(ind, mal, rel), "bank-b", named_groups={"banks"})
        assert ids_of(view) == {ind["id"], mal["id"], rel["id"]}

    def test_sighting_withheld_when_where_sighted_identity_withheld(
        self, stix: Stix, view_for: ViewFor
    ) -> None:
        victim = stix.identity("red")
        ind = stix.indicator("clear")
        sighting = stix.sdo(
            "sighting", "clear", sighting_of_ref=ind["id"], where_sighted_refs=[victim["id"]]
        )
        view = view_for(bundle(victim, ind, sighting), "bank-b")
        assert ids_of(view) == {ind["id"]}
        assert decision_for(view, sighting).reason == "ref-withheld"

    def test_object_withheld_when_created_by_identity_withheld(
        self, stix: Stix, view_for: ViewFor
    ) -> None:
        author = stix.identity("amber")
        ind = stix.indicator("clear", created_by_ref=author["id"])
        view = view_for(bundle(author, ind), "lea-1")
        assert view.bundle is None
        assert decision_for(view, ind).reason == "ref-withheld"

    def test_sco_id_never_leaks_when_relationship_targets_withheld_sco(
        self, stix: Stix, view_for: ViewFor
    ) -> None:
        ip = stix.ipv4("203.0.113.9", "red")
        ind = stix.indicator("clear")
        rel = stix.relationship(ind, ip, "clear", relationship_type="related-to")
        view = view_for(bundle(ip, ind, rel), "bank-b")
        assert ids_of(view) == {ind["id"]}
        assert ip["id"] not in str(view.bundle)

    def test_sco_id_never_leaks_when_quoted_in_free_text(
        self, stix: Stix, view_for: ViewFor
    ) -> None:
        ip = stix.ipv4("203.0.113.10", "amber")
        bare_uuid = ip["id"].partition("--")[2].upper()
        quoting = stix.indicator("clear", description=f"see {ip['id']} for details")
        bare = stix.malware("clear", description=f"uuid {bare_uuid}")
        view = view_for(bundle(ip, quoting, bare), "bank-b")
        assert view.bundle is None
        assert {d.reason for d in view.decisions} == {"tlp-audience", "ref-withheld"}

    def test_reference_in_extension_withheld_when_target_withheld(
        self, stix: Stix, view_for: ViewFor
    ) -> None:
        secret = stix.identity("red")
        ind = stix.indicator(
            "clear",
            extensions={
                "extension-definition--3f3a1e2b-0b6c-4f57-9e8a-9c2f0d8e7a61": {
                    "extension_type": "property-extension",
                    "nested": [{"deep_ref": secret["id"]}],
                }
            },
        )
        view = view_for(bundle(secret, ind), "bank-b")
        assert view.bundle is None

    def test_note_withheld_when_object_refs_include_withheld(
        self, stix: Stix, view_for: ViewFor
    ) -> None:
        ind = stix.indicator("clear")
        secret = stix.indicator("red")
        note = stix.note([ind, secret], "clear")
        view = view_for(bundle(ind, secret, note), "bank-b")
        assert ids_of(view) == {ind["id"]}
        assert decision_for(view, note).reason == "ref-withheld"

    def test_report_withheld_when_object_refs_include_withheld(
        self, stix: Stix, view_for: ViewFor
    ) -> None:
        ind = stix.indicator("clear")
        secret = stix.indicator("amber")
        report = stix.report([ind, secret], "clear")
        view = view_for(bundle(ind, secret, report), "bank-b")
        assert ids_of(view) == {ind["id"]}

    def test_closure_runs_to_fixed_point_when_chain_of_references(
        self, stix: Stix, view_for: ViewFor
    ) -> None:
        secret = stix.identity("red")
        ind = stix.indicator("clear", created_by_ref=secret["id"])
        mal = stix.malware("clear")
        rel = stix.relationship(ind, mal, "clear")
        report = stix.report([rel], "clear")
        opinion = stix.sdo("opinion", "clear", opinion="agree", object_refs=[report["id"]])
        view = view_for(bundle(opinion, report, rel, mal, ind, secret), "bank-b")
        assert ids_of(view) == {mal["id"]}
        for obj in (ind, rel, report, opinion):
            assert decision_for(view, obj).reason == "ref-withheld"

    def test_external_reference_allowed_when_target_not_in_bundle(
        self, stix: Stix, view_for: ViewFor
    ) -> None:
        ind = stix.indicator("clear", created_by_ref=stix.new_id("identity"))
        mal = stix.malware("clear")
        rel = stix.relationship(ind, mal, "clear", target_ref=stix.new_id("ipv4-addr"))
        view = view_for(bundle(ind, rel), "bank-b")
        assert ids_of(view) == {ind["id"], rel["id"]}

    def test_id_stays_visible_when_one_version_delivered(
        self, stix: Stix, view_for: ViewFor
    ) -> None:
        old = stix.malware("green")
        new = {**copy.deepcopy(old), "modified": "2024-05-02T00:00:00.000Z"}
        new["object_marking_refs"] = [TLP2["red"]]
        ind = stix.indicator("green")
        rel = stix.relationship(ind, old, "green")
        view = view_for(bundle(old, new, ind, rel), "bank-b")
        delivered = view.bundle["objects"] if view.bundle else []
        assert {(o["id"], o["modified"]) for o in delivered} == {
            (old["id"], TS),
            (ind["id"], TS),
            (rel["id"], TS),
        }
        assert decision_for(view, new).reason == "red-not-named"

    def test_unreadable_markings_withhold_when_not_a_list(
        self, stix: Stix, view_for: ViewFor
    ) -> None:
        ind = stix.indicator(None, object_marking_refs=TLP2["clear"])
        view = view_for(bundle(ind), "bank-b")
        assert decision_for(view, ind).reason == "unreadable-marking"

    @pytest.mark.parametrize("prop", ["object_marking_refs", "granular_markings"])
    def test_unreadable_markings_withhold_when_null(
        self, stix: Stix, view_for: ViewFor, derived_directory: Directory, prop: str
    ) -> None:
        # With derived copies opted in, a null once reached derive() and crashed the router.
        ind = stix.indicator(
            "clear",
            granular_markings=[{"marking_ref": TLP2["red"], "selectors": ["description"]}],
            description="secret",
        )
        ind[prop] = None
        view = view_for(bundle(ind), "bank-b", directory=derived_directory)
        assert decision_for(view, ind).reason == "unreadable-marking"
        assert view.bundle is None


class TestMarkingResolution:
    def test_forged_tlp_green_definition_is_unknown_marking(
        self, stix: Stix, view_for: ViewFor
    ) -> None:
        forged = {
            "type": "marking-definition",
            "spec_version": "2.1",
            "id": stix.new_id("marking-definition"),
            "created": TS,
            "name": "TLP:GREEN",
            "definition_type": "tlp",
            "definition": {"tlp": "green"},
        }
        ind = stix.indicator(None, object_marking_refs=[forged["id"]])
        view = view_for(bundle(forged, ind), "bank-b")
        assert view.bundle is None
        assert decision_for(view, ind).reason == "unknown-marking"
        assert decision_for(view, forged).reason == "unknown-marking"

    def test_object_mentioning_forged_definition_withheld(
        self, stix: Stix, view_for: ViewFor
    ) -> None:
        forged = stix.statement(definition_type="tlp", definition={"tlp": "clear"})
        ind = stix.indicator("clear", description=f"see {forged['id']}")
        view = view_for(bundle(forged, ind), "bank-b")
        assert view.bundle is None
        assert decision_for(view, ind).reason == "ref-withheld"

    def test_unknown_marking_withheld_when_id_not_defined(
        self, stix: Stix, view_for: ViewFor
    ) -> None:
        ind = stix.indicator(
            "clear", object_marking_refs=[TLP2["clear"], stix.new_id("marking-definition")]
        )
        view = view_for(bundle(ind), "bank-b", named={"bank-b"})
        assert decision_for(view, ind).reason == "unknown-marking"

    def test_canonical_copy_replaces_bundle_copy_of_tlp_definition(
        self, stix: Stix, view_for: ViewFor
    ) -> None:
        lying = {
            "type": "marking-definition",
            "spec_version": "2.1",
            "id": TLP2["red"],
            "created": TS,
            "name": "TLP:CLEAR (honest)",
            "extensions": {
                "extension-definition--60a3c5c5-0d10-413e-aab3-9e08dde9e88d": {
                    "extension_type": "property-extension",
                    "tlp_2_0": "clear",
                }
            },
        }
        ind = stix.indicator("red")
        view = view_for(bundle(lying, ind), "lea-1", named={"lea-1"})
        delivered = objects_of(view)
        assert delivered[TLP2["red"]]["name"] == "TLP:RED"
        assert delivered[TLP2["red"]]["extensions"] != lying["extensions"]
        assert_valid_stix(view)

    def test_tlp_definition_not_delivered_when_no_object_uses_it(
        self, stix: Stix, view_for: ViewFor
    ) -> None:
        definition = {
            "type": "marking-definition",
            "spec_version": "2.1",
            "id": TLP2["green"],
            "created": "2022-10-01T00:00:00.000Z",
            "name": "TLP:GREEN",
        }
        ind = stix.indicator("clear")
        view = view_for(bundle(definition, ind), "bank-b")
        assert ids_of(view) == {ind["id"]}
        assert decision_for(view, definition).reason == "marking-unused"

    def test_pap_marking_passes_through_unchanged(self, stix: Stix, view_for: ViewFor) -> None:
        ind = stix.indicator(None, object_marking_refs=[TLP2["green"], PAP_GREEN])
        view = view_for(bundle(ind), "bank-b")
        assert objects_of(view)[ind["id"]]["object_marking_refs"] == [TLP2["green"], PAP_GREEN]

    def test_pap_alone_counts_as_unmarked_for_tlp(self, stix: Stix, view_for: ViewFor) -> None:
        ind = stix.indicator(None, object_marking_refs=[PAP_GREEN])
        view = view_for(bundle(ind), "bank-b")
        assert decision_for(view, ind).tlp is Tlp.AMBER
        assert view.bundle is None


class TestDefinitions:
    def test_marking_definition_delivered_only_with_users(
        self, stix: Stix, view_for: ViewFor
    ) -> None:
        statement = stix.statement()
        green = stix.indicator(None, object_marking_refs=[TLP2["green"], statement["id"]])
        clear = stix.indicator("clear")
        data = bundle(statement, green, clear)
        assert ids_of(view_for(data, "bank-b")) == {statement["id"], green["id"], clear["id"]}
        view = view_for(data, "outsider")
        assert ids_of(view) == {clear["id"]}
        assert decision_for(view, statement).reason == "marking-unused"

    def test_extension_definition_delivered_only_with_users(
        self, stix: Stix, view_for: ViewFor
    ) -> None:
        author = stix.identity("clear")
        ext = stix.sdo(
            "extension-definition",
            None,
            name="x-acme",
            created_by_ref=author["id"],
            schema="https://acme.example/schema.json",
            version="1.0.0",
            extension_types=["property-extension"],
        )
        user = stix.indicator(
            "amber",
            extensions={ext["id"]: {"extension_type": "property-extension", "score": 7}},
        )
        data = bundle(author, ext, user)
        assert ids_of(view_for(data, "bank-b", named={"bank-b"})) == {
            author["id"],
            ext["id"],
            user["id"],
        }
        view = view_for(data, "bank-b")
        assert ids_of(view) == {author["id"]}
        assert decision_for(view, ext).reason == "extension-unused"

    def test_objects_withheld_when_their_marking_definition_is_restricted(
        self, stix: Stix, view_for: ViewFor
    ) -> None:
        statement = stix.statement(object_marking_refs=[TLP2["red"]])
        ind = stix.indicator(None, object_marking_refs=[TLP2["clear"], statement["id"]])
        view = view_for(bundle(statement, ind), "bank-b")
        assert view.bundle is None
        assert decision_for(view, ind).reason == "marking-restricted"
        assert decision_for(view, statement).reason == "red-not-named"

    def test_granular_marking_definition_restricted_withholds_user(
        self, stix: Stix, view_for: ViewFor
    ) -> None:
        statement = stix.statement(object_marking_refs=[TLP2["amber"]])
        ind = stix.indicator(
            "clear",
            granular_markings=[{"marking_ref": statement["id"], "selectors": ["name"]}],
        )
        view = view_for(bundle(statement, ind), "bank-b")
        assert decision_for(view, ind).reason == "marking-restricted"

    def test_definition_chain_delivered_when_definition_marks_definition(
        self, stix: Stix, view_for: ViewFor
    ) -> None:
        inner = stix.statement("inner")
        outer = stix.statement("outer", object_marking_refs=[inner["id"], TLP2["clear"]])
        ind = stix.indicator(None, object_marking_refs=[TLP2["clear"], outer["id"]])
        view = view_for(bundle(inner, outer, ind), "bank-b")
        assert ids_of(view) == {inner["id"], outer["id"], ind["id"]}
        assert_valid_stix(view)


class TestStatements:
    def test_statement_rule_denies_law_enforcement(self, stix: Stix, view_for: ViewFor) -> None:
        statement = stix.statement("No law enforcement", id=NO_LE)
        ind = stix.indicator(None, object_marking_refs=[TLP2["clear"], NO_LE])
        data = bundle(statement, ind)
        view = view_for(data, "lea-1", named={"lea-1"})
        assert view.bundle is None
        assert decision_for(view, ind).reason == "statement-rule"
        assert ids_of(view_for(data, "bank-b")) == {NO_LE, ind["id"]}

    def test_statement_rule_applies_when_definition_not_in_bundle(
        self, stix: Stix, view_for: ViewFor
    ) -> None:
        ind = stix.indicator(None, object_marking_refs=[TLP2["clear"], NO_LE])
        assert view_for(bundle(ind), "lea-1").bundle is None
        assert ids_of(view_for(bundle(ind), "bank-b")) == {ind["id"]}

    def test_statement_rule_denies_listed_org(
        self, stix: Stix, view_for: ViewFor, make_directory: Callable[..., Directory]
    ) -> None:
        directory = make_directory(statement_rules=[{"marking": NO_LE, "deny_orgs": ["vendor-c"]}])
        ind = stix.indicator(None, object_marking_refs=[TLP2["clear"], NO_LE])
        assert view_for(bundle(ind), "vendor-c", directory=directory).bundle is None
        assert view_for(bundle(ind), "lea-1", directory=directory).bundle is not None

    def test_unregistered_statement_delivered_with_object(
        self, stix: Stix, view_for: ViewFor
    ) -> None:
        statement = stix.statement("Copyright ACME 2024")
        ind = stix.indicator(None, object_marking_refs=[TLP2["clear"], statement["id"]])
        view = view_for(bundle(statement, ind), "lea-1")
        assert ids_of(view) == {statement["id"], ind["id"]}
        assert_valid_stix(view)

    def test_statement_rule_on_granular_marking_withholds_whole(
        self, stix: Stix, view_for: ViewFor
    ) -> None:
        ind = stix.indicator(
            "clear",
            description="sensitive",
            granular_markings=[{"marking_ref": NO_LE, "selectors": ["description"]}],
        )
        view = view_for(bundle(ind), "lea-1")
        assert decision_for(view, ind).reason == "granular"


class TestContainers:
    def test_unmarked_object_inside_red_report_takes_red(
        self, stix: Stix, view_for: ViewFor, make_directory: Callable[..., Directory]
    ) -> None:
        directory = make_directory(org_changes={"bank-a": {"default_tlp": "clear"}})
        ind = stix.indicator(None)
        report = stix.report([ind], "red")
        view = view_for(bundle(ind, report), "bank-b", directory=directory)
        assert view.bundle is None
        assert decision_for(view, ind).tlp is Tlp.RED
        assert decision_for(view, ind).reason == "red-not-named"

    def test_unmarked_object_keeps_default_when_container_is_lower(
        self, stix: Stix, view_for: ViewFor
    ) -> None:
        ind = stix.indicator(None)
        report = stix.report([ind], "clear")
        view = view_for(bundle(ind, report), "bank-b")
        assert decision_for(view, ind).tlp is Tlp.AMBER
        assert view.bundle is None

    def test_inheritance_is_transitive_through_unmarked_grouping(
        self, stix: Stix, view_for: ViewFor, make_directory: Callable[..., Directory]
    ) -> None:
        directory = make_directory(org_changes={"bank-a": {"default_tlp": "green"}})
        ind = stix.indicator(None)
        grouping = stix.grouping([ind], None)
        report = stix.report([grouping], "amber+strict")
        view = view_for(bundle(ind, grouping, report), "bank-b", directory=directory)
        assert decision_for(view, ind).tlp is Tlp.AMBER_STRICT
        assert decision_for(view, grouping).tlp is Tlp.AMBER_STRICT

    def test_marked_object_not_raised_by_container(self, stix: Stix, view_for: ViewFor) -> None:
        ind = stix.indicator("clear")
        report = stix.report([ind], "red")
        view = view_for(bundle(ind, report), "bank-b")
        assert ids_of(view) == {ind["id"]}

    def test_unmarked_object_withheld_when_container_marking_unknown(
        self, stix: Stix, view_for: ViewFor, make_directory: Callable[..., Directory]
    ) -> None:
        directory = make_directory(org_changes={"bank-a": {"default_tlp": "clear"}})
        ind = stix.indicator(None)
        report = stix.report([ind], None, object_marking_refs=[stix.new_id("marking-definition")])
        view = view_for(bundle(ind, report), "bank-b", directory=directory)
        assert view.bundle is None
        assert decision_for(view, ind).reason == "unknown-marking"

    def test_unmarked_object_takes_its_containers_statement_marking(
        self, stix: Stix, view_for: ViewFor
    ) -> None:
        """A report marked "no law enforcement" says so of what it lists: a partner that
        the rule denies got the report withheld and its unmarked indicator delivered."""
        ind = stix.indicator(None)
        inner = stix.sdo("grouping", None, context="suspicious-activity", object_refs=[ind["id"]])
        report = stix.report([inner], None, object_marking_refs=[TLP2["amber"], NO_LE])
        view = view_for(bundle(ind, inner, report), "lea-1", named_groups={"lea"})
        assert view.bundle is None
        for obj in (ind, inner, report):
            assert decision_for(view, obj).reason == "statement-rule"
        member = view_for(bundle(ind, inner, report), "bank-b", named_groups={"banks"})
        assert ids_of(member) == {ind["id"], inner["id"], report["id"]}

    def test_object_with_its_own_tlp_keeps_its_own_markings_in_a_statement_container(
        self, stix: Stix, view_for: ViewFor
    ) -> None:
        ind = stix.indicator("green")
        report = stix.report([ind], None, object_marking_refs=[TLP2["amber"], NO_LE])
        view = view_for(bundle(ind, report), "lea-1", named_groups={"lea"})
        assert ids_of(view) == {ind["id"]}

    def test_a_pap_definition_listed_in_a_red_report_stays_public(
        self, stix: Stix, view_for: ViewFor
    ) -> None:
        pap = {
            "type": "marking-definition",
            "spec_version": "2.1",
            "id": PAP_GREEN,
            "created": TS,
            "name": "PAP:GREEN",
            "extensions": {
                "extension-definition--f8d78575-edfd-406e-8e84-6162a8450f5b": {
                    "extension_type": "property-extension",
                    "pap": "green",
                }
            },
        }
        ind = stix.indicator(None, object_marking_refs=[TLP2["green"], PAP_GREEN])
        report = stix.report([pap], "red")
        view = view_for(bundle(pap, ind, report), "bank-b")
        assert ind["id"] in ids_of(view)

    def test_unmarked_definition_listed_in_a_red_report_is_red(
        self, stix: Stix, view_for: ViewFor
    ) -> None:
        ext = stix.sdo(
            "extension-definition",
            None,
            name="internal",
            description="INTERNAL",
            created_by_ref="identity--00000000-0000-4000-8000-0000000000aa",
            schema="https://example.org/schema",
            version="1.0",
            extension_types=["property-extension"],
        )
        ind = stix.indicator(
            "clear", extensions={ext["id"]: {"extension_type": "property-extension"}}
        )
        report = stix.report([ext], "red")
        view = view_for(bundle(ext, ind, report), "vendor-c")
        assert decision_for(view, ext).reason == "red-not-named"
        assert decision_for(view, ind).reason == "ref-withheld"
        assert view.bundle is None


class TestTranslations:
    def _versions(self, stix: Stix) -> tuple[dict[str, Any], dict[str, Any]]:
        first = stix.sdo(
            "malware",
            "clear",
            id="malware--6ba7b810-9dad-41d1-80b4-00c04fd430c8",  # hex letters: case matters
            name="m",
            is_family=False,
        )
        second = dict(
            first,
            modified="2024-05-02T00:00:00.000Z",
            object_marking_refs=[TLP2["red"]],
            description="RED secret",
        )
        return first, second

    @staticmethod
    def _translation(stix: Stix, of: dict[str, Any], **props: Any) -> dict[str, Any]:
        return stix.sdo(
            "language-content",
            "clear",
            object_ref=of["id"],
            contents={"de": {"description": "ROT Geheimnis"}},
            **props,
        )

    def test_a_translation_of_a_withheld_version_is_withheld(
        self, stix: Stix, view_for: ViewFor
    ) -> None:
        first, second = self._versions(stix)
        # The RED version, its modified written another way.
        text = self._translation(stix, first, object_modified="2024-05-02T00:00:00Z")
        view = view_for(bundle(first, second, text), "bank-b")
        assert ids_of(view) == {first["id"]}
        assert decision_for(view, text).reason == "ref-withheld"
        named = view_for(bundle(first, second, text), "bank-b", named={"bank-b"})
        assert text["id"] in ids_of(named)

    def test_a_translation_of_a_delivered_version_is_delivered(
        self, stix: Stix, view_for: ViewFor
    ) -> None:
        first, second = self._versions(stix)
        text = self._translation(stix, first, object_modified=first["modified"])
        view = view_for(bundle(first, second, text), "bank-b")
        assert ids_of(view) == {first["id"], text["id"]}

    @pytest.mark.parametrize("spelling", ["absent", "upper-case id", "another version"])
    def test_a_translation_that_may_be_of_a_withheld_version_is_withheld(
        self, stix: Stix, view_for: ViewFor, spelling: str
    ) -> None:
        first, second = self._versions(stix)
        text = self._translation(stix, first)
        if spelling == "upper-case id":
            kind, _, uid = first["id"].partition("--")
            text["object_ref"] = f"{kind}--{uid.upper()}"
            text["object_modified"] = second["modified"]
        elif spelling == "another version":
            text["object_modified"] = "2024-05-03T00:00:00.000Z"
        view = view_for(bundle(first, second, text), "bank-b")
        assert decision_for(view, text).reason == "ref-withheld"
        assert ids_of(view) == {first["id"]}


class TestRevocation:
    def test_revocation_reaches_previous_receiver_at_its_earlier_level(
        self, stix: Stix, view_for: ViewFor
    ) -> None:
        revoked = stix.indicator("amber", revoked=True)
        view = view_for(bundle(revoked), "bank-b", received_before={revoked["id"]: Tlp.AMBER})
        assert ids_of(view) == {revoked["id"]}
        assert decision_for(view, revoked).reason == "revocation"

    def test_revocation_withheld_when_stricter_than_earlier_level(
        self, stix: Stix, view_for: ViewFor
    ) -> None:
        revoked = stix.indicator("red", revoked=True)
        view = view_for(bundle(revoked), "bank-b", received_before={revoked["id"]: Tlp.GREEN})
        assert view.bundle is None
        assert decision_for(view, revoked).reason == "red-not-named"

    def test_revocation_follows_normal_rules_when_earlier_level_unknown(
        self, stix: Stix, view_for: ViewFor
    ) -> None:
        revoked = stix.indicator("amber", revoked=True)
        assert view_for(bundle(revoked), "bank-b", received_before={revoked["id"]}).bundle is None
        green = stix.indicator("green", revoked=True)
        view = view_for(bundle(green), "bank-b", received_before=[green["id"]])
        assert decision_for(view, green).reason == "cleared"

    def test_revocation_withheld_when_recorded_level_is_not_a_tlp(
        self, stix: Stix, view_for: ViewFor
    ) -> None:
        revoked = stix.indicator("amber", revoked=True)
        view = view_for(bundle(revoked), "bank-b", received_before={revoked["id"]: "mauve"})
        assert view.bundle is None

    def test_revocation_accepts_level_as_stored_string(self, stix: Stix, view_for: ViewFor) -> None:
        revoked = stix.indicator("amber+strict", revoked=True)
        before = {revoked["id"]: "amber+strict"}
        assert ids_of(view_for(bundle(revoked), "bank-b", received_before=before)) == {
            revoked["id"]
        }

    def test_revocation_delivered_when_recipient_cleared_anyway(
        self, stix: Stix, view_for: ViewFor
    ) -> None:
        revoked = stix.indicator("green", revoked=True)
        view = view_for(bundle(revoked), "bank-b")
        assert decision_for(view, revoked).reason == "cleared"

    def test_revocation_still_obeys_statement_rules(self, stix: Stix, view_for: ViewFor) -> None:
        revoked = stix.indicator(None, object_marking_refs=[TLP2["clear"], NO_LE], revoked=True)
        view = view_for(bundle(revoked), "lea-1", received_before={revoked["id"]: Tlp.RED})
        assert decision_for(view, revoked).reason == "statement-rule"


class TestVersionsInClosure:
    def test_other_version_stays_delivered_when_one_version_refers_to_withheld(
        self, stix: Stix, view_for: ViewFor
    ) -> None:
        ind = stix.indicator("clear")
        secret = stix.indicator("red")
        old = stix.report([ind], "clear")
        new = {
            **copy.deepcopy(old),
            "modified": "2024-05-02T00:00:00.000Z",
            "object_refs": [ind["id"], secret["id"]],
        }
        view = view_for(bundle(ind, secret, old, new), "bank-b")
        assert decision_for(view, new).reason == "ref-withheld"
        assert decision_for(view, old).action == "delivered"

    def test_definition_used_by_many_delivered_once(self, stix: Stix, view_for: ViewFor) -> None:
        statement = stix.statement()
        first = stix.indicator(None, object_marking_refs=[TLP2["clear"], statement["id"]])
        second = stix.malware(None, object_marking_refs=[TLP2["clear"], statement["id"]])
        view = view_for(bundle(statement, first, second), "bank-b")
        assert view.bundle is not None
        assert [o["id"] for o in view.bundle["objects"]].count(statement["id"]) == 1

    def test_only_cleared_version_of_definition_delivered(
        self, stix: Stix, view_for: ViewFor
    ) -> None:
        author = stix.identity("clear")
        ext = stix.sdo(
            "extension-definition",
            "green",
            name="x-acme",
            created_by_ref=author["id"],
            schema="https://acme.example/schema.json",
            version="1.0.0",
            extension_types=["property-extension"],
        )
        newer = {
            **copy.deepcopy(ext),
            "modified": "2024-05-02T00:00:00.000Z",
            "object_marking_refs": [TLP2["red"]],
        }
        user = stix.indicator(
            "green", extensions={ext["id"]: {"extension_type": "property-extension"}}
        )
        view = view_for(bundle(author, ext, newer, user), "bank-b")
        assert decision_for(view, ext).action == "delivered"
        assert decision_for(view, newer).reason == "red-not-named"
        assert_valid_stix(view)
