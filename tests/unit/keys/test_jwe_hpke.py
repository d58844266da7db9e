"""HPKE-9-KE compact JWE (X-Wing recipients), checked against independent evidence.

Two independent checks of our HPKE layer (we use ``cryptography.hazmat.primitives.hpke``):

1. the published test vector of draft-ietf-jose-hpke-pq-pqt-01 (HPKE-9-KE private JWK and
   JWE Compact Serialization) decrypts with our ``jwe_decrypt``;
2. a from-scratch construction in this file (X-Wing combiner of
   draft-connolly-cfrg-xwing-kem over the ML-KEM-768 and X25519 primitives, the one-stage
   SHAKE256 key schedule of draft-ietf-hpke-hpke, AES-256-GCM), itself validated against
   that vector, opens what we encrypt and encrypts what we open.

pyhpke (0.6.5) has no ML-KEM or X-Wing KEM, so it cannot serve here.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import mlkem, x25519
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from keys import (
    DecryptionFailed,
    InvalidKey,
    KeyRegistryError,
    MalformedPackage,
    PrivateKey,
    PublicKey,
    jwe_decrypt,
    jwe_encrypt,
)

VECTOR = json.loads((Path(__file__).parent / "data" / "hpke-9-ke.json").read_text())
INFO = b"JOSE-HPKE rcpt\xffA256GCM\xff"
SUITE_ID = b"HPKE" + bytes.fromhex("647a") + bytes.fromhex("0011") + bytes.fromhex("0002")
XWING_LABEL = b"\\.//^\\"


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


# --- an independent X-Wing + HPKE (one-stage SHAKE256 KDF, base mode) -------------------


def _lp(data: bytes) -> bytes:
    return len(data).to_bytes(2, "big") + data


def _labeled_derive(ikm: bytes, label: bytes, context: bytes, length: int) -> bytes:
    labeled = ikm + b"HPKE-v1" + SUITE_ID + _lp(label) + length.to_bytes(2, "big") + context
    return hashlib.shake_256(labeled).digest(length)


def _key_and_nonce(shared_secret: bytes, info: bytes) -> tuple[bytes, bytes]:
    # KeySchedule with a one-stage KDF, mode_base (0x00), empty psk and psk_id; Nh = 64.
    secret = _labeled_derive(
        _lp(b"") + _lp(shared_secret), b"secret", b"\x00" + _lp(b"") + _lp(info), 32 + 12 + 64
    )
    return secret[:32], secret[32:44]


def _combine(ss_m: bytes, ss_x: bytes, ct_x: bytes, pk_x: bytes) -> bytes:
    return hashlib.sha3_256(ss_m + ss_x + ct_x + pk_x + XWING_LABEL).digest()


def independent_open(seed: bytes, enc: bytes, ciphertext: bytes) -> bytes:
    expanded = hashlib.shake_256(seed).digest(96)
    sk_m = mlkem.MLKEM768PrivateKey.from_seed_bytes(expanded[:64])
    sk_x = x25519.X25519PrivateKey.from_private_bytes(expanded[64:])
    ct_m, ct_x = enc[:1088], enc[1088:]
    ss_x = sk_x.exchange(x25519.X25519PublicKey.from_public_bytes(ct_x))
    pk_x = sk_x.public_key().public_bytes_raw()
    key, nonce = _key_and_nonce(_combine(sk_m.decapsulate(ct_m), ss_x, ct_x, pk_x), INFO)
    return AESGCM(key).decrypt(nonce, ciphertext, b"")


def independent_seal(public: bytes, plaintext: bytes) -> tuple[bytes, bytes]:
    pk_m = mlkem.MLKEM768PublicKey.from_public_bytes(public[:1184])
    pk_x = public[1184:]
    ss_m, ct_m = pk_m.encapsulate()
    ephemeral = x25519.X25519PrivateKey.generate()
    ct_x = ephemeral.public_key().public_bytes_raw()
    ss_x = ephemeral.exchange(x25519.X25519PublicKey.from_public_bytes(pk_x))
    key, nonce = _key_and_nonce(_combine(ss_m, ss_x, ct_x, pk_x), INFO)
    return ct_m + ct_x, AESGCM(key).encrypt(nonce, plaintext, b"")


def _vector_key() -> PrivateKey:
    return PrivateKey.from_xwing_seed(_unb64(VECTOR["jwk"]["priv"]))


@pytest.fixture
def recipient() -> PrivateKey:
    return PrivateKey.generate("X-Wing")


@pytest.fixture
def rewrite() -> Callable[[str, dict[str, Any]], str]:
    def _rewrite(token: str, changes: dict[str, Any]) -> str:
        header = {**_header(token), **changes}
        header = {k: v for k, v in header.items() if v is not None}
        return _replace(token, 0, _b64(json.dumps(header).encode()))

    return _rewrite


class TestPublishedVector:
    def test_decrypts_draft_example_when_key_is_the_draft_jwk(self) -> None:
        key = _vector_key()
        header, plaintext = jwe_decrypt(VECTOR["compact"], {key.thumbprint: key})
        assert header["alg"] == "HPKE-9-KE"
        assert header["kid"] == VECTOR["jwk"]["kid"]
        assert plaintext.decode().startswith(VECTOR["plaintext_prefix"])

    def test_independent_construction_decrypts_draft_example_when_checked(self) -> None:
        parts = VECTOR["compact"].split(".")
        cek = independent_open(
            _unb64(VECTOR["jwk"]["priv"]),
            _unb64(_header(VECTOR["compact"])["ek"]),
            _unb64(parts[1]),
        )
        plaintext = AESGCM(cek).decrypt(
            _unb64(parts[2]), _unb64(parts[3]) + _unb64(parts[4]), parts[0].encode()
        )
        assert plaintext.decode().startswith(VECTOR["plaintext_prefix"])

    def test_raises_decryption_failed_when_vector_ek_is_altered(
        self, rewrite: Callable[[str, dict[str, Any]], str]
    ) -> None:
        key = _vector_key()
        ek = bytearray(_unb64(_header(VECTOR["compact"])["ek"]))
        ek[5] ^= 1
        with pytest.raises(DecryptionFailed, match="HPKE open failed"):
            jwe_decrypt(rewrite(VECTOR["compact"], {"ek": _b64(bytes(ek))}), {key.thumbprint: key})


class TestHpkeEncrypt:
    def test_writes_hpke_header_when_recipient_is_xwing(self, recipient: PrivateKey) -> None:
        token = jwe_encrypt(b"x", recipient.public, {"cty": "JWT"})
        header = _header(token)
        assert list(header) == ["alg", "enc", "kid", "cty", "ek"]
        assert (header["alg"], header["enc"], header["kid"]) == (
            "HPKE-9-KE",
            "A256GCM",
            recipient.thumbprint,
        )
        assert len(_unb64(header["ek"])) == 1120
        assert [len(_unb64(p)) for p in token.split(".")[1:]] == [48, 12, 1, 16]

    def test_independent_construction_opens_ours_when_we_encrypt(
        self, recipient: PrivateKey
    ) -> None:
        token = jwe_encrypt(b"sealed for a PQ recipient", recipient.public)
        h_part, k_part, iv, ciphertext, tag = token.split(".")
        seed = recipient._key.seed  # type: ignore[union-attr]
        cek = independent_open(seed, _unb64(_header(token)["ek"]), _unb64(k_part))
        plaintext = AESGCM(cek).decrypt(
            _unb64(iv), _unb64(ciphertext) + _unb64(tag), h_part.encode()
        )
        assert plaintext == b"sealed for a PQ recipient"

    def test_we_decrypt_when_independent_construction_encrypts(self, recipient: PrivateKey) -> None:
        cek = bytes(range(32))
        enc, encrypted_key = independent_seal(_unb64(recipient.public.to_jwk()["pub"]), cek)
        header = {
            "alg": "HPKE-9-KE",
            "kid": recipient.thumbprint,
            "enc": "A256GCM",
            "ek": _b64(enc),
        }
        h_part = _b64(json.dumps(header).encode())
        iv = b"\x01" * 12
        sealed = AESGCM(cek).encrypt(iv, b"from elsewhere", h_part.encode())
        token = ".".join(
            [h_part, _b64(encrypted_key), _b64(iv), _b64(sealed[:-16]), _b64(sealed[-16:])]
        )
        assert jwe_decrypt(token, {recipient.thumbprint: recipient})[1] == b"from elsewhere"

    def test_uses_fresh_encapsulation_when_encrypting_twice(self, recipient: PrivateKey) -> None:
        a = jwe_encrypt(b"x", recipient.public)
        b = jwe_encrypt(b"x", recipient.public)
        assert _header(a)["ek"] != _header(b)["ek"]

    def test_raises_invalid_key_when_xwing_key_has_low_order_x25519_half(
        self, recipient: PrivateKey
    ) -> None:
        raw = _unb64(recipient.public.to_jwk()["pub"])
        bad = PublicKey.from_jwk(
            {"kty": "AKP", "alg": "HPKE-9-KE", "pub": _b64(raw[:1184] + bytes(32))}
        )
        with pytest.raises(InvalidKey, match="is unusable"):
            jwe_encrypt(b"x", bad)

    @pytest.mark.parametrize(("apu", "apv"), [(b"A", b""), (b"", b"B")])
    def test_raises_when_apu_or_apv_given_for_hpke(
        self, recipient: PrivateKey, apu: bytes, apv: bytes
    ) -> None:
        with pytest.raises(KeyRegistryError, match="apu/apv are not used with HPKE-9-KE"):
            jwe_encrypt(b"x", recipient.public, apu=apu, apv=apv)

    @pytest.mark.parametrize("name", ["ek", "psk_id"])
    def test_raises_when_extra_header_sets_hpke_member(
        self, recipient: PrivateKey, name: str
    ) -> None:
        with pytest.raises(KeyRegistryError, match=f"may not set {name}"):
            jwe_encrypt(b"x", recipient.public, {name: "x"})


class TestHpkeDecrypt:
    @pytest.mark.parametrize(
        ("changes", "match"),
        [
            ({"epk": {"kty": "OKP"}}, "epk not used with HPKE-9-KE"),
            ({"apu": "QQ"}, "apu not used with"),
            ({"apv": "QQ"}, "apv not used with"),
            ({"psk_id": "cHNr"}, "psk_id not used with"),
            ({"ek": None}, "no string 'ek'"),
            ({"ek": 5}, "no string 'ek'"),
            ({"ek": _b64(bytes(1119))}, "'ek' is 1119 bytes, expected 1120"),
            ({"ek": "a+b"}, "not unpadded base64url"),
            ({"alg": "HPKE-10-KE"}, "alg 'HPKE-10-KE' is not"),
            ({"alg": "ECDH-ES+A256KW"}, "ek not used with ECDH-ES"),
            ({"alg": "ECDH-ES+A256KW", "ek": None}, "does not fit our X-Wing key"),
            ({"enc": "A128GCM"}, "enc 'A128GCM' is not"),
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

    @pytest.mark.parametrize("kind", ["X25519", "P-256"])
    def test_raises_malformed_when_hpke_alg_names_a_classical_key(
        self, rewrite: Callable[[str, dict[str, Any]], str], kind: Any
    ) -> None:
        classical = PrivateKey.generate(kind)
        token = rewrite(jwe_encrypt(b"x", classical.public), {"alg": "HPKE-9-KE", "epk": None})
        with pytest.raises(MalformedPackage, match=f"does not fit our {kind} key"):
            jwe_decrypt(token, {classical.thumbprint: classical})

    def test_raises_malformed_when_ecdh_header_has_ek(
        self, rewrite: Callable[[str, dict[str, Any]], str]
    ) -> None:
        classical = PrivateKey.generate("X25519")
        token = rewrite(jwe_encrypt(b"x", classical.public), {"ek": "AA"})
        with pytest.raises(MalformedPackage, match="ek not used with ECDH-ES"):
            jwe_decrypt(token, {classical.thumbprint: classical})

    @pytest.mark.parametrize("size", [40, 47, 49])
    def test_raises_malformed_when_encrypted_key_length_is_wrong(
        self, recipient: PrivateKey, size: int
    ) -> None:
        token = _replace(jwe_encrypt(b"x", recipient.public), 1, _b64(bytes(size)))
        with pytest.raises(MalformedPackage, match=f"encrypted key is {size} bytes, expected 48"):
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

    def test_raises_decryption_failed_when_another_xwing_key_claims_the_kid(
        self, recipient: PrivateKey
    ) -> None:
        token = jwe_encrypt(b"x", recipient.public)
        impostor = PrivateKey.generate("X-Wing")
        with pytest.raises(DecryptionFailed, match="HPKE open failed"):
            jwe_decrypt(token, {recipient.thumbprint: impostor})

    def test_raises_decryption_failed_when_ek_has_low_order_x25519_part(
        self, recipient: PrivateKey, rewrite: Callable[[str, dict[str, Any]], str]
    ) -> None:
        token = jwe_encrypt(b"x", recipient.public)
        ek = _unb64(_header(token)["ek"])[:1088] + bytes(32)
        with pytest.raises(DecryptionFailed):
            jwe_decrypt(rewrite(token, {"ek": _b64(ek)}), {recipient.thumbprint: recipient})
