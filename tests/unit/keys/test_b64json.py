"""Strict base64url and JSON helpers (bytes-first compact serialization)."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given
from hypothesis import strategies as st

from keys import MalformedPackage
from keys._b64json import b64d, b64e, b64e_bytes, loads_object, split_compact


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


class TestLoadsObject:
    def test_names_the_duplicate_when_a_member_repeats(self) -> None:
        with pytest.raises(MalformedPackage, match="duplicate member 'b'"):
            loads_object(b'{"a": 1, "b": 2, "c": {"x": 1}, "b": 3}', "claims")

    def test_finds_duplicates_when_nested(self) -> None:
        with pytest.raises(MalformedPackage, match="duplicate member 'x'"):
            loads_object(b'{"a": [{"x": 1, "x": 1}]}', "claims")
