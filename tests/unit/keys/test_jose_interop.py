"""Independent checkers: jwcrypto and joserfc open our packages, and we open theirs."""

from __future__ import annotations

import json
import time
import warnings
from collections.abc import Callable, Iterator
from typing import Any, Literal

import pytest
from joserfc import jwe as fjwe
from joserfc import jwk as fjwk
from joserfc import jws as fjws
from joserfc.errors import SecurityWarning
from joserfc.jws import JWSRegistry
from joserfc.registry import HeaderParameter
from jwcrypto import jwe as cjwe
from jwcrypto import jwk as cjwk
from jwcrypto import jws as cjws
from jwcrypto import jwt as cjwt

from keys import (
    BrokerKeyring,
    KeyKind,
    MemoryReplayGuard,
    PrivateKey,
    SerializedView,
    open_package,
    sign_submission,
    verify_submission,
)

COMBOS = [(s, e) for s in ("Ed25519", "ES256") for e in ("X25519", "P-256")]
JWE_ALGS = ["ECDH-ES+A256KW", "A256GCM"]


def _kty(key: PrivateKey) -> Literal["EC", "OKP"]:
    return "EC" if key.kind in ("ES256", "P-256") else "OKP"


def _joserfc_public(key: PrivateKey) -> Any:
    jwk: dict[str, str | list[str]] = dict(key.public.to_jwk())
    return fjwk.import_key(jwk)


@pytest.fixture
def allow_eddsa() -> Iterator[None]:
    """joserfc warns that "EdDSA" is deprecated by RFC 9864 (pytest turns it into an error)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "EdDSA is deprecated", SecurityWarning)
        yield


def _expected_claims(sealed: Any) -> dict[str, Any]:
    return {
        "iss": "atlas-broker",
        "aud": "ec3",
        "rcpt_kid": sealed.recipient.thumbprint,
        "jti": sealed.package.jti,
        "iat": sealed.package.iat,
        "exp": sealed.package.exp,
        "tlp": "amber",
    }


@pytest.mark.parametrize(("sign", "enc"), COMBOS)
class TestJwcryptoChecks:
    def test_jwcrypto_opens_package_when_we_seal_it(
        self, make_sealed: Callable[..., Any], sign: KeyKind, enc: KeyKind, stix: Any, src: Any
    ) -> None:
        sealed = make_sealed(sign, enc)
        outer = cjwe.JWE()
        outer.deserialize(sealed.package.token, key=cjwk.JWK.from_pyca(sealed.recipient._key))
        assert outer.jose_header["kid"] == sealed.recipient.thumbprint
        assert outer.jose_header["cty"] == "JWT"
        inner = cjws.JWS()
        inner.deserialize(outer.payload.decode())
        inner.verify(cjwk.JWK(**sealed.broker.public.to_jwk()))
        assert inner.jose_header == {
            "alg": sealed.broker.alg,
            "kid": sealed.broker.thumbprint,
            "typ": "atlas-pkg+jwt",
        }
        claims = json.loads(inner.payload)
        assert {k: claims[k] for k in _expected_claims(sealed)} == _expected_claims(sealed)
        assert (claims["stix"], claims["src"]) == (stix, src)

    def test_jwcrypto_jwt_validates_aud_iss_exp_when_nested(
        self, make_sealed: Callable[..., Any], sign: KeyKind, enc: KeyKind
    ) -> None:
        # jwcrypto checks exp against the wall clock, so seal with the real time here.
        sealed = make_sealed(sign, enc, now=int(time.time()))
        outer = cjwt.JWT(
            jwt=sealed.package.token,
            key=cjwk.JWK.from_pyca(sealed.recipient._key),
            expected_type="JWE",
        )
        inner = cjwt.JWT(
            jwt=outer.claims,
            key=cjwk.JWK(**sealed.broker.public.to_jwk()),
            check_claims={"aud": "ec3", "iss": "atlas-broker", "exp": None},
            expected_type="JWS",
        )
        assert json.loads(inner.claims)["jti"] == sealed.package.jti

    def test_we_open_package_when_jwcrypto_builds_it(
        self, make_sealed: Callable[..., Any], sign: KeyKind, enc: KeyKind, now: int
    ) -> None:
        template = make_sealed(sign, enc)
        broker, recipient = template.broker, template.recipient
        claims = {
            **_expected_claims(template),
            "jti": "jwcrypto-1",
            "src": {"org": "o", "submission": "s", "sha256": "f" * 64},
            "stix": {"type": "bundle", "id": "bundle--x", "objects": []},
        }
        signed = cjws.JWS(json.dumps(claims).encode())
        signed.add_signature(
            cjwk.JWK.from_pyca(broker._key),
            None,
            json.dumps({"alg": broker.alg, "kid": broker.thumbprint, "typ": "atlas-pkg+jwt"}),
        )
        outer = cjwe.JWE(
            signed.serialize(compact=True).encode(),
            json.dumps(
                {
                    "alg": "ECDH-ES+A256KW",
                    "enc": "A256GCM",
                    "kid": recipient.thumbprint,
                    "cty": "JWT",
                }
            ),
        )
        outer.add_recipient(cjwk.JWK(**recipient.public.to_jwk()))
        opened = open_package(
            outer.serialize(compact=True),
            recipient="ec3",
            decryption_keys={recipient.thumbprint: recipient},
            broker_keys=BrokerKeyring.of(broker.public),
            now=now,
            replay=MemoryReplayGuard(),
        )
        assert opened.jti == "jwcrypto-1"
        assert opened.stix == claims["stix"]


@pytest.mark.usefixtures("allow_eddsa")
@pytest.mark.parametrize(("sign", "enc"), COMBOS)
class TestJoserfcChecks:
    def test_joserfc_opens_package_when_we_seal_it(
        self,
        make_sealed: Callable[..., Any],
        pem: Callable[[PrivateKey], bytes],
        sign: KeyKind,
        enc: KeyKind,
        stix: Any,
    ) -> None:
        sealed = make_sealed(sign, enc)
        private = fjwk.import_key(pem(sealed.recipient), _kty(sealed.recipient))
        outer = fjwe.decrypt_compact(sealed.package.token, private, algorithms=JWE_ALGS)
        assert outer.protected["kid"] == sealed.recipient.thumbprint
        assert outer.plaintext is not None
        public = _joserfc_public(sealed.broker)
        inner = fjws.deserialize_compact(outer.plaintext, public, algorithms=[sealed.broker.alg])
        assert inner.protected["typ"] == "atlas-pkg+jwt"
        claims = json.loads(inner.payload)
        assert {k: claims[k] for k in _expected_claims(sealed)} == _expected_claims(sealed)
        assert claims["stix"] == stix

    def test_we_open_package_when_joserfc_builds_it(
        self,
        make_sealed: Callable[..., Any],
        pem: Callable[[PrivateKey], bytes],
        sign: KeyKind,
        enc: KeyKind,
        now: int,
    ) -> None:
        template = make_sealed(sign, enc)
        broker, recipient = template.broker, template.recipient
        claims = {
            **_expected_claims(template),
            "jti": "joserfc-1",
            "src": {"org": "o", "submission": "s", "sha256": "e" * 64},
            "stix": {"type": "bundle", "id": "bundle--y", "objects": []},
        }
        signing = fjwk.import_key(pem(broker), _kty(broker))
        inner = fjws.serialize_compact(
            {"alg": broker.alg, "kid": broker.thumbprint, "typ": "atlas-pkg+jwt"},
            json.dumps(claims).encode(),
            signing,
            algorithms=[broker.alg],
        )
        token = fjwe.encrypt_compact(
            {"alg": "ECDH-ES+A256KW", "enc": "A256GCM", "kid": recipient.thumbprint, "cty": "JWT"},
            inner,
            _joserfc_public(recipient),
            algorithms=JWE_ALGS,
        )
        opened = open_package(
            token,
            recipient="ec3",
            decryption_keys={recipient.thumbprint: recipient},
            broker_keys=BrokerKeyring.of(broker.public),
            now=now,
            replay=None,
        )
        assert opened.jti == "joserfc-1"
        assert opened.jwe_header["epk"]["crv"] == recipient.public.crv


def _large_stix(pad: int) -> dict[str, Any]:
    """A view large enough that both base64url texts are encoded in several chunks."""
    return {"type": "bundle", "id": "bundle--big", "objects": [], "x_pad": "p" * pad}


@pytest.mark.usefixtures("allow_eddsa")
@pytest.mark.parametrize(("sign", "enc"), [("Ed25519", "X25519"), ("ES256", "P-256")])
@pytest.mark.parametrize("pad", [150_000, 150_001, 150_002])
class TestLargeViews:
    """Views past the 48 KiB encoding chunk, for each remainder of the length modulo 3."""

    def test_jwcrypto_and_joserfc_open_package_when_view_is_large(
        self,
        make_sealed: Callable[..., Any],
        pem: Callable[[PrivateKey], bytes],
        sign: KeyKind,
        enc: KeyKind,
        pad: int,
    ) -> None:
        sealed = make_sealed(sign, enc, stix=_large_stix(pad))
        outer = cjwe.JWE()
        outer.deserialize(sealed.package.token, key=cjwk.JWK.from_pyca(sealed.recipient._key))
        inner = cjws.JWS()
        inner.deserialize(outer.payload.decode())
        inner.verify(cjwk.JWK(**sealed.broker.public.to_jwk()))
        assert json.loads(inner.payload)["stix"] == _large_stix(pad)
        private = fjwk.import_key(pem(sealed.recipient), _kty(sealed.recipient))
        registry = fjwe.JWERegistry(algorithms=JWE_ALGS)
        registry.max_ciphertext_length = 1 << 20  # joserfc refuses more than 64 KiB by default
        plain = fjwe.decrypt_compact(sealed.package.token, private, registry=registry).plaintext
        assert plain == outer.payload

    @pytest.mark.parametrize("jti", ["a", "ab", "abc"])
    def test_jwcrypto_verifies_package_when_view_is_given_serialized(
        self, make_sealed: Callable[..., Any], sign: KeyKind, enc: KeyKind, pad: int, jti: str
    ) -> None:
        # The claims before the view take each length modulo 3 (jti), so the view starts at
        # each offset of a base64 group: the JWS is signed over its parts, never joined.
        sealed = make_sealed(sign, enc, stix=SerializedView(_large_stix(pad)), jti=jti)
        outer = cjwe.JWE()
        outer.deserialize(sealed.package.token, key=cjwk.JWK.from_pyca(sealed.recipient._key))
        inner = cjws.JWS()
        inner.deserialize(outer.payload.decode())
        inner.verify(cjwk.JWK(**sealed.broker.public.to_jwk()))
        claims = json.loads(inner.payload)
        assert (claims["jti"], claims["stix"]) == (jti, _large_stix(pad))

    def test_we_open_package_when_jwcrypto_builds_a_large_one(
        self, make_sealed: Callable[..., Any], sign: KeyKind, enc: KeyKind, pad: int, now: int
    ) -> None:
        template = make_sealed(sign, enc)
        broker, recipient = template.broker, template.recipient
        claims = {
            **_expected_claims(template),
            "src": {"org": "o", "submission": "s", "sha256": "f" * 64},
            "stix": _large_stix(pad),
        }
        signed = cjws.JWS(json.dumps(claims).encode())
        signed.add_signature(
            cjwk.JWK.from_pyca(broker._key),
            None,
            json.dumps({"alg": broker.alg, "kid": broker.thumbprint, "typ": "atlas-pkg+jwt"}),
        )
        header = {"alg": "ECDH-ES+A256KW", "enc": "A256GCM", "kid": recipient.thumbprint}
        outer = cjwe.JWE(
            signed.serialize(compact=True).encode(), json.dumps({**header, "cty": "JWT"})
        )
        outer.add_recipient(cjwk.JWK(**recipient.public.to_jwk()))
        token = outer.serialize(compact=True)
        opened = open_package(
            token,
            recipient="ec3",
            decryption_keys={recipient.thumbprint: recipient},
            broker_keys=BrokerKeyring.of(broker.public),
            now=now,
            replay=None,
        )
        assert opened.stix == _large_stix(pad)
        assert opened.inner_jws == signed.serialize(compact=True)


@pytest.mark.usefixtures("allow_eddsa")
@pytest.mark.parametrize("kind", ["Ed25519", "ES256"])
class TestSubmissionInterop:
    def test_joserfc_verifies_submission_when_we_sign_it(self, kind: KeyKind, now: int) -> None:
        key = PrivateKey.generate(kind)
        token = sign_submission(b'{"type":"bundle"}', key, org="bank-a", now=now)
        public = _joserfc_public(key)
        # joserfc refuses unregistered header parameters unless they are declared.
        registry = JWSRegistry(
            header_registry={
                "org": HeaderParameter("originator", "str", required=True),
                "iat": HeaderParameter("signing time", "int", required=True),
            },
            algorithms=[key.alg],
        )
        checked = fjws.deserialize_compact(token, public, registry=registry)
        assert checked.payload == b'{"type":"bundle"}'
        assert checked.protected["org"] == "bank-a"

    def test_we_verify_submission_when_jwcrypto_signs_it(self, kind: KeyKind, now: int) -> None:
        key = PrivateKey.generate(kind)
        signed = cjws.JWS(b"bundle bytes")
        signed.add_signature(
            cjwk.JWK.from_pyca(key._key),
            None,
            json.dumps(
                {
                    "alg": key.alg,
                    "kid": key.thumbprint,
                    "typ": "atlas-sub+jws",
                    "org": "bank-a",
                    "iat": now,
                }
            ),
        )
        header, payload = verify_submission(
            signed.serialize(compact=True), {key.thumbprint: key.public}, org="bank-a"
        )
        assert payload == b"bundle bytes"
        assert header["iat"] == now
