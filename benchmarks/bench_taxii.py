"""TAXII 2.1: add_objects and paged reads, ours beside medallion, measured in the same run.

Same client (taxii2-client, one thread, one session per server), same envelopes (the same
bytes are POSTed to every server), same objects stored for the reads. Every server runs in
its own process on loopback, so the client and the server each have a core:

- ``medallion``: medallion from PyPI, memory backend, started like
  ``tests/integration/medallion.py`` (its config file, its command), ``max_page_size`` set to
  the page size used here; preloaded for reads through its data file.
- ``ours_memory``: our ASGI app (uvicorn) over ``MemoryBackend``: the same work as
  medallion's memory backend (check, keep in memory, answer), so the ratio compares servers.
- ``ours_nats``: the production path (``run_taxii`` over a real nats-server, fsync always):
  a POST is signed on the member's behalf and JetStream-stored before the 202; reads come
  from the reader's views in the VIEWS stream (preloaded by publishing the view bundles the
  router would have written).

add_objects: N objects in envelopes of 100 (and 1,000) into an empty collection, without
waiting for completion (medallion answers ``complete``; ``ours_nats`` answers ``pending`` once
stored, the router then decides); each server fresh for each of ``best_of`` runs, the best
reported with the median. medallion checks every new object against every stored one, so its
rate falls as the collection grows: the 2,000-object figure is its best case here.

Paged reads: every object of a collection of N, ``limit`` = page size, through ``as_pages``;
the count and the ids are checked. medallion's first page costs O(N²) (its
``match[spec_version]`` default compares every object with every other), so past a time budget
it is stopped and marked ``completed: false``, with an N² extrapolation from the largest size
it completed, labelled as such. Ours is timed after one warm-up request (``index_build_s``:
a fresh server indexes the stored views on its first read).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import requests
from taxii2client.v21 import ApiRoot, Collection, as_pages

from benchmarks.bench_pipeline import _bundle

PAGE = 1000
MEMBER, READER = "member-1", "partner-1"
M_USER, M_PASSWORD = "admin", "Password0"
M_ROOT, M_COLLECTION = "api1", "91a7b528-80eb-42ed-a74d-c6fbd5a26116"
ADDED = datetime(2026, 11, 2, 9, 30, tzinfo=UTC)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _objects(n: int) -> list[dict[str, Any]]:
    return list(_bundle(n)["objects"])


def _envelopes(objects: list[dict[str, Any]], size: int) -> list[bytes]:
    return [orjson.dumps({"objects": objects[i : i + size]}) for i in range(0, len(objects), size)]


@dataclass
class Target:
    """A running server: where a member writes and where a reader reads."""

    write_url: str
    read_url: str
    write_auth: tuple[str, str]
    read_auth: tuple[str, str]


# --- servers -----------------------------------------------------------------------------


def _wait_ready(proc: subprocess.Popen[bytes], probe: Any, log: Path, budget: float) -> None:
    deadline = time.monotonic() + budget
    while True:
        try:
            if probe():
                return
        except requests.ConnectionError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"server did not start: {log.read_text()[-2000:]}")
        time.sleep(0.05)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextlib.contextmanager
def medallion(tmp: Path, preload_json: bytes) -> Iterator[tuple[Target, Any]]:
    """medallion (memory backend) on loopback; yields the target and its process."""
    tmp.mkdir(parents=True, exist_ok=True)
    preload: list[dict[str, Any]] = orjson.loads(preload_json)
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    manifest = [
        {
            "id": o["id"],
            "date_added": (ADDED + timedelta(microseconds=i)).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "version": o["modified"],
            "media_type": "application/stix+json;version=2.1",
        }
        for i, o in enumerate(preload)
    ]
    data = {
        "/discovery": {
            "title": "bench medallion",
            "default": f"{base}/{M_ROOT}/",
            "api_roots": [f"{base}/{M_ROOT}/"],
        },
        M_ROOT: {
            "information": {
                "title": M_ROOT,
                "versions": ["application/taxii+json;version=2.1"],
                "max_content_length": 100_000_000,
            },
            "status": [],
            "collections": [
                {
                    "id": M_COLLECTION,
                    "title": "bench",
                    "can_read": True,
                    "can_write": True,
                    "media_types": ["application/stix+json;version=2.1"],
                    "objects": preload,
                    "manifest": manifest,
                }
            ],
        },
    }
    (tmp / "data.json").write_bytes(orjson.dumps(data))
    del data, preload, manifest
    config = {
        "backend": {
            "module": "medallion.backends.memory_backend",
            "module_class": "MemoryBackend",
            "filename": str(tmp / "data.json"),
        },
        "users": {M_USER: M_PASSWORD},
        "taxii": {"max_page_size": PAGE},
    }
    (tmp / "config.json").write_text(json.dumps(config))
    exe = Path(sys.executable).with_name("medallion")
    log = tmp / "medallion.log"
    with log.open("wb") as errors:
        proc = subprocess.Popen(
            [str(exe), "--host", "127.0.0.1", "--port", str(port), str(tmp / "config.json")],
            stdout=subprocess.DEVNULL,
            stderr=errors,
        )
    try:

        def probe() -> bool:
            requests.get(f"{base}/taxii2/", auth=(M_USER, M_PASSWORD), timeout=5)
            return True

        _wait_ready(proc, probe, log, 120)
        url = f"{base}/{M_ROOT}/collections/{M_COLLECTION}/"
        auth = (M_USER, M_PASSWORD)
        yield Target(url, url, auth, auth), proc
    finally:
        _stop(proc)


@contextlib.contextmanager
def ours(tmp: Path, preload_json: bytes, backend: str) -> Iterator[Target]:
    """Our TAXII server in its own process (``serve`` below); yields the target."""
    from adapters._taxii import set_secret

    tmp.mkdir(parents=True, exist_ok=True)
    creds = tmp / "taxii-credentials.toml"
    tokens = {org: set_secret(creds, org, n=1024) for org in (MEMBER, READER)}
    (tmp / "preload.json").write_bytes(preload_json)
    ready = tmp / "ready"
    log = tmp / "server.log"
    with log.open("wb") as errors:
        proc = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.bench_taxii", "serve", backend, str(tmp)],
            stdout=subprocess.DEVNULL,
            stderr=errors,
            cwd=Path(__file__).resolve().parent.parent,
        )
    try:
        _wait_ready(proc, ready.exists, log, 300)
        time.sleep(0.05)
        url = ready.read_text().strip()
        write_auth, read_auth = (MEMBER, tokens[MEMBER]), (READER, tokens[READER])
        root = ApiRoot(f"{url}/atlas/", user=READER, password=tokens[READER])
        read_url = next(c.url for c in root.collections if c.title == f"views:{READER}")
        root = ApiRoot(f"{url}/atlas/", user=MEMBER, password=tokens[MEMBER])
        write_url = next(c.url for c in root.collections if c.title == "community")
        yield Target(write_url, read_url, write_auth, read_auth)
    finally:
        _stop(proc)


# --- the server process --------------------------------------------------------------------


def _started(tmp: Path) -> Any:
    def write(url: str) -> None:
        (tmp / "ready.tmp").write_text(url)
        (tmp / "ready.tmp").rename(tmp / "ready")

    return write


async def _serve_memory(tmp: Path) -> None:
    from adapters._taxii import Credentials, MemoryBackend, create_app, serve_http

    backend = MemoryBackend(
        members={MEMBER: ()}, readers=[READER], community="bench", max_content_length=10_000_000
    )
    preload = orjson.loads((tmp / "preload.json").read_bytes())
    for i in range(0, len(preload), PAGE):
        backend.add_view(READER, preload[i : i + PAGE], ADDED)
    del preload  # a server keeps its index, not the objects it was fed
    app = create_app(
        backend,
        Credentials.from_file(tmp / "taxii-credentials.toml"),
        cursor_key=os.urandom(32),
    )
    await serve_http(app, host="127.0.0.1", port=0, on_started=_started(tmp))


async def _serve_nats(tmp: Path) -> None:
    import nats

    from broker._bus import ensure_streams, view_subject
    from broker._config import Settings
    from broker._directory_store import store_directory
    from broker._embedded import EmbeddedNats
    from broker._service import streams_for
    from broker._taxii_service import run_taxii
    from keys import generate_org_keys, load_private_key
    from policy import Directory

    public: dict[str, list[dict[str, str]]] = {}
    for org in (MEMBER, READER, "atlas-broker"):
        keys = generate_org_keys(org, tmp / "keys" / org)
        public[org] = [keys.sign_jwk, keys.enc_jwk]
    directory = Directory.from_mapping(
        {
            "community": {"id": "bench", "name": "bench", "partners_in_community": True},
            "broker": {"keys": [{"jwk": public["atlas-broker"][0], "use": "sig"}]},
            "organisations": [
                {
                    "id": org,
                    "name": org,
                    "kind": "member" if org == MEMBER else "partner",
                    "taxii_read": org == READER,
                    "keys": [{"jwk": j, "use": j["use"]} for j in public[org]],
                }
                for org in (MEMBER, READER)
            ],
            "subscriptions": [{"recipient": READER, "originators": ["*"]}],
        }
    )
    key_path = tmp / "keys" / "atlas-broker" / "atlas-broker.sign.pem"
    settings = Settings(
        data_dir=tmp / "data",
        broker={"signing_key": key_path},
        taxii={"port": 0, "credentials_file": tmp / "taxii-credentials.toml"},
    )
    preload = orjson.loads((tmp / "preload.json").read_bytes())
    async with EmbeddedNats(tmp / "data", publish_url=False) as server:
        nc = await nats.connect(server.url)
        try:
            js = nc.jetstream()
            await ensure_streams(js, streams_for(settings))
            await store_directory(js, directory)
            for i in range(0, len(preload), PAGE):
                view = {
                    "type": "bundle",
                    "id": f"bundle--{uuid.uuid4()}",
                    "objects": preload[i : i + PAGE],
                }
                await js.publish(view_subject(READER, uuid.uuid4().hex), orjson.dumps(view))
            del preload
            await run_taxii(
                js, settings, signing_key=load_private_key(key_path), on_started=_started(tmp)
            )
        finally:
            await nc.close()


def serve(backend: str, tmp: Path) -> None:
    """Entry of the server process; runs until SIGTERM."""
    import structlog

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40))
    if os.environ.get("BENCH_NOGC"):
        import gc

        gc.disable()

    async def main() -> None:
        task = asyncio.current_task()
        assert task is not None
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
        await (_serve_memory(tmp) if backend == "memory" else _serve_nats(tmp))

    with contextlib.suppress(asyncio.CancelledError):
        asyncio.run(main())


# --- the client ------------------------------------------------------------------------------


def _add(target: Target, envelopes: list[bytes], objects: int) -> dict[str, Any]:
    collection = Collection(
        target.write_url, user=target.write_auth[0], password=target.write_auth[1]
    )
    assert collection.can_write
    done = 0
    gc.collect()
    t0 = time.perf_counter()
    for data in envelopes:
        status = collection.add_objects(data, wait_for_completion=False)
        done += status.success_count + status.pending_count
    elapsed = time.perf_counter() - t0
    collection.close()
    assert done == objects, f"{done} of {objects} objects accepted"
    return {
        "objects": objects,
        "seconds": round(elapsed, 3),
        "objects_per_s": round(objects / elapsed),
    }


def _read(
    target: Target, expected: set[str], *, proc: Any = None, budget: float | None = None
) -> dict[str, Any]:
    collection = Collection(target.read_url, user=target.read_auth[0], password=target.read_auth[1])
    assert collection.can_read
    seen: list[str] = []
    pages = 0
    timer = threading.Timer(budget, proc.terminate) if budget and proc is not None else None
    gc.collect()
    t0 = time.perf_counter()
    first = None
    try:
        if timer is not None:
            timer.start()
        for page in as_pages(collection.get_objects, per_request=PAGE):
            if first is None:
                first = time.perf_counter() - t0
            pages += 1
            seen += [o["id"] for o in page.get("objects", [])]
    except requests.ConnectionError:
        elapsed = time.perf_counter() - t0
        return {
            "objects": len(expected),
            "completed": False,
            "stopped_after_s": round(elapsed, 1),
            "objects_read": len(seen),
            # measured: the whole read would have taken longer than the budget
            "objects_per_s_at_most": round(len(expected) / elapsed, 1),
        }
    finally:
        if timer is not None:
            timer.cancel()
        collection.close()
    elapsed = time.perf_counter() - t0
    assert len(seen) == len(expected) and set(seen) == expected, (len(seen), len(expected))
    return {
        "objects": len(expected),
        "completed": True,
        "pages": pages,
        "seconds": round(elapsed, 3),
        "first_page_s": round(first or 0.0, 3),
        "objects_per_s": round(len(seen) / elapsed),
    }


def _warm(target: Target) -> float:
    """One request before timing: ours builds its index of a fresh server here."""
    collection = Collection(target.read_url, user=target.read_auth[0], password=target.read_auth[1])
    t0 = time.perf_counter()
    collection.get_objects(limit=1)
    collection.close()
    return round(time.perf_counter() - t0, 3)


def _best(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The fastest of the repetitions, with the median beside it (a shared machine is noisy)."""
    rates = sorted(r["objects_per_s"] for r in runs)
    best = max(runs, key=lambda r: r["objects_per_s"])
    return {**best, "median_objects_per_s": rates[len(rates) // 2], "runs": len(runs)}


def _bench_add(root: Path, n: int, envelope: int, reps: int) -> dict[str, Any]:
    envelopes = _envelopes(_objects(n), envelope)
    out: dict[str, Any] = {
        "envelope_objects": envelope,
        "envelope_bytes_avg": sum(map(len, envelopes)) // len(envelopes),
    }
    runs: dict[str, list[dict[str, Any]]] = {"medallion": [], "ours_memory": [], "ours_nats": []}
    for rep in range(reps):  # interleaved, each run on a fresh server and an empty collection
        with medallion(root / f"m-add-{n}-{envelope}-{rep}", b"[]") as (target, _):
            runs["medallion"].append(_add(target, envelopes, n))
        for backend in ("memory", "nats"):
            with ours(root / f"o-{backend}-add-{n}-{envelope}-{rep}", b"[]", backend) as target:
                runs[f"ours_{backend}"].append(_add(target, envelopes, n))
    out.update({name: _best(found) for name, found in runs.items()})
    base = out["medallion"]["objects_per_s"]
    for backend in ("memory", "nats"):
        rate = out[f"ours_{backend}"]["objects_per_s"]
        out[f"ratio_ours_{backend}_to_medallion"] = round(rate / base, 1)
    return out


def _bench_read(root: Path, n: int, budget: float, reps: int) -> dict[str, Any]:
    objects = _objects(n)
    expected = {o["id"] for o in objects}
    preload = orjson.dumps(objects)
    del objects  # the client holds ids and bytes only: its garbage collector stays cheap
    out: dict[str, Any] = {"page": PAGE}
    for backend in ("memory", "nats"):
        with ours(root / f"o-{backend}-read-{n}", preload, backend) as target:
            warm = _warm(target)
            runs = [_read(target, expected) for _ in range(reps)]
            out[f"ours_{backend}"] = {**_best(runs), "index_build_s": warm}
    # One run: at 10,000 objects one run of medallion takes minutes.
    with medallion(root / f"m-read-{n}", preload) as (target, proc):
        out["medallion"] = _read(target, expected, proc=proc, budget=budget)
    return out


def run(quick: bool = False) -> dict[str, Any]:
    adds = ((1_000, 100),) if quick else ((2_000, 100), (10_000, 100), (10_000, 1000))
    read_sizes = (500, 2_000) if quick else (1_000, 2_000, 10_000, 100_000)
    reps = 1 if quick else 3

    def budget(n: int) -> float:  # seconds medallion gets to answer a whole paged read
        return 60.0 if quick else (900.0 if n <= 10_000 else 120.0)

    out: dict[str, Any] = {
        "client": "taxii2-client 2.3 (requests), one thread, its own process",
        "page": PAGE,
        "best_of": reps,
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }
    with tempfile.TemporaryDirectory(prefix="atlas-bench-taxii-") as tmp:
        root = Path(tmp)
        out["add_objects"] = {
            f"{n}_in_{size}s": _bench_add(root, n, size, reps) for n, size in adds
        }
        reads = {str(n): _bench_read(root, n, budget(n), reps) for n in read_sizes}
    out["paged_reads"] = reads
    out["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    # medallion's first page is quadratic: scale a*N^2 from the largest size it completed.
    done = [
        (int(n), r["medallion"]["seconds"]) for n, r in reads.items() if r["medallion"]["completed"]
    ]
    n0, s0 = max(done) if done else (0, 0.0)
    for n, r in reads.items():
        m = r["medallion"]
        if not m["completed"] and n0:
            est = s0 * (int(n) / n0) ** 2
            m["extrapolated_seconds_n2"] = round(est)
            m["extrapolated_objects_per_s_n2"] = round(int(n) / est, 1)
        for backend in ("memory", "nats"):
            ours_rate = r[f"ours_{backend}"]["objects_per_s"]
            if m["completed"]:
                r[f"ratio_ours_{backend}_to_medallion"] = round(ours_rate / m["objects_per_s"], 1)
            else:  # measured bound: medallion did not finish within the budget
                bound = ours_rate / m["objects_per_s_at_most"]
                r[f"ratio_ours_{backend}_to_medallion_at_least"] = round(bound, 1)
    return out


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("command", choices=["serve"])
    parser.add_argument("backend", choices=["memory", "nats"])
    parser.add_argument("tmp", type=Path)
    args = parser.parse_args()
    serve(args.backend, args.tmp)
