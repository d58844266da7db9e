"""Finding ids wherever they are mentioned (policy/_refs.py)."""

from __future__ import annotations

from policy._refs import Finder, mentioned_uuids

U1 = "6ba7b810-9dad-41d1-80b4-00c04fd430c8"
U2 = "0b1b0f63-2c11-4f39-8f0a-6f2a8c1f7e22"
U3 = "3f3a1e2b-0b6c-4f57-9e8a-9c2f0d8e7a61"
BY_UUID = {
    U1: ("identity--" + U1,),
    U2: ("ipv4-addr--" + U2, "malware--" + U2),
    U3: ("extension-definition--" + U3,),
}


class TestMentionedUuids:
    def test_finds_uuids_in_keys_values_and_nesting(self) -> None:
        value = {f"extension-definition--{U3}": {"a": [1, None, {"b": f"x {U1.upper()} y"}]}}
        assert mentioned_uuids(value) == {U1, U3}

    def test_ignores_non_string_keys_and_scalars(self) -> None:
        assert mentioned_uuids({1: [True, 2.5, None], "k": "short"}) == set()


class TestFinder:
    def test_ref_properties_attributed_per_top_level_property(self) -> None:
        obj = {
            "id": "note--" + U1,
            "created_by_ref": "identity--" + U1,
            "object_refs": ["malware--" + U2, "tool--99999999-9999-4999-8999-999999999999"],
            "extensions": {f"extension-definition--{U3}": {"extension_type": "x"}},
            "count": 3,
        }
        assert Finder(BY_UUID).mentions(obj, "note--" + U1) == {
            "created_by_ref": frozenset({"identity--" + U1}),
            "object_refs": frozenset({"ipv4-addr--" + U2, "malware--" + U2}),
            "extensions": frozenset({"extension-definition--" + U3}),
        }

    def test_own_id_never_counts(self) -> None:
        obj = {"id": "identity--" + U1, "description": f"I am identity--{U1}"}
        assert Finder(BY_UUID).mentions(obj, "identity--" + U1) == {}

    def test_free_text_and_bare_uuid_found(self) -> None:
        obj = {"description": f"seen near {U2.upper()} and nothing else", "labels": [f"x--{U1}"]}
        assert Finder(BY_UUID).mentions(obj, "indicator--" + U3) == {
            "description": frozenset({"ipv4-addr--" + U2, "malware--" + U2}),
            "labels": frozenset({"identity--" + U1}),
        }

    def test_long_top_level_property_names_scanned(self) -> None:
        obj = {f"x_identity--{U1}": True}
        assert Finder(BY_UUID).mentions(obj, "x--" + U3) == {
            f"x_identity--{U1}": frozenset({"identity--" + U1})
        }

    def test_list_of_dicts_scanned(self) -> None:
        obj = {"granular_markings": [{"marking_ref": "identity--" + U1, "selectors": ["x"]}]}
        assert Finder(BY_UUID).mentions(obj, "x--" + U3) == {
            "granular_markings": frozenset({"identity--" + U1})
        }

    def test_id_shaped_string_of_unknown_object_finds_nothing(self) -> None:
        found: set[str] = set()
        finder = Finder(BY_UUID)
        finder.add("tool--99999999-9999-4999-8999-999999999999", found)
        finder.add("tool--99999999-9999-4999-8999-999999999999", found)
        finder.add("no dashes here at all, but long enough to scan", found)
        finder.add("identity--" + U1[:20], found)
        assert found == set()

    def test_add_finds_ids_in_long_text(self) -> None:
        found: set[str] = set()
        Finder(BY_UUID).add(f"identity--{U1}", found)
        Finder(BY_UUID).add(f"first {U1} then {U2}", found)
        assert found == {"identity--" + U1, "ipv4-addr--" + U2, "malware--" + U2}
