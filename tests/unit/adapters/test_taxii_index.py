"""Timestamps and the object index of the TAXII server."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from adapters._taxii import ObjectIndex, Query, format_ts, parse_ts, version_key


def _reference(text: str) -> str:
    """What parse_ts returned before its fast path: strptime, then strftime."""
    core = text[:-1]
    head, _, frac = core.partition(".")
    moment = datetime.strptime(f"{head}.{frac[:6].ljust(6, '0')}", "%Y-%m-%dT%H:%M:%S.%f")
    return moment.replace(tzinfo=UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class TestParseTs:
    @given(
        moment=st.datetimes(min_value=datetime(1000, 1, 1), max_value=datetime(9999, 12, 31)),
        digits=st.integers(min_value=0, max_value=9),
    )
    def test_same_as_strptime_when_timestamp_is_canonical(
        self, moment: datetime, digits: int
    ) -> None:
        frac = f"{moment.microsecond:06d}789"[:digits]
        text = moment.strftime("%Y-%m-%dT%H:%M:%S") + (f".{frac}" if digits else "") + "Z"
        assert parse_ts(text) == _reference(text)

    @pytest.mark.parametrize(
        "text",
        [
            "2026-02-30T00:00:00Z",
            "2026-13-01T00:00:00Z",
            "2026-01-02T24:00:00Z",
            "2026-01-02T23:59:60Z",
            "2026-01-02T03:04:05.Z",
            "2026-01-02T03:04:05",
            "2026-01-02 03:04:05Z",
        ],
    )
    def test_value_error_when_timestamp_is_invalid(self, text: str) -> None:
        with pytest.raises(ValueError, match=r"timestamp|fraction"):
            parse_ts(text)

    def test_lower_case_t_and_z_accepted_as_rfc_3339_allows(self) -> None:
        assert parse_ts("2026-01-02t03:04:05.5z") == "2026-01-02T03:04:05.500000Z"

    @pytest.mark.parametrize(
        "text",
        [
            "2026-1-2T03:04:05Z",
            "2024-1-1T0:0:0Z",
            "26-01-02T03:04:05Z",
            "\uff12\uff10\uff12\uff16-01-02T03:04:05Z",
        ],
    )
    def test_value_error_when_fields_are_not_rfc_3339_digits(self, text: str) -> None:
        with pytest.raises(ValueError, match="not an RFC 3339 UTC timestamp"):
            parse_ts(text)

    @pytest.mark.parametrize(
        ("text", "key"),
        [
            ("2026-01-02T03:04:05Z", "2026-01-02T03:04:05.000000Z"),
            ("2026-01-02T03:04:05.1234560000Z", "2026-01-02T03:04:05.123456Z"),
            ("2026-01-02T03:04:05.0000001Z", "2026-01-02T03:04:05.0000001Z"),
            ("2026-01-02t03:04:05.12345678900z", "2026-01-02T03:04:05.123456789Z"),
            ("2026-01-02T03:04:05." + "0" * 30 + "1Z", "2026-01-02T03:04:05." + "0" * 30 + "1Z"),
        ],
    )
    def test_version_key_keeps_what_is_finer_than_microseconds(self, text: str, key: str) -> None:
        assert version_key(text) == key

    @pytest.mark.parametrize(
        "text", ["2026-01-02T03:04:05.Z", "2026-01-02T03:04:05.1x2Z", "2026-02-30T00:00:00.1Z"]
    )
    def test_version_key_refuses_what_is_not_a_timestamp(self, text: str) -> None:
        with pytest.raises(ValueError, match="timestamp"):
            version_key(text)

    def test_format_is_utc_and_fixed_width_when_zone_is_not_utc(self) -> None:
        moment = datetime(2026, 1, 2, 3, 4, 5, 7, tzinfo=timezone(timedelta(hours=2)))
        assert format_ts(moment) == "2026-01-02T01:04:05.000007Z"


class TestObjectIndex:
    def test_version_kept_once_and_latest_listed_when_added_again(self) -> None:
        index = ObjectIndex()
        obj = {"type": "indicator", "id": "indicator--1", "modified": "2026-01-01T00:00:00Z"}
        newer = {**obj, "modified": "2026-01-02T00:00:00Z"}
        when = datetime(2026, 3, 1, tzinfo=UTC)
        assert index.add_message(1, when, [obj, obj]) == 1
        assert index.add_message(2, when, [newer, obj]) == 1
        assert index.add_message(2, when, [newer]) == 0  # a message seen before
        last = index.page(Query(limit=10))
        assert [e.version for e in last.entries] == ["2026-01-02T00:00:00.000000Z"]
        every = index.page(Query(limit=10, versions=frozenset({"all"})))
        assert len(every.entries) == 2 and not every.more
        first = index.page(Query(limit=1, versions=frozenset({"first"})))
        assert first.entries[0].version == "2026-01-01T00:00:00.000000Z" and not first.more


@pytest.mark.parametrize(
    ("ts", "before"),
    [
        ("2026-11-02T09:30:00Z", "2026-11-02T09:29:59.999999Z"),
        ("2026-11-02T09:30:00.123Z", "2026-11-02T09:30:00.122999Z"),
        ("2026-01-01t00:00:00.000001z", "2026-01-01T00:00:00.000000Z"),
        ("0001-01-01T00:00:00Z", "0001-01-01T00:00:00Z"),  # nothing before: as given
        ("2026-11-02T09:30:00+01:00", "2026-11-02T09:30:00+01:00"),  # not ours to read
        ("garbage", "garbage"),
    ],
)
def test_just_before_a_cursor(ts: str, before: str) -> None:
    from adapters._taxii._poller import _just_before

    assert _just_before(ts) == before
