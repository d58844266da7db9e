"""Strict base64url and JSON helpers (bytes-first compact serialization)."""

from __future__ import annotations

import array
import base64
import json
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from keys import MalformedPackage
from keys._b64json import (
    Compact,
    b64d,
    b64e,
    b64e_bytes,
    b64e_pieces,
    loads_object,
    split_compact,
)

_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)


def _reference(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class TestBase64url:
    @given(st.binary(max_size=300))
    def test_matches_stdlib_when_encoding_and_round_trips(self, data: bytes) -> None:
        assert b64e(data) == _reference(data)
        assert b64e_bytes(memoryview(data)) == _reference(data).encode()
        assert b64d(b64e(data), "x") == data
        assert b64d(b64e_bytes(data), "x") == data

    @pytest.mark.parametrize(
        "text",
        ["AA==", "A+B", "A/B", "A\u00e9", "AAAAA", "AA A", "AA\n", b"AA==", b"A\xffB"],
    )
    def test_raises_when_text_is_not_unpadded_base64url(self, text: str | bytes) -> None:
        with pytest.raises(MalformedPackage, match="not unpadded base64url"):
            b64d(text, "value")

    @pytest.mark.parametrize("text", ["AB", "AAB", b"AAB"])
    def test_raises_when_unused_bits_are_set(self, text: str | bytes) -> None:
        with pytest.raises(MalformedPackage, match="non-canonical"):
            b64d(text, "value")

    @pytest.mark.parametrize("size", [65_535, 65_536, 65_537, 117_535, 300_001])
    def test_matches_stdlib_when_input_is_package_sized(self, size: int) -> None:
        data = bytes(range(256)) * (size // 256) + bytes(size % 256)
        pieces = b64e_pieces(memoryview(data))
        assert b"".join(pieces) == b64e_bytes(data) == _reference(data).encode()
        assert len(pieces) == (1 if size % 3 == 0 else 2)
        assert b64d(b64e_bytes(data), "x") == data

    @pytest.mark.parametrize("first", [0, 1, 2, 3, 4, 299])
    @pytest.mark.parametrize("second", [0, 1, 2, 5, 65_536, 65_537])
    @pytest.mark.parametrize("third", [0, 1, 2])
    def test_matches_stdlib_when_parts_are_encoded_as_one(
        self, first: int, second: int, third: int
    ) -> None:
        parts = [bytes([n % 251 for n in range(size)]) for size in (first, second, third)]
        pieces = b64e_pieces(parts[0], memoryview(parts[1]), parts[2])
        assert b"".join(pieces) == _reference(b"".join(parts)).encode()

    def test_encodes_the_bytes_when_a_view_has_wider_items(self) -> None:
        wide = array.array("H", [1, 2, 3, 4])
        pieces = b64e_pieces(b"a", memoryview(wide))
        assert b"".join(pieces) == _reference(b"a" + wide.tobytes()).encode()

    @pytest.mark.parametrize("char", [b"+", b"/", b"=", b" ", b"\n", b"*"])
    @pytest.mark.parametrize("where", [0, 40_000, -1])
    def test_raises_when_a_large_text_has_one_foreign_character(
        self, char: bytes, where: int
    ) -> None:
        text = bytearray(b64e_bytes(bytes(range(256)) * 300))
        text[where : where + 1 if where != -1 else None] = char
        with pytest.raises(MalformedPackage, match="not unpadded base64url"):
            b64d(bytes(text), "value")


class TestSplitCompact:
    @pytest.mark.parametrize(
        "token", ["a.b.c", b"a.b.c", bytearray(b"a.b.c"), memoryview(b"a.b.c")]
    )
    def test_returns_ascii_bytes_when_token_is_str_or_buffer(self, token: object) -> None:
        raw, parts = split_compact(token, 3, "JWS")  # type: ignore[arg-type]
        assert raw == b"a.b.c"
        assert parts == [b"a", b"b", b"c"]

    @pytest.mark.parametrize("token", ["a.\u00e9.c", b"a.\xe9.c"])
    def test_raises_when_token_is_not_ascii(self, token: str | bytes) -> None:
        with pytest.raises(MalformedPackage, match="not ASCII"):
            split_compact(token, 3, "JWS")

    def test_raises_when_token_has_another_type(self) -> None:
        with pytest.raises(MalformedPackage, match="int, not str or bytes"):
            split_compact(5, 3, "JWS")  # type: ignore[arg-type]

    def test_raises_when_part_count_is_wrong(self) -> None:
        with pytest.raises(MalformedPackage, match="has 2 parts, expected 3"):
            split_compact(b"a.b", 3, "JWS")


class TestCompact:
    @given(st.lists(st.binary(max_size=70), min_size=1, max_size=5))
    def test_decodes_each_part_when_token_is_well_formed(self, parts: list[bytes]) -> None:
        token = b".".join(b64e_bytes(part) for part in parts)
        compact = Compact(token.decode(), len(parts), "T")
        assert compact.raw == token
        for index, part in enumerate(parts):
            assert compact.decode(index, "part") == part
            assert compact.part(index) == b64e_bytes(part)
        assert compact.end(len(parts) - 1) == len(token)

    @pytest.mark.parametrize("token", ["a.b", "a.b.c.d", "abc"])
    def test_raises_when_part_count_is_wrong(self, token: str) -> None:
        with pytest.raises(MalformedPackage, match=r"T has \d parts, expected 3"):
            Compact(token, 3, "T")

    @pytest.mark.parametrize("bad", ["A+AA", "A/AA", "AA==", "AA A", "AAAAA"])
    def test_raises_for_that_part_only_when_one_part_is_not_base64url(self, bad: str) -> None:
        compact = Compact(f"AAAA.{bad}.AAAA", 3, "T")
        assert compact.decode(0, "first") == compact.decode(2, "last") == bytes(3)
        with pytest.raises(MalformedPackage, match="middle is not unpadded base64url"):
            compact.decode(1, "middle")

    @pytest.mark.parametrize("bad", ["AB", "AAB"])
    def test_raises_when_a_part_is_non_canonical(self, bad: str) -> None:
        with pytest.raises(MalformedPackage, match="middle is a non-canonical"):
            Compact(f"AA.{bad}.AA", 3, "T").decode(1, "middle")

    def test_decodes_in_pieces_when_part_ends_in_a_partial_quantum(self) -> None:
        pieces = Compact(b"AAAA." + b64e_bytes(b"12345"), 2, "T").decode_pieces(1, "p")
        assert pieces == [b"123", b"45"]


class TestLoadsObject:
    @given(st.dictionaries(st.text(max_size=8), _JSON, max_size=6))
    def test_equals_json_loads_when_written_by_orjson_or_json(self, value: Any) -> None:
        for data in (orjson.dumps(value), json.dumps(value, indent=1).encode()):
            assert loads_object(data, "claims") == json.loads(data)

    def test_names_the_duplicate_when_written_compactly(self) -> None:
        # orjson would keep the last member; re-serializing it does not give these bytes.
        with pytest.raises(MalformedPackage, match="duplicate member 'a'"):
            loads_object(b'{"a":1,"a":1}', "claims")

    def test_parses_strictly_when_nested_deeper_than_orjson_writes(self) -> None:
        data = b'{"a":' * 300 + b"1" + b"}" * 300
        with pytest.raises(orjson.JSONEncodeError):
            orjson.dumps(orjson.loads(data))
        assert loads_object(data, "claims") == json.loads(data)

    @pytest.mark.parametrize("data", [b"[1]", b'"x"', b"1"])
    def test_raises_when_json_is_not_an_object(self, data: bytes) -> None:
        with pytest.raises(MalformedPackage, match="is not a JSON object"):
            loads_object(data, "claims")

    def test_names_the_duplicate_when_a_member_repeats(self) -> None:
        with pytest.raises(MalformedPackage, match="duplicate member 'b'"):
            loads_object(b'{"a": 1, "b": 2, "c": {"x": 1}, "b": 3}', "claims")

    def test_finds_duplicates_when_nested(self) -> None:
        with pytest.raises(MalformedPackage, match="duplicate member 'x'"):
            loads_object(b'{"a": [{"x": 1, "x": 1}]}', "claims")
