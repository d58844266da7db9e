from __future__ import annotations

import json

import orjson
import pytest

from adapters import InvalidBundle, check_bundle, parse_json
from adapters._stix import value_problem

OBJ = {
    "type": "indicator",
    "spec_version": "2.1",
    "id": "indicator--8a1f0c55-7e0c-4b47-b8b8-0b4dd9b3e2a1",
    "created": "2024-05-01T00:00:00.000Z",
    "modified": "2024-05-01T00:00:00.000Z",
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


class TestTimestamps:
    @pytest.mark.parametrize(
        ("created", "modified"),
        [
            ("2024-05-01T00:00:00Z", "2024-05-01T00:00:00Z"),
            ("2024-05-01T00:00:00.5Z", "2024-05-01T00:00:00.500Z"),
            ("2024-02-29T23:59:59.999999999Z", "2024-03-01T00:00:00Z"),
        ],
    )
    def test_accepts_stix_timestamps(self, created: str, modified: str) -> None:
        check_bundle(_bundle({**OBJ, "created": created, "modified": modified}), max_objects=1)

    @pytest.mark.parametrize(
        ("props", "message"),
        [
            ({"modified": "2024-05-01 00:00:00Z"}, "'modified' '2024-05-01 00:00:00Z' is not"),
            ({"created": "2023-02-29T00:00:00Z"}, "'created' .* is not a STIX timestamp"),
            ({"modified": "2024-05-01T00:00:00.Z"}, "is not a STIX timestamp"),
            ({"modified": "2024-05-01T24:00:00Z"}, "is not a STIX timestamp"),
            ({"modified": "\uff12\uff10\uff12\uff14-05-01T00:00:00Z"}, "is not a STIX timestamp"),
            ({"modified": "0000-05-01T00:00:00Z"}, "is not a STIX timestamp"),
            ({"modified": "2024-05-01T00:00:00." + "0" * 60 + "Z"}, "is not a STIX timestamp"),
            (
                {"created": "2024-05-01T00:00:00.01Z", "modified": "2024-05-01T00:00:00.009Z"},
                "'modified' is earlier than 'created'",
            ),
        ],
    )
    def test_refuses_what_is_not_one(self, props: dict[str, str], message: str) -> None:
        with pytest.raises(InvalidBundle, match=message):
            check_bundle(_bundle({**OBJ, **props}), max_objects=1)


class TestParseJson:
    @pytest.mark.parametrize(
        "raw",
        [b"[18446744073709551616]", b"[-9223372036854775809]", b'{"n": ' + b"9" * 40 + b"}"],
    )
    def test_integers_beyond_64_bits_stay_exact_and_are_refused(self, raw: bytes) -> None:
        data = parse_json(raw)
        value = data[0] if isinstance(data, list) else data["n"]
        assert isinstance(value, int) and json.dumps(data).encode().replace(
            b" ", b""
        ) == raw.replace(b" ", b"")
        assert value_problem(data) == "holds an integer outside the 64-bit range"

    def test_long_digit_runs_in_strings_change_nothing(self) -> None:
        raw = b'{"x": "12345678901234567890123", "n": 18446744073709551615, "f": 1.5}'
        assert parse_json(raw) == {"x": "12345678901234567890123", "n": 2**64 - 1, "f": 1.5}


def test_deep_nesting_around_a_long_number_is_a_json_error_not_a_crash() -> None:
    raw = b"[" * 1000 + b"1234567890123456789" + b"]" * 1000
    with pytest.raises(orjson.JSONDecodeError, match="nested too deeply"):
        parse_json(raw)
