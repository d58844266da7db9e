"""The demo (what `make demo` runs) end to end on its own embedded nats-server."""

from __future__ import annotations

import io
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import IO, Any

import orjson
import pytest
import requests
from rich.console import Console
from taxii2client.v21 import Collection, Server, as_pages

from broker._demo import run_demo

TLP_CLEAR = "marking-definition--94868c89-83c2-464b-929b-a1a8aa3c8487"


async def test_demo_succeeds_and_reports_every_partner(tmp_path: Path) -> None:
    buffer = io.StringIO()
    ok = await run_demo(keep=tmp_path, console=Console(file=buffer, width=200))
    text = buffer.getvalue()
    assert ok, text
    assert "interpol (partner)" in text and "ec3 (partner)" in text
    assert "red-not-named" in text and "unknown-marking" in text
    assert "receipts: 7 of 7 packages" in text
    assert "audit verify (broker public key only): OK" in text
    red = "marking-definition--e828b379-4e03-4974-9ac4-e53a884c97c1"
    for org, expect_red in (("interpol", True), ("ec3", False)):
        objects = [
            obj
            for path in (tmp_path / "received" / org).glob("*.json")
            for obj in orjson.loads(path.read_bytes())["objects"]
        ]
        assert objects
        assert any(red in o.get("object_marking_refs", []) for o in objects) is expect_red
    assert not (tmp_path / "data" / "nats" / "url").exists()


def _read_until(proc: subprocess.Popen[str], marker: str, lines: list[str]) -> None:
    assert proc.stdout is not None
    for line in proc.stdout:
        lines.append(line)
        if line.startswith(marker):
            return
    raise AssertionError(
        "demo --serve ended before printing its TAXII details:\n"
        + "".join(lines)
        + f"\nexit status {proc.wait()}"
    )


def _objects(collection: Collection) -> list[dict[str, Any]]:
    return [o for page in as_pages(collection.get_objects, per_request=50) for o in page["objects"]]


@pytest.mark.timeout(240)
def test_demo_serve_keeps_a_taxii_server_up_until_ctrl_c(tmp_path: Path) -> None:
    with (tmp_path / "stderr.log").open("w") as stderr:
        _demo_serve(tmp_path, stderr)


def _demo_serve(tmp_path: Path, stderr: IO[str]) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "broker", "demo", "--serve", "--port", "0", "--keep", str(tmp_path)],
        stdout=subprocess.PIPE,
        stderr=stderr,
        text=True,
    )
    lines: list[str] = []
    try:
        _read_until(proc, "Try:", lines)
        text = "".join(lines)
        assert "audit verify (broker public key only): OK" in text
        url = re.search(r"^TAXII 2.1 server: (\S+)", text, re.M)
        assert url is not None, text
        tokens = dict(re.findall(r"^credential (\S+) \(\w+\): (\S+)", text, re.M))
        columns = dict(
            (title, cid) for cid, title in re.findall(r"collection (\S+) (\S+) \(", text)
        )
        assert {"interpol", "ec3", "northbank"} <= tokens.keys()

        server = Server(url[1], user="interpol", password=tokens["interpol"])
        (root,) = server.api_roots
        views = {c.title: c for c in root.collections}
        assert set(views) == {"views:interpol"}
        served = {o["id"] for o in _objects(views["views:interpol"])}
        received = {
            o["id"]
            for p in (tmp_path / "received" / "interpol").glob("*.json")
            for o in orjson.loads(p.read_bytes())["objects"]
        }
        assert served == received

        # A member publishes with a stock TAXII client; the partner's view picks it up.
        indicator = {
            "type": "indicator",
            "spec_version": "2.1",
            "id": "indicator--5a0f8c6e-2f44-4e0e-9d35-0d2c5c1e7a11",
            "created": "2026-11-28T00:00:00.000Z",
            "modified": "2026-11-28T00:00:00.000Z",
            "pattern": "[domain-name:value = 'served.example']",
            "pattern_type": "stix",
            "valid_from": "2026-11-28T00:00:00Z",
            "object_marking_refs": [TLP_CLEAR],
        }
        member = Server(url[1], user="northbank", password=tokens["northbank"])
        community = Collection(
            f"{url[1].removesuffix('/taxii2/')}/atlas/collections/{columns['community']}/",
            user="northbank",
            password=tokens["northbank"],
        )
        assert member.api_roots
        status = community.add_objects(
            {
                "type": "bundle",
                "id": "bundle--0c4d2f0e-5e5b-4a4e-8a3e-6d7f9c3b1a22",
                "objects": [indicator],
            }
        )
        status.wait_until_final(poll_interval=0.5, timeout=60)
        assert status.status == "complete" and status.success_count == 1, status.failures
        deadline = 120
        while indicator["id"] not in {o["id"] for o in _objects(views["views:interpol"])}:
            deadline -= 1
            assert deadline > 0, "the published indicator never reached interpol's view"
            time.sleep(0.5)

        with pytest.raises(requests.HTTPError) as refused:
            Server(url[1], user="interpol", password="interpol.wrong").refresh()
        assert refused.value.response.status_code == 401

        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=60)
        assert proc.returncode == 0, rest
        assert "stopped: the demo community and its TAXII server are down" in rest
        assert not (tmp_path / "data" / "nats" / "url").exists()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()  # a failure must not leave its pipe to a later test's GC


async def test_demo_refuses_a_taken_port_and_a_used_folder_before_running(
    tmp_path: Path,
) -> None:
    import socket

    from broker.errors import ConfigError

    (tmp_path / "keys").mkdir()
    with pytest.raises(ConfigError, match=r"already holds a demo \(keys\): give a new folder"):
        await run_demo(keep=tmp_path, console=Console(file=io.StringIO()))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        shown = io.StringIO()
        with pytest.raises(ConfigError, match=f"port {port} on 127.0.0.1 is in use"):
            await run_demo(keep=None, console=Console(file=shown), serve_port=port)
        assert shown.getvalue() == ""  # refused before the demo ran, not after
