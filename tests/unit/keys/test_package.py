"""Sealing and opening Atlas packages (nested JWT: JWS inside JWE)."""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Callable
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from keys import (
    BrokerKeyring,
    DecryptionFailed,
    InvalidKey,
    KeyKind,
    KeyRegistryError,
    MalformedPackage,
    MemoryReplayGuard,
    PackageError,
    PackageExpired,
    PackageReplayed,
    PrivateKey,
    RevokedSigningKey,
    SerializedView,
    SignatureInvalid,
    UnknownSigningKey,
    WrongAudience,
    WrongIssuer,
    WrongRecipientKey,
    jwe_decrypt,
    jwe_encrypt,
    jws_sign,
    open_package,
    seal,
)

NOW = 1_750_000_000
COMBOS = [(s, e) for s in ("Ed25519", "ES256") for e in ("X25519", "P-256")]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _claims(recipient: PrivateKey, **changes: Any) -> dict[str, Any]:
    claims: dict[str, Any] = {
        "iss": "atlas-broker",
        "aud": "ec3",
        "rcpt_kid": recipient.thumbprint,
        "jti": "pkg-1",
        "iat": NOW,
        "exp": NOW + 600,
        "src": {"org": "bank-a", "submission": "s1", "sha256": "ab" * 32},
        "tlp": "green",
        "stix": {"type": "bundle", "id": "bundle--1", "objects": []},
    }
    claims.update(changes)
    return {k: v for k, v in claims.items() if v is not None}


def _build(
    broker: PrivateKey,
    recipient: PrivateKey,
    claims: dict[str, Any] | bytes,
    *,
    typ: str | None = "atlas-pkg+jwt",
    cty: str | None = "JWT",
) -> str:
    payload = claims if isinstance(claims, bytes) else json.dumps(claims).encode()
    inner = jws_sign(payload, broker, {} if typ is None else {"typ": typ})
    return jwe_encrypt(inner.encode(), recipient.public, {} if cty is None else {"cty": cty})


def _open(token: str | bytes, broker_key: PrivateKey, own_key: PrivateKey, **kw: Any) -> Any:
    params: dict[str, Any] = {
        "recipient": "ec3",
        "decryption_keys": {own_key.thumbprint: own_key},
        "broker_keys": BrokerKeyring.of(broker_key.public),
        "now": NOW + 1,
        "replay": None,
    }
    params.update(kw)
    return open_package(token, **params)


class TestSeal:
    def test_reports_digest_and_ids_when_sealed(self, make_sealed: Callable[..., Any]) -> None:
        sealed = make_sealed()
        pkg = sealed.package
        assert pkg.jwe_sha256 == hashlib.sha256(pkg.token.encode()).hexdigest()
        assert pkg.rcpt_kid == sealed.recipient.thumbprint
        assert pkg.signing_kid == sealed.broker.thumbprint
        assert (pkg.iat, pkg.exp) == (NOW, NOW + 3600)
        assert len(_unb64(pkg.jti)) == 16
        assert pkg.token.count(".") == 4

    def test_uses_given_jti_when_provided(self, make_sealed: Callable[..., Any]) -> None:
        assert make_sealed(jti="pkg-42").package.jti == "pkg-42"

    def test_draws_fresh_jti_when_not_provided(self, make_sealed: Callable[..., Any]) -> None:
        assert make_sealed().package.jti != make_sealed().package.jti

    def test_opens_when_claims_serialized_with_orjson(
        self, make_sealed: Callable[..., Any], now: int
    ) -> None:
        sealed = make_sealed(dumps=orjson.dumps)
        opened = _open(sealed.package.token, sealed.broker, sealed.recipient)
        assert opened.stix["objects"][0]["name"] == "Phishing domain \u2013 \u00fcn\u00efcode"

    @pytest.mark.parametrize("dumps", [None, orjson.dumps])
    def test_opens_to_the_same_claims_when_view_given_serialized(
        self, make_sealed: Callable[..., Any], dumps: Callable[[Any], bytes] | None
    ) -> None:
        extra = {} if dumps is None else {"dumps": dumps}
        as_dict = make_sealed(jti="pkg-1", **extra)
        reference = _open(as_dict.package.token, as_dict.broker, as_dict.recipient)
        as_json = make_sealed(
            broker=as_dict.broker,
            recipient=as_dict.recipient,
            jti="pkg-1",
            stix=SerializedView(reference.stix),
            **extra,
        )
        opened = _open(as_json.package.token, as_json.broker, as_json.recipient)
        assert opened.claims == reference.claims
        assert list(opened.claims)[-1] == "stix"

    @pytest.mark.parametrize(
        "view",
        [b'{"type":"bundle"},"aud":"someone-else","x":{}', "{}", [{"type": "bundle"}]],
        ids=["bytes", "str", "list"],
    )
    def test_serializes_only_a_dict_as_a_view(self, view: Any) -> None:
        with pytest.raises(KeyRegistryError, match="not a JSON object"):
            SerializedView(view)

    @pytest.mark.parametrize("view", [{"bad": b"bytes"}, {1: "int key"}, {"deep": {1.5}}])
    def test_refuses_a_view_orjson_cannot_write(self, view: dict[str, Any]) -> None:
        with pytest.raises(KeyRegistryError, match="view is not JSON"):
            SerializedView(view)

    def test_refuses_a_serialized_view_when_claims_are_not_compact(
        self, make_sealed: Callable[..., Any]
    ) -> None:
        with pytest.raises(KeyRegistryError, match="compact JSON bytes"):
            make_sealed(
                stix=SerializedView({"type": "bundle"}),
                dumps=lambda o: json.dumps(o, indent=1).encode(),
            )

    def test_writes_claims_in_fixed_order_when_sealed(
        self, make_sealed: Callable[..., Any]
    ) -> None:
        sealed = make_sealed()
        _, inner = jwe_decrypt(sealed.package.token, sealed.decryption_keys)
        header = json.loads(_unb64(inner.decode().split(".")[0]))
        claims = json.loads(_unb64(inner.decode().split(".")[1]))
        assert header == {"alg": "EdDSA", "kid": sealed.broker.thumbprint, "typ": "atlas-pkg+jwt"}
        assert list(claims) == ["iss", "aud", "rcpt_kid", "jti", "iat", "exp", "src", "tlp", "stix"]
        assert "\\u" not in _unb64(inner.decode().split(".")[1]).decode()

    @pytest.mark.parametrize(
        ("dumps", "stix"),
        [
            (None, {"bad": "\ud800"}),
            (None, {"bad": float("nan")}),
            (None, {"bad": b"bytes"}),
            (None, {"bad": {1.5}}),
            (orjson.dumps, {"bad": "\ud800"}),
            (orjson.dumps, {"bad": {1.5}}),
            (orjson.dumps, {"bad": 2**64}),
        ],
    )
    def test_raises_when_view_is_not_serializable(
        self, make_sealed: Callable[..., Any], stix: dict[str, Any], dumps: Any
    ) -> None:
        extra = {} if dumps is None else {"dumps": dumps}
        with pytest.raises(KeyRegistryError, match="claims are not JSON"):
            make_sealed(stix=stix, **extra)

    def test_raises_when_signing_key_is_for_encryption(
        self, make_sealed: Callable[..., Any]
    ) -> None:
        with pytest.raises(InvalidKey, match="signing_key"):
            make_sealed(broker=PrivateKey.generate("X25519"))

    def test_raises_when_recipient_key_is_for_signing(
        self, make_sealed: Callable[..., Any]
    ) -> None:
        with pytest.raises(InvalidKey, match="recipient_key"):
            make_sealed(recipient=PrivateKey.generate("Ed25519"))

    @pytest.mark.parametrize(
        "changes", [{"ttl": 0}, {"ttl": -5}, {"now": 1.5}, {"now": True}, {"ttl": "60"}]
    )
    def test_raises_when_time_arguments_are_invalid(
        self, make_sealed: Callable[..., Any], changes: dict[str, Any]
    ) -> None:
        with pytest.raises(KeyRegistryError, match="ttl a positive int"):
            make_sealed(**changes)

    @pytest.mark.parametrize(
        ("changes", "match"),
        [
            ({"src": {"org": "a", "submission": "s", "sha256": "AB" * 32}}, "src.sha256"),
            ({"src": {"org": "a", "sha256": "ab" * 32}}, "src.submission"),
            ({"src": {"org": "", "submission": "s", "sha256": "ab" * 32}}, "src.org"),
            ({"src": ["a"]}, "src is not an object"),
            ({"stix": []}, "'stix' is missing or not a JSON dict"),
            ({"aud": ["ec3"]}, "'aud'"),
            ({"tlp": None}, "'tlp'"),
            ({"tlp": "AMBER"}, "'tlp' 'AMBER' is not one of"),
            ({"tlp": "white"}, "'tlp' 'white' is not one of"),
            ({"jti": ""}, "1 to 128 characters"),
            ({"jti": "x" * 129}, "1 to 128 characters"),
        ],
    )
    def test_raises_when_claims_are_invalid(
        self, make_sealed: Callable[..., Any], changes: dict[str, Any], match: str
    ) -> None:
        with pytest.raises(KeyRegistryError, match=match):
            make_sealed(**changes)


class TestOpenPackage:
    @pytest.mark.parametrize(("sign", "enc"), COMBOS)
    def test_returns_view_and_metadata_when_package_is_valid(
        self, make_sealed: Callable[..., Any], sign: KeyKind, enc: KeyKind, stix: Any, src: Any
    ) -> None:
        sealed = make_sealed(sign, enc)
        guard = MemoryReplayGuard()
        opened = _open(
            sealed.package.token,
            sealed.broker,
            sealed.recipient,
            replay=guard,
            issuer="atlas-broker",
        )
        assert opened.stix == stix
        assert opened.src == src
        assert (opened.jti, opened.tlp, opened.iss, opened.aud) == (
            sealed.package.jti,
            "amber",
            "atlas-broker",
            "ec3",
        )
        assert (opened.iat, opened.exp) == (NOW, NOW + 3600)
        assert opened.jwe_sha256 == sealed.package.jwe_sha256
        assert opened.rcpt_kid == sealed.recipient.thumbprint
        assert opened.signing_kid == sealed.broker.thumbprint
        assert opened.jws_header["typ"] == "atlas-pkg+jwt"
        assert opened.jwe_header["cty"] == "JWT"
        assert opened.claims["stix"] is opened.stix
        assert opened.inner_jws.count(".") == 2
        assert len(guard) == 1

    def test_opens_bytes_when_token_arrives_from_the_bus(
        self, make_sealed: Callable[..., Any]
    ) -> None:
        sealed = make_sealed()
        opened = _open(sealed.package.token.encode(), sealed.broker, sealed.recipient)
        assert opened.jwe_sha256 == sealed.package.jwe_sha256

    def test_opens_when_recipient_holds_several_keys_during_rotation(
        self, make_sealed: Callable[..., Any]
    ) -> None:
        sealed = make_sealed()
        newer = PrivateKey.generate("X25519")
        keys = {newer.thumbprint: newer, sealed.recipient.thumbprint: sealed.recipient}
        assert (
            _open(sealed.package.token, sealed.broker, sealed.recipient, decryption_keys=keys).jti
            == sealed.package.jti
        )

    @pytest.mark.parametrize("part", range(5))
    @pytest.mark.parametrize(("sign", "enc"), COMBOS)
    def test_rejects_when_a_byte_of_any_part_is_flipped(
        self, make_sealed: Callable[..., Any], sign: KeyKind, enc: KeyKind, part: int
    ) -> None:
        sealed = make_sealed(sign, enc)
        parts = sealed.package.token.split(".")
        raw = bytearray(_unb64(parts[part]))
        raw[len(raw) // 2] ^= 0x20
        parts[part] = _b64(bytes(raw))
        with pytest.raises(PackageError) as info:
            _open(".".join(parts), sealed.broker, sealed.recipient)
        expected = (MalformedPackage, DecryptionFailed) if part == 0 else (DecryptionFailed,)
        assert isinstance(info.value, expected)

    @pytest.mark.parametrize("part", range(5))
    def test_rejects_when_a_character_of_any_part_is_changed(
        self, make_sealed: Callable[..., Any], part: int
    ) -> None:
        sealed = make_sealed()
        parts = sealed.package.token.split(".")
        last = parts[part][-1]
        parts[part] = parts[part][:-1] + ("A" if last != "A" else "Q")
        with pytest.raises(PackageError):
            _open(".".join(parts), sealed.broker, sealed.recipient)

    @pytest.mark.parametrize(("sign", "enc"), COMBOS)
    def test_rejects_when_recipient_forwards_package_to_third_party(
        self, make_sealed: Callable[..., Any], sign: KeyKind, enc: KeyKind
    ) -> None:
        sealed = make_sealed(sign, enc)
        _, inner = jwe_decrypt(sealed.package.token, sealed.decryption_keys)
        third = PrivateKey.generate(enc)
        forwarded = jwe_encrypt(inner, third.public, {"cty": "JWT"})
        with pytest.raises(WrongAudience):
            _open(forwarded, sealed.broker, third, recipient="europol")
        # Even a third party that shares the audience name is caught by rcpt_kid.
        with pytest.raises(WrongRecipientKey, match="forwarded or re-encrypted"):
            _open(forwarded, sealed.broker, third, recipient="ec3")

    def test_raises_replayed_when_package_is_opened_twice(
        self, make_sealed: Callable[..., Any]
    ) -> None:
        sealed = make_sealed()
        guard = MemoryReplayGuard()
        _open(sealed.package.token, sealed.broker, sealed.recipient, replay=guard)
        with pytest.raises(PackageReplayed, match=sealed.package.jti):
            _open(sealed.package.token, sealed.broker, sealed.recipient, replay=guard)

    def test_leaves_guard_to_caller_when_mark_seen_is_false(
        self, make_sealed: Callable[..., Any]
    ) -> None:
        sealed = make_sealed()
        guard = MemoryReplayGuard()
        opened = _open(
            sealed.package.token, sealed.broker, sealed.recipient, replay=guard, mark_seen=False
        )
        assert len(guard) == 0
        guard.add(opened.jti, opened.exp)
        with pytest.raises(PackageReplayed):
            _open(sealed.package.token, sealed.broker, sealed.recipient, replay=guard)

    @pytest.mark.parametrize(
        ("now", "leeway"), [(NOW + 3660, 60), (NOW + 3600, 0), (NOW + 9999, 60)]
    )
    def test_raises_expired_when_exp_plus_leeway_has_passed(
        self, make_sealed: Callable[..., Any], now: int, leeway: int
    ) -> None:
        sealed = make_sealed()
        with pytest.raises(PackageExpired, match=f"expired at {NOW + 3600}"):
            _open(sealed.package.token, sealed.broker, sealed.recipient, now=now, leeway=leeway)

    def test_opens_when_within_leeway_after_exp(self, make_sealed: Callable[..., Any]) -> None:
        sealed = make_sealed()
        _open(sealed.package.token, sealed.broker, sealed.recipient, now=NOW + 3659)

    def test_raises_malformed_when_iat_is_in_the_future(
        self, make_sealed: Callable[..., Any]
    ) -> None:
        sealed = make_sealed()
        with pytest.raises(MalformedPackage, match="in the future"):
            _open(sealed.package.token, sealed.broker, sealed.recipient, now=NOW - 61)

    @pytest.mark.parametrize("revoked_at", [NOW, NOW - 1, 0])
    def test_raises_revoked_when_key_revoked_at_or_before_iat(
        self, make_sealed: Callable[..., Any], revoked_at: int
    ) -> None:
        sealed = make_sealed()
        ring = BrokerKeyring({sealed.broker.thumbprint: (sealed.broker.public, revoked_at)})
        with pytest.raises(RevokedSigningKey, match=f"revoked at {revoked_at}"):
            _open(sealed.package.token, sealed.broker, sealed.recipient, broker_keys=ring)

    def test_opens_when_key_revoked_after_iat(self, make_sealed: Callable[..., Any]) -> None:
        sealed = make_sealed()
        ring = BrokerKeyring({sealed.broker.thumbprint: (sealed.broker.public, NOW + 1)})
        _open(sealed.package.token, sealed.broker, sealed.recipient, broker_keys=ring)

    def test_raises_unknown_signing_key_when_broker_key_not_in_ring(
        self, make_sealed: Callable[..., Any]
    ) -> None:
        sealed = make_sealed()
        ring = BrokerKeyring.of(PrivateKey.generate("Ed25519").public)
        with pytest.raises(UnknownSigningKey):
            _open(sealed.package.token, sealed.broker, sealed.recipient, broker_keys=ring)

    def test_raises_signature_invalid_when_signed_by_impostor_with_ring_kid(self) -> None:
        broker, impostor = PrivateKey.generate("ES256"), PrivateKey.generate("ES256")
        recipient = PrivateKey.generate("P-256")
        inner = jws_sign(
            json.dumps(_claims(recipient)).encode(), impostor, {"typ": "atlas-pkg+jwt"}
        )
        h, p, s = inner.split(".")
        header = json.loads(_unb64(h))
        header["kid"] = broker.thumbprint
        forged = ".".join([_b64(json.dumps(header).encode()), p, s])
        token = jwe_encrypt(forged.encode(), recipient.public, {"cty": "JWT"})
        with pytest.raises(SignatureInvalid):
            _open(token, broker, recipient)

    def test_raises_signature_invalid_when_inner_alg_is_none(self) -> None:
        broker, recipient = PrivateKey.generate("Ed25519"), PrivateKey.generate("X25519")
        header = {"alg": "none", "kid": broker.thumbprint, "typ": "atlas-pkg+jwt"}
        inner = (
            f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(_claims(recipient)).encode())}."
        )
        token = jwe_encrypt(inner.encode(), recipient.public, {"cty": "JWT"})
        with pytest.raises(SignatureInvalid, match="alg 'none'"):
            _open(token, broker, recipient)

    def test_raises_malformed_when_inner_header_has_crit(self) -> None:
        broker, recipient = PrivateKey.generate("Ed25519"), PrivateKey.generate("X25519")
        inner = jws_sign(
            json.dumps(_claims(recipient)).encode(), broker, {"typ": "atlas-pkg+jwt", "exp": 1}
        )
        h, p, _ = inner.split(".")
        header = json.loads(_unb64(h))
        header["crit"] = ["exp"]
        token = jwe_encrypt(
            f"{_b64(json.dumps(header).encode())}.{p}.AA".encode(), recipient.public, {"cty": "JWT"}
        )
        with pytest.raises(MalformedPackage, match="crit"):
            _open(token, broker, recipient)

    def test_raises_wrong_audience_when_aud_names_another_org(
        self, make_sealed: Callable[..., Any]
    ) -> None:
        sealed = make_sealed(aud="europol")
        with pytest.raises(WrongAudience, match="'europol', not 'ec3'"):
            _open(sealed.package.token, sealed.broker, sealed.recipient)

    def test_raises_wrong_issuer_when_iss_differs(self, make_sealed: Callable[..., Any]) -> None:
        sealed = make_sealed(iss="rogue")
        with pytest.raises(WrongIssuer, match="'rogue'"):
            _open(sealed.package.token, sealed.broker, sealed.recipient, issuer="atlas-broker")

    def test_raises_wrong_recipient_when_kid_not_ours(
        self, make_sealed: Callable[..., Any]
    ) -> None:
        sealed = make_sealed()
        other = PrivateKey.generate("X25519")
        with pytest.raises(WrongRecipientKey):
            _open(
                sealed.package.token,
                sealed.broker,
                other,
                decryption_keys={other.thumbprint: other},
            )

    @pytest.mark.parametrize("typ", ["application/atlas-pkg+jwt", "ATLAS-PKG+JWT"])
    def test_opens_when_typ_is_equivalent_media_type(self, typ: str) -> None:
        broker, recipient = PrivateKey.generate("Ed25519"), PrivateKey.generate("X25519")
        _open(_build(broker, recipient, _claims(recipient), typ=typ), broker, recipient)

    @pytest.mark.parametrize("typ", [None, "JWT", "atlas-sub+jws"])
    def test_raises_malformed_when_typ_is_not_package(self, typ: str | None) -> None:
        broker, recipient = PrivateKey.generate("Ed25519"), PrivateKey.generate("X25519")
        token = _build(broker, recipient, _claims(recipient), typ=typ)
        with pytest.raises(MalformedPackage, match="typ"):
            _open(token, broker, recipient)

    @pytest.mark.parametrize("cty", [None, "jwt", "JOSE"])
    def test_raises_malformed_when_cty_is_not_jwt(self, cty: str | None) -> None:
        broker, recipient = PrivateKey.generate("Ed25519"), PrivateKey.generate("X25519")
        token = _build(broker, recipient, _claims(recipient), cty=cty)
        with pytest.raises(MalformedPackage, match="cty"):
            _open(token, broker, recipient)

    @pytest.mark.parametrize(
        ("changes", "match"),
        [
            ({"iat": None}, "'iat'"),
            ({"exp": "soon"}, "'exp'"),
            ({"exp": True}, "'exp'"),
            ({"iss": None}, "'iss'"),
            ({"rcpt_kid": 1}, "'rcpt_kid'"),
            ({"stix": "bundle"}, "'stix'"),
            ({"src": None}, "src is not an object"),
            ({"tlp": "banana"}, "'tlp' 'banana' is not one of"),
            ({"tlp": ""}, "'tlp' '' is not one of"),
            ({"tlp": "TLP:RED"}, "'tlp' 'TLP:RED' is not one of"),
        ],
    )
    def test_raises_malformed_when_claims_are_invalid(
        self, changes: dict[str, Any], match: str
    ) -> None:
        broker, recipient = PrivateKey.generate("Ed25519"), PrivateKey.generate("X25519")
        token = _build(broker, recipient, _claims(recipient, **changes))
        with pytest.raises(MalformedPackage, match=match):
            _open(token, broker, recipient)

    @pytest.mark.parametrize("payload", [b"[]", b"not json", b'{"a":1,"a":2}'])
    def test_raises_malformed_when_claims_are_not_a_json_object(self, payload: bytes) -> None:
        broker, recipient = PrivateKey.generate("Ed25519"), PrivateKey.generate("X25519")
        with pytest.raises(MalformedPackage, match="package claims"):
            _open(_build(broker, recipient, payload), broker, recipient)

    def test_raises_malformed_when_token_exceeds_max_size(
        self, make_sealed: Callable[..., Any]
    ) -> None:
        sealed = make_sealed()
        with pytest.raises(MalformedPackage, match="more than 100"):
            _open(sealed.package.token, sealed.broker, sealed.recipient, max_size=100)


class TestBrokerKeyring:
    def test_behaves_as_mapping_when_built(self) -> None:
        a, b = PrivateKey.generate("Ed25519").public, PrivateKey.generate("ES256").public
        ring = BrokerKeyring({a.thumbprint: (a, None), b.thumbprint: (b, 5)})
        assert len(ring) == 2
        assert set(ring) == {a.thumbprint, b.thumbprint}
        assert ring[b.thumbprint] == (b, 5)
        assert dict(ring.public_keys) == {a.thumbprint: a, b.thumbprint: b}

    def test_raises_when_kid_is_not_thumbprint(self) -> None:
        a = PrivateKey.generate("Ed25519").public
        with pytest.raises(InvalidKey, match="not the key's thumbprint"):
            BrokerKeyring({"broker-2025": (a, None)})

    def test_raises_when_key_is_for_encryption(self) -> None:
        enc = PrivateKey.generate("X25519").public
        with pytest.raises(InvalidKey, match="not a signing key"):
            BrokerKeyring.of(enc)

    @pytest.mark.parametrize("revoked_at", [1.5, True, "2025-01-01"])
    def test_raises_when_revoked_at_is_not_int_seconds(self, revoked_at: Any) -> None:
        a = PrivateKey.generate("Ed25519").public
        with pytest.raises(InvalidKey, match="revoked_at"):
            BrokerKeyring({a.thumbprint: (a, revoked_at)})


json_leaf = st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=20)
json_tree = st.recursive(
    json_leaf,
    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=8), c, max_size=3),
    max_leaves=12,
)


class TestRoundTrip:
    @settings(max_examples=40, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(
        stix=st.dictionaries(st.text(max_size=10), json_tree, max_size=5),
        tlp=st.sampled_from(["clear", "green", "amber", "amber+strict", "red"]),
        aud=st.text(min_size=1, max_size=30),
        combo=st.sampled_from(COMBOS),
        use_orjson=st.booleans(),
    )
    def test_opens_to_same_content_when_sealed_with_any_view(
        self,
        stix: dict[str, Any],
        tlp: str,
        aud: str,
        combo: tuple[KeyKind, KeyKind],
        use_orjson: bool,
    ) -> None:
        broker, recipient = PrivateKey.generate(combo[0]), PrivateKey.generate(combo[1])
        src = {"org": "o", "submission": "s", "sha256": "0" * 64}
        extra: dict[str, Any] = {"dumps": orjson.dumps} if use_orjson else {}
        sealed = seal(
            stix=stix,
            iss="b",
            aud=aud,
            src=src,
            tlp=tlp,
            signing_key=broker,
            recipient_key=recipient.public,
            now=NOW,
            ttl=60,
            **extra,
        )
        opened = _open(sealed.token, broker, recipient, recipient=aud)
        assert (opened.stix, opened.tlp, opened.aud, opened.src) == (stix, tlp, aud, src)
