"""RFC 8785 canonical JSON, pinned with the RFC's own examples."""

from __future__ import annotations

import json
import math
import struct
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from keys import CanonicalizationError, canonical_json
from keys._canonical import es_number

# RFC 8785 Appendix B: IEEE-754 bit patterns and their ECMAScript serialization.
RFC8785_NUMBERS = [
    ("0000000000000000", "0"),
    ("8000000000000000", "0"),
    ("0000000000000001", "5e-324"),
    ("8000000000000001", "-5e-324"),
    ("7fefffffffffffff", "1.7976931348623157e+308"),
    ("ffefffffffffffff", "-1.7976931348623157e+308"),
    ("4340000000000000", "9007199254740992"),
    ("c340000000000000", "-9007199254740992"),
    ("4430000000000000", "295147905179352830000"),
    ("44b52d02c7e14af5", "9.999999999999997e+22"),
    ("44b52d02c7e14af6", "1e+23"),
    ("44b52d02c7e14af7", "1.0000000000000001e+23"),
    ("444b1ae4d6e2ef4e", "999999999999999700000"),
    ("444b1ae4d6e2ef4f", "999999999999999900000"),
    ("444b1ae4d6e2ef50", "1e+21"),
    ("3eb0c6f7a0b5ed8c", "9.999999999999997e-7"),
    ("3eb0c6f7a0b5ed8d", "0.000001"),
    ("41b3de4355555553", "333333333.3333332"),
    ("41b3de4355555554", "333333333.33333325"),
    ("41b3de4355555555", "333333333.3333333"),
    ("41b3de4355555556", "333333333.3333334"),
    ("41b3de4355555557", "333333333.33333343"),
    ("becbf647612f3696", "-0.0000033333333333333333"),
    ("43143ff3c1cb0959", "1424953923781206.2"),
]
RFC8785_NON_FINITE = ["7fffffffffffffff", "7ff0000000000000"]


def _double(bits: str) -> float:
    value: float = struct.unpack(">d", bytes.fromhex(bits))[0]
    return value


json_scalars = st.none() | st.booleans() | st.integers(-(2**53) + 1, 2**53 - 1) | st.text()
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)


class TestRfc8785Examples:
    @pytest.mark.parametrize(("bits", "expected"), RFC8785_NUMBERS)
    def test_serializes_number_as_ecmascript_when_float_allowed(
        self, bits: str, expected: str
    ) -> None:
        assert canonical_json([_double(bits)], allow_floats=True) == f"[{expected}]".encode()

    @pytest.mark.parametrize("bits", RFC8785_NON_FINITE)
    def test_raises_when_number_is_nan_or_infinite(self, bits: str) -> None:
        with pytest.raises(CanonicalizationError, match="no JSON form"):
            canonical_json(_double(bits), allow_floats=True)

    def test_matches_section_3_2_2_example_when_floats_allowed(self) -> None:
        value = {
            "numbers": [333333333.33333329, 1e30, 4.50, 2e-3, 0.000000000000000000000000001],
            "string": "\u20ac$\u000f\u000aA'\u0042\u0022\u005c\\\"/",
            "literals": [None, True, False],
        }
        expected = (
            '{"literals":[null,true,false],"numbers":[333333333.3333333,1e+30,4.5,0.002,'
            '1e-27],"string":"\u20ac$\\u000f\\nA\'B\\"\\\\\\\\\\"/"}'
        )
        assert canonical_json(value, allow_floats=True) == expected.encode()

    def test_sorts_members_by_utf16_code_units_when_names_leave_the_bmp(self) -> None:
        value = {
            "\u20ac": "Euro Sign",
            "\r": "Carriage Return",
            "\ufb33": "Hebrew Letter Dalet With Dagesh",
            "1": "One",
            "\U0001f600": "Emoji: Grinning Face",
            "\u0080": "Control",
            "\u00f6": "Latin Small Letter O With Diaeresis",
        }
        expected = (
            '{"\\r":"Carriage Return","1":"One","\u0080":"Control",'
            '"\u00f6":"Latin Small Letter O With Diaeresis","\u20ac":"Euro Sign",'
            '"\U0001f600":"Emoji: Grinning Face","\ufb33":"Hebrew Letter Dalet With Dagesh"}'
        )
        assert canonical_json(value) == expected.encode()


class TestFloatFree:
    @pytest.mark.parametrize("value", [1.0, 0.5, -0.0, [1, 2.0], {"a": {"b": 3.25}}])
    def test_raises_when_float_present_by_default(self, value: Any) -> None:
        with pytest.raises(CanonicalizationError, match="float"):
            canonical_json(value)

    def test_writes_integers_bools_and_null_when_float_free(self) -> None:
        value = {"b": [True, False, None], "a": -(2**53) + 1, "c": (1, "x")}
        assert canonical_json(value) == b'{"a":-9007199254740991,"b":[true,false,null],"c":[1,"x"]}'

    @pytest.mark.parametrize("value", [2**53, -(2**53), 10**30])
    def test_raises_when_integer_is_outside_i_json_range(self, value: int) -> None:
        with pytest.raises(CanonicalizationError, match="I-JSON"):
            canonical_json({"n": value})


class TestRefusals:
    def test_raises_when_member_name_is_not_a_string(self) -> None:
        with pytest.raises(CanonicalizationError, match="not a string"):
            canonical_json({1: "x"})

    def test_raises_when_string_has_lone_surrogate(self) -> None:
        with pytest.raises(CanonicalizationError, match="surrogate"):
            canonical_json(["\ud800"])

    def test_raises_when_member_name_has_lone_surrogate(self) -> None:
        with pytest.raises(CanonicalizationError, match="member name"):
            canonical_json({"\udc00": 1, "a": 2})

    @pytest.mark.parametrize("value", [b"bytes", {1, 2}, object()])
    def test_raises_when_type_has_no_json_form(self, value: object) -> None:
        with pytest.raises(CanonicalizationError, match="no JSON form"):
            canonical_json(value)

    def test_raises_when_nested_too_deep(self) -> None:
        value: list[Any] = []
        for _ in range(300):
            value = [value]
        with pytest.raises(CanonicalizationError, match="nested deeper"):
            canonical_json(value)

    def test_es_number_raises_when_called_with_infinity(self) -> None:
        with pytest.raises(CanonicalizationError):
            es_number(math.inf)


class TestProperties:
    @given(json_values)
    def test_round_trips_through_json_when_value_is_float_free(self, value: Any) -> None:
        encoded = canonical_json(value)
        assert json.loads(encoded) == value
        assert canonical_json(json.loads(encoded)) == encoded

    @given(st.floats(allow_nan=False, allow_infinity=False))
    def test_number_text_parses_back_to_same_double_when_finite(self, value: float) -> None:
        assert float(es_number(value)) == value
