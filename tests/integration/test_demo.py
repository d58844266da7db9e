"""The demo (what `make demo` runs) end to end on its own embedded nats-server."""

from __future__ import annotations

import io
from pathlib import Path

import orjson
from rich.console import Console

from broker._demo import run_demo


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
