"""X-Wing key files: private AKP JWK, or its PBES2-HS512+A256KW JWE with a passphrase."""

from __future__ import annotations

import base64
import json
import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from joserfc import jwe as fjwe
from joserfc.jwk import OctKey

from keys import (
    InvalidKey,
    KeyFileError,
    PrivateKey,
    generate_org_keys,
    load_private_key,
    write_private_key,
)
from keys._jwkfile import PBES2_COUNT, dump_jwk_file, is_jwk_file

ALGS = ["PBES2-HS512+A256KW", "A256GCM"]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _private_file(path: Path, data: bytes) -> Path:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    return path


@pytest.fixture
def xwing() -> PrivateKey:
    return PrivateKey.generate("X-Wing")


@pytest.fixture
def reheader() -> Callable[[bytes, dict[str, Any]], bytes]:
    """Replace members of an encrypted file's JWE header (the AAD then changes too)."""

    def _reheader(data: bytes, changes: dict[str, Any]) -> bytes:
        parts = data.decode().strip().split(".")
        header = {**json.loads(_unb64(parts[0])), **changes}
        header = {k: v for k, v in header.items() if v is not None}
        parts[0] = _b64(json.dumps(header).encode())
        return ".".join(parts).encode()

    return _reheader


class TestPlainXWingFile:
    def test_round_trips_when_written_without_passphrase(
        self, tmp_path: Path, xwing: PrivateKey
    ) -> None:
        path = tmp_path / "k.enc.jwk"
        old = os.umask(0)
        try:
            write_private_key(path, xwing)
        finally:
            os.umask(old)
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        jwk = json.loads(path.read_bytes())
        assert list(jwk) == ["kty", "alg", "pub", "priv", "kid", "use"]
        assert (jwk["kty"], jwk["alg"], jwk["kid"], jwk["use"]) == (
            "AKP",
            "HPKE-9-KE",
            xwing.thumbprint,
            "enc",
        )
        assert len(_unb64(jwk["priv"])) == 32
        loaded = load_private_key(path)
        assert loaded.public == xwing.public
        assert load_private_key(path, use="enc").kind == "X-Wing"

    def test_refuses_when_file_is_world_readable(self, tmp_path: Path, xwing: PrivateKey) -> None:
        path = tmp_path / "k.enc.jwk"
        write_private_key(path, xwing)
        path.chmod(0o644)
        with pytest.raises(KeyFileError, match="has mode 0644"):
            load_private_key(path)

    def test_refuses_when_use_sig_is_requested(self, tmp_path: Path, xwing: PrivateKey) -> None:
        path = tmp_path / "k.jwk"
        write_private_key(path, xwing)
        with pytest.raises(KeyFileError, match="X-Wing encryption key, not 'sig'"):
            load_private_key(path, use="sig")

    def test_raises_when_passphrase_given_for_plain_file(
        self, tmp_path: Path, xwing: PrivateKey
    ) -> None:
        path = tmp_path / "k.jwk"
        write_private_key(path, xwing)
        with pytest.raises(KeyFileError, match="is not encrypted"):
            load_private_key(path, passphrase=b"pw")

    @pytest.mark.parametrize(
        ("change", "match"),
        [
            ({"kty": "OKP"}, "kty 'OKP' is not 'AKP'"),
            ({"kid": "someone-else"}, "not the key's RFC 7638 thumbprint"),
            ({"priv": _b64(b"z" * 32)}, "does not belong"),
            ({"priv": _b64(b"z" * 31)}, "32-byte seed"),
            ({"alg": "HPKE-10-KE"}, "not supported"),
            ({"use": "sig"}, "cannot be used for 'sig'"),
        ],
    )
    def test_raises_when_jwk_is_inconsistent(
        self, tmp_path: Path, xwing: PrivateKey, change: dict[str, str], match: str
    ) -> None:
        jwk = {**json.loads(dump_jwk_file(xwing, None)), **change}
        path = _private_file(tmp_path / "k.jwk", json.dumps(jwk).encode())
        with pytest.raises(KeyFileError, match=match):
            load_private_key(path)

    def test_raises_when_json_is_not_an_object(self, tmp_path: Path) -> None:
        path = _private_file(tmp_path / "k.jwk", b'{"kty": "AKP", "kty": "AKP"}')
        with pytest.raises(KeyFileError, match="duplicate member"):
            load_private_key(path)

    def test_refuses_to_dump_a_classical_key_as_jwk(self) -> None:
        with pytest.raises(InvalidKey, match="only X-Wing keys"):
            dump_jwk_file(PrivateKey.generate("X25519"), None)

    @pytest.mark.parametrize(
        ("data", "expected"),
        [(b" {", True), (b"eyJh", True), (b"-----BEGIN PRIVATE KEY-----", False), (b"", False)],
    )
    def test_tells_jwk_from_pem_when_sniffing(self, data: bytes, expected: bool) -> None:
        assert is_jwk_file(data) is expected


class TestEncryptedXWingFile:
    def test_round_trips_when_passphrase_matches(self, tmp_path: Path, xwing: PrivateKey) -> None:
        path = tmp_path / "k.enc.jwk"
        write_private_key(path, xwing, passphrase=b"correct horse")
        data = path.read_bytes()
        assert data.startswith(b"eyJ") and data.count(b".") == 4
        assert b'"priv"' not in data
        header = json.loads(_unb64(data.decode().split(".")[0]))
        assert {k: header[k] for k in ("alg", "enc", "cty", "p2c")} == {
            "alg": "PBES2-HS512+A256KW",
            "enc": "A256GCM",
            "cty": "jwk+json",
            "p2c": PBES2_COUNT,
        }
        assert len(_unb64(header["p2s"])) == 16
        assert load_private_key(path, passphrase=b"correct horse").public == xwing.public

    def test_joserfc_decrypts_file_when_we_encrypt_it(
        self, tmp_path: Path, xwing: PrivateKey
    ) -> None:
        path = tmp_path / "k.enc.jwk"
        write_private_key(path, xwing, passphrase=b"pw for joserfc")
        opened = fjwe.decrypt_compact(
            path.read_text().strip(), OctKey.import_key(b"pw for joserfc"), algorithms=ALGS
        )
        assert opened.plaintext is not None
        jwk = json.loads(opened.plaintext)
        assert PrivateKey.from_xwing_seed(_unb64(jwk["priv"])).public == xwing.public

    def test_we_load_file_when_joserfc_encrypts_the_jwk(
        self, tmp_path: Path, xwing: PrivateKey
    ) -> None:
        plain = dump_jwk_file(xwing, None).strip()
        token = fjwe.encrypt_compact(
            {"alg": "PBES2-HS512+A256KW", "enc": "A256GCM", "cty": "jwk+json", "p2c": 4096},
            plain,
            OctKey.import_key(b"passphrase from joserfc"),
            algorithms=ALGS,
        )
        path = _private_file(tmp_path / "k.jwk", token.encode() + b"\n")
        assert load_private_key(path, passphrase=b"passphrase from joserfc").public == xwing.public

    def test_raises_when_passphrase_is_wrong(self, tmp_path: Path, xwing: PrivateKey) -> None:
        path = tmp_path / "k.jwk"
        write_private_key(path, xwing, passphrase=b"right")
        with pytest.raises(KeyFileError, match="wrong passphrase"):
            load_private_key(path, passphrase=b"wrong")

    def test_raises_when_no_passphrase_is_given(self, tmp_path: Path, xwing: PrivateKey) -> None:
        path = tmp_path / "k.jwk"
        write_private_key(path, xwing, passphrase=b"right")
        with pytest.raises(KeyFileError, match="encrypted but no passphrase was given"):
            load_private_key(path)

    def test_raises_corrupt_when_ciphertext_is_altered(
        self, tmp_path: Path, xwing: PrivateKey
    ) -> None:
        parts = dump_jwk_file(xwing, b"pw").decode().strip().split(".")
        raw = bytearray(_unb64(parts[3]))
        raw[0] ^= 1
        parts[3] = _b64(bytes(raw))
        path = _private_file(tmp_path / "k.jwk", ".".join(parts).encode())
        with pytest.raises(KeyFileError, match="corrupt"):
            load_private_key(path, passphrase=b"pw")

    @pytest.mark.parametrize(
        ("changes", "match"),
        [
            ({"alg": "PBES2-HS256+A128KW"}, "is not PBES2-HS512"),
            ({"enc": "A128GCM"}, "is not PBES2-HS512"),
            ({"cty": None}, "cty None"),
            ({"cty": "JWT"}, "cty 'JWT'"),
            ({"zip": "DEF"}, "unsupported header member.*zip"),
            ({"p2s": None}, "'p2s'"),
            ({"p2s": _b64(b"1234567")}, "shorter than 8 bytes"),
            ({"p2c": "300000"}, "'p2c' is not an integer"),
            ({"p2c": True}, "'p2c' is not an integer"),
            ({"p2c": 999}, "outside"),
            ({"p2c": 10_000_001}, "outside"),
        ],
    )
    def test_raises_when_header_is_unacceptable(
        self,
        tmp_path: Path,
        xwing: PrivateKey,
        reheader: Callable[[bytes, dict[str, Any]], bytes],
        changes: dict[str, Any],
        match: str,
    ) -> None:
        data = reheader(dump_jwk_file(xwing, b"pw"), changes)
        path = _private_file(tmp_path / "k.jwk", data)
        with pytest.raises(KeyFileError, match=match):
            load_private_key(path, passphrase=b"pw")

    def test_accepts_application_media_type_when_cty_is_long_form(
        self,
        tmp_path: Path,
        xwing: PrivateKey,
        reheader: Callable[[bytes, dict[str, Any]], bytes],
    ) -> None:
        data = reheader(dump_jwk_file(xwing, b"pw"), {"cty": "application/JWK+json"})
        path = _private_file(tmp_path / "k.jwk", data)
        # The header (AAD) changed, so the content no longer authenticates: the header
        # checks passed and the failure is the authentication one.
        with pytest.raises(KeyFileError, match="corrupt"):
            load_private_key(path, passphrase=b"pw")

    def test_raises_when_compact_token_is_not_ascii(self, tmp_path: Path) -> None:
        path = _private_file(tmp_path / "k.jwk", "eyJ\u00e9.a.b.c.d".encode())
        with pytest.raises(KeyFileError, match="not ASCII"):
            load_private_key(path, passphrase=b"pw")


class TestGenerateXWingOrgKeys:
    def test_writes_jwk_file_when_enc_is_xwing(self, tmp_path: Path) -> None:
        generated = generate_org_keys("ec3", tmp_path, enc="X-Wing")
        assert generated.enc_path == tmp_path / "ec3.enc.jwk"
        assert generated.sign_path == tmp_path / "ec3.sign.pem"
        assert generated.enc_jwk["kty"] == "AKP"
        assert generated.enc_jwk["alg"] == "HPKE-9-KE"
        key = load_private_key(generated.enc_path)
        assert key.public.to_jwk() == generated.enc_jwk
        assert load_private_key(generated.sign_path).kind == "Ed25519"

    def test_encrypts_jwk_file_when_passphrase_given(self, tmp_path: Path) -> None:
        generated = generate_org_keys("ec3", tmp_path, enc="X-Wing", passphrase=b"pw")
        assert load_private_key(generated.enc_path, passphrase=b"pw").kind == "X-Wing"

    def test_writes_nothing_when_jwk_file_exists(self, tmp_path: Path) -> None:
        (tmp_path / "ec3.enc.jwk").write_bytes(b"old")
        with pytest.raises(KeyFileError, match="already exists"):
            generate_org_keys("ec3", tmp_path, enc="X-Wing")
        assert sorted(p.name for p in tmp_path.iterdir()) == ["ec3.enc.jwk"]
