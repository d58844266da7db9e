"""``receive``: the broker JWK set and the decryption keys given, checked with clear errors."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from broker._service import _decryption_key, read_jwks
from broker.errors import ConfigError
from keys import generate_org_keys


def test_takes_the_signing_keys_of_a_set_that_also_holds_an_encryption_key(
    tmp_path: Path,
) -> None:
    made = generate_org_keys("atlas-broker", tmp_path / "k")
    path = tmp_path / "broker.jwks"
    path.write_bytes(orjson.dumps({"keys": [made.sign_jwk, made.enc_jwk]}))
    ring = read_jwks(path)
    assert list(ring) == [made.sign_jwk["kid"]]


def test_a_set_without_a_signing_key_is_named_with_the_option_and_the_file(
    tmp_path: Path,
) -> None:
    made = generate_org_keys("ec3", tmp_path / "k")
    path = tmp_path / "ec3.jwks"
    path.write_bytes(orjson.dumps({"keys": [made.enc_jwk]}))
    with pytest.raises(ConfigError, match=rf"--broker-jwks {path}: no signing key in the set"):
        read_jwks(path)


@pytest.mark.parametrize("sign", ["Ed25519", "ES256"])
def test_receive_names_a_signing_key_given_as_its_decryption_key(tmp_path: Path, sign: str) -> None:
    made = generate_org_keys("ec3", tmp_path / "k", sign=sign, enc="P-256")
    with pytest.raises(ConfigError, match=r"--key .*ec3\.sign\.pem is a .* signing key"):
        _decryption_key(made.sign_path, None)
    assert _decryption_key(made.enc_path, None).use == "enc"
    other_name = tmp_path / "ec3-key.pem"  # a P-256 key under a name that says nothing
    other_name.write_bytes(made.enc_path.read_bytes())
    other_name.chmod(0o600)
    assert _decryption_key(other_name, None).use == "enc"
