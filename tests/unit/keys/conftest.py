"""Factories for key and package tests (fixtures return callables)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization

from keys import BrokerKeyring, KeyKind, PrivateKey, SealedPackage, seal
from keys._xwing import XWingPrivateKey

NOW = 1_750_000_000


def _private_pem(key: PrivateKey) -> bytes:
    """PKCS#8 PEM of a key, for handing it to jwcrypto/joserfc in tests."""
    assert not isinstance(key._key, XWingPrivateKey), "X-Wing keys have no PKCS#8 form"
    return key._key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _sample_src() -> dict[str, str]:
    return {
        "org": "bank-a",
        "submission": "sub-0001",
        "sha256": hashlib.sha256(b"signed submission").hexdigest(),
    }


def _sample_stix() -> dict[str, Any]:
    return {
        "type": "bundle",
        "id": "bundle--5d0092c5-5f74-4287-9642-33f4c354e56d",
        "objects": [
            {
                "type": "indicator",
                "spec_version": "2.1",
                "id": "indicator--8e2e2d2b-17d4-4cbf-938f-98ee46b3cd3f",
                "name": "Phishing domain \u2013 \u00fcn\u00efcode",
                "pattern": "[domain-name:value = 'evil.example']",
            }
        ],
    }


@dataclass(frozen=True)
class Sealed:
    package: SealedPackage
    broker: PrivateKey
    recipient: PrivateKey

    @property
    def keyring(self) -> BrokerKeyring:
        return BrokerKeyring.of(self.broker.public)

    @property
    def decryption_keys(self) -> dict[str, PrivateKey]:
        return {self.recipient.thumbprint: self.recipient}


@pytest.fixture
def make_sealed() -> Callable[..., Sealed]:
    def _make(
        sign: KeyKind = "Ed25519",
        enc: KeyKind = "X25519",
        *,
        broker: PrivateKey | None = None,
        recipient: PrivateKey | None = None,
        **overrides: Any,
    ) -> Sealed:
        broker = broker or PrivateKey.generate(sign)
        recipient = recipient or PrivateKey.generate(enc)
        params: dict[str, Any] = {
            "stix": _sample_stix(),
            "iss": "atlas-broker",
            "aud": "ec3",
            "src": _sample_src(),
            "tlp": "amber",
            "signing_key": broker,
            "recipient_key": recipient.public,
            "now": NOW,
            "ttl": 3600,
        }
        params.update(overrides)
        return Sealed(seal(**params), broker, recipient)

    return _make


@pytest.fixture
def now() -> int:
    return NOW


@pytest.fixture
def pem() -> Callable[[PrivateKey], bytes]:
    return _private_pem


@pytest.fixture
def src() -> dict[str, str]:
    return _sample_src()


@pytest.fixture
def stix() -> dict[str, Any]:
    return _sample_stix()
