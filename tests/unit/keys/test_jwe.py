"""Hand-built compact JWE (ECDH-ES+A256KW, A256GCM) and every refusal."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.concatkdf import ConcatKDFHash
from jwcrypto import jwe as cjwe
from jwcrypto import jwk as cjwk

from keys import (
    DecryptionFailed,
    InvalidKey,
    KeyKind,
    KeyRegistryError,
    MalformedPackage,
    PrivateKey,
    PublicKey,
    WrongRecipientKey,
    jwe_decrypt,
    jwe_encrypt,
)
from keys._b64json import dumps_compact
from keys._jwe import _agree, _concat_kdf


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _header(token: str) -> dict[str, Any]:
    value: dict[str, Any] = json.loads(_unb64(token.split(".")[0]))
    return value


def _replace(token: str, index: int, part: str) -> str:
    parts = token.split(".")
    parts[index] = part
    return ".".join(parts)


@pytest.fixture(params=["X25519", "P-256"])
def recipient(request: pytest.FixtureRequest) -> PrivateKey:
    kind: KeyKind = request.param
    return PrivateKey.generate(kind)


@pytest.fixture
def rewrite() -> Callable[[str, dict[str, Any]], str]:
    """Replace the protected header (the tag then no longer verifies, which is fine for
    refusals checked before decryption)."""

    def _rewrite(token: str, changes: dict[str, Any]) -> str:
        header = {**_header(token), **changes}
        header = {k: v for k, v in header.items() if v is not None}
        return _replace(token, 0, _b64(json.dumps(header).encode()))

    return _rewrite


class TestJweEncrypt:
    def test_decrypts_when_encrypted_to_our_key(self, recipient: PrivateKey) -> None:
        token = jwe_encrypt(b"secret \x00", recipient.public, {"cty": "JWT"})
        header, plaintext = jwe_decrypt(token, {recipient.thumbprint: recipient})
        assert plaintext == b"secret \x00"
        assert list(header) == ["alg", "enc", "kid", "cty", "epk"]
        assert (header["alg"], header["enc"], header["kid"]) == (
            "ECDH-ES+A256KW",
            "A256GCM",
            recipient.thumbprint,
        )
        assert set(header["epk"]) == (
            {"kty", "crv", "x", "y"} if recipient.kind == "P-256" else {"kty", "crv", "x"}
        )

    @pytest.mark.parametrize(
        ("extra", "party"),
        [({}, b""), ({"cty": "JWT", "zz": '\u00e9\n"'}, b"Alice"), ({"n": [1, {"m": None}]}, b"")],
    )
    @pytest.mark.parametrize("kind", ["X25519", "P-256", "X-Wing"])
    def test_writes_header_as_compact_json_when_encrypting(
        self, kind: KeyKind, extra: dict[str, Any], party: bytes
    ) -> None:
        key = PrivateKey.generate(kind)
        parties = {"apu": party, "apv": party[::-1]} if kind != "X-Wing" else {}
        for _ in range(2):  # the second token reuses the cached start of the header
            token = jwe_encrypt(b"x", key.public, extra, **parties)
            written = _unb64(token.split(".")[0])
            header = json.loads(written)
            assert written == dumps_compact(header)
            assert list(header)[:3] == ["alg", "enc", "kid"]
            assert {k: header[k] for k in extra} == extra
            assert jwe_decrypt(token, {key.thumbprint: key}) == (header, b"x")

    @pytest.mark.parametrize(("apu", "apv"), [(b"", b""), (b"Alice", b""), (b"", b"Bob")])
    def test_concat_kdf_matches_cryptography_when_deriving(self, apu: bytes, apv: bytes) -> None:
        z = bytes(range(32))
        other_info = b"".join(
            len(part).to_bytes(4, "big") + part for part in (b"ECDH-ES+A256KW", apu, apv)
        )
        kdf = ConcatKDFHash(hashes.SHA256(), 32, other_info + (256).to_bytes(4, "big"))
        assert _concat_kdf(z, apu, apv) == kdf.derive(z)

    def test_decrypts_empty_plaintext_when_sealed(self, recipient: PrivateKey) -> None:
        token = jwe_encrypt(b"", recipient.public)
        assert jwe_decrypt(token, {recipient.thumbprint: recipient})[1] == b""

    def test_uses_fresh_ephemeral_key_when_encrypting_twice(self, recipient: PrivateKey) -> None:
        a = jwe_encrypt(b"x", recipient.public)
        b = jwe_encrypt(b"x", recipient.public)
        assert _header(a)["epk"] != _header(b)["epk"]

    def test_jwcrypto_decrypts_when_apu_and_apv_given(self, recipient: PrivateKey) -> None:
        token = jwe_encrypt(b"party info", recipient.public, apu=b"Alice", apv=b"Bob")
        header = _header(token)
        assert (header["apu"], header["apv"]) == (_b64(b"Alice"), _b64(b"Bob"))
        opened = cjwe.JWE()
        opened.deserialize(token, key=cjwk.JWK.from_pyca(recipient._key))
        assert opened.payload == b"party info"
        assert jwe_decrypt(token, {recipient.thumbprint: recipient})[1] == b"party info"

    def test_we_decrypt_when_jwcrypto_encrypts_with_apu_and_apv(
        self, recipient: PrivateKey
    ) -> None:
        header = {
            "alg": "ECDH-ES+A256KW",
            "enc": "A256GCM",
            "kid": recipient.thumbprint,
            "apu": _b64(b"A"),
            "apv": _b64(b"B"),
        }
        sealed = cjwe.JWE(b"from jwcrypto", json.dumps(header))
        sealed.add_recipient(cjwk.JWK(**recipient.public.to_jwk()))
        token = sealed.serialize(compact=True)
        assert jwe_decrypt(token, {recipient.thumbprint: recipient})[1] == b"from jwcrypto"

    @pytest.mark.parametrize("name", ["alg", "enc", "kid", "epk", "zip", "crit", "apu", "apv"])
    def test_raises_when_extra_header_sets_reserved_member(
        self, recipient: PrivateKey, name: str
    ) -> None:
        with pytest.raises(KeyRegistryError, match=f"may not set {name}"):
            jwe_encrypt(b"x", recipient.public, {name: "x"})

    def test_raises_when_recipient_key_is_for_signing(self) -> None:
        with pytest.raises(InvalidKey, match="not an encryption key"):
            jwe_encrypt(b"x", PrivateKey.generate("Ed25519").public)

    def test_raises_when_recipient_x25519_key_is_low_order(self) -> None:
        low_order = PublicKey.from_jwk({"kty": "OKP", "crv": "X25519", "x": _b64(bytes(32))})
        with pytest.raises(InvalidKey, match="low-order"):
            jwe_encrypt(b"x", low_order)

    def test_agree_raises_when_curves_differ(self) -> None:
        with pytest.raises(InvalidKey, match="different curves"):
            _agree(PrivateKey.generate("X25519"), PrivateKey.generate("P-256").public)


class TestJweDecrypt:
    @pytest.mark.parametrize(
        ("changes", "match"),
        [
            ({"alg": "ECDH-ES"}, "alg 'ECDH-ES' is not"),
            ({"alg": "RSA-OAEP"}, "alg 'RSA-OAEP' is not"),
            ({"alg": None}, "alg None is not"),
            ({"enc": "A128GCM"}, "enc 'A128GCM' is not"),
            ({"enc": "A256CBC-HS512"}, "enc 'A256CBC-HS512' is not"),
            ({"zip": "DEF"}, "'zip'"),
            ({"crit": ["x"], "x": 1}, "crit"),
            ({"kid": None}, "no string 'kid'"),
            ({"kid": 7}, "no string 'kid'"),
            ({"epk": None}, "no 'epk' object"),
            ({"epk": "x"}, "no 'epk' object"),
            ({"apu": 5}, "'apu' is not a string"),
            ({"apv": "a+b"}, "'apv' is not unpadded base64url"),
        ],
    )
    def test_raises_malformed_when_header_is_unacceptable(
        self,
        recipient: PrivateKey,
        rewrite: Callable[[str, dict[str, Any]], str],
        changes: dict[str, Any],
        match: str,
    ) -> None:
        token = rewrite(jwe_encrypt(b"x", recipient.public), changes)
        with pytest.raises(MalformedPackage, match=match):
            jwe_decrypt(token, {recipient.thumbprint: recipient})

    def test_raises_wrong_recipient_when_kid_is_not_ours(self, recipient: PrivateKey) -> None:
        other = PrivateKey.generate(recipient.kind)
        token = jwe_encrypt(b"x", other.public)
        with pytest.raises(WrongRecipientKey, match="not one of ours"):
            jwe_decrypt(token, {recipient.thumbprint: recipient})

    def test_raises_wrong_recipient_when_kid_maps_to_signing_key(self) -> None:
        recipient = PrivateKey.generate("X25519")
        token = jwe_encrypt(b"x", recipient.public)
        with pytest.raises(WrongRecipientKey):
            jwe_decrypt(token, {recipient.thumbprint: PrivateKey.generate("Ed25519")})

    def test_raises_decryption_failed_when_kid_maps_to_other_key_of_same_curve(
        self, recipient: PrivateKey
    ) -> None:
        token = jwe_encrypt(b"x", recipient.public)
        impostor = PrivateKey.generate(recipient.kind)
        with pytest.raises(DecryptionFailed):
            jwe_decrypt(token, {recipient.thumbprint: impostor})

    @pytest.mark.parametrize(
        ("epk", "match"),
        [
            ({"kty": "OKP", "crv": "X25519"}, "epk is invalid"),
            ({"kty": "OKP", "crv": "Ed25519", "x": _b64(bytes(32))}, "epk is invalid"),
            (
                {"kty": "EC", "crv": "P-256", "x": _b64(bytes(32)), "y": _b64(bytes(32))},
                "not on the curve",
            ),
            (
                {"kty": "OKP", "crv": "X25519", "x": _b64(bytes(32)), "d": _b64(bytes(32))},
                "private member",
            ),
        ],
    )
    def test_raises_malformed_when_epk_is_bad(
        self,
        recipient: PrivateKey,
        rewrite: Callable[[str, dict[str, Any]], str],
        epk: dict[str, str],
        match: str,
    ) -> None:
        token = rewrite(jwe_encrypt(b"x", recipient.public), {"epk": epk})
        with pytest.raises(MalformedPackage, match=match):
            jwe_decrypt(token, {recipient.thumbprint: recipient})

    def test_raises_malformed_when_epk_curve_differs_from_recipient(
        self, rewrite: Callable[[str, dict[str, Any]], str]
    ) -> None:
        recipient = PrivateKey.generate("X25519")
        epk = PrivateKey.generate("P-256").public.to_jwk()
        token = rewrite(jwe_encrypt(b"x", recipient.public), {"epk": epk})
        with pytest.raises(MalformedPackage, match="epk is a P-256 key"):
            jwe_decrypt(token, {recipient.thumbprint: recipient})

    def test_raises_malformed_when_epk_is_low_order_x25519_point(
        self, rewrite: Callable[[str, dict[str, Any]], str]
    ) -> None:
        recipient = PrivateKey.generate("X25519")
        epk = {"kty": "OKP", "crv": "X25519", "x": _b64(bytes(32))}
        token = rewrite(jwe_encrypt(b"x", recipient.public), {"epk": epk})
        with pytest.raises(MalformedPackage, match="low-order"):
            jwe_decrypt(token, {recipient.thumbprint: recipient})

    @pytest.mark.parametrize(
        ("index", "size", "match"),
        [
            (1, 32, "encrypted key is 32 bytes, expected 40"),
            (1, 48, "encrypted key is 48 bytes"),
            (2, 16, "initialization vector is 16 bytes, expected 12"),
            (4, 12, "authentication tag is 12 bytes, expected 16"),
        ],
    )
    def test_raises_malformed_when_part_length_is_wrong(
        self, recipient: PrivateKey, index: int, size: int, match: str
    ) -> None:
        token = _replace(jwe_encrypt(b"x", recipient.public), index, _b64(bytes(size)))
        with pytest.raises(MalformedPackage, match=match):
            jwe_decrypt(token, {recipient.thumbprint: recipient})

    @pytest.mark.parametrize("index", [1, 2, 3, 4])
    def test_raises_decryption_failed_when_binary_part_is_flipped(
        self, recipient: PrivateKey, index: int
    ) -> None:
        token = jwe_encrypt(b"some plaintext", recipient.public)
        raw = bytearray(_unb64(token.split(".")[index]))
        raw[0] ^= 0x01
        with pytest.raises(DecryptionFailed, match="does not verify"):
            jwe_decrypt(_replace(token, index, _b64(bytes(raw))), {recipient.thumbprint: recipient})

    def test_raises_decryption_failed_when_header_is_reencoded(
        self, recipient: PrivateKey, rewrite: Callable[[str, dict[str, Any]], str]
    ) -> None:
        token = jwe_encrypt(b"x", recipient.public)
        with pytest.raises(DecryptionFailed):
            jwe_decrypt(rewrite(token, {"extra": 1}), {recipient.thumbprint: recipient})

    @pytest.mark.parametrize("token", ["a.b.c", "a.b.c.d.e.f", ""])
    def test_raises_malformed_when_part_count_is_wrong(self, token: str) -> None:
        with pytest.raises(MalformedPackage, match="parts, expected 5"):
            jwe_decrypt(token, {})
