"""What nats-server's memory costs per distinct subject it stores.

The broker gives every package, receipt, ledger object and log chunk a subject of its own
(about 22 per submission of 10 objects to 5 recipients), for once-per-subject idempotency.
nats-server indexes every subject of a stream in memory for as long as the stream keeps a
message on it, so its memory grows with what is retained (see the soak's heap figures).

Measured here apart from the broker: N messages of 2 KB published into one file-backed
stream, once on a single subject (the baseline, same run) and once each on its own subject
shaped like a delivery subject; nats-server's resident memory (``/varz`` ``mem``) is read
after a pause that lets its block caches expire. Reported: RSS per run and the difference
per subject. RSS includes garbage the Go collector has not returned yet, so the figure is
what a machine must provide, not the live heap.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import nats
from nats.js.api import StorageType, StreamConfig

from benchmarks.bench_taxii import _stop as stop
from broker._embedded import find_nats_server

PAYLOAD = 2000
SETTLE_S = 12.0
"""nats-server drops a message block's cache after 10 s without access."""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def _fill(port: int, n: int, distinct: bool) -> tuple[float, int]:
    """Publish ``n`` messages; (seconds, distinct subjects the stream reports)."""
    nc = None
    for _ in range(100):
        with contextlib.suppress(Exception):
            nc = await nats.connect(f"nats://127.0.0.1:{port}", allow_reconnect=False)
            break
        await asyncio.sleep(0.1)
    assert nc is not None, "nats-server did not start"
    try:
        js = nc.jetstream()
        await js.add_stream(
            StreamConfig(name="D", subjects=["atlas.deliver.*.*"], storage=StorageType.FILE)
        )
        payload = os.urandom(PAYLOAD)
        started = time.perf_counter()
        pending = []
        for i in range(n):
            subject = f"atlas.deliver.lea-{i % 5}.{i:032x}" if distinct else "atlas.deliver.a.b"
            pending.append(js.publish(subject, payload))
            if len(pending) >= 500:
                await asyncio.gather(*pending)
                pending = []
        await asyncio.gather(*pending)
        seconds = time.perf_counter() - started
        # nats-py's StreamState has no num_subjects: ask the API directly.
        reply = await nc.request("$JS.API.STREAM.INFO.D", b"", timeout=10)
        state = json.loads(reply.data)["state"]
        assert state["messages"] == n, (state["messages"], n)
        return seconds, int(state.get("num_subjects", 0))
    finally:
        await nc.close()


def _rss_after(n: int, distinct: bool, root: Path) -> dict[str, Any]:
    store = Path(tempfile.mkdtemp(prefix="subjects-", dir=root))
    port, monitor = _free_port(), _free_port()
    while monitor == port:
        monitor = _free_port()
    conf = store / "nats.conf"
    conf.write_text(
        f"listen: 127.0.0.1:{port}\nhttp: 127.0.0.1:{monitor}\n"
        f'jetstream {{ store_dir: "{store / "js"}" }}\n'
    )
    proc = subprocess.Popen(
        [str(find_nats_server()), "-c", str(conf)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        seconds, subjects = asyncio.run(_fill(port, n, distinct))
        time.sleep(SETTLE_S)
        with urllib.request.urlopen(f"http://127.0.0.1:{monitor}/varz", timeout=10) as resp:
            varz = json.load(resp)
        return {
            "messages": n,
            "subjects": subjects,
            "rss_mb": round(varz["mem"] / 2**20, 1),
            "publish_s": round(seconds, 1),
        }
    finally:
        stop(proc)


def run(quick: bool = False) -> dict[str, Any]:
    n = 30_000 if quick else 300_000
    store = os.environ.get("ATLAS_SUBJECTS_STORE") or None
    with tempfile.TemporaryDirectory(prefix="atlas-bench-subjects-", dir=store) as tmp:
        one = _rss_after(n, False, Path(tmp))
        many = _rss_after(n, True, Path(tmp))
    assert (one["subjects"], many["subjects"]) == (1, n), (one["subjects"], many["subjects"])
    per_subject = (many["rss_mb"] - one["rss_mb"]) * 2**20 / (n - 1)
    return {
        "payload_bytes": PAYLOAD,
        "one_subject": one,
        "distinct_subjects": many,
        "rss_bytes_per_subject": round(per_subject),
        "note": "nats-server RSS after a 12 s pause; the difference is the in-memory index "
        "of the subjects (with the collector's slack)",
    }
