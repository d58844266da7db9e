"""TAXII status ids: a stored submission's place, readable only with the shared key."""

from __future__ import annotations

import secrets
import uuid
from typing import cast

import pytest
from nats.js import JetStreamContext

from adapters._taxii import StatusRecord
from broker._submission import make_submission
from broker._taxii_backend import NatsTaxiiBackend, StatusIds, _Stored, _stored
from keys import PrivateKey

KEY = bytes(range(32))


class TestStatusIds:
    @pytest.mark.parametrize("seq", [1, 2, 255, 2**32 + 7, 2**48 - 1])
    def test_reads_back_the_sequence_and_names_the_submission_it_was_made_for(
        self, seq: int
    ) -> None:
        sid = secrets.token_hex(16)
        status_id = StatusIds(KEY).make(seq, sid)
        parsed = uuid.UUID(status_id)
        assert str(parsed) == status_id
        assert parsed.version == 4 and parsed.variant == uuid.RFC_4122
        assert StatusIds(KEY).read(status_id) == seq
        assert StatusIds(KEY).names(status_id, seq, sid)
        assert StatusIds(KEY).names(status_id.upper(), seq, sid)

    def test_names_no_other_submission_at_the_same_place(self) -> None:
        sid = secrets.token_hex(16)
        status_id = StatusIds(KEY).make(9, sid)
        assert not StatusIds(KEY).names(status_id, 9, secrets.token_hex(16))
        assert not StatusIds(KEY).names(status_id, 9, sid[:16] + secrets.token_hex(8))
        assert not StatusIds(KEY).names(status_id, 10, sid)

    def test_any_changed_hex_digit_names_nothing(self) -> None:
        sid = secrets.token_hex(16)
        status_id = StatusIds(KEY).make(77, sid)
        for at, digit in enumerate(status_id):
            if digit == "-" or at in (14, 19):  # the version digit, and the variant's
                continue
            changed = status_id[:at] + ("0" if digit != "0" else "1") + status_id[at + 1 :]
            seq = StatusIds(KEY).read(changed)
            assert seq is None or not StatusIds(KEY).names(changed, seq, sid), at

    def test_says_nothing_of_the_sequence_when_ids_are_consecutive(self) -> None:
        sid = secrets.token_hex(16)
        first, second = (StatusIds(KEY).make(seq, sid).replace("-", "") for seq in (1, 2))
        # The 30 digits outside the version and variant are keyed-MAC output for each: about
        # 28 differ for random digits; fewer than 14 has odds below one in 10^9.
        assert sum(a != b for a, b in zip(first, second, strict=True)) >= 14

    def test_reads_another_place_when_the_key_differs(self) -> None:
        sid = secrets.token_hex(16)
        status_id = StatusIds(KEY).make(5, sid)
        other = StatusIds(bytes(32))
        seq = other.read(status_id)
        assert seq is not None and not other.names(status_id, seq, sid)

    @pytest.mark.parametrize(
        "text", ["", "status-1", "12345", "g" * 32, "00000000-0000-1000-8000-000000000000"]
    )
    def test_reads_nothing_when_the_id_is_not_a_v4_uuid(self, text: str) -> None:
        assert StatusIds(KEY).read(text) is None

    def test_refuses_a_sequence_that_does_not_fit(self) -> None:
        with pytest.raises(ValueError, match="does not fit"):
            StatusIds(KEY).make(2**48, secrets.token_hex(16))


class TestStoredSubmission:
    def test_lists_objects_with_versions_when_the_token_is_a_submission(self) -> None:
        when = "2026-11-02T09:30:00.000Z"
        indicator_id, domain_id = f"indicator--{uuid.uuid4()}", f"domain-name--{uuid.uuid4()}"
        objects = [
            {
                "type": "indicator",
                "spec_version": "2.1",
                "id": indicator_id,
                "created": when,
                "modified": when,
                "pattern": "[domain-name:value = 'x.example']",
                "pattern_type": "stix",
                "valid_from": when,
            },
            {"type": "domain-name", "spec_version": "2.1", "id": domain_id, "value": "x.example"},
        ]
        signed = make_submission(
            {"type": "bundle", "id": f"bundle--{uuid.uuid4()}", "objects": objects},
            org="bank-a",
            key=PrivateKey.generate("Ed25519"),
            to=(),
            feed=None,
            now=1_780_000_000,
            max_bytes=1 << 20,
            max_objects=100,
            via="taxii",
        )
        stored = _stored("id-1", "bank-a", signed.token)
        assert stored is not None and stored.sid == signed.sid
        assert stored.record.request_timestamp == "2026-05-28T20:26:40.000000Z"
        assert list(stored.record.objects) == [
            (indicator_id, "2026-11-02T09:30:00.000Z"),  # as the object writes it
            (domain_id, "2026-05-28T20:26:40.000000Z"),  # no modified: the POST's time
        ]

    @pytest.mark.parametrize(
        "token",
        [b"", b"a.b", b"a.!!.c", b"a.e30.c", b"a.eyJzaWQiOjF9.c", b"a.W10.c"],
        ids=["empty", "two-parts", "not-base64", "empty-object", "no-bundle", "a-list"],
    )
    def test_gives_nothing_when_the_message_is_not_a_submission(self, token: bytes) -> None:
        assert _stored("id-1", "bank-a", token) is None


class TestKnownStatuses:
    def test_keeps_statuses_by_their_objects_not_their_count(self) -> None:
        backend = NatsTaxiiBackend(
            cast(JetStreamContext, None),  # remembering touches no store
            lambda: pytest.fail("not needed"),
            signing_key=PrivateKey.generate("Ed25519"),
            status_key=KEY,
            max_bundle_bytes=1 << 20,
            max_objects=100_000,
        )

        def stored(n: int, size: int) -> _Stored:
            pairs = [(f"indicator--{i}", "v") for i in range(size)]
            record = StatusRecord(id=f"s{n}", org="bank-a", request_timestamp="t", objects=pairs)
            return _Stored(record, sid=f"{n:032x}", sha="0" * 32)

        for n in range(3):
            backend._remember(stored(n, 40_000))
        assert list(backend._known) == ["s1", "s2"]  # 120,000 objects were over the bound
        backend._remember(stored(3, 150_000))  # one alone over the bound is still kept
        assert list(backend._known) == ["s3"]
        for n in range(4, 104):
            backend._remember(stored(n, 1))
        assert len(backend._known) == 100 and "s3" not in backend._known
