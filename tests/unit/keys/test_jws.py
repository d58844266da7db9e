"""Hand-built compact JWS: signing, verification and every refusal."""

from __future__ import annotations

import base64
import json
import warnings
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519
from joserfc import jwk as fjwk
from joserfc import jws as fjws
from joserfc.errors import SecurityWarning
from jwcrypto import jwk as cjwk
from jwcrypto import jws as cjws

from keys import (
    InvalidKey,
    KeyKind,
    KeyRegistryError,
    MalformedPackage,
    PrivateKey,
    SignatureInvalid,
    UnknownSigningKey,
    jws_sign,
    jws_verify,
)
from keys._jws import _sign, _verify


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _raw(key: PrivateKey) -> str:
    raw = key._key
    assert isinstance(raw, ed25519.Ed25519PrivateKey)
    return _b64(raw.private_bytes_raw())


def _with_header(token: str, header: dict[str, Any] | bytes) -> str:
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    return ".".join([_b64(raw), *token.split(".")[1:]])


@pytest.fixture(params=["Ed25519", "ES256"])
def signer(request: pytest.FixtureRequest) -> PrivateKey:
    kind: KeyKind = request.param
    return PrivateKey.generate(kind)


class TestJwsSign:
    def test_verifies_when_signed_and_checked_with_same_key(self, signer: PrivateKey) -> None:
        token = jws_sign(b"payload \x00\xff", signer, {"typ": "x+jwt"})
        header, payload = jws_verify(token, {signer.thumbprint: signer.public})
        assert payload == b"payload \x00\xff"
        assert header == {"alg": signer.alg, "kid": signer.thumbprint, "typ": "x+jwt"}
        assert list(header) == ["alg", "kid", "typ"]

    def test_accepts_bytes_when_token_is_ascii(self, signer: PrivateKey) -> None:
        token = jws_sign(b"p", signer)
        assert jws_verify(token.encode(), {signer.thumbprint: signer.public})[1] == b"p"

    def test_verifies_with_jwcrypto_when_signed_by_us(self, signer: PrivateKey) -> None:
        token = jws_sign(b"hello", signer)
        checker = cjws.JWS()
        checker.deserialize(token)
        checker.verify(cjwk.JWK(**signer.public.to_jwk()))
        assert checker.payload == b"hello"

    @pytest.mark.parametrize("name", ["alg", "kid", "crit", "b64"])
    def test_raises_when_extra_header_sets_reserved_member(
        self, signer: PrivateKey, name: str
    ) -> None:
        with pytest.raises(KeyRegistryError, match=f"may not set {name}"):
            jws_sign(b"p", signer, {name: "x"})

    def test_raises_when_key_is_for_encryption(self) -> None:
        with pytest.raises(InvalidKey, match="not a signing key"):
            jws_sign(b"p", PrivateKey.generate("X25519"))


class TestPrimitives:
    def test_sign_raises_when_key_cannot_sign(self) -> None:
        with pytest.raises(InvalidKey, match="cannot sign"):
            _sign(PrivateKey.generate("X25519"), b"data")

    def test_verify_raises_when_key_cannot_verify(self) -> None:
        with pytest.raises(SignatureInvalid, match="cannot verify"):
            _verify(PrivateKey.generate("X25519").public, bytes(64), b"data")


class TestJwsVerify:
    def test_verifies_received_bytes_when_header_is_not_compact_json(
        self, signer: PrivateKey
    ) -> None:
        header = b'{ "alg" : "%s",\n "kid": "%s" }' % (
            signer.alg.encode(),
            signer.thumbprint.encode(),
        )
        signing_input = _b64(header) + "." + _b64(b"exact")
        signed = jws_sign(b"exact", signer).split(".")
        # Re-sign the odd header with jwcrypto: we must verify it as received.
        checker = cjws.JWS(b"exact")
        checker.add_signature(cjwk.JWK.from_pyca(signer._key), None, header.decode())
        token = checker.serialize(compact=True)
        assert token.split(".")[0] == _b64(header)
        assert token.startswith(signing_input)
        assert signed[0] != token.split(".")[0]
        assert jws_verify(token, {signer.thumbprint: signer.public})[1] == b"exact"

    def test_accepts_rfc9864_alg_when_joserfc_signs_with_ed25519(self) -> None:
        key = PrivateKey.generate("Ed25519")
        signing = fjwk.import_key(
            {"kty": "OKP", "crv": "Ed25519", "x": key.public.to_jwk()["x"], "d": _raw(key)}, "OKP"
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SecurityWarning)
            token = fjws.serialize_compact(
                {"alg": "Ed25519", "kid": key.thumbprint}, b"p", signing, algorithms=["Ed25519"]
            )
        assert jws_verify(token, {key.thumbprint: key.public})[0]["alg"] == "Ed25519"

    @pytest.mark.parametrize("alg", ["none", "None", "NONE"])
    def test_raises_when_alg_is_none(self, signer: PrivateKey, alg: str) -> None:
        token = _with_header(jws_sign(b"p", signer), {"alg": alg, "kid": signer.thumbprint})
        with pytest.raises(SignatureInvalid, match="alg 'none'"):
            jws_verify(token.rsplit(".", 1)[0] + ".", {signer.thumbprint: signer.public})

    @pytest.mark.parametrize(
        ("header", "error", "match"),
        [
            ({"kid": "k"}, MalformedPackage, "no string 'alg'"),
            ({"alg": "EdDSA"}, MalformedPackage, "no string 'kid'"),
            ({"alg": "EdDSA", "kid": "k", "crit": ["exp"], "exp": 1}, MalformedPackage, "crit"),
            ({"alg": "EdDSA", "kid": "k", "b64": False}, MalformedPackage, "b64"),
            ({"alg": "EdDSA", "kid": "unknown"}, UnknownSigningKey, "'unknown'"),
        ],
    )
    def test_raises_when_header_is_unacceptable(
        self, header: dict[str, Any], error: type[Exception], match: str
    ) -> None:
        key = PrivateKey.generate("Ed25519")
        header = {**header, "kid": key.thumbprint} if header.get("kid") == "k" else header
        token = _with_header(jws_sign(b"p", key), header)
        with pytest.raises(error, match=match):
            jws_verify(token, {key.thumbprint: key.public})

    @pytest.mark.parametrize("alg", ["ES256", "HS256", "RS256", "EdDSA"])
    def test_raises_when_alg_does_not_match_key(self, alg: str) -> None:
        key = PrivateKey.generate("ES256") if alg == "EdDSA" else PrivateKey.generate("Ed25519")
        token = _with_header(jws_sign(b"p", key), {"alg": alg, "kid": key.thumbprint})
        with pytest.raises(SignatureInvalid, match="does not match"):
            jws_verify(token, {key.thumbprint: key.public})

    def test_raises_when_kid_maps_to_encryption_key(self) -> None:
        signer = PrivateKey.generate("Ed25519")
        enc = PrivateKey.generate("X25519").public
        with pytest.raises(SignatureInvalid, match="does not match"):
            jws_verify(jws_sign(b"p", signer), {signer.thumbprint: enc})

    def test_raises_when_payload_is_changed(self, signer: PrivateKey) -> None:
        h, _, s = jws_sign(b"original", signer).split(".")
        with pytest.raises(SignatureInvalid, match="does not verify"):
            jws_verify(f"{h}.{_b64(b'forged')}.{s}", {signer.thumbprint: signer.public})

    def test_raises_when_signed_by_other_key_with_same_kid(self, signer: PrivateKey) -> None:
        other = PrivateKey.generate(signer.kind)
        with pytest.raises(SignatureInvalid, match="does not verify"):
            jws_verify(jws_sign(b"p", signer), {signer.thumbprint: other.public})

    @pytest.mark.parametrize("size", [0, 63, 65, 72])
    def test_raises_when_signature_length_is_wrong(self, signer: PrivateKey, size: int) -> None:
        h, p, _ = jws_sign(b"p", signer).split(".")
        with pytest.raises(SignatureInvalid, match=f"{size} bytes"):
            jws_verify(f"{h}.{p}.{_b64(bytes(size))}", {signer.thumbprint: signer.public})

    @pytest.mark.parametrize(
        ("token", "match"),
        [
            ("a.b", "2 parts"),
            ("a.b.c.d", "4 parts"),
            ("é.b.c", "not ASCII"),
            (b"\xff.b.c", "not ASCII"),
            (12, "int, not str or bytes"),
            ("A+A.e30.AA", "not unpadded base64url"),
            ("AA==.e30.AA", "not unpadded base64url"),
            ("A.e30.AA", "not unpadded base64url"),
            ("AB.e30.AA", "non-canonical"),
            ("AAB.e30.AA", "non-canonical"),
            ("e30 .e30.AA", "not unpadded base64url"),
            (_b64(b"[1]") + ".e30.AA", "not a JSON object"),
            (_b64(b'{"alg":"a","alg":"b"}') + ".e30.AA", "duplicate member 'alg'"),
            (_b64(b'{"x":NaN}') + ".e30.AA", "non-standard JSON constant NaN"),
            (_b64(b"\xff{}") + ".e30.AA", "not valid UTF-8 JSON"),
            (_b64(b"\xef\xbb\xbf{}") + ".e30.AA", "not valid UTF-8 JSON"),
            (_b64(b"[" * 100_000) + ".e30.AA", "longer than"),
            ("A" * 9000 + ".e30.AA", "longer than"),
        ],
    )
    def test_raises_malformed_when_token_is_not_compact_jws(self, token: Any, match: str) -> None:
        with pytest.raises(MalformedPackage, match=match):
            jws_verify(token, {})

    def test_raises_malformed_when_header_nests_too_deep(self) -> None:
        token = _b64(b"[" * 5000 + b"]" * 5000) + ".e30.AA"
        with pytest.raises(MalformedPackage):
            jws_verify(token, {})
