"""End to end through the embedded NATS: submissions/s, deliveries/s, latency, and ceilings.

Figures for bundles of 10 and 100 objects to 5 recipients, next to what bounds them,
measured in the same run: raw JetStream publish throughput of the same payload sizes
(same server settings: fsync always) and the bare crypto of one package (one Ed25519
signature, one X25519 agreement, AES-GCM) against our ``seal``.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import nats
import orjson
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.keywrap import aes_key_wrap

from broker._bus import DELIVERIES, ensure_streams, submit_subject
from broker._config import Settings
from broker._directory_store import store_directory
from broker._embedded import EmbeddedNats
from broker._feeds import router_backlog
from broker._service import run_router, streams_for
from broker._submission import make_submission
from keys import PrivateKey, generate_org_keys, load_private_key, seal
from policy import Directory

RECIPIENTS = 5
CLEAR = "marking-definition--94868c89-83c2-464b-929b-a1a8aa3c8487"
T = "2026-11-02T09:30:00.000Z"


def _bundle(n: int) -> dict[str, Any]:
    objs: list[dict[str, Any]] = []
    for i in range(n):
        if i % 3 == 2 and len(objs) >= 2:
            objs.append(
                {
                    "type": "relationship",
                    "spec_version": "2.1",
                    "id": f"relationship--{uuid.uuid4()}",
                    "created": T,
                    "modified": T,
                    "relationship_type": "related-to",
                    "source_ref": objs[-1]["id"],
                    "target_ref": objs[-2]["id"],
                    "object_marking_refs": [CLEAR],
                }
            )
        else:
            objs.append(
                {
                    "type": "indicator",
                    "spec_version": "2.1",
                    "id": f"indicator--{uuid.uuid4()}",
                    "created": T,
                    "modified": T,
                    "name": f"indicator {i}",
                    "pattern_type": "stix",
                    "valid_from": T,
                    "pattern": f"[domain-name:value = 'bad{i}.example']",
                    "object_marking_refs": [CLEAR],
                }
            )
    return {"type": "bundle", "id": f"bundle--{uuid.uuid4()}", "objects": objs}


def _community(root: Path) -> tuple[Directory, Path]:
    public: dict[str, list[dict[str, str]]] = {}
    orgs = ["member-1"] + [f"partner-{i}" for i in range(RECIPIENTS)] + ["atlas-broker"]
    for org in orgs:
        g = generate_org_keys(org, root / org)
        public[org] = [g.sign_jwk, g.enc_jwk]
    doc = {
        "community": {"id": "bench", "name": "bench", "partners_in_community": True},
        "broker": {"keys": [{"jwk": public["atlas-broker"][0], "use": "sig"}]},
        "organisations": [
            {
                "id": o,
                "name": o,
                "kind": "member" if o.startswith("member") else "partner",
                "keys": [{"jwk": j, "use": j["use"]} for j in public[o]],
            }
            for o in orgs
            if o != "atlas-broker"
        ],
        "subscriptions": [
            {"recipient": f"partner-{i}", "originators": ["*"]} for i in range(RECIPIENTS)
        ],
    }
    return Directory.from_mapping(doc), root / "atlas-broker" / "atlas-broker.sign.pem"


def _pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


def _crypto(view_bytes: int, rounds: int) -> dict[str, float]:
    view = {
        "type": "bundle",
        "id": f"bundle--{uuid.uuid4()}",
        "objects": [{"pad": "x" * (view_bytes - 100)}],
    }
    sk = PrivateKey.generate("Ed25519")
    rk = PrivateKey.generate("X25519").public
    payload = orjson.dumps(view)
    ed, x = Ed25519PrivateKey.generate(), X25519PrivateKey.generate().public_key()
    t0 = time.perf_counter()
    for _ in range(rounds):
        sig = ed.sign(payload)
        shared = X25519PrivateKey.generate().exchange(x)
        cek = os.urandom(32)
        aes_key_wrap(shared, cek)
        AESGCM(cek).encrypt(os.urandom(12), payload + sig, b"hdr")
    bare = (time.perf_counter() - t0) / rounds
    t0 = time.perf_counter()
    for _ in range(rounds):
        seal(
            stix=view,
            iss="b",
            aud="r",
            src={"org": "m", "submission": "s", "sha256": "0" * 64},
            tlp="clear",
            signing_key=sk,
            recipient_key=rk,
            now=1,
            ttl=60,
            dumps=orjson.dumps,
        )
    ours = (time.perf_counter() - t0) / rounds
    return {
        "bare_primitives_us": round(bare * 1e6, 1),
        "seal_us": round(ours * 1e6, 1),
        "seal_over_bare": round(ours / bare, 2),
    }


async def _raw_publish(js: Any, size: int, count: int) -> dict[str, float]:
    payload = os.urandom(size)
    t0 = time.perf_counter()
    for _ in range(count):
        await js.publish(f"bench.raw.{size}", payload)
    seq = count / (time.perf_counter() - t0)
    return {"sequential_msgs_per_s": round(seq, 1)}


async def _pipeline(root: Path, objects: int, count: int) -> dict[str, Any]:
    directory, broker_key_path = _community(root / "keys")
    member_key = load_private_key(root / "keys" / "member-1" / "member-1.sign.pem")
    settings = Settings(
        data_dir=root / "data",
        broker={"signing_key": broker_key_path},  # type: ignore[arg-type]
        log_level="error",
        router={"workers": 2},
    )  # type: ignore[arg-type]
    async with EmbeddedNats(root / "data", publish_url=False) as server:
        nc = await nats.connect(server.url)
        js = nc.jetstream()
        await ensure_streams(js, streams_for(settings))
        await js.add_stream(name="RAW", subjects=["bench.raw.*"])
        await store_directory(js, directory)
        tokens = []
        for _ in range(count):
            signed = make_submission(
                orjson.dumps(_bundle(objects)),
                org="member-1",
                key=member_key,
                to=(),
                feed=None,
                now=int(time.time()),
                max_bytes=settings.limits.max_bundle_bytes,
                max_objects=settings.limits.max_objects,
            )
            tokens.append(signed.token)
        raw = await _raw_publish(js, len(tokens[0]), min(count * RECIPIENTS, 2000))
        # Throughput: submissions stored first, then the router drains them.
        for token in tokens:
            await js.publish(submit_subject("member-1"), token)
        key = load_private_key(broker_key_path)
        ready = asyncio.Event()
        t0 = time.perf_counter()
        task = asyncio.create_task(run_router(js, settings, signing_key=key, ready=ready))
        async with asyncio.timeout(300):
            while True:
                if ready.is_set() and (await router_backlog(js)).drained(count):
                    break
                await asyncio.sleep(0.01)
        elapsed = time.perf_counter() - t0
        delivered = (await js.stream_info(DELIVERIES)).state.messages
        # Latency: one submission at a time, submit ack -> last recipient's package stored.
        latencies: list[float] = []
        arrivals: dict[str, int] = {}
        done = asyncio.Event()

        async def _on_delivery(msg: Any) -> None:
            sid = msg.subject.rsplit(".", 1)[-1]
            arrivals[sid] = arrivals.get(sid, 0) + 1
            if arrivals[sid] == RECIPIENTS:
                done.set()

        sub = await nc.subscribe("atlas.deliver.>", cb=_on_delivery)
        for _ in range(min(count, 100)):
            signed = make_submission(
                orjson.dumps(_bundle(objects)),
                org="member-1",
                key=member_key,
                to=(),
                feed=None,
                now=int(time.time()),
                max_bytes=settings.limits.max_bundle_bytes,
                max_objects=settings.limits.max_objects,
            )
            done.clear()
            t1 = time.perf_counter()
            await js.publish(submit_subject("member-1"), signed.token)
            await asyncio.wait_for(done.wait(), 30)
            latencies.append((time.perf_counter() - t1) * 1000)
        await sub.unsubscribe()
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass
        await nc.close()
    return {
        "objects_per_bundle": objects,
        "recipients": RECIPIENTS,
        "submissions": count,
        "submissions_per_s": round(count / elapsed, 1),
        "deliveries_per_s": round(delivered / elapsed, 1),
        "latency_ms_p50": round(statistics.median(latencies), 2),
        "latency_ms_p99": round(_pct(latencies, 99), 2),
        "raw_jetstream_same_payload": {"payload_bytes": len(tokens[0]), **raw},
        "ratio_deliveries_to_raw_publish": round(
            (delivered / elapsed) / raw["sequential_msgs_per_s"], 3
        ),
    }


def run(quick: bool = False) -> dict[str, Any]:
    count = 40 if quick else 300
    out: dict[str, Any] = {"fsync": "always (embedded default)"}
    for objects in (10, 100):
        with tempfile.TemporaryDirectory(prefix="atlas-bench-") as tmp:
            out[f"bundle_{objects}"] = asyncio.run(_pipeline(Path(tmp), objects, count))
    rounds = 200 if quick else 2000
    out["crypto_4k"] = _crypto(4096, rounds)
    return out
