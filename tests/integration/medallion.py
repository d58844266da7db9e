"""A real medallion (from PyPI) on loopback, with one read/write collection."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import requests

API_ROOT = "api1"
COLLECTION = "91a7b528-80eb-42ed-a74d-c6fbd5a26116"
USER, PASSWORD = "admin", "Password0"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def collection_url(port: int) -> str:
    return f"http://127.0.0.1:{port}/{API_ROOT}/collections/{COLLECTION}/"


@contextlib.contextmanager
def medallion(tmp: Path, port: int | None = None) -> Iterator[str]:
    """Start medallion (on ``port``, or a free one); yields its collection URL."""
    tmp.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    data = {
        "/discovery": {
            "title": "test medallion",
            "default": f"http://127.0.0.1:{port}/{API_ROOT}/",
            "api_roots": [f"http://127.0.0.1:{port}/{API_ROOT}/"],
        },
        API_ROOT: {
            "information": {
                "title": "api1",
                "versions": ["application/taxii+json;version=2.1"],
                "max_content_length": 100_000_000,
            },
            "status": [],
            "collections": [
                {
                    "id": COLLECTION,
                    "title": "member feed",
                    "can_read": True,
                    "can_write": True,
                    "media_types": ["application/stix+json;version=2.1"],
                    "objects": [],
                    "manifest": [],
                }
            ],
        },
    }
    (tmp / "data.json").write_text(json.dumps(data))
    config = {
        "backend": {
            "module": "medallion.backends.memory_backend",
            "module_class": "MemoryBackend",
            "filename": str(tmp / "data.json"),
        },
        "users": {USER: PASSWORD},
        "taxii": {"max_page_size": 100},
    }
    (tmp / "config.json").write_text(json.dumps(config))
    exe = Path(sys.executable).with_name("medallion")
    base = f"http://127.0.0.1:{port}"
    with (tmp / "medallion.log").open("wb") as errors:
        proc = subprocess.Popen(
            [str(exe), "--host", "127.0.0.1", "--port", str(port), str(tmp / "config.json")],
            stdout=subprocess.DEVNULL,
            stderr=errors,
        )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                requests.get(f"{base}/taxii2/", auth=(USER, PASSWORD), timeout=1)
                break
            except requests.ConnectionError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError((tmp / "medallion.log").read_text()) from None
                time.sleep(0.1)
        yield collection_url(port)
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextlib.asynccontextmanager
async def running_medallion(tmp: Path, port: int | None = None) -> AsyncIterator[str]:
    """:func:`medallion` for async tests: started and stopped in a thread, so the event
    loop (a router, a pull job) keeps running while medallion comes up."""
    manager = medallion(tmp, port)
    url = await asyncio.to_thread(manager.__enter__)
    try:
        yield url
    finally:
        await asyncio.to_thread(manager.__exit__, None, None, None)
