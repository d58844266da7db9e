"""Bundle shape, versions and marking inheritance (policy/_bundle.py)."""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Callable
from typing import Any

import pytest

from policy import (
    BundleRejected,
    Directory,
    DirectoryError,
    View,
    authors,
    normal_timestamp,
    version_digests,
)
from policy._bundle import canonical_digest

from ._support import (
    BANK_A_IDENTITY,
    BROKER_IDENTITY,
    TLP2,
    TS,
    Stix,
    bundle,
    community_doc,
    decision_for,
    ids_of,
)

ViewFor = Callable[..., View]
GOOD_ID = "indicator--6ba7b810-9dad-41d1-80b4-00c04fd430c8"
_IND = {"type": "indicator", "id": GOOD_ID}


class TestBundleShape:
    @pytest.mark.parametrize(
        ("data", "message"),
        [
            ([], "not a STIX bundle"),
            ({"type": "report"}, "not a STIX bundle"),
            ({"type": "bundle", "objects": {}}, "not a list"),
            ({"type": "bundle", "objects": ["indicator"]}, r"objects\[0\] is not a JSON object"),
            ({"type": "bundle", "objects": [None]}, r"objects\[0\] is not a JSON object"),
            ({"type": "bundle", "objects": [{"type": "indicator"}]}, "no string 'type' and 'id'"),
            ({"type": "bundle", "objects": [{"id": GOOD_ID}]}, "no string 'type' and 'id'"),
            (
                {"type": "bundle", "objects": [{"type": "malware", "id": GOOD_ID}]},
                "not of the form",
            ),
            (
                {"type": "bundle", "objects": [{"type": "indicator", "id": "indicator--1"}]},
                "not of the form",
            ),
            (
                {
                    "type": "bundle",
                    "objects": [{"type": "indicator", "id": GOOD_ID, "modified": 1}],
                },
                "modified is not a string",
            ),
        ],
    )
    def test_rejects_whole_bundle_when_malformed(
        self, view_for: ViewFor, data: Any, message: str
    ) -> None:
        with pytest.raises(BundleRejected, match=message):
            view_for(data, "bank-b")
        with pytest.raises(BundleRejected, match=message):
            version_digests(data)

    @pytest.mark.parametrize(
        "broker_id", [BROKER_IDENTITY, "identity--" + BROKER_IDENTITY[10:].upper()]
    )
    def test_rejects_bundle_when_object_claims_broker_identity(
        self, stix: Stix, view_for: ViewFor, broker_id: str
    ) -> None:
        fake = stix.identity("clear", id=broker_id)
        with pytest.raises(BundleRejected, match="broker"):
            view_for(bundle(fake), "bank-b")

    def test_bundle_without_objects_is_empty_view(self, view_for: ViewFor) -> None:
        assert view_for({"type": "bundle"}, "bank-b").bundle is None

    def test_message_never_quotes_content_when_rejected(self, view_for: ViewFor) -> None:
        data = {"type": "bundle", "objects": [{"type": "ipv4-addr", "id": "ipv4-addr--10.0.0.1"}]}
        with pytest.raises(BundleRejected) as caught:
            view_for(data, "bank-b")
        assert "10.0.0.1" not in str(caught.value)


class TestVersions:
    def test_version_digests_keyed_by_id_and_modified(self, stix: Stix) -> None:
        ind = stix.indicator("clear")
        ip = stix.ipv4("192.0.2.5")
        digests = version_digests(bundle(ind, ip))
        canonical = json.dumps(ind, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        # modified is normalised; the observable by what identifies it, its value.
        assert digests == {
            (ind["id"], normal_timestamp(TS)): hashlib.sha256(canonical.encode()).hexdigest(),
            (ip["id"], ""): canonical_digest({"value": "192.0.2.5"}),
        }

    def test_observables_differ_only_in_what_does_not_identify_them(self, stix: Stix) -> None:
        ip = stix.ipv4("192.0.2.5")
        richer = {**ip, "resolves_to_refs": ["mac-addr--65cfcf98-8a6e-5a1b-8f61-379ac4f92d00"]}
        other = {**ip, "value": "192.0.2.6"}
        assert version_digests(bundle(ip)) == version_digests(bundle(richer))
        assert version_digests(bundle(ip)) != version_digests(bundle(other))
        assert normal_timestamp(TS) == "2024-05-01T00:00:00Z"

    @pytest.mark.parametrize(
        ("spelling", "normal"),
        [
            ("2024-05-01T00:00:00Z", "2024-05-01T00:00:00Z"),
            ("2024-05-01T00:00:00.000Z", "2024-05-01T00:00:00Z"),
            ("2024-05-01T00:00:00.000000000Z", "2024-05-01T00:00:00Z"),
            ("2024-05-01T00:00:00.120Z", "2024-05-01T00:00:00.12Z"),
            ("2024-05-01T00:00:00.000000001Z", "2024-05-01T00:00:00.000000001Z"),
            ("yesterday", "yesterday"),
        ],
    )
    def test_modified_spellings_of_one_instant_are_one_version(
        self, stix: Stix, spelling: str, normal: str
    ) -> None:
        ind = {**stix.indicator("clear"), "modified": spelling}
        assert list(version_digests(bundle(ind))) == [(ind["id"], normal)]

    def test_two_spellings_of_one_version_with_other_content_rejected(self, stix: Stix) -> None:
        ind = {**stix.indicator("clear"), "modified": "2024-05-01T00:00:00Z"}
        other = {**ind, "modified": "2024-05-01T00:00:00.000Z", "name": "other"}
        with pytest.raises(BundleRejected, match="differ in content"):
            version_digests(bundle(ind, other))

    def test_an_object_nested_past_the_recursion_limit_is_rejected_not_a_crash(
        self, stix: Stix
    ) -> None:
        deep: Any = "x"
        for _ in range(5000):
            deep = [deep]
        data = {"type": "bundle", "objects": [stix.indicator("clear", x_deep=deep)]}
        with pytest.raises(BundleRejected, match="nested too deeply"):
            version_digests(data)

    def test_evaluate_agrees_that_two_spellings_are_one_version(
        self, stix: Stix, view_for: ViewFor
    ) -> None:
        clear = {**stix.indicator("clear"), "modified": "2024-05-01T00:00:00.000Z"}
        red = {**clear, "modified": "2024-05-01T00:00:00Z", "object_marking_refs": [TLP2["red"]]}
        with pytest.raises(BundleRejected, match="differ in content"):
            view_for(bundle(clear, red), "bank-b")
        assert len(view_for(bundle(clear, dict(clear)), "bank-b").decisions) == 1

    def test_marking_definitions_are_versioned_without_modified(self, stix: Stix) -> None:
        statement = {
            "type": "marking-definition",
            "spec_version": "2.1",
            "id": "marking-definition--6ad8fb86-3c23-4a74-9c38-3bb3a4e12f8a",
            "created": TS,
            "definition_type": "statement",
            "definition": {"statement": "Copyright Bank B"},
        }
        assert list(version_digests(bundle(statement))) == [(statement["id"], "")]

    def test_digest_independent_of_key_order(self, stix: Stix) -> None:
        ind = stix.indicator("clear")
        reordered = dict(reversed(list(ind.items())))
        assert version_digests(bundle(ind)) == version_digests(bundle(reordered))

    def test_identical_duplicates_are_one_object(self, stix: Stix, view_for: ViewFor) -> None:
        ind = stix.indicator("clear")
        reordered = dict(reversed(list(ind.items())))
        data = bundle(ind, reordered, ind)
        assert len(version_digests(data)) == 1
        view = view_for(data, "bank-b")
        assert view.bundle is not None and len(view.bundle["objects"]) == 1
        assert len(view.decisions) == 1

    def test_duplicate_id_and_modified_with_different_content_rejected(
        self, stix: Stix, view_for: ViewFor
    ) -> None:
        ind = stix.indicator("clear")
        changed = {**copy.deepcopy(ind), "name": "other"}
        with pytest.raises(BundleRejected, match="differ in content"):
            version_digests(bundle(ind, changed))
        with pytest.raises(BundleRejected, match="differ in content"):
            view_for(bundle(ind, changed), "bank-b")

    def test_versions_with_different_modified_both_kept(self, stix: Stix) -> None:
        ind = stix.indicator("clear")
        newer = {**copy.deepcopy(ind), "modified": "2024-05-03T00:00:00.000Z", "name": "x"}
        assert len(version_digests(bundle(ind, newer))) == 2

    def test_tlp_definitions_exempt_from_version_check(self, stix: Stix) -> None:
        one = {"type": "marking-definition", "id": TLP2["green"], "name": "TLP:GREEN"}
        other = {"type": "marking-definition", "id": TLP2["green"], "name": "whatever"}
        assert version_digests(bundle(one, other)) == {}

    def test_tlp_definition_duplicates_never_rejected_in_evaluate(
        self, stix: Stix, view_for: ViewFor
    ) -> None:
        one = {"type": "marking-definition", "id": TLP2["green"], "name": "TLP:GREEN"}
        other = {"type": "marking-definition", "id": TLP2["green"], "name": "whatever"}
        ind = stix.indicator("green")
        assert ids_of(view_for(bundle(one, other, ind), "bank-b")) == {ind["id"], TLP2["green"]}

    @pytest.mark.parametrize("value", [float("nan"), {1, 2}])
    def test_non_json_value_rejected(self, value: Any) -> None:
        with pytest.raises(BundleRejected, match="plain JSON"):
            canonical_digest({"x": value})


class TestInheritanceDetails:
    def test_definitions_get_no_default_level(self, stix: Stix, view_for: ViewFor) -> None:
        statement = stix.statement()
        ind = stix.indicator(None, object_marking_refs=[TLP2["clear"], statement["id"]])
        view = view_for(bundle(statement, ind), "outsider")
        assert decision_for(view, statement).tlp is None
        assert ids_of(view) == {statement["id"], ind["id"]}

    def test_container_references_to_external_ids_ignored(
        self, stix: Stix, view_for: ViewFor, make_directory: Callable[..., Directory]
    ) -> None:
        directory = make_directory(org_changes={"bank-a": {"default_tlp": "clear"}})
        ind = stix.indicator(None)
        report = stix.report([ind], "clear", object_refs=[ind["id"], stix.new_id("malware")])
        assert ids_of(view_for(bundle(ind, report), "bank-b", directory=directory)) == {
            ind["id"],
            report["id"],
        }

    def test_observed_data_raises_its_unmarked_observables(
        self, stix: Stix, view_for: ViewFor, make_directory: Callable[..., Directory]
    ) -> None:
        directory = make_directory(org_changes={"bank-a": {"default_tlp": "clear"}})
        ip = stix.ipv4("192.0.2.77", None)
        observed = stix.sdo(
            "observed-data",
            "amber",
            first_observed=TS,
            last_observed=TS,
            number_observed=1,
            object_refs=[ip["id"]],
        )
        view = view_for(bundle(ip, observed), "bank-b", directory=directory)
        assert view.bundle is None

    def test_container_cycle_terminates(
        self, stix: Stix, view_for: ViewFor, make_directory: Callable[..., Directory]
    ) -> None:
        directory = make_directory(org_changes={"bank-a": {"default_tlp": "clear"}})
        first_id = stix.new_id("grouping")
        second = stix.grouping([], None, object_refs=[first_id])
        first = stix.grouping([second], "green", id=first_id)
        view = view_for(bundle(first, second), "bank-b", directory=directory)
        assert ids_of(view) == {first["id"], second["id"]}
        assert decision_for(view, second).tlp is not None


class TestAuthors:
    """Objects that speak for an organisation belong to it; a third party's to nobody."""

    def test_a_members_identity_and_what_names_it(self, stix: Stix, directory: Directory) -> None:
        own = stix.indicator("clear", created_by_ref=BANK_A_IDENTITY)
        upper = "identity--" + BANK_A_IDENTITY.partition("--")[2].upper()
        ident = stix.identity("clear", id=upper)
        assert authors(bundle(own, ident), directory=directory) == {
            own["id"]: "bank-a",
            upper: "bank-a",
        }

    def test_the_brokers_identity_is_the_brokers(self, stix: Stix, directory: Directory) -> None:
        forged = stix.indicator("clear", created_by_ref=BROKER_IDENTITY.upper())
        assert authors(bundle(forged), directory=directory) == {forged["id"]: "atlas-broker"}

    def test_a_third_partys_objects_are_nobodys(self, stix: Stix, directory: Directory) -> None:
        mitre = "identity--c78cb6e5-0c4b-4611-8297-d1b8b55e40b5"
        other = stix.indicator("clear", created_by_ref=mitre)
        assert authors(bundle(other), directory=directory) == {other["id"]: None}

    def test_anonymous_objects_are_not_listed(self, stix: Stix, directory: Directory) -> None:
        assert authors(bundle(stix.indicator("clear")), directory=directory) == {}

    def test_directory_refuses_one_identity_for_two_organisations(self) -> None:
        doc = community_doc()
        doc["organisations"][1]["stix_identity"] = BANK_A_IDENTITY
        with pytest.raises(DirectoryError, match="already the identity of 'bank-a'"):
            Directory.from_mapping(doc)

    def test_directory_refuses_the_brokers_identity(self) -> None:
        doc = community_doc()
        doc["organisations"][1]["stix_identity"] = BROKER_IDENTITY
        with pytest.raises(DirectoryError, match="already the identity of the broker"):
            Directory.from_mapping(doc)
