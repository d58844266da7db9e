"""The tamper-evident log: Merkle appends, proofs, ``audit verify``, checkpoints on a stream.

Figures:
- ``merkle``: leaf appends per second into the O(log n) frontier and into the full tree
  (pure Python, SHA-256 from hashlib);
- ``proofs``: inclusion proof generation and verification in µs on a large tree, and the
  proof length;
- ``audit_verify``: ``audit verify`` (offline, on an exported copy) over a generated log of
  1,000,000 realistic entries with a signed checkpoint every 1,000 — entries per second
  and total seconds (target: under a minute);
- ``stream``: entries appended per second through the real LOG stream (chunks of 256, fsync
  always) with the checkpointer running at its defaults, and the checkpoint latency (entry
  stored -> in a signed checkpoint) p50/p99.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import statistics
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import nats
import orjson
import structlog

from broker._audit_jobs import verify_log
from broker._bus import ensure_streams
from broker._checkpoint import build_checkpoint, log_origin
from broker._checkpointer import Checkpointer
from broker._embedded import EmbeddedNats
from broker._log import CHUNK, append_entries, timestamp
from broker._logcopy import COPY_FORMAT, LogCopy
from broker._merkle import Frontier, MerkleTree, leaf_hash, verify_inclusion
from broker._note import NoteSigner, NoteVerifier
from keys import PrivateKey

ORIGIN = log_origin("atlas-broker")


def _entry(i: int) -> bytes:
    """A delivery entry of realistic size (~480 bytes), sorted keys as the log writes them."""
    return orjson.dumps(
        {
            "broker_kid": "Zq0mS3kP1Dq6zV4b2nN7Z1o3rW9qv3rU5x8yA0cB2dE",
            "jwe_sha256": f"{i:064x}",
            "objects": {"delivered": 7, "derived": 0, "withheld": 1},
            "pkg": f"pkg-{i:012d}",
            "rcpt": f"lea-{i % 7}",
            "rcpt_kid": "b8Jq2kP1Dq6zV4b2nN7Z1o3rW9qv3rU5x8yA0cB2dEf",
            "src": {"org": f"bank-{i % 31}", "sha256": f"{i * 7:064x}", "submission": f"s{i}"},
            "tlp": ("clear", "green", "amber", "red")[i % 4],
            "ts": f"2026-11-02T09:{i // 60000 % 60:02d}:{i // 1000 % 60:02d}.000000Z",
            "type": "delivery",
            "v": 1,
            "view_sha256": f"{i * 3:064x}",
        },
        option=orjson.OPT_SORT_KEYS,
    )


def bench_merkle(n: int) -> dict[str, Any]:
    leaves = [leaf_hash(i.to_bytes(8, "big")) for i in range(n)]
    frontier = Frontier()
    started = time.perf_counter()
    for leaf in leaves:
        frontier.append(leaf)
    frontier.root()
    frontier_s = time.perf_counter() - started
    tree = MerkleTree()
    started = time.perf_counter()
    for leaf in leaves:
        tree.append(leaf)
    tree_s = time.perf_counter() - started
    started = time.perf_counter()
    for i in range(n):
        leaf_hash(b"x" * 480 + i.to_bytes(8, "big"))
    hash_s = time.perf_counter() - started
    return {
        "leaves": n,
        "frontier_appends_per_s": round(n / frontier_s),
        "tree_appends_per_s": round(n / tree_s),
        "leaf_hash_480B_per_s": round(n / hash_s),
    }


def bench_proofs(n: int, samples: int = 2000) -> dict[str, Any]:
    tree = MerkleTree()
    for i in range(n):
        tree.append(leaf_hash(i.to_bytes(8, "big")))
    root = tree.root()
    rng = random.Random(7)
    indexes = [rng.randrange(n) for _ in range(samples)]
    started = time.perf_counter()
    proofs = [tree.inclusion_proof(i) for i in indexes]
    gen = (time.perf_counter() - started) / samples
    started = time.perf_counter()
    for i, proof in zip(indexes, proofs, strict=True):
        verify_inclusion(tree.leaf(i), i, n, proof, root)
    ver = (time.perf_counter() - started) / samples
    return {
        "tree_size": n,
        "proof_hashes": len(proofs[0]),
        "inclusion_generate_us": round(gen * 1e6, 1),
        "inclusion_verify_us": round(ver * 1e6, 1),
    }


def write_generated_copy(path: Path, n: int, every: int = 1000) -> float:
    """A log copy of ``n`` entries with a signed checkpoint every ``every``; returns seconds."""
    started = time.perf_counter()
    signer = NoteSigner(ORIGIN, PrivateKey.generate("Ed25519"))
    path.mkdir(parents=True)
    frontier, previous = Frontier(), Frontier()
    pending: list[bytes] = []
    seq = 0
    with (
        (path / "entries.jsonl").open("wb") as entries,
        (path / "checkpoints.jsonl").open("wb") as checkpoints,
    ):
        for start in range(0, n, CHUNK):
            seq += 1
            batch = [_entry(i) for i in range(start, min(n, start + CHUNK))]
            entries.write(b"\n".join(batch) + b"\n")
            pending.extend(frontier.append_entry(raw) for raw in batch)
            if len(pending) >= every or start + CHUNK >= n:
                seq += 1
                message = build_checkpoint(
                    signer, previous=previous, current=frontier, leaves=pending,
                    log_seq=seq - 1, ts="2026-11-02T10:00:00.000000Z",
                )  # fmt: skip
                line = {"seq": seq, "data": message.encode().decode()}
                checkpoints.write(orjson.dumps(line) + b"\n")
                previous, pending = frontier.copy(), []
    manifest = {"format": COPY_FORMAT, "v": 1, "origin": ORIGIN, "entries": n}
    (path / "manifest.json").write_bytes(orjson.dumps(manifest))
    (path / "vkey").write_text(signer.verifier.vkey)
    return time.perf_counter() - started


def bench_audit_verify(n: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="atlas-bench-log-") as tmp:
        copy = Path(tmp) / "copy"
        generated = write_generated_copy(copy, n)
        signer_vkey = (copy / "vkey").read_text()
        started = time.perf_counter()
        result = asyncio.run(
            verify_log(LogCopy(copy), log_keys=[NoteVerifier.from_vkey(signer_vkey)])
        )
        seconds = time.perf_counter() - started
        size = sum(f.stat().st_size for f in copy.iterdir())
    if not result.ok:
        raise RuntimeError(f"generated log did not verify: {result.summary()}")
    return {
        "entries": n,
        "checkpoints": result.checkpoints,
        "copy_bytes": size,
        "generate_s": round(generated, 1),
        "verify_s": round(seconds, 2),
        "verify_entries_per_s": round(n / seconds),
        "under_a_minute": seconds < 60,
    }


async def _stream(n: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="atlas-bench-stream-") as tmp:
        server = EmbeddedNats(Path(tmp), publish_url=False)
        await server.start()
        try:
            nc = await nats.connect(server.url)
            js = nc.jetstream()
            await ensure_streams(js)
            checkpointer = Checkpointer(js, signing_key=PrivateKey.generate("Ed25519"),
                                        origin=ORIGIN)  # fmt: skip
            task = asyncio.create_task(checkpointer.run())
            ts = timestamp(datetime.now(UTC))
            started = time.perf_counter()
            for sub in range(0, n, CHUNK):
                entries = [
                    {"type": "withheld", "ts": ts, "rcpt": "lea-1", "reason": "tlp", "i": i}
                    for i in range(sub, min(n, sub + CHUNK))
                ]
                await append_entries(js, f"atlas.log.entries.b{sub}", entries)
            appended = time.perf_counter() - started
            async with asyncio.timeout(60):
                while checkpointer.stats.size < n:  # noqa: ASYNC110 - another task's counter
                    await asyncio.sleep(0.01)
            all_in = time.perf_counter() - started
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            latencies = sorted(checkpointer.stats.latencies)
            await nc.close()
        finally:
            await server.stop()
    return {
        "entries": n,
        "append_entries_per_s": round(n / appended),
        "all_checkpointed_s": round(all_in, 2),
        "checkpoints": checkpointer.stats.checkpoints,
        "checkpoint_latency_p50_ms": round(statistics.median(latencies) * 1000, 1),
        "checkpoint_latency_p99_ms": round(latencies[int(len(latencies) * 0.99) - 1] * 1000, 1),
    }


@contextlib.contextmanager
def _quiet_logs() -> Iterator[None]:
    """Keep the checkpointer's info lines off stdout, where the figures are printed."""
    saved = structlog.get_config()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    try:
        yield
    finally:
        structlog.configure(**saved)


def run(quick: bool = False) -> dict[str, Any]:
    with _quiet_logs():
        return {
            "merkle": bench_merkle(100_000 if quick else 1_000_000),
            "proofs": bench_proofs(10_000 if quick else 1_000_000),
            "audit_verify": bench_audit_verify(50_000 if quick else 1_000_000),
            "stream": asyncio.run(_stream(20_000 if quick else 200_000)),
        }


if __name__ == "__main__":
    print(orjson.dumps(run(quick=True), option=orjson.OPT_INDENT_2).decode())
