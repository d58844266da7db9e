"""docs/package-format.md cannot rot: its worked examples open, its readers run."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path
from typing import Any

import pytest
from jwcrypto import jwk as cjwk

from keys import (
    BrokerKeyring,
    MemoryReplayGuard,
    PackageReplayed,
    PrivateKey,
    PublicKey,
    WrongAudience,
    jwe_decrypt,
    open_package,
)

DOC = Path(__file__).resolve().parents[3] / "docs" / "package-format.md"
NOW = 1767225660
_BLOCK = re.compile(r"<!-- atlas-example: ([a-z0-9-]+) -->\n```[a-z]*\n(.*?)\n```", re.DOTALL)


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@pytest.fixture(scope="module")
def blocks() -> dict[str, str]:
    found = dict(_BLOCK.findall(DOC.read_text(encoding="utf-8")))
    assert set(found) >= {
        "broker-public-jwk",
        "recipient-private-jwk",
        "token",
        "jwe-header",
        "jws-header",
        "claims",
        "reader",
        "pq-private-jwk",
        "pq-token",
        "pq-reader",
    }
    return found


def _json(blocks: dict[str, str], name: str) -> dict[str, Any]:
    value: dict[str, Any] = json.loads(blocks[name])
    return value


def _recipient(blocks: dict[str, str]) -> PrivateKey:
    raw = cjwk.JWK(**_json(blocks, "recipient-private-jwk")).get_op_key("unwrapKey")
    return PrivateKey.from_cryptography(raw, use="enc")


def _pq_recipient(blocks: dict[str, str]) -> PrivateKey:
    jwk = _json(blocks, "pq-private-jwk")
    key = PrivateKey.from_xwing_seed(_unb64(jwk["priv"]))
    assert key.public.to_jwk()["pub"] == jwk["pub"]
    return key


def _broker_ring(blocks: dict[str, str]) -> BrokerKeyring:
    return BrokerKeyring.of(PublicKey.from_jwk(_json(blocks, "broker-public-jwk")))


class TestWorkedExamples:
    def test_kids_are_thumbprints_when_keys_are_published(self, blocks: dict[str, str]) -> None:
        for name, key in (
            ("broker-public-jwk", PublicKey.from_jwk(_json(blocks, "broker-public-jwk"))),
            ("recipient-private-jwk", _recipient(blocks).public),
            ("pq-private-jwk", _pq_recipient(blocks).public),
        ):
            assert _json(blocks, name)["kid"] == key.thumbprint

    def test_open_package_opens_classical_example_when_now_is_fixed(
        self, blocks: dict[str, str]
    ) -> None:
        recipient = _recipient(blocks)
        guard = MemoryReplayGuard()
        opened = open_package(
            blocks["token"],
            recipient="ec3",
            decryption_keys={recipient.thumbprint: recipient},
            broker_keys=_broker_ring(blocks),
            now=NOW,
            replay=guard,
            issuer="atlas-broker",
        )
        assert opened.claims == _json(blocks, "claims")
        assert opened.jws_header == _json(blocks, "jws-header")
        assert opened.jwe_header == _json(blocks, "jwe-header")
        with pytest.raises(PackageReplayed):
            open_package(
                blocks["token"],
                recipient="ec3",
                decryption_keys={recipient.thumbprint: recipient},
                broker_keys=_broker_ring(blocks),
                now=NOW,
                replay=guard,
            )

    def test_open_package_opens_pq_example_when_now_is_fixed(self, blocks: dict[str, str]) -> None:
        recipient = _pq_recipient(blocks)
        opened = open_package(
            blocks["pq-token"],
            recipient="ec3",
            decryption_keys={recipient.thumbprint: recipient},
            broker_keys=_broker_ring(blocks),
            now=NOW,
            replay=None,
        )
        assert opened.jwe_header["alg"] == "HPKE-9-KE"
        assert opened.stix == _json(blocks, "claims")["stix"]
        assert opened.jti != _json(blocks, "claims")["jti"]

    def test_decoded_headers_match_token_when_shown_in_doc(self, blocks: dict[str, str]) -> None:
        recipient = _recipient(blocks)
        header, inner = jwe_decrypt(blocks["token"], {recipient.thumbprint: recipient})
        assert json.loads(_unb64(blocks["token"].split(".")[0])) == header
        h_part, p_part, _ = inner.decode().split(".")
        assert json.loads(_unb64(h_part)) == _json(blocks, "jws-header")
        assert json.loads(_unb64(p_part)) == _json(blocks, "claims")


@pytest.fixture(scope="module")
def reader(blocks: dict[str, str]) -> dict[str, Any]:
    """The two reader code blocks of the doc, executed (they are our own text)."""
    namespace: dict[str, Any] = {}
    exec(compile(blocks["reader"], "reader", "exec"), namespace)  # noqa: S102
    exec(compile(blocks["pq-reader"], "pq-reader", "exec"), namespace)  # noqa: S102
    return namespace


class TestDocumentedReaders:
    def _broker_keys(self, blocks: dict[str, str]) -> dict[str, Any]:
        jwk = _json(blocks, "broker-public-jwk")
        return {jwk["kid"]: (cjwk.JWK(**jwk), None)}

    def test_reader_returns_claims_then_refuses_replay_when_run_on_example(
        self, blocks: dict[str, str], reader: dict[str, Any]
    ) -> None:
        jwk = _json(blocks, "recipient-private-jwk")
        keys = {jwk["kid"]: cjwk.JWK(**jwk)}
        seen: set[str] = set()
        args = (blocks["token"], "ec3", keys, self._broker_keys(blocks), seen)
        assert reader["open_atlas_package"](*args, now=NOW) == _json(blocks, "claims")
        with pytest.raises(ValueError, match="replayed package"):
            reader["open_atlas_package"](*args, now=NOW)

    @pytest.mark.parametrize(
        ("org", "now", "match"),
        [
            ("europol", NOW, "not addressed to us"),
            ("ec3", NOW + 31 * 86400, "expired"),
            ("ec3", NOW - 3600, "in the future"),
        ],
    )
    def test_reader_refuses_when_checks_fail(
        self, blocks: dict[str, str], reader: dict[str, Any], org: str, now: int, match: str
    ) -> None:
        jwk = _json(blocks, "recipient-private-jwk")
        with pytest.raises(ValueError, match=match):
            reader["open_atlas_package"](
                blocks["token"],
                org,
                {jwk["kid"]: cjwk.JWK(**jwk)},
                self._broker_keys(blocks),
                set(),
                now=now,
            )

    def test_reader_refuses_when_broker_key_was_revoked_before_iat(
        self, blocks: dict[str, str], reader: dict[str, Any]
    ) -> None:
        jwk = _json(blocks, "recipient-private-jwk")
        broker = _json(blocks, "broker-public-jwk")
        revoked = {broker["kid"]: (cjwk.JWK(**broker), _json(blocks, "claims")["iat"])}
        with pytest.raises(ValueError, match="revoked"):
            reader["open_atlas_package"](
                blocks["token"], "ec3", {jwk["kid"]: cjwk.JWK(**jwk)}, revoked, set(), now=NOW
            )

    def test_pq_reader_opens_outer_layer_when_run_on_example(
        self, blocks: dict[str, str], reader: dict[str, Any]
    ) -> None:
        jwk = _json(blocks, "pq-private-jwk")
        kid, inner = reader["open_outer_hpke"](
            blocks["pq-token"], {jwk["kid"]: _unb64(jwk["priv"])}
        )
        claims = reader["check_inner"](kid, inner, "ec3", self._broker_keys(blocks), set(), NOW)
        assert claims["rcpt_kid"] == jwk["kid"]
        assert claims["stix"] == _json(blocks, "claims")["stix"]

    def test_our_reader_agrees_when_pq_example_goes_to_wrong_org(
        self, blocks: dict[str, str]
    ) -> None:
        recipient = _pq_recipient(blocks)
        with pytest.raises(WrongAudience):
            open_package(
                blocks["pq-token"],
                recipient="europol",
                decryption_keys={recipient.thumbprint: recipient},
                broker_keys=_broker_ring(blocks),
                now=NOW,
                replay=None,
            )
