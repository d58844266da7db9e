from __future__ import annotations

import orjson
import pytest

from broker import SubmissionError
from broker._submission import (
    SubmissionRefused,
    make_submission,
    open_submission,
    parse_audience,
)
from keys import PrivateKey

NOW = 1_800_000_000
BUNDLE = {
    "type": "bundle",
    "id": "bundle--3a2f6a1e-8c55-4c0c-9a57-1f0e1c9d4a11",
    "objects": [
        {
            "type": "identity",
            "spec_version": "2.1",
            "id": "identity--8a1f0c55-7e0c-4b47-b8b8-0b4dd9b3e2a1",
            "created": "2026-01-01T00:00:00.000Z",
            "modified": "2026-01-01T00:00:00.000Z",
            "name": "x",
        }
    ],
}


@pytest.fixture
def key() -> PrivateKey:
    return PrivateKey.generate("Ed25519")


def _make(key: PrivateKey, raw: bytes = orjson.dumps(BUNDLE), **kw: object) -> bytes:
    args: dict[str, object] = dict(
        org="bank-a", key=key, to=(), feed=None, now=NOW, max_bytes=100_000, max_objects=100
    )
    args.update(kw)
    return make_submission(raw, **args).token  # type: ignore[arg-type]


class TestMakeSubmission:
    def test_refused_with_position_when_not_json(self, key: PrivateKey) -> None:
        with pytest.raises(SubmissionError, match=r"b\.json: not JSON: .*line 1 column"):
            _make(key, b'{"type": "bundle",', source="b.json")

    def test_refused_when_not_a_bundle(self, key: PrivateKey) -> None:
        with pytest.raises(SubmissionError, match="'type' is 'indicator'"):
            _make(key, orjson.dumps({"type": "indicator"}))

    def test_refused_naming_the_object_when_spec_version_is_wrong(self, key: PrivateKey) -> None:
        bad = {**BUNDLE, "objects": [{**BUNDLE["objects"][0], "spec_version": "2.0"}]}  # type: ignore[dict-item]
        with pytest.raises(SubmissionError, match=r"objects\[0\].*'spec_version' is '2.0'"):
            _make(key, orjson.dumps(bad))

    def test_refused_when_over_the_size_limit(self, key: PrivateKey) -> None:
        with pytest.raises(SubmissionError, match="over the size limit of 100 bytes"):
            _make(key, max_bytes=100)

    def test_refused_when_over_the_object_limit(self, key: PrivateKey) -> None:
        with pytest.raises(SubmissionError, match="over the limit of 0"):
            _make(key, max_objects=0)


class TestOpenSubmission:
    def test_round_trip_when_signed_by_a_directory_key(self, key: PrivateKey) -> None:
        token = _make(key, to=("org:lea-1", "group:op"))
        env = open_submission(
            token,
            subject_org="bank-a",
            signing_keys={key.public.thumbprint: key.public},
            now=NOW,
            max_age=3600,
            max_objects=100,
        )
        assert env.to == ("org:lea-1", "group:op")
        assert env.bundle == BUNDLE

    @pytest.mark.parametrize(
        ("subject", "keys_for", "now", "reason"),
        [
            ("bank-a", None, NOW, "unknown-org"),
            ("bank-a", "other", NOW, "bad-signature"),
            ("bank-b", "same", NOW, "org-mismatch"),
            ("bank-a", "same", NOW + 10_000, "stale"),
            ("bank-a", "same", NOW - 10_000, "stale"),
            ("bank-a", "empty", NOW, "no-signing-key"),
        ],
    )
    def test_refused_with_reason_when_it_cannot_be_trusted(
        self, key: PrivateKey, subject: str, keys_for: str | None, now: int, reason: str
    ) -> None:
        token = _make(key)
        other = PrivateKey.generate("Ed25519")
        signing = {
            None: None,
            "other": {other.public.thumbprint: other.public},
            "same": {key.public.thumbprint: key.public},
            "empty": {},
        }[keys_for]
        with pytest.raises(SubmissionRefused) as info:
            open_submission(
                token,
                subject_org=subject,
                signing_keys=signing,
                now=now,
                max_age=3600,
                max_objects=100,
            )
        assert info.value.reason == reason


class TestParseAudience:
    def test_bare_ids_mean_organisations(self) -> None:
        assert parse_audience("ec3, group:op-x") == ("org:ec3", "group:op-x")

    def test_refused_when_an_item_is_not_an_id(self) -> None:
        with pytest.raises(SubmissionError, match="not org:<id> or group:<id>"):
            parse_audience("org:EC3.x")


class TestOnBehalfSubmissions:
    def test_accepted_when_a_broker_key_signs_and_says_via(self, key: PrivateKey) -> None:
        broker = PrivateKey.generate("Ed25519")
        token = _make(broker, via="taxii")
        env = open_submission(
            token,
            subject_org="bank-a",
            signing_keys={key.public.thumbprint: key.public},
            now=NOW,
            max_age=3600,
            max_objects=100,
            broker_keys={broker.public.thumbprint: broker.public},
        )
        assert env.via == "taxii"

    def test_refused_when_a_broker_key_signs_without_via(self, key: PrivateKey) -> None:
        broker = PrivateKey.generate("Ed25519")
        with pytest.raises(SubmissionRefused, match="without saying via"):
            open_submission(
                _make(broker),
                subject_org="bank-a",
                signing_keys={},
                now=NOW,
                max_age=3600,
                max_objects=100,
                broker_keys={broker.public.thumbprint: broker.public},
            )

    def test_refused_when_a_member_key_claims_via(self, key: PrivateKey) -> None:
        with pytest.raises(SubmissionRefused, match="needs a broker key"):
            open_submission(
                _make(key, via="taxii"),
                subject_org="bank-a",
                signing_keys={key.public.thumbprint: key.public},
                now=NOW,
                max_age=3600,
                max_objects=100,
                broker_keys={},
            )
