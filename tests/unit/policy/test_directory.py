"""The community directory model (policy/_directory.py) and TLP order (policy/_tlp.py)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from policy import Directory, DirectoryError, Tlp

from ._support import community_doc

ENC = {"kty": "OKP", "crv": "X25519", "x": "abc"}
SIG = {"kty": "OKP", "crv": "Ed25519", "x": "def"}


def _doc(**changes: Any) -> dict[str, Any]:
    doc = community_doc()
    doc.update(changes)
    return doc


def _org(**changes: Any) -> dict[str, Any]:
    return {"id": "new-org", "name": "New", "kind": "member", **changes}


class TestDirectoryValidation:
    def test_loads_when_valid(self) -> None:
        directory = Directory.from_mapping(community_doc())
        assert directory.organisation("bank-a") is not None
        assert directory.organisation("ghost") is None

    @pytest.mark.parametrize(
        ("changes", "message"),
        [
            ({"organisations": [_org(id="Bad.Id")]}, r"organisations\[0\]\.id: 'Bad\.Id' is not"),
            (
                {"organisations": [_org(keys=[{"jwk": {**ENC, "d": "x"}, "use": "enc"}])]},
                "private key member 'd'",
            ),
            (
                {"organisations": [_org(keys=[{"jwk": {"x": "1"}, "use": "sig"}])]},
                "no 'kty' member",
            ),
            ({"organisations": [_org(stix_identity="malware--1")]}, "not a STIX identity id"),
            (
                {
                    "organisations": [
                        _org(keys=[{"jwk": ENC, "use": "enc"}, {"jwk": ENC, "use": "enc"}])
                    ]
                },
                "marks 2 encryption keys current",
            ),
            ({"organisations": [_org(), _org()]}, "duplicate organisation id 'new-org'"),
            (
                {"organisations": [_org()], "groups": [{"id": "new-org", "members": []}]},
                "'new-org' is already used",
            ),
            (
                {"organisations": [_org()], "groups": [{"id": "g", "members": ["ghost"]}]},
                r"groups\[0\]\.members\[0\]: unknown organisation 'ghost'",
            ),
            (
                {
                    "organisations": [_org()],
                    "groups": [],
                    "subscriptions": [{"recipient": "ghost", "originators": ["*"]}],
                },
                r"subscriptions\[0\]\.recipient: unknown organisation",
            ),
            (
                {
                    "organisations": [_org()],
                    "groups": [],
                    "subscriptions": [{"recipient": "new-org", "originators": ["ghost"]}],
                },
                r"subscriptions\[0\]\.originators\[0\]: unknown organisation",
            ),
            (
                {
                    "organisations": [_org()],
                    "groups": [],
                    "subscriptions": [{"recipient": "new-org", "groups": ["ghost"]}],
                },
                r"subscriptions\[0\]\.groups\[0\]: unknown group",
            ),
            (
                {
                    "organisations": [_org()],
                    "groups": [],
                    "subscriptions": [{"recipient": "new-org"}],
                },
                "follows nothing",
            ),
            (
                {
                    "organisations": [_org()],
                    "groups": [],
                    "subscriptions": [],
                    "statement_rules": [{"marking": "m", "deny_orgs": ["ghost"]}],
                },
                r"statement_rules\[0\]\.deny_orgs\[0\]: unknown organisation",
            ),
        ],
    )
    def test_raises_directory_error_naming_the_key_when_invalid(
        self, changes: dict[str, Any], message: str
    ) -> None:
        with pytest.raises(DirectoryError, match=message):
            Directory.from_mapping(_doc(**changes))


class TestOrganisationKeys:
    def test_current_encryption_key_skips_revoked_and_old(self) -> None:
        revoked = datetime(2024, 1, 1, tzinfo=UTC)
        directory = Directory.from_mapping(
            _doc(
                organisations=[
                    _org(
                        keys=[
                            {"jwk": SIG, "use": "sig"},
                            {"jwk": ENC, "use": "enc", "revoked_at": revoked},
                            {"jwk": ENC, "use": "enc", "current": False},
                            {"jwk": {**ENC, "x": "now"}, "use": "enc"},
                        ]
                    )
                ],
                groups=[],
                subscriptions=[],
                statement_rules=[],
            )
        )
        org = directory.organisation("new-org")
        assert org is not None
        assert [k.jwk for k in org.signing_keys()] == [SIG]
        current = org.current_encryption_key()
        assert current is not None and current.jwk["x"] == "now"

    def test_no_current_encryption_key_when_none_published(self) -> None:
        directory = Directory.from_mapping(community_doc())
        org = directory.organisation("bank-a")
        assert org is not None and org.current_encryption_key() is None


class TestDirectoryQueries:
    def test_expand_resolves_orgs_groups_and_bare_ids(self) -> None:
        directory = Directory.from_mapping(community_doc())
        assert directory.expand(
            ["org:bank-b", "group:lea", "vendor-c", "group:ghost", "feed:ioc"]
        ) == {"bank-b", "lea-1", "lea-2", "vendor-c"}

    def test_groups_of_and_group_lookup(self) -> None:
        directory = Directory.from_mapping(community_doc())
        assert directory.groups_of("bank-a") == {"banks"}
        assert directory.group("ghost") is None

    def test_subscribers_follow_originator_group_and_feed(self) -> None:
        directory = Directory.from_mapping(community_doc())
        assert directory.subscribers("bank-a") == {
            "bank-b",
            "vendor-c",
            "lea-1",
            "lea-2",
            "auditor",
        }
        assert directory.subscribers("bank-b", "ioc") == {
            "lea-1",
            "lea-2",
            "outsider",
            "auditor",
        }


class TestTlp:
    def test_strictest_orders_by_rank(self) -> None:
        assert Tlp.strictest([Tlp.GREEN, Tlp.AMBER_STRICT, Tlp.AMBER]) is Tlp.AMBER_STRICT
        assert [level.rank for level in Tlp] == [0, 1, 2, 3, 4]
