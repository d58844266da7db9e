"""Seal and open one package against the bare primitives, measured in the same run.

For 4 KB and 64 KB views, each broker key (Ed25519, ES256) and each recipient key
(X25519, P-256, X-Wing), the medians in microseconds of:

- ``seal``: ``keys.seal`` (claims serialized with orjson, as the router does);
- ``bare_seal``: one signature over the serialized claims, one key agreement with a fresh
  ephemeral key (X25519/P-256; plus AES key wrap of the content key) or one HPKE
  encapsulation-and-seal of the content key (X-Wing), and AES-256-GCM of the signed bytes;
- ``open``: ``keys.open_package`` (replay guard off);
- ``bare_open``: one signature verification, one key agreement (or HPKE open), AES-GCM
  decryption of the same bytes.

Iterations alternate ours and bare so drift hits both alike.  ``seal_over_bare`` is the
ratio the issue targets (<= 1.5).
"""

from __future__ import annotations

import hashlib
import os
import statistics
import time
import uuid
from collections.abc import Callable
from typing import Any

import orjson
from cryptography.hazmat.primitives import hashes, hpke, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, x25519
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.keywrap import aes_key_unwrap, aes_key_wrap

from keys import BrokerKeyring, KeyKind, PrivateKey, open_package, seal
from keys._b64json import b64e_bytes

NOW = 1_750_000_000
SIGN_KINDS: tuple[KeyKind, ...] = ("Ed25519", "ES256")
ENC_KINDS: tuple[KeyKind, ...] = ("X25519", "P-256", "X-Wing")
SRC = {"org": "member-1", "submission": "sub-1", "sha256": "0" * 64}
_SUITE = hpke.Suite(hpke.KEM.MLKEM768_X25519, hpke.KDF.SHAKE256, hpke.AEAD.AES_256_GCM)
_INFO = b"JOSE-HPKE rcpt\xffA256GCM\xff"


def _view(size: int) -> dict[str, Any]:
    """A bundle whose orjson form is ``size`` bytes (indicators of ~400 bytes each)."""
    objects: list[dict[str, Any]] = []
    bundle: dict[str, Any] = {"type": "bundle", "id": f"bundle--{uuid.uuid4()}", "objects": objects}
    i = 0
    while len(orjson.dumps(bundle)) < size - 450:
        objects.append(
            {
                "type": "indicator",
                "spec_version": "2.1",
                "id": f"indicator--{uuid.UUID(int=i)}",
                "created": "2026-11-02T09:30:00.000Z",
                "modified": "2026-11-02T09:30:00.000Z",
                "name": f"phishing domain {i}",
                "pattern_type": "stix",
                "valid_from": "2026-11-02T09:30:00.000Z",
                "pattern": f"[domain-name:value = 'login-{i}.bank.example']",
            }
        )
        i += 1
    pad = size - len(orjson.dumps(bundle)) - len(',"x_pad":""')
    bundle["x_pad"] = "p" * max(pad, 0)
    return bundle


class _Bare:
    """The primitives of one package, on raw ``cryptography`` keys."""

    def __init__(self, sign: KeyKind, enc: KeyKind) -> None:
        self.sign_kind, self.enc_kind = sign, enc
        self.ed = ed25519.Ed25519PrivateKey.generate()
        self.p256 = ec.generate_private_key(ec.SECP256R1())
        self.x = x25519.X25519PrivateKey.generate()
        self.ec_enc = ec.generate_private_key(ec.SECP256R1())
        self.xwing = PrivateKey.generate("X-Wing")._key.hpke_key  # type: ignore[union-attr]

    def _sign(self, data: bytes) -> bytes:
        if self.sign_kind == "Ed25519":
            return self.ed.sign(data)
        return self.p256.sign(data, ec.ECDSA(hashes.SHA256()))

    def _verify(self, sig: bytes, data: bytes) -> None:
        if self.sign_kind == "Ed25519":
            self.ed.public_key().verify(sig, data)
        else:
            self.p256.public_key().verify(sig, data, ec.ECDSA(hashes.SHA256()))

    def seal(self, data: bytes) -> tuple[bytes, bytes, bytes, bytes, bytes]:
        sig = self._sign(data)
        cek = os.urandom(32)
        if self.enc_kind == "X-Wing":
            wrapped = _SUITE.encrypt(cek, self.xwing.public_key(), info=_INFO)
            epk = b""
        else:
            if self.enc_kind == "X25519":
                eph = x25519.X25519PrivateKey.generate()
                z = eph.exchange(self.x.public_key())
                epk = eph.public_key().public_bytes_raw()
            else:
                eph_ec = ec.generate_private_key(ec.SECP256R1())
                z = eph_ec.exchange(ec.ECDH(), self.ec_enc.public_key())
                epk = eph_ec.public_key().public_bytes(
                    serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
                )
            wrapped = aes_key_wrap(z, cek)
        iv = os.urandom(12)
        return sig, epk, wrapped, iv, AESGCM(cek).encrypt(iv, data, b"header")

    def open(self, sealed: tuple[bytes, bytes, bytes, bytes, bytes], data: bytes) -> None:
        sig, epk, wrapped, iv, ciphertext = sealed
        if self.enc_kind == "X-Wing":
            cek = _SUITE.decrypt(wrapped, self.xwing, info=_INFO)
        elif self.enc_kind == "X25519":
            z = self.x.exchange(x25519.X25519PublicKey.from_public_bytes(epk))
            cek = aes_key_unwrap(z, wrapped)
        else:
            peer = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), epk)
            cek = aes_key_unwrap(self.ec_enc.exchange(ec.ECDH(), peer), wrapped)
        AESGCM(cek).decrypt(iv, ciphertext, b"header")
        self._verify(sig, data)


def _median_us(samples: list[float]) -> float:
    return round(statistics.median(samples) * 1e6, 1)


def _alternate(
    ours: Callable[[], object], bare: Callable[[], object], rounds: int
) -> tuple[list[float], list[float]]:
    ours_t: list[float] = []
    bare_t: list[float] = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        ours()
        t1 = time.perf_counter()
        bare()
        t2 = time.perf_counter()
        ours_t.append(t1 - t0)
        bare_t.append(t2 - t1)
    return ours_t, bare_t


def _case(sign: KeyKind, enc: KeyKind, size: int, rounds: int) -> dict[str, Any]:
    view = _view(size)
    broker, recipient = PrivateKey.generate(sign), PrivateKey.generate(enc)
    bare = _Bare(sign, enc)
    claims = orjson.dumps({"stix": view, "src": SRC})

    def ours_seal() -> str:
        return seal(
            stix=view,
            iss="atlas-broker",
            aud="ec3",
            src=SRC,
            tlp="AMBER",
            signing_key=broker,
            recipient_key=recipient.public,
            now=NOW,
            ttl=3600,
            dumps=orjson.dumps,
        ).token

    for _ in range(5):  # warm up
        ours_seal()
        bare.seal(claims)
    seal_t, bare_seal_t = _alternate(ours_seal, lambda: bare.seal(claims), rounds)

    token = ours_seal()
    sealed = bare.seal(claims)
    keyring = BrokerKeyring.of(broker.public)
    keys = {recipient.thumbprint: recipient}

    def ours_open() -> object:
        return open_package(
            token, recipient="ec3", decryption_keys=keys, broker_keys=keyring, now=NOW, replay=None
        )

    open_t, bare_open_t = _alternate(ours_open, lambda: bare.open(sealed, claims), rounds)
    seal_us, bare_seal_us = _median_us(seal_t), _median_us(bare_seal_t)
    open_us, bare_open_us = _median_us(open_t), _median_us(bare_open_t)
    return {
        "view_bytes": len(orjson.dumps(view)),
        "token_bytes": len(token),
        "seal_us": seal_us,
        "bare_seal_us": bare_seal_us,
        "seal_over_bare": round(seal_us / bare_seal_us, 2),
        "open_us": open_us,
        "bare_open_us": bare_open_us,
        "open_over_bare": round(open_us / bare_open_us, 2),
    }


def _breakdown(size: int, rounds: int) -> dict[str, float]:
    """Where a seal's time goes (Ed25519 broker, X25519 recipient): each step alone."""
    view = _view(size)
    broker = ed25519.Ed25519PrivateKey.generate()
    peer = x25519.X25519PrivateKey.generate().public_key()
    claims = orjson.dumps({"stix": view, "src": SRC})
    encoded = b64e_bytes(claims)
    signing_input = b"eyJhbGciOiJFZERTQSJ9." + encoded
    jws = signing_input + b"." + b64e_bytes(broker.sign(signing_input))
    cek, iv = os.urandom(32), os.urandom(12)
    sealed = AESGCM(cek).encrypt(iv, jws, b"header")
    token = b64e_bytes(sealed)

    def agree() -> bytes:
        ephemeral = x25519.X25519PrivateKey.generate()
        return aes_key_wrap(ephemeral.exchange(peer), cek)

    steps: dict[str, Callable[[], object]] = {
        "claims_json_orjson": lambda: orjson.dumps({"stix": view, "src": SRC}),
        "base64url_claims": lambda: b64e_bytes(claims),
        "sign_jws_signing_input": lambda: broker.sign(signing_input),
        "sign_claims_bytes_as_bare": lambda: broker.sign(claims),
        "key_agreement_and_wrap": agree,
        "aes_gcm_jws": lambda: AESGCM(cek).encrypt(iv, jws, b"header"),
        "base64url_jwe_ciphertext": lambda: b64e_bytes(sealed),
        "sha256_token_for_log": lambda: hashlib.sha256(token).hexdigest(),
    }
    figures: dict[str, float] = {}
    for name, step in steps.items():
        samples = []
        for _ in range(rounds):
            t0 = time.perf_counter()
            step()
            samples.append(time.perf_counter() - t0)
        figures[name] = _median_us(samples)
    figures["claims_bytes"] = len(claims)
    figures["jws_bytes"] = len(jws)
    figures["token_bytes"] = len(token)
    return figures


def run(quick: bool = False) -> dict[str, Any]:
    rounds = 60 if quick else 400
    cases: dict[str, Any] = {}
    for size in (4 * 1024, 64 * 1024):
        for sign in SIGN_KINDS:
            for enc in ENC_KINDS:
                cases[f"{size // 1024}k_{sign}_{enc}"] = _case(sign, enc, size, rounds)
    return {
        "rounds": rounds,
        "unit": "microseconds, median per package",
        "target_seal_over_bare": 1.5,
        "worst_seal_over_bare_4k": max(
            case["seal_over_bare"] for name, case in cases.items() if name.startswith("4k")
        ),
        "worst_seal_over_bare_64k": max(
            case["seal_over_bare"] for name, case in cases.items() if name.startswith("64k")
        ),
        "cases": cases,
        "seal_breakdown": {
            f"{size // 1024}k": _breakdown(size, rounds) for size in (4 * 1024, 64 * 1024)
        },
    }


if __name__ == "__main__":  # pragma: no cover
    print(orjson.dumps(run(quick=True), option=orjson.OPT_INDENT_2).decode())
