"""Seal and open one package against the bare primitives, measured in the same run.

For 4 KB and 64 KB views, each broker key (Ed25519, ES256) and each recipient key
(X25519, P-256, X-Wing), the medians in microseconds of:

- ``seal``: ``keys.seal`` given the view already serialized (``SerializedView``, as the
  router gives it: it serializes each view once, for the package and for its TAXII copy),
  as the bare side gets its plaintext; the result is the token's bytes, as published;
- ``seal_from_dict``: ``keys.seal`` given the view as a dict (orjson serializes it inside:
  what the router spends per package, serialization included);
- ``log_digest``: the token's SHA-256 that the router writes into the dissemination log
  (``SealedPackage.jwe_sha256``), a cost of the log, reported beside the seal;
- ``bare_seal``: one signature over the serialized claims, one key agreement with a fresh
  ephemeral key plus the least key derivation (one SHA-256 of the shared secret) and AES
  key wrap of the content key (X25519/P-256), or one HPKE encapsulation-and-seal of the
  content key (X-Wing), and AES-256-GCM of the serialized claims;
- ``open``: ``keys.open_package`` (replay guard off);
- ``bare_open``: one signature verification, one key agreement (or HPKE open) and AES-GCM
  decryption of the same bytes.

The bare side gets the serialized claims for free (no JSON), its keys' public halves
precomputed, and no encoding: it is the floor of any format.  Iterations alternate ours
and bare so drift hits both alike; a case runs in ``blocks`` blocks, and each figure is
the median of the block medians, with the lowest and highest block median as its spread.
``*_faults`` are the minor page faults per operation: with glibc's starting thresholds a
64 KB seal gave its heap top back to the kernel and faulted it in again on every call
(80-120 faults, a third of the seal), or not, depending on the cases before it. The run
sets the thresholds every atlas-broker process sets (``broker._allocator``), and says so
in ``allocator``.  ``seal_over_bare`` is the ratio the issue targets (<= 1.5);
``breakdown`` times each step of ours and of the bare primitives alone.
"""

from __future__ import annotations

import hashlib
import os
import resource
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

from broker._allocator import keep_heap_top
from keys import BrokerKeyring, KeyKind, PrivateKey, SerializedView, open_package, seal
from keys._b64json import Compact, b64e_bytes, b64e_pieces, loads_object
from keys._jwe import _concat_kdf

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
        self.ed_public = self.ed.public_key()
        self.p256 = ec.generate_private_key(ec.SECP256R1())
        self.p256_public = self.p256.public_key()
        self.x = x25519.X25519PrivateKey.generate()
        self.x_public = self.x.public_key()
        self.ec_enc = ec.generate_private_key(ec.SECP256R1())
        self.ec_enc_public = self.ec_enc.public_key()
        self.xwing = PrivateKey.generate("X-Wing")._key.hpke_key  # type: ignore[union-attr]
        self.xwing_public = self.xwing.public_key()

    def _sign(self, data: bytes) -> bytes:
        if self.sign_kind == "Ed25519":
            return self.ed.sign(data)
        return self.p256.sign(data, _ECDSA)

    def _verify(self, sig: bytes, data: bytes) -> None:
        if self.sign_kind == "Ed25519":
            self.ed_public.verify(sig, data)
        else:
            self.p256_public.verify(sig, data, _ECDSA)

    def seal(self, data: bytes) -> tuple[bytes, bytes, bytes, bytes, bytes]:
        sig = self._sign(data)
        cek = os.urandom(32)
        if self.enc_kind == "X-Wing":
            wrapped = _SUITE.encrypt(cek, self.xwing_public, info=_INFO)
            epk = b""
        else:
            if self.enc_kind == "X25519":
                eph = x25519.X25519PrivateKey.generate()
                z = eph.exchange(self.x_public)
                epk = eph.public_key().public_bytes_raw()
            else:
                eph_ec = ec.generate_private_key(ec.SECP256R1())
                z = eph_ec.exchange(_ECDH, self.ec_enc_public)
                epk = eph_ec.public_key().public_bytes(
                    serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
                )
            wrapped = aes_key_wrap(hashlib.sha256(z).digest(), cek)
        iv = os.urandom(12)
        return sig, epk, wrapped, iv, AESGCM(cek).encrypt(iv, data, b"header")

    def open(self, sealed: tuple[bytes, bytes, bytes, bytes, bytes], data: bytes) -> None:
        sig, epk, wrapped, iv, ciphertext = sealed
        if self.enc_kind == "X-Wing":
            cek = _SUITE.decrypt(wrapped, self.xwing, info=_INFO)
        else:
            if self.enc_kind == "X25519":
                z = self.x.exchange(x25519.X25519PublicKey.from_public_bytes(epk))
            else:
                peer = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), epk)
                z = self.ec_enc.exchange(_ECDH, peer)
            cek = aes_key_unwrap(hashlib.sha256(z).digest(), wrapped)
        AESGCM(cek).decrypt(iv, ciphertext, b"header")
        self._verify(sig, data)


_ECDSA = ec.ECDSA(hashes.SHA256())
_ECDH = ec.ECDH()


def _us(seconds: float) -> float:
    return round(seconds * 1e6, 1)


def _faults() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def _alternate(
    ours: Callable[[], object], bare: Callable[[], object], rounds: int
) -> tuple[float, float, float, float]:
    """Median seconds of ours and bare over ``rounds`` alternations, and faults per call."""
    ours_t: list[float] = []
    bare_t: list[float] = []
    ours_f = bare_f = 0
    for _ in range(rounds):
        f0 = _faults()
        t0 = time.perf_counter()
        ours()
        t1 = time.perf_counter()
        f1 = _faults()
        t2 = time.perf_counter()
        bare()
        t3 = time.perf_counter()
        f2 = _faults()
        ours_t.append(t1 - t0)
        bare_t.append(t3 - t2)
        ours_f += f1 - f0
        bare_f += f2 - f1
    return (
        statistics.median(ours_t),
        statistics.median(bare_t),
        ours_f / rounds,
        bare_f / rounds,
    )


def _blocks(
    ours: Callable[[], object], bare: Callable[[], object], rounds: int, blocks: int
) -> dict[str, Any]:
    runs = [_alternate(ours, bare, rounds) for _ in range(blocks)]
    ours_m = [run[0] for run in runs]
    bare_m = [run[1] for run in runs]
    ratios = [o / b for o, b in zip(ours_m, bare_m, strict=True)]
    return {
        "us": _us(statistics.median(ours_m)),
        "us_spread": [_us(min(ours_m)), _us(max(ours_m))],
        "bare_us": _us(statistics.median(bare_m)),
        "bare_us_spread": [_us(min(bare_m)), _us(max(bare_m))],
        "over_bare": round(statistics.median(ratios), 2),
        "over_bare_spread": [round(min(ratios), 2), round(max(ratios), 2)],
        "faults": round(statistics.median(run[2] for run in runs), 1),
        "bare_faults": round(statistics.median(run[3] for run in runs), 1),
    }


def _case(sign: KeyKind, enc: KeyKind, size: int, rounds: int, blocks: int) -> dict[str, Any]:
    view = _view(size)
    broker, recipient = PrivateKey.generate(sign), PrivateKey.generate(enc)
    bare = _Bare(sign, enc)
    serialized = SerializedView(view)
    claims = orjson.dumps({"stix": view, "src": SRC})

    def sealer(stix: dict[str, Any] | SerializedView) -> Callable[[], bytes]:
        def ours_seal() -> bytes:
            return seal(
                stix=stix,
                iss="atlas-broker",
                aud="ec3",
                src=SRC,
                tlp="amber",
                signing_key=broker,
                recipient_key=recipient.public,
                now=NOW,
                ttl=3600,
                dumps=orjson.dumps,
            ).data  # what the router publishes

        return ours_seal

    ours_seal, from_dict = sealer(serialized), sealer(view)
    for _ in range(5):  # warm up
        ours_seal()
        from_dict()
        bare.seal(claims)
    seal_fig = _blocks(ours_seal, lambda: bare.seal(claims), rounds, blocks)
    dict_fig = _blocks(from_dict, lambda: bare.seal(claims), rounds, blocks)
    token = ours_seal()
    digest_fig = _blocks(
        lambda: hashlib.sha256(token).hexdigest(), lambda: bare.seal(claims), rounds, blocks
    )
    sealed = bare.seal(claims)
    keyring = BrokerKeyring.of(broker.public)
    keys = {recipient.thumbprint: recipient}

    def ours_open() -> object:
        return open_package(
            token, recipient="ec3", decryption_keys=keys, broker_keys=keyring, now=NOW, replay=None
        ).stix

    open_fig = _blocks(ours_open, lambda: bare.open(sealed, claims), rounds, blocks)
    return {
        "view_bytes": len(orjson.dumps(view)),
        "token_bytes": len(token),
        "seal_us": seal_fig["us"],
        "bare_seal_us": seal_fig["bare_us"],
        "seal_over_bare": seal_fig["over_bare"],
        "seal_from_dict_us": dict_fig["us"],
        "seal_from_dict_over_bare": dict_fig["over_bare"],
        "log_digest_us": digest_fig["us"],
        "seal_with_log_digest_over_bare": round(
            (seal_fig["us"] + digest_fig["us"]) / seal_fig["bare_us"], 2
        ),
        "open_us": open_fig["us"],
        "bare_open_us": open_fig["bare_us"],
        "open_over_bare": open_fig["over_bare"],
        "seal": seal_fig,
        "seal_from_dict": dict_fig,
        "open": open_fig,
    }


def _time_steps(steps: dict[str, Callable[[], object]], rounds: int) -> dict[str, float]:
    samples: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(rounds):  # interleaved, so drift hits every step alike
        for name, step in steps.items():
            t0 = time.perf_counter()
            step()
            samples[name].append(time.perf_counter() - t0)
    return {name: _us(statistics.median(values)) for name, values in samples.items()}


def _breakdown(signer: KeyKind, size: int, rounds: int) -> dict[str, Any]:
    """Each step of a package alone (recipient X25519), ours next to the bare primitives.

    ``seal.*`` and ``open.*`` are the steps ``keys`` runs, in order, for a serialized view
    (``router.view_json_orjson`` is the router's serialization of it, once per package);
    ``bare_*`` those of the bare primitives;
    ``log.sha256_token`` is the digest the dissemination log records.  The steps beyond
    the bare ones exist because of the format: JSON, two base64url layers, and a signing
    text that is 4/3 of the claims.
    """
    view = _view(size)
    broker = PrivateKey.generate(signer)
    raw_sign = broker._key
    recipient = x25519.X25519PrivateKey.generate()
    peer = recipient.public_key()
    claims_obj: dict[str, Any] = {"iss": "atlas-broker", "aud": "ec3", "rcpt_kid": "k" * 43}
    claims_obj["jti"] = "j" * 22
    claims_obj |= {"iat": NOW, "exp": NOW + 3600, "src": SRC, "tlp": "amber", "stix": view}
    claims = orjson.dumps(claims_obj)
    header = b64e_bytes(orjson.dumps({"alg": broker.alg, "kid": "k" * 43, "typ": "atlas-pkg+jwt"}))
    signing_input = b"".join((header, b".", *b64e_pieces(claims)))

    def sign_bytes(data: bytes) -> bytes:
        if isinstance(raw_sign, ed25519.Ed25519PrivateKey):
            return raw_sign.sign(data)
        return raw_sign.sign(data, _ECDSA)  # type: ignore[union-attr]

    public = raw_sign.public_key()

    def verify(sig: bytes, data: bytes | memoryview) -> None:
        if isinstance(public, ed25519.Ed25519PublicKey):
            public.verify(sig, data)
        else:
            public.verify(sig, data, _ECDSA)  # type: ignore[union-attr]

    jws_sig = sign_bytes(signing_input)
    jws = b"".join((signing_input, b".", b64e_bytes(jws_sig)))
    claims_sig = sign_bytes(claims)
    cek, iv = os.urandom(32), os.urandom(12)
    jwe_header = b64e_bytes(b'{"alg":"ECDH-ES+A256KW","enc":"A256GCM","kid":"' + b"k" * 43)
    sealed = AESGCM(cek).encrypt(iv, jws, jwe_header)
    bare_sealed = AESGCM(cek).encrypt(iv, claims, b"header")
    ciphertext = memoryview(sealed)[:-16]
    token = b"".join((jwe_header, b".", b"w" * 54, b".", b"i" * 16, b".", *b64e_pieces(ciphertext)))
    token += b"." + b64e_bytes(sealed[-16:])
    eph = x25519.X25519PrivateKey.generate()
    epk = eph.public_key()
    wrapped = aes_key_wrap(_concat_kdf(eph.exchange(peer), b"", b""), cek)
    bare_wrapped = aes_key_wrap(hashlib.sha256(eph.exchange(peer)).digest(), cek)

    def agree_wrap() -> bytes:
        ephemeral = x25519.X25519PrivateKey.generate()
        ephemeral.public_key().public_bytes_raw()
        return aes_key_wrap(_concat_kdf(ephemeral.exchange(peer), b"", b""), cek)

    def bare_agree_wrap() -> bytes:
        ephemeral = x25519.X25519PrivateKey.generate()
        ephemeral.public_key().public_bytes_raw()
        return aes_key_wrap(hashlib.sha256(ephemeral.exchange(peer)).digest(), cek)

    def decode_ciphertext() -> bytes:
        return Compact(token, 5, "JWE").decode(3, "JWE ciphertext")

    def decode_payload() -> bytes:
        return Compact(jws, 3, "JWS").decode(1, "JWS payload")

    seal_steps: dict[str, Callable[[], object]] = {
        "router.view_json_orjson": lambda: orjson.dumps(view),
        "seal.base64url_claims": lambda: b"".join((header, b".", *b64e_pieces(claims))),
        "seal.sign_signing_input": lambda: sign_bytes(signing_input),
        "seal.key_agreement_concat_kdf_wrap": agree_wrap,
        "seal.aes_gcm_jws": lambda: AESGCM(cek).encrypt(iv, jws, jwe_header),
        "seal.base64url_ciphertext_and_join": lambda: b"".join(
            (jwe_header, b".", *b64e_pieces(ciphertext))
        ),
        "log.sha256_token": lambda: hashlib.sha256(token).hexdigest(),
        "bare_seal.sign_claims": lambda: sign_bytes(claims),
        "bare_seal.key_agreement_sha256_wrap": bare_agree_wrap,
        "bare_seal.aes_gcm_claims": lambda: AESGCM(cek).encrypt(iv, claims, b"header"),
    }
    open_steps: dict[str, Callable[[], object]] = {
        "open.base64url_decode_ciphertext": decode_ciphertext,
        "open.key_agreement_concat_kdf_unwrap": lambda: aes_key_unwrap(
            _concat_kdf(recipient.exchange(epk), b"", b""), wrapped
        ),
        "open.aes_gcm_jws": lambda: AESGCM(cek).decrypt(iv, sealed, jwe_header),
        "open.verify_signing_input": lambda: verify(jws_sig, memoryview(jws)[: len(signing_input)]),
        "open.base64url_decode_payload": decode_payload,
        "open.claims_json_parse": lambda: loads_object(claims, "claims"),
        "bare_open.key_agreement_sha256_unwrap": lambda: aes_key_unwrap(
            hashlib.sha256(recipient.exchange(epk)).digest(), bare_wrapped
        ),
        "bare_open.aes_gcm_claims": lambda: AESGCM(cek).decrypt(iv, bare_sealed, b"header"),
        "bare_open.verify_claims": lambda: verify(claims_sig, claims),
    }
    figures: dict[str, Any] = _time_steps(seal_steps, rounds) | _time_steps(open_steps, rounds)
    for side in ("seal", "bare_seal", "open", "bare_open"):
        figures[f"{side}.sum"] = round(
            sum(v for k, v in figures.items() if k.startswith(f"{side}.")), 1
        )
    figures["sizes"] = {"claims": len(claims), "jws": len(jws), "token": len(token)}
    return figures


def run(quick: bool = False, *, blocks: int = 5) -> dict[str, Any]:
    rounds = 40 if quick else 200
    # As in every atlas-broker process (the CLI sets it first): fixed glibc thresholds, so
    # a case's figures do not depend on which cases ran before it.
    allocator = "fixed thresholds" if keep_heap_top() else "glibc defaults"
    cases: dict[str, Any] = {}
    for size in (4 * 1024, 64 * 1024):
        for sign in SIGN_KINDS:
            for enc in ENC_KINDS:
                cases[f"{size // 1024}k_{sign}_{enc}"] = _case(sign, enc, size, rounds, blocks)

    def worst(prefix: str, key: str) -> float:
        return float(max(case[key] for name, case in cases.items() if name.startswith(prefix)))

    return {
        "allocator": allocator,
        "rounds": rounds,
        "blocks": blocks,
        "unit": "microseconds, median of block medians per package",
        "target_seal_over_bare": 1.5,
        "worst_seal_over_bare_4k": worst("4k", "seal_over_bare"),
        "worst_seal_over_bare_64k": worst("64k", "seal_over_bare"),
        "worst_seal_from_dict_over_bare_64k": worst("64k", "seal_from_dict_over_bare"),
        "worst_seal_with_log_digest_over_bare_64k": worst("64k", "seal_with_log_digest_over_bare"),
        "worst_open_over_bare_4k": worst("4k", "open_over_bare"),
        "worst_open_over_bare_64k": worst("64k", "open_over_bare"),
        "cases": cases,
        "breakdown": {
            f"{size // 1024}k_{sign}_X25519": _breakdown(sign, size, rounds * blocks)
            for size in (4 * 1024, 64 * 1024)
            for sign in SIGN_KINDS
        },
    }


if __name__ == "__main__":  # pragma: no cover
    print(orjson.dumps(run(quick=True), option=orjson.OPT_INDENT_2).decode())
