"""Originator submission signatures."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from keys import (
    KeyKind,
    PackageError,
    PrivateKey,
    SubmissionSignatureInvalid,
    jws_sign,
    sign_submission,
    verify_submission,
)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@pytest.fixture(params=["Ed25519", "ES256"])
def member_key(request: pytest.FixtureRequest) -> PrivateKey:
    kind: KeyKind = request.param
    return PrivateKey.generate(kind)


class TestSignSubmission:
    def test_verifies_when_signed_by_member_key(self, member_key: PrivateKey, now: int) -> None:
        token = sign_submission(b'{"type":"bundle"}', member_key, org="bank-a", now=now)
        header, payload = verify_submission(token, {member_key.thumbprint: member_key.public})
        assert payload == b'{"type":"bundle"}'
        assert header == {
            "alg": member_key.alg,
            "kid": member_key.thumbprint,
            "typ": "atlas-sub+jws",
            "org": "bank-a",
            "iat": now,
        }

    def test_verifies_when_expected_org_matches(self, member_key: PrivateKey, now: int) -> None:
        token = sign_submission(b"x", member_key, org="bank-a", now=now)
        verify_submission(token.encode(), {member_key.thumbprint: member_key.public}, org="bank-a")


class TestVerifySubmission:
    def test_raises_with_cause_when_signature_does_not_verify(
        self, member_key: PrivateKey, now: int
    ) -> None:
        h, _, s = sign_submission(b"original", member_key, org="o", now=now).split(".")
        with pytest.raises(SubmissionSignatureInvalid, match="does not verify") as info:
            verify_submission(
                f"{h}.{_b64(b'forged')}.{s}", {member_key.thumbprint: member_key.public}
            )
        assert isinstance(info.value.__cause__, PackageError)

    def test_raises_when_signed_by_another_member(self, member_key: PrivateKey, now: int) -> None:
        other = PrivateKey.generate("Ed25519")
        token = sign_submission(b"x", other, org="bank-a", now=now)
        with pytest.raises(SubmissionSignatureInvalid, match="not a known key"):
            verify_submission(token, {member_key.thumbprint: member_key.public})

    def test_raises_when_org_differs_from_expected(self, member_key: PrivateKey, now: int) -> None:
        token = sign_submission(b"x", member_key, org="bank-b", now=now)
        with pytest.raises(SubmissionSignatureInvalid, match="'bank-b', expected 'bank-a'"):
            verify_submission(token, {member_key.thumbprint: member_key.public}, org="bank-a")

    @pytest.mark.parametrize(
        ("header", "match"),
        [
            ({"org": "o", "iat": 1}, "typ None"),
            ({"typ": "atlas-pkg+jwt", "org": "o", "iat": 1}, "typ 'atlas-pkg\\+jwt'"),
            ({"typ": "atlas-sub+jws", "iat": 1}, "no 'org'"),
            ({"typ": "atlas-sub+jws", "org": "", "iat": 1}, "no 'org'"),
            ({"typ": "atlas-sub+jws", "org": "o"}, "no integer 'iat'"),
            ({"typ": "atlas-sub+jws", "org": "o", "iat": True}, "no integer 'iat'"),
            ({"typ": "atlas-sub+jws", "org": "o", "iat": "now"}, "no integer 'iat'"),
        ],
    )
    def test_raises_when_header_is_incomplete(
        self, member_key: PrivateKey, header: dict[str, Any], match: str
    ) -> None:
        token = jws_sign(b"x", member_key, header)
        with pytest.raises(SubmissionSignatureInvalid, match=match):
            verify_submission(token, {member_key.thumbprint: member_key.public})

    def test_accepts_when_typ_has_application_prefix(self, member_key: PrivateKey) -> None:
        header = {"typ": "application/atlas-sub+jws", "org": "o", "iat": 1}
        token = jws_sign(b"x", member_key, header)
        assert verify_submission(token, {member_key.thumbprint: member_key.public})[1] == b"x"

    def test_raises_when_token_is_garbage(self) -> None:
        with pytest.raises(SubmissionSignatureInvalid, match="parts"):
            verify_submission("not a jws", {})

    def test_raises_when_alg_is_none(self, member_key: PrivateKey) -> None:
        header = {"alg": "none", "kid": member_key.thumbprint, "typ": "atlas-sub+jws"}
        token = f"{_b64(json.dumps(header).encode())}.{_b64(b'x')}."
        with pytest.raises(SubmissionSignatureInvalid, match="alg 'none'"):
            verify_submission(token, {member_key.thumbprint: member_key.public})
