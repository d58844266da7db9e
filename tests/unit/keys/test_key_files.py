"""Private key files: 0600 creation, no overwrite, permission checks, passphrases."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from keys import (
    KeyFileError,
    KeyKind,
    PrivateKey,
    PublicKey,
    _files,
    generate_org_keys,
    load_private_key,
    write_private_key,
)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


class TestWritePrivateKey:
    def test_creates_file_with_mode_0600_when_umask_is_permissive(self, tmp_path: Path) -> None:
        path = tmp_path / "k.pem"
        old = os.umask(0)
        try:
            write_private_key(path, PrivateKey.generate("Ed25519"))
        finally:
            os.umask(old)
        assert _mode(path) == 0o600
        assert path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")

    def test_refuses_when_file_exists(self, tmp_path: Path) -> None:
        path = tmp_path / "k.pem"
        path.write_bytes(b"precious")
        with pytest.raises(KeyFileError, match="already exists; refusing to overwrite"):
            write_private_key(path, PrivateKey.generate("Ed25519"))
        assert path.read_bytes() == b"precious"

    def test_refuses_when_passphrase_is_empty(self, tmp_path: Path) -> None:
        with pytest.raises(KeyFileError, match="empty passphrase"):
            write_private_key(tmp_path / "k.pem", PrivateKey.generate("Ed25519"), passphrase=b"")

    def test_raises_when_directory_is_missing(self, tmp_path: Path) -> None:
        with pytest.raises(KeyFileError, match="cannot create key file"):
            write_private_key(tmp_path / "no" / "k.pem", PrivateKey.generate("Ed25519"))

    def test_removes_partial_file_when_write_fails(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        def failing_fsync(fd: int) -> None:
            raise OSError(28, "No space left on device")

        monkeypatch.setattr(os, "fsync", failing_fsync)
        path = tmp_path / "k.pem"
        with pytest.raises(KeyFileError, match=r"cannot write key file .*No space left"):
            write_private_key(path, PrivateKey.generate("Ed25519"))
        assert not path.exists()

    def test_encrypts_when_passphrase_given(self, tmp_path: Path) -> None:
        path = tmp_path / "k.pem"
        write_private_key(path, PrivateKey.generate("X25519"), passphrase=b"s3cret")
        assert path.read_bytes().startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")


class TestLoadPrivateKey:
    @pytest.mark.parametrize("kind", ["Ed25519", "X25519"])
    def test_round_trips_when_passphrase_matches(self, tmp_path: Path, kind: KeyKind) -> None:
        key = PrivateKey.generate(kind)
        path = tmp_path / "k.pem"
        write_private_key(path, key, passphrase=b"correct horse")
        assert load_private_key(path, passphrase=b"correct horse").public == key.public

    def test_round_trips_when_unencrypted(self, tmp_path: Path) -> None:
        key = PrivateKey.generate("Ed25519")
        write_private_key(tmp_path / "k.pem", key)
        assert load_private_key(str(tmp_path / "k.pem")).thumbprint == key.thumbprint

    @pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o620, 0o602, 0o660])
    def test_refuses_when_group_or_others_have_access(self, tmp_path: Path, mode: int) -> None:
        path = tmp_path / "k.pem"
        write_private_key(path, PrivateKey.generate("Ed25519"))
        path.chmod(mode)
        with pytest.raises(KeyFileError, match=f"{path} has mode 0{mode:o}"):
            load_private_key(path)

    def test_accepts_when_mode_is_0400(self, tmp_path: Path) -> None:
        path = tmp_path / "k.pem"
        write_private_key(path, PrivateKey.generate("Ed25519"))
        path.chmod(0o400)
        assert load_private_key(path).kind == "Ed25519"

    def test_raises_when_passphrase_is_wrong(self, tmp_path: Path) -> None:
        path = tmp_path / "k.pem"
        write_private_key(path, PrivateKey.generate("Ed25519"), passphrase=b"right")
        with pytest.raises(KeyFileError, match="wrong passphrase"):
            load_private_key(path, passphrase=b"wrong")

    def test_raises_when_encrypted_key_has_no_passphrase(self, tmp_path: Path) -> None:
        path = tmp_path / "k.pem"
        write_private_key(path, PrivateKey.generate("Ed25519"), passphrase=b"right")
        with pytest.raises(KeyFileError, match="encrypted but no passphrase"):
            load_private_key(path)

    def test_raises_when_passphrase_given_for_plain_key(self, tmp_path: Path) -> None:
        path = tmp_path / "k.pem"
        write_private_key(path, PrivateKey.generate("Ed25519"))
        with pytest.raises(KeyFileError, match="is not encrypted"):
            load_private_key(path, passphrase=b"unneeded")

    def test_raises_when_file_is_missing(self, tmp_path: Path) -> None:
        with pytest.raises(KeyFileError, match=r"cannot open key file .*missing\.pem"):
            load_private_key(tmp_path / "missing.pem")

    def test_raises_when_path_is_a_directory(self, tmp_path: Path) -> None:
        directory = tmp_path / "d"
        directory.mkdir(mode=0o700)
        with pytest.raises(KeyFileError, match="not a regular file"):
            load_private_key(directory)

    def _private_file(self, path: Path, data: bytes) -> Path:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        return path

    def test_raises_when_file_is_too_large(self, tmp_path: Path) -> None:
        path = self._private_file(tmp_path / "k.pem", b"x" * (64 * 1024 + 1))
        with pytest.raises(KeyFileError, match="larger than"):
            load_private_key(path)

    def test_raises_when_file_is_not_pem(self, tmp_path: Path) -> None:
        path = self._private_file(tmp_path / "k.pem", b"not a key")
        with pytest.raises(KeyFileError, match="not a PEM private key"):
            load_private_key(path)

    def test_raises_when_key_type_is_unsupported(self, tmp_path: Path) -> None:
        pem = rsa.generate_private_key(65537, 2048).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        path = self._private_file(tmp_path / "k.pem", pem)
        with pytest.raises(KeyFileError, match="unsupported key type"):
            load_private_key(path)

    def _p256_file(self, path: Path) -> Path:
        pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        return self._private_file(path, pem)

    @pytest.mark.parametrize(("name", "kind"), [("a.sign.pem", "ES256"), ("a.enc.pem", "P-256")])
    def test_infers_p256_use_when_file_name_has_suffix(
        self, tmp_path: Path, name: str, kind: str
    ) -> None:
        assert load_private_key(self._p256_file(tmp_path / name)).kind == kind

    def test_uses_explicit_use_when_given(self, tmp_path: Path) -> None:
        path = self._p256_file(tmp_path / "a.sign.pem")
        assert load_private_key(path, use="enc").kind == "P-256"

    def test_raises_when_p256_use_cannot_be_inferred(self, tmp_path: Path) -> None:
        with pytest.raises(KeyFileError, match="needs use="):
            load_private_key(self._p256_file(tmp_path / "key.pem"))


class TestGenerateOrgKeys:
    @pytest.mark.parametrize(("sign", "enc"), [("Ed25519", "X25519"), ("ES256", "P-256")])
    def test_writes_both_keys_when_directory_is_new(
        self, tmp_path: Path, sign: KeyKind, enc: KeyKind
    ) -> None:
        out = tmp_path / "keys" / "ec3"
        generated = generate_org_keys("ec3", out, sign=sign, enc=enc)  # type: ignore[arg-type]
        assert _mode(out) == 0o700
        assert generated.sign_path == out / "ec3.sign.pem"
        assert generated.enc_path == out / "ec3.enc.pem"
        for path in (generated.sign_path, generated.enc_path):
            assert _mode(path) == 0o600
        sign_key = load_private_key(generated.sign_path)
        enc_key = load_private_key(generated.enc_path)
        assert generated.sign_jwk == sign_key.public.to_jwk()
        assert generated.enc_jwk == enc_key.public.to_jwk()
        assert generated.sign_jwk["kid"] == sign_key.thumbprint
        assert PublicKey.from_jwk(generated.enc_jwk).use == "enc"
        assert (sign_key.kind, enc_key.kind) == (sign, enc)
        assert "d" not in generated.sign_jwk and "d" not in generated.enc_jwk

    def test_encrypts_both_files_when_passphrase_given(self, tmp_path: Path) -> None:
        generated = generate_org_keys("bank-a", tmp_path, passphrase=b"pw")
        assert load_private_key(generated.sign_path, passphrase=b"pw").kind == "Ed25519"
        assert load_private_key(generated.enc_path, passphrase=b"pw").kind == "X25519"

    @pytest.mark.parametrize("existing", ["org.sign.pem", "org.enc.pem"])
    def test_writes_nothing_when_a_key_file_exists(self, tmp_path: Path, existing: str) -> None:
        (tmp_path / existing).write_bytes(b"old")
        with pytest.raises(KeyFileError, match="already exists"):
            generate_org_keys("org", tmp_path)
        assert sorted(p.name for p in tmp_path.iterdir()) == [existing]

    def test_removes_signing_key_when_encryption_key_write_fails(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        real = _files.write_private_key

        def write(path: Path, key: PrivateKey, *, passphrase: bytes | None = None) -> None:
            if str(path).endswith(".enc.pem"):
                raise KeyFileError(f"cannot create key file {path}: simulated")
            real(path, key, passphrase=passphrase)

        monkeypatch.setattr(_files, "write_private_key", write)
        with pytest.raises(KeyFileError, match="simulated"):
            generate_org_keys("org", tmp_path)
        assert list(tmp_path.iterdir()) == []

    @pytest.mark.parametrize("org_id", ["", "../evil", ".hidden", "a/b", "x" * 200])
    def test_refuses_when_org_id_is_not_a_safe_file_name(self, tmp_path: Path, org_id: str) -> None:
        with pytest.raises(KeyFileError, match="not usable in a file name"):
            generate_org_keys(org_id, tmp_path)

    def test_refuses_when_key_kinds_are_swapped(self, tmp_path: Path) -> None:
        with pytest.raises(Exception, match="unsupported key kinds"):
            generate_org_keys("org", tmp_path, sign="X25519")  # type: ignore[arg-type]

    def test_raises_when_directory_cannot_be_created(self, tmp_path: Path) -> None:
        blocker = tmp_path / "file"
        blocker.write_bytes(b"")
        with pytest.raises(KeyFileError, match="cannot create key directory"):
            generate_org_keys("org", blocker / "sub")
