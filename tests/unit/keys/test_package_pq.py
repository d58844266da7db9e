"""Packages sealed to post-quantum (X-Wing, HPKE-9-KE) recipients."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from typing import Any

import pytest

from keys import (
    DecryptionFailed,
    KeyKind,
    MalformedPackage,
    MemoryReplayGuard,
    PackageError,
    PackageReplayed,
    PrivateKey,
    WrongAudience,
    WrongRecipientKey,
    jwe_decrypt,
    jwe_encrypt,
    open_package,
)

NOW = 1_750_000_000


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _open(sealed: Any, token: str | None = None, **kw: Any) -> Any:
    params: dict[str, Any] = {
        "recipient": "ec3",
        "decryption_keys": sealed.decryption_keys,
        "broker_keys": sealed.keyring,
        "now": NOW + 1,
        "replay": None,
    }
    params.update(kw)
    return open_package(sealed.package.token if token is None else token, **params)


@pytest.mark.parametrize("sign", ["Ed25519", "ES256"])
class TestPostQuantumPackage:
    def test_opens_view_when_sealed_to_xwing_key(
        self, make_sealed: Callable[..., Any], sign: KeyKind, stix: Any
    ) -> None:
        sealed = make_sealed(sign, "X-Wing")
        opened = _open(sealed, replay=MemoryReplayGuard(), issuer="atlas-broker")
        assert opened.stix == stix
        assert opened.jwe_header["alg"] == "HPKE-9-KE"
        assert "epk" not in opened.jwe_header
        assert opened.rcpt_kid == sealed.recipient.thumbprint
        assert opened.jws_header["alg"] == sealed.broker.alg

    @pytest.mark.parametrize("part", range(5))
    def test_rejects_when_a_byte_of_any_part_is_flipped(
        self, make_sealed: Callable[..., Any], sign: KeyKind, part: int
    ) -> None:
        sealed = make_sealed(sign, "X-Wing")
        parts = sealed.package.token.split(".")
        raw = bytearray(_unb64(parts[part]))
        raw[len(raw) // 2] ^= 0x20
        parts[part] = _b64(bytes(raw))
        with pytest.raises(PackageError) as info:
            _open(sealed, ".".join(parts))
        expected = (MalformedPackage, DecryptionFailed) if part == 0 else (DecryptionFailed,)
        assert isinstance(info.value, expected)

    def test_rejects_when_recipient_forwards_to_a_third_party(
        self, make_sealed: Callable[..., Any], sign: KeyKind
    ) -> None:
        sealed = make_sealed(sign, "X-Wing")
        _, inner = jwe_decrypt(sealed.package.token, sealed.decryption_keys)
        third = PrivateKey.generate("X-Wing")
        forwarded = jwe_encrypt(inner, third.public, {"cty": "JWT"})
        keys = {third.thumbprint: third}
        with pytest.raises(WrongAudience):
            _open(sealed, forwarded, decryption_keys=keys, recipient="europol")
        with pytest.raises(WrongRecipientKey, match="forwarded or re-encrypted"):
            _open(sealed, forwarded, decryption_keys=keys)

    def test_rejects_when_pq_package_is_downgraded_to_classical_copy(
        self, make_sealed: Callable[..., Any], sign: KeyKind
    ) -> None:
        # A recipient holding both kinds of key: a copy re-encrypted to its classical key
        # still names the post-quantum key in the signed rcpt_kid, so it is refused.
        sealed = make_sealed(sign, "X-Wing")
        _, inner = jwe_decrypt(sealed.package.token, sealed.decryption_keys)
        classical = PrivateKey.generate("X25519")
        copy = jwe_encrypt(inner, classical.public, {"cty": "JWT"})
        keys = {**sealed.decryption_keys, classical.thumbprint: classical}
        with pytest.raises(WrongRecipientKey):
            _open(sealed, copy, decryption_keys=keys)

    def test_raises_replayed_when_opened_twice(
        self, make_sealed: Callable[..., Any], sign: KeyKind
    ) -> None:
        sealed = make_sealed(sign, "X-Wing")
        guard = MemoryReplayGuard()
        _open(sealed, replay=guard)
        with pytest.raises(PackageReplayed):
            _open(sealed, replay=guard)

    def test_header_is_authenticated_when_members_are_added(
        self, make_sealed: Callable[..., Any], sign: KeyKind
    ) -> None:
        sealed = make_sealed(sign, "X-Wing")
        parts = sealed.package.token.split(".")
        header = json.loads(_unb64(parts[0]))
        header["x-note"] = "added in transit"
        parts[0] = _b64(json.dumps(header).encode())
        with pytest.raises(DecryptionFailed):
            _open(sealed, ".".join(parts))
