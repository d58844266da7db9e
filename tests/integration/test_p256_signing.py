"""A broker with a P-256 key signs the packages of P-256 recipients with ES256 (for agencies
whose JOSE library has no EdDSA), everyone else's with Ed25519; jwcrypto checks both."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from jwcrypto import jwe, jwk, jws
from nats.js import JetStreamContext

from broker._audit import read_log
from broker._bus import DELIVERIES, deliver_subject, ensure_streams
from broker._config import Settings
from broker._directory_store import store_directory
from broker._embedded import EmbeddedNats
from broker._service import broker_p256_key, run_router, streams_for
from broker.errors import ConfigError
from keys import generate_org_keys
from tests.integration.helpers import bundle, indicator, publish, receive_all, wait_routed


def _inner_header_and_claims(token: bytes, recipient_pem: Path, broker_jwk: dict[str, Any]) -> Any:
    outer = jwe.JWE()
    outer.deserialize(token.decode(), key=jwk.JWK.from_pem(recipient_pem.read_bytes()))
    inner = jws.JWS()
    inner.deserialize(outer.payload.decode())
    inner.verify(jwk.JWK(**broker_jwk))
    return inner.jose_header, orjson.loads(inner.payload)


async def test_p256_recipients_get_es256_and_the_others_ed25519(
    js: JetStreamContext,
    nats_server: EmbeddedNats,
    make_community: Callable[..., Any],
    tmp_path: Path,
) -> None:
    community = make_community(enc="P-256")
    # lea-2 publishes an X25519 key instead.
    x25519 = generate_org_keys("lea-2", tmp_path / "lea-2-x25519")
    community.org("lea-2")["keys"] = [
        {"jwk": community.public["lea-2"][0], "use": "sig"},
        {"jwk": x25519.enc_jwk, "use": "enc"},
    ]
    p256 = generate_org_keys("atlas-broker", tmp_path / "broker-p256", sign="ES256")
    community.doc["broker"]["keys"].append({"jwk": p256.sign_jwk, "use": "sig"})
    ed25519_jwk = community.public["atlas-broker"][0]
    settings = Settings(
        data_dir=tmp_path / "broker-data",
        nats={"url": nats_server.url},  # type: ignore[arg-type]
        broker={  # type: ignore[arg-type]
            "signing_key": community.root / "atlas-broker" / "atlas-broker.sign.pem",
            "p256_signing_key": tmp_path / "broker-p256" / "atlas-broker.sign.pem",
        },
    )
    await ensure_streams(js, streams_for(settings))
    await store_directory(js, community.directory())
    ready = asyncio.Event()
    task = asyncio.create_task(
        run_router(js, settings, signing_key=community.broker_key, ready=ready)
    )
    try:
        await ready.wait()
        ind = indicator("clear")
        sid = await publish(settings, js, community, tmp_path, "bank-a", bundle(ind))
        await wait_routed(js, 1)

        to_p256 = await js.get_last_msg(DELIVERIES, deliver_subject("lea-1", sid))
        header, claims = _inner_header_and_claims(
            to_p256.data or b"", community.enc_key("lea-1"), p256.sign_jwk
        )
        assert (header["alg"], header["kid"]) == ("ES256", p256.sign_jwk["kid"])
        assert claims["aud"] == "lea-1" and claims["stix"]["objects"][0]["id"] == ind["id"]
        # The Ed25519 key does not verify it: it really is the P-256 key's signature.
        with pytest.raises(jws.InvalidJWSSignature):
            _inner_header_and_claims(to_p256.data or b"", community.enc_key("lea-1"), ed25519_jwk)

        to_x25519 = await js.get_last_msg(DELIVERIES, deliver_subject("lea-2", sid))
        header, claims = _inner_header_and_claims(
            to_x25519.data or b"", tmp_path / "lea-2-x25519" / "lea-2.enc.pem", ed25519_jwk
        )
        assert (header["alg"], header["kid"]) == ("EdDSA", ed25519_jwk["kid"])

        # Our own receive bridge opens both, and the log names the key that signed each.
        got1 = await receive_all(settings, js, community, "lea-1", tmp_path / "in-1")
        got2 = await receive_all(
            settings, js, community, "lea-2", tmp_path / "in-2",
            key=tmp_path / "lea-2-x25519" / "lea-2.enc.pem",
        )  # fmt: skip
        assert got1.received == got2.received == 1
        deliveries = {e["rcpt"]: e async for e in _entries(js) if e["type"] == "delivery"}
        assert deliveries["lea-1"]["broker_kid"] == p256.sign_jwk["kid"]
        assert deliveries["lea-2"]["broker_kid"] == ed25519_jwk["kid"]
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def _entries(js: JetStreamContext) -> Any:
    async for record in read_log(js):
        yield record.entry


def test_a_p256_key_setting_holding_another_kind_of_key_is_refused(
    make_community: Callable[..., Any], tmp_path: Path
) -> None:
    community = make_community()
    settings = Settings(
        data_dir=tmp_path / "data",
        broker={"p256_signing_key": community.root / "atlas-broker" / "atlas-broker.sign.pem"},  # type: ignore[arg-type]
    )
    with pytest.raises(ConfigError, match="Ed25519 key, not a P-256 signing key"):
        broker_p256_key(settings)
