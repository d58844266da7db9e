"""JWK parsing, RFC 7638 thumbprints and the key wrappers."""

from __future__ import annotations

import pickle
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwcrypto import jwk as cjwk

from keys import InvalidKey, KeyKind, PrivateKey, PublicKey, jwk_thumbprint

RFC7638_JWK = {
    "kty": "RSA",
    "n": (
        "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_"
        "BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_"
        "FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI"
        "4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw"
    ),
    "e": "AQAB",
    "alg": "RS256",
    "kid": "2011-04-29",
}
RFC7638_THUMBPRINT = "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
# RFC 8037 appendix A.2/A.3: the Ed25519 public key and its thumbprint.
RFC8037_JWK = {"kty": "OKP", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}
RFC8037_THUMBPRINT = "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"
ALL_KINDS: tuple[KeyKind, ...] = ("Ed25519", "ES256", "X25519", "P-256")


class TestJwkThumbprint:
    def test_matches_rfc7638_example_when_rsa_key_has_optional_members(self) -> None:
        assert jwk_thumbprint(RFC7638_JWK) == RFC7638_THUMBPRINT

    def test_matches_rfc8037_example_when_key_is_ed25519(self) -> None:
        assert jwk_thumbprint(RFC8037_JWK) == RFC8037_THUMBPRINT
        assert PublicKey.from_jwk(RFC8037_JWK).thumbprint == RFC8037_THUMBPRINT

    @pytest.mark.parametrize("kind", ALL_KINDS)
    def test_agrees_with_jwcrypto_when_key_is_generated(self, kind: KeyKind) -> None:
        public = PrivateKey.generate(kind).public
        assert public.thumbprint == cjwk.JWK(**public.to_jwk()).thumbprint()

    def test_hashes_only_k_and_kty_when_key_is_oct(self) -> None:
        jwk = {
            "kty": "oct",
            "k": "AyM1SysPpbyDfgZld3umj1qzKObwVMkoqQ-EstJQLr_T-1qS0gZH75aK"
            "tMN3Yj0iPS4hcgUuTwjAzZr1Z9CAow",
        }
        assert jwk_thumbprint(jwk) == cjwk.JWK(**jwk).thumbprint()

    @pytest.mark.parametrize("jwk", [{}, {"kty": "XYZ"}, {"kty": 1}])
    def test_raises_when_kty_is_unsupported(self, jwk: dict[str, Any]) -> None:
        with pytest.raises(InvalidKey, match="kty"):
            jwk_thumbprint(jwk)

    def test_raises_when_required_member_is_missing(self) -> None:
        with pytest.raises(InvalidKey, match="'y'"):
            jwk_thumbprint({"kty": "EC", "crv": "P-256", "x": "AA"})


class TestPublicKeyFromJwk:
    @pytest.mark.parametrize("kind", ALL_KINDS)
    def test_round_trips_when_jwk_is_our_own_export(self, kind: KeyKind) -> None:
        public = PrivateKey.generate(kind).public
        again = PublicKey.from_jwk(public.to_jwk())
        assert again == public
        assert again.kind == kind
        assert hash(again) == hash(public)

    @pytest.mark.parametrize(
        ("kind", "kty", "crv", "use", "alg"),
        [
            ("Ed25519", "OKP", "Ed25519", "sig", "EdDSA"),
            ("ES256", "EC", "P-256", "sig", "ES256"),
            ("X25519", "OKP", "X25519", "enc", "ECDH-ES+A256KW"),
            ("P-256", "EC", "P-256", "enc", "ECDH-ES+A256KW"),
        ],
    )
    def test_exports_kid_use_and_alg_when_converted_to_jwk(
        self, kind: KeyKind, kty: str, crv: str, use: str, alg: str
    ) -> None:
        public = PrivateKey.generate(kind).public
        jwk = public.to_jwk()
        assert (jwk["kty"], jwk["crv"], jwk["use"], jwk["alg"]) == (kty, crv, use, alg)
        assert jwk["kid"] == public.thumbprint
        assert (public.use, public.alg, public.crv) == (use, alg, crv)
        assert ("y" in jwk) == (kty == "EC")

    @pytest.mark.parametrize("alg", ["ECDH-ES", "ECDH-ES+A256KW"])
    def test_infers_encryption_when_p256_jwk_has_ecdh_alg(self, alg: str) -> None:
        jwk = PrivateKey.generate("P-256").public.to_jwk()
        del jwk["use"]
        jwk["alg"] = alg
        assert PublicKey.from_jwk(jwk).kind == "P-256"

    def test_uses_explicit_use_when_p256_jwk_has_no_hints(self) -> None:
        jwk = PrivateKey.generate("ES256").public.to_jwk()
        del jwk["use"], jwk["alg"]
        assert PublicKey.from_jwk(jwk, use="sig").kind == "ES256"
        assert PublicKey.from_jwk(jwk, use="enc").kind == "P-256"

    def test_accepts_rfc9864_alg_when_key_is_ed25519(self) -> None:
        assert PublicKey.from_jwk({**RFC8037_JWK, "alg": "Ed25519"}).kind == "Ed25519"

    def test_raises_when_p256_jwk_has_neither_use_nor_alg(self) -> None:
        jwk = PrivateKey.generate("ES256").public.to_jwk()
        del jwk["use"], jwk["alg"]
        with pytest.raises(InvalidKey, match="needs 'use' or 'alg'"):
            PublicKey.from_jwk(jwk)

    @pytest.mark.parametrize("member", ["d", "p", "q", "dp", "dq", "qi", "oth", "k"])
    def test_raises_when_public_jwk_has_private_member(self, member: str) -> None:
        with pytest.raises(InvalidKey, match=f"private member.*{member}"):
            PublicKey.from_jwk({**RFC8037_JWK, member: "AAAA"})

    @pytest.mark.parametrize(
        "jwk",
        [
            {"kty": "RSA", "n": "AQAB", "e": "AQAB"},
            {"kty": "OKP", "crv": "Ed448", "x": "AA"},
            {"kty": "EC", "crv": "P-384", "x": "AA", "y": "AA"},
            {"kty": "EC", "crv": "Ed25519", "x": "AA"},
            {"crv": "X25519", "x": "AA"},
        ],
    )
    def test_raises_when_kty_or_crv_is_unsupported(self, jwk: dict[str, Any]) -> None:
        with pytest.raises(InvalidKey, match="unsupported JWK kty/crv"):
            PublicKey.from_jwk(jwk)

    def test_raises_when_jwk_is_not_a_mapping(self) -> None:
        with pytest.raises(InvalidKey, match="not a JSON object"):
            PublicKey.from_jwk(["kty", "OKP"])  # type: ignore[arg-type]

    @pytest.mark.parametrize(
        ("extra", "match"),
        [
            ({"use": "enc"}, "contradictory"),
            ({"use": "wrap"}, "use 'wrap'"),
            ({"alg": "RS256"}, "alg 'RS256' is not supported"),
            ({"alg": "ECDH-ES"}, "contradictory"),
            ({"alg": "ES256"}, "does not fit"),
            ({"y": "AA"}, "must not have a 'y'"),
        ],
    )
    def test_raises_when_ed25519_jwk_hints_conflict(
        self, extra: dict[str, str], match: str
    ) -> None:
        with pytest.raises(InvalidKey, match=match):
            PublicKey.from_jwk({**RFC8037_JWK, **extra})

    def test_raises_when_explicit_use_is_not_sig_or_enc(self) -> None:
        jwk = PrivateKey.generate("ES256").public.to_jwk()
        del jwk["use"], jwk["alg"]
        with pytest.raises(InvalidKey, match="cannot be used for 'wrap'"):
            PublicKey.from_jwk(jwk, use="wrap")  # type: ignore[arg-type]

    @pytest.mark.parametrize(
        ("x", "match"),
        [
            (None, "missing or not a string"),
            (12, "missing or not a string"),
            ("11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHUR", "non-canonical"),
            ("11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo=", "not unpadded base64url"),
            ("AAAA", "is 3 bytes, expected 32"),
        ],
    )
    def test_raises_when_coordinate_is_bad(self, x: object, match: str) -> None:
        with pytest.raises(InvalidKey, match=match):
            PublicKey.from_jwk({**RFC8037_JWK, "x": x})

    def test_raises_when_p256_point_is_not_on_curve(self) -> None:
        jwk = PrivateKey.generate("P-256").public.to_jwk()
        jwk["y"] = jwk["x"]
        with pytest.raises(InvalidKey, match="not on the curve"):
            PublicKey.from_jwk(jwk)


class TestPublicKeyFromCryptography:
    def test_wraps_key_when_use_fits(self) -> None:
        raw = ec.generate_private_key(ec.SECP256R1()).public_key()
        assert PublicKey.from_cryptography(raw, use="enc").kind == "P-256"
        assert PublicKey.from_cryptography(PrivateKey.generate("X25519").public._key).use == "enc"

    def test_raises_when_p256_key_has_no_use(self) -> None:
        raw = ec.generate_private_key(ec.SECP256R1()).public_key()
        with pytest.raises(InvalidKey, match="needs use="):
            PublicKey.from_cryptography(raw)

    def test_raises_when_curve_is_not_p256(self) -> None:
        raw = ec.generate_private_key(ec.SECP384R1()).public_key()
        with pytest.raises(InvalidKey, match="secp384r1"):
            PublicKey.from_cryptography(raw, use="sig")

    def test_raises_when_key_type_is_unsupported(self) -> None:
        raw = rsa.generate_private_key(65537, 2048).public_key()
        with pytest.raises(InvalidKey, match="unsupported key type"):
            PublicKey.from_cryptography(raw)  # type: ignore[arg-type]

    @pytest.mark.parametrize(("source", "kind"), [("Ed25519", "X25519"), ("X25519", "ES256")])
    def test_raises_when_constructed_with_wrong_kind(self, source: KeyKind, kind: KeyKind) -> None:
        with pytest.raises(InvalidKey, match=f"is not a '{kind}' key"):
            PublicKey(PrivateKey.generate(source).public._key, kind)

    def test_raises_when_constructed_with_unknown_kind(self) -> None:
        with pytest.raises(InvalidKey, match="is not a 'RSA' key"):
            PublicKey(PrivateKey.generate("X25519").public._key, "RSA")  # type: ignore[arg-type]

    def test_raises_when_use_does_not_fit_okp_key(self) -> None:
        with pytest.raises(InvalidKey, match="cannot be used for 'enc'"):
            PublicKey.from_cryptography(PrivateKey.generate("Ed25519").public._key, use="enc")


class TestKeyObjects:
    def test_refuses_mutation_when_public_key_is_frozen(self) -> None:
        public = PrivateKey.generate("Ed25519").public
        with pytest.raises(AttributeError, match="immutable"):
            public._kind = "X25519"
        with pytest.raises(AttributeError, match="immutable"):
            del public._kind

    def test_refuses_mutation_when_private_key_is_frozen(self) -> None:
        key = PrivateKey.generate("Ed25519")
        with pytest.raises(AttributeError, match="immutable"):
            key._key = None  # type: ignore[assignment]
        with pytest.raises(AttributeError, match="immutable"):
            del key._key

    def test_compares_unequal_when_other_is_not_a_public_key(self) -> None:
        public = PrivateKey.generate("X25519").public
        assert public != public.thumbprint
        assert public != PrivateKey.generate("X25519").public

    @pytest.mark.parametrize("kind", ALL_KINDS)
    def test_shows_only_kind_and_kid_when_repr(self, kind: KeyKind) -> None:
        key = PrivateKey.generate(kind)
        assert repr(key) == f"PrivateKey(kind={kind!r}, kid={key.thumbprint!r})"
        assert repr(key.public) == f"PublicKey(kind={kind!r}, kid={key.thumbprint!r})"
        assert (key.kind, key.use, key.alg) == (kind, key.public.use, key.public.alg)

    def test_refuses_pickling_when_key_is_private(self) -> None:
        with pytest.raises(TypeError, match="cannot be pickled"):
            pickle.dumps(PrivateKey.generate("Ed25519"))

    def test_raises_when_generating_unknown_kind(self) -> None:
        with pytest.raises(InvalidKey, match="unknown key kind 'RSA'"):
            PrivateKey.generate("RSA")  # type: ignore[arg-type]

    def test_wraps_private_key_when_from_cryptography(self) -> None:
        raw = ec.generate_private_key(ec.SECP256R1())
        assert PrivateKey.from_cryptography(raw, use="sig").kind == "ES256"

    def test_raises_when_private_key_type_is_unsupported(self) -> None:
        with pytest.raises(InvalidKey, match="RSAPrivateKey"):
            PrivateKey.from_cryptography(rsa.generate_private_key(65537, 2048))


class TestSignRaw:
    def test_signature_verifies_when_key_is_ed25519(self) -> None:
        from keys import PrivateKey

        key = PrivateKey.generate("Ed25519")
        signature = key.sign_raw(b"note text")
        public = key._key.public_key()  # the cryptography key, to verify independently
        public.verify(signature, b"note text")

    def test_refused_when_key_is_not_ed25519(self) -> None:
        import pytest

        from keys import InvalidKey, PrivateKey

        with pytest.raises(InvalidKey, match="needs an Ed25519 key"):
            PrivateKey.generate("ES256").sign_raw(b"x")
