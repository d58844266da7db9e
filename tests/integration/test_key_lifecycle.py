"""Key rotation and revocation through the real pipeline (real nats-server)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
import tomli_w
from nats.js import JetStreamContext

from broker._audit import read_log
from broker._directory_store import fetch_directory
from broker._keyops import key_rows, revoke_key, rotate_key
from broker._service import receive
from keys import generate_org_keys
from policy import DirectoryError
from tests.integration.helpers import bundle, cli, indicator, publish, wait_routed


def _ts(text: str) -> float:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC).timestamp()


async def test_no_package_is_lost_or_unreadable_during_a_rotation(
    js: JetStreamContext,
    make_community: Callable[..., Any],
    running_router: Any,
    tmp_path: Path,
) -> None:
    community = make_community()
    settings = await running_router(community)
    new = generate_org_keys("lea-1", tmp_path / "new-keys")
    sids = []
    for n in range(30):
        if n == 10:
            event = await rotate_key(js, org="lea-1", jwk=new.enc_jwk, overlap=timedelta(days=1))
            assert event.kid == new.enc_jwk["kid"]
        sids.append(
            await publish(
                settings, js, community, tmp_path, "bank-a", bundle(indicator("clear", f"n{n}"))
            )
        )
        await asyncio.sleep(0.1)
    await wait_routed(js, 30)
    stats = await receive(
        settings,
        org="lea-1",
        key_paths=[community.enc_key("lea-1"), new.enc_path],
        out_dir=tmp_path / "out",
        once=True,
        js=js,
    )
    assert stats.received == 30 and stats.quarantined == 0
    assert sorted(p.stem for p in (tmp_path / "out").glob("*.json")) == sorted(sids)
    entries = [r.entry async for r in read_log(js)]
    kids = [e["rcpt_kid"] for e in entries if e["type"] == "delivery" and e["rcpt"] == "lea-1"]
    assert kids[-1] == new.enc_jwk["kid"], "packages after the rotation use the new key"
    assert any(e["type"] == "key" and e["event"] == "rotate" for e in entries)


async def test_nothing_is_sealed_to_a_revoked_key_within_a_bounded_time(
    js: JetStreamContext,
    make_community: Callable[..., Any],
    running_router: Any,
    tmp_path: Path,
) -> None:
    community = make_community()
    settings = await running_router(community)
    kid = community.org("lea-1")["keys"][1]["jwk"]["kid"]
    revoked_at = 0.0
    count = 0
    deadline = time.monotonic() + 6
    while time.monotonic() < deadline:
        if not revoked_at and time.monotonic() > deadline - 4.5:
            await revoke_key(js, org="lea-1", kid=kid)
            revoked_at = time.time()
        await publish(settings, js, community, tmp_path, "bank-a", bundle(indicator("clear")))
        count += 1
        await asyncio.sleep(0.05)
    await wait_routed(js, count)
    entries = [r.entry async for r in read_log(js)]
    sealed = [
        _ts(e["ts"])
        for e in entries
        if e["type"] == "delivery" and e["rcpt"] == "lea-1" and e["rcpt_kid"] == kid
    ]
    refused = [
        e
        for e in entries
        if e["type"] == "withheld" and e["rcpt"] == "lea-1" and e["reason"] == "no-encryption-key"
    ]
    lag = max(sealed) - revoked_at
    print(f"last package sealed to the revoked key {lag:.2f} s after the revocation")
    assert sealed and refused, "both sides of the revocation were exercised"
    assert lag < 2.5, f"a package was sealed to the revoked key {lag:.2f} s after revocation"
    assert any(e["type"] == "key" and e["event"] == "revoke" and e["kid"] == kid for e in entries)
    lea2 = [e for e in entries if e["type"] == "delivery" and e["rcpt"] == "lea-2"]
    assert len(lea2) == count, "other recipients are unaffected"


async def test_keys_list_names_each_keys_state_as_time_passes(
    js: JetStreamContext,
    nats_server: Any,
    make_community: Callable[..., Any],
    running_router: Any,
    tmp_path: Path,
) -> None:
    community = make_community()
    await running_router(community)
    old = community.org("lea-1")["keys"][1]["jwk"]["kid"]
    new = generate_org_keys("lea-1", tmp_path / "new-keys")
    await rotate_key(js, org="lea-1", jwk=new.enc_jwk, overlap=timedelta(hours=1))
    directory = (await fetch_directory(js)).directory

    def states(now: datetime) -> dict[str, str]:
        return {
            r["kid"]: r["state"] for r in key_rows(directory, "lea-1", now=now) if r["use"] == "enc"
        }

    now = datetime.now(UTC)
    assert states(now) == {old: "overlap", new.enc_jwk["kid"]: "current"}
    assert states(now + timedelta(hours=2)) == {old: "expired", new.enc_jwk["kid"]: "current"}
    with pytest.raises(DirectoryError, match="unknown organisation 'lea-9'"):
        key_rows(directory, "lea-9")

    await revoke_key(js, org="lea-1", kid=old)
    listed = await asyncio.to_thread(
        cli, "keys", "list", "--org", "lea-1", "--json", url=nats_server.url
    )
    assert listed.returncode == 0, listed.stderr
    rows = [orjson.loads(line) for line in listed.stdout.splitlines()]
    assert {r["kid"]: r["state"] for r in rows if r["use"] == "enc"} == {
        old: "revoked",
        new.enc_jwk["kid"]: "current",
    }
    unknown = await asyncio.to_thread(cli, "keys", "list", "--org", "lea-9", url=nats_server.url)
    assert unknown.returncode == 1 and "unknown organisation 'lea-9'" in unknown.stderr


async def test_reloading_the_directory_file_cannot_undo_a_revocation(
    js: JetStreamContext,
    nats_server: Any,
    make_community: Callable[..., Any],
    running_router: Any,
    tmp_path: Path,
) -> None:
    community = make_community()
    await running_router(community)
    path = tmp_path / "directory.toml"
    path.write_text(tomli_w.dumps(community.doc))
    old = community.org("lea-1")["keys"][1]["jwk"]["kid"]
    new = generate_org_keys("lea-1", tmp_path / "new-keys")
    await rotate_key(js, org="lea-1", jwk=new.enc_jwk, overlap=timedelta(hours=1))
    await revoke_key(js, org="lea-1", kid=old)
    before = await fetch_directory(js)

    refused = await asyncio.to_thread(cli, "directory", "load", str(path), url=nats_server.url)
    assert refused.returncode == 1, refused.stderr
    assert f"would make revoked keys valid again: lea-1's key {old}" in refused.stderr
    assert (await fetch_directory(js)).revision == before.revision

    # The same file without the revoked key loads; the rotated-in key it lacks is named.
    doc = community.doc
    lea = next(o for o in doc["organisations"] if o["id"] == "lea-1")
    lea["keys"] = [k for k in lea["keys"] if k["jwk"].get("kid") != old]
    path.write_text(tomli_w.dumps(doc))
    loaded = await asyncio.to_thread(cli, "directory", "load", str(path), url=nats_server.url)
    assert loaded.returncode == 0, loaded.stderr
    assert f"lea-1/{new.enc_jwk['kid']} is not in {path}" in loaded.stderr
    entries = [r.entry async for r in read_log(js)]
    (load,) = [e for e in entries if e["type"] == "directory"]
    assert load["keys_dropped"] == sorted([f"lea-1/{new.enc_jwk['kid']}", f"lea-1/{old}"])
    assert load["directory_revision"] == (await fetch_directory(js)).revision
