"""``receive --broker-jwks``: the broker's signing keys are taken from the set, others named."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from broker._service import read_jwks
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
