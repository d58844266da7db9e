from __future__ import annotations

import pytest
from stix2validator import ValidationOptions, validate_instance

from adapters import InvalidBundle, check_bundle

OBJ = {
    "type": "indicator",
    "spec_version": "2.1",
    "id": "indicator--8a1f0c55-7e0c-4b47-b8b8-0b4dd9b3e2a1",
    "created": "2024-05-01T00:00:00.000Z",
    "modified": "2024-05-01T00:00:00.000Z",
    "pattern": "[domain-name:value = 'login.bank.example']",
    "pattern_type": "stix",
    "valid_from": "2024-05-01T00:00:00Z",
}


def _bundle(*objects: object) -> dict[str, object]:
    return {
        "type": "bundle",
        "id": "bundle--3a2f6a1e-8c55-4c0c-9a57-1f0e1c9d4a11",
        "objects": list(objects),
    }


class TestCheckBundle:
    def test_accepts_a_stix_21_bundle(self) -> None:
        check_bundle(_bundle(OBJ), max_objects=10)

    @pytest.mark.parametrize(
        ("data", "message"),
        [
            ([], "top level is a list"),
            ({"type": "bundle", "id": "nope"}, "not a bundle id"),
            ({**_bundle(), "spec_version": "2.0"}, "STIX 2.0"),
            ({**_bundle(), "objects": {}}, "'objects' is a object"),
            (_bundle(1), r"objects\[0\] is a number"),
            (_bundle({**OBJ, "type": ""}), "missing 'type'"),
            (_bundle({**OBJ, "id": "indicator--x"}), "not a STIX identifier"),
            (_bundle({**OBJ, "type": "malware"}), "does not match type"),
            (_bundle({k: v for k, v in OBJ.items() if k != "spec_version"}), "'spec_version'"),
        ],
    )
    def test_refuses_naming_the_problem(self, data: object, message: str) -> None:
        with pytest.raises(InvalidBundle, match=message):
            check_bundle(data, max_objects=10)

    def test_refuses_deep_nesting(self) -> None:
        deep: dict[str, object] = {}
        node = deep
        for _ in range(40):
            node["x"] = {}
            node = node["x"]  # type: ignore[assignment]
        with pytest.raises(InvalidBundle, match="nested deeper"):
            check_bundle(_bundle({**OBJ, "extra": deep}), max_objects=10)

    @pytest.mark.parametrize("depth", [31, 32])
    def test_accepts_nesting_up_to_the_limit(self, depth: int) -> None:
        # The object itself is one level: 31 more containers make 32.
        value: object = "leaf"
        for _ in range(depth - 1):
            value = [value]
        check_bundle(_bundle({**OBJ, "extra": value}), max_objects=10)

    def test_refuses_nesting_one_past_the_limit(self) -> None:
        value: object = "leaf"
        for _ in range(32):
            value = {"x": value}
        with pytest.raises(InvalidBundle, match="nested deeper than 32"):
            check_bundle(_bundle({**OBJ, "extra": value}), max_objects=10)

    @pytest.mark.parametrize("number", [-(2**63), 2**64 - 1, 1e308, -0.0, True])
    def test_accepts_numbers_orjson_can_write(self, number: object) -> None:
        check_bundle(_bundle({**OBJ, "x_n": [{"n": number}]}), max_objects=10)

    @pytest.mark.parametrize(
        ("number", "message"),
        [
            (2**64, "integer outside the 64-bit range"),
            (-(2**63) - 1, "integer outside the 64-bit range"),
            (float("nan"), "not finite"),
            (float("inf"), "not finite"),
            (float("-inf"), "not finite"),
        ],
    )
    def test_refuses_numbers_orjson_cannot_write(self, number: object, message: str) -> None:
        # pydantic (the router's parser) reads these; sealing with orjson then crashed.
        with pytest.raises(InvalidBundle, match=rf"objects\[0\] \(indicator--.*\): .*{message}"):
            check_bundle(_bundle({**OBJ, "x_n": [{"n": number}]}), max_objects=10)


REL = {
    "type": "relationship",
    "spec_version": "2.1",
    "id": "relationship--1b7bc3c6-1c5b-4c8e-9a2a-3c4d5e6f7a8b",
    "created": "2024-05-01T00:00:00.000Z",
    "modified": "2024-05-01T00:00:00.000Z",
    "relationship_type": "indicates",
    "source_ref": OBJ["id"],
    "target_ref": "malware--0c7b5b88-8ff7-4a4d-aa9d-feb398cd0061",
}


class TestRequiredProperties:
    """What STIX 2.1 requires of a type is refused when missing, naming the property."""

    def test_accepts_a_relationship_with_its_properties(self) -> None:
        check_bundle(_bundle(REL), max_objects=1)

    @pytest.mark.parametrize(
        ("obj", "message"),
        [
            ({k: v for k, v in OBJ.items() if k != "pattern"}, "indicator objects need 'pattern'"),
            ({**OBJ, "pattern_type": 5}, "'pattern_type' is 5, expected a string"),
            ({**OBJ, "valid_from": "yesterday"}, "'valid_from' .* expected a STIX timestamp"),
            ({**OBJ, "pattern": "[[["}, "do not pair up"),
            ({**OBJ, "pattern": "[a:b = 'x]"}, "quote that is never closed"),
            ({**OBJ, "pattern": "a:b = 'x'"}, "does not open with an observation"),
            ({k: v for k, v in REL.items() if k != "target_ref"}, "need 'target_ref'"),
            ({**REL, "relationship_type": 7}, "'relationship_type' is 7, expected a string"),
            (
                {**REL, "type": "report", "id": "report--" + REL["id"][14:]},
                "report objects need 'name'",
            ),
        ],
    )
    def test_refuses_naming_the_property(self, obj: dict[str, object], message: str) -> None:
        with pytest.raises(InvalidBundle, match=message):
            check_bundle(_bundle(obj), max_objects=1)

    @pytest.mark.parametrize(
        "pattern",
        [
            "[file:name = 'a]b(']",
            "[file:name = 'it\\'s']",
            " ([a:b = 'x'] AND [c:d = 'y']) WITHIN 5 SECONDS",
            "[ipv4-addr:value ISSUBSET '198.51.100.0/24'] REPEATS 2 TIMES",
        ],
    )
    def test_accepts_patterns_whose_quotes_hold_brackets(self, pattern: str) -> None:
        check_bundle(_bundle({**OBJ, "pattern": pattern}), max_objects=1)

    @pytest.mark.parametrize(
        ("pattern", "message"),
        [
            ("[a:b = 'x'] '", "quote that is never closed"),
            ("[a:b = 'x\\''] '", "quote that is never closed"),
            ("[a:b = 'x' OR a:b = 'y'", "do not pair up"),
            ("[a:b = 'x\\'' OR a:b = 'y'", "do not pair up"),
            ("'[a:b = 1]'", "does not open with an observation"),
            ("'[a:b = \\'1\\']'", "does not open with an observation"),
            ("[a:b = 'x''y'] AND [c:d = ']']", None),
            ("[a:b = 'x\\\\''y'] AND [c:d = ']']", None),
        ],
    )
    def test_reads_quoted_strings_alike_with_and_without_escapes(
        self, pattern: str, message: str | None
    ) -> None:
        # Patterns without a backslash are read without the regex: the same answers.
        data = _bundle({**OBJ, "pattern": pattern})
        if message is None:
            check_bundle(data, max_objects=1)
        else:
            with pytest.raises(InvalidBundle, match=message):
                check_bundle(data, max_objects=1)

    @pytest.mark.parametrize(
        ("value", "message"),
        [
            (["a", "b"], None),
            (["a", 2**64], "integer outside the 64-bit range"),
            (["a", ["b", float("nan")]], "not finite"),
        ],
    )
    def test_checks_every_item_of_a_list_that_is_not_only_strings(
        self, value: list[object], message: str | None
    ) -> None:
        data = _bundle({**OBJ, "labels": value})
        if message is None:
            check_bundle(data, max_objects=1)
        else:
            with pytest.raises(InvalidBundle, match=message):
                check_bundle(data, max_objects=1)

    def test_takes_what_stix2_validator_takes_when_a_value_is_empty_or_negative(self) -> None:
        identity = {
            "type": "identity",
            "spec_version": "2.1",
            "id": "identity--5d8e6a2c-3f1b-4a7e-9c1d-2b3a4c5d6e7f",
            "created": "2024-05-01T00:00:00.000Z",
            "modified": "2024-05-01T00:00:00.000Z",
            "name": "",
        }
        assert validate_instance(identity, ValidationOptions(version="2.1")).is_valid
        check_bundle(_bundle(identity), max_objects=1)

    def test_takes_any_pattern_of_another_language(self) -> None:
        check_bundle(
            _bundle({**OBJ, "pattern_type": "sigma", "pattern": "title: x"}), max_objects=1
        )

    @pytest.mark.parametrize(
        ("obj", "name"),
        [(OBJ, n) for n in ("pattern", "pattern_type", "valid_from")]
        + [(REL, n) for n in ("relationship_type", "source_ref", "target_ref")],
    )
    def test_agrees_with_stix2_validator_on_a_missing_property(
        self, obj: dict[str, object], name: str
    ) -> None:
        partial = {k: v for k, v in obj.items() if k != name}
        assert validate_instance(obj, ValidationOptions(version="2.1")).is_valid
        assert not validate_instance(partial, ValidationOptions(version="2.1")).is_valid
        with pytest.raises(InvalidBundle, match=f"need '{name}'"):
            check_bundle(_bundle(partial), max_objects=1)


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        ("2024-05-01T00:00:00.000Z", True),
        ("2024-05-01T00:00:00Z", True),
        ("2024-05-01T00:00:00.000+00:00", False),
        ("2024-05-01t00:00:00z", False),
        (5, False),
    ],
)
def test_a_translations_object_modified_must_be_a_stix_timestamp(value: object, ok: bool) -> None:
    """The policy matches it to the version translated: an unmatched spelling once let a
    translation of a withheld version through."""
    t = "2024-05-01T00:00:00.000Z"
    text = {"type": "language-content", "spec_version": "2.1",
            "id": "language-content--6ba7b810-9dad-41d1-80b4-00c04fd430c8",
            "created": t, "modified": t, "object_modified": value,
            "object_ref": "malware--6ba7b811-9dad-41d1-80b4-00c04fd430c8",
            "contents": {"de": {"name": "x"}}}  # fmt: skip
    data = {"type": "bundle", "id": "bundle--6ba7b812-9dad-41d1-80b4-00c04fd430c8",
            "objects": [text]}  # fmt: skip
    if ok:
        check_bundle(data, max_objects=10)
    else:
        with pytest.raises(InvalidBundle, match=r"'object_modified' .* is not a STIX timestamp"):
            check_bundle(data, max_objects=10)
