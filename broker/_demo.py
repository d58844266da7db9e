"""``atlas-broker demo``: the whole path, end to end, on an embedded nats-server.

Builds a community (3 members, 2 law-enforcement partners, an auditor, one operation group),
generates keys, loads the directory, starts the router, publishes four bundles across every
TLP level, runs each recipient's receive bridge, and reports what arrived, what was
withheld and why, and the log. Exits non-zero if any step of the path failed.
"""

from __future__ import annotations

import asyncio
import socket
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import structlog
import tomli_w
from rich.console import Console
from rich.table import Table

from adapters import ReceiveStats, check_cancelled
from adapters._taxii import collections_for, set_secret
from keys import PrivateKey, generate_org_keys, load_private_key
from policy import Directory

from ._audit import read_log
from ._audit_jobs import log_verifiers, verify_log
from ._bus import RECEIPTS, ensure_streams, nats_session
from ._checkpoint import log_origin
from ._config import Settings, TaxiiSettings
from ._demo_data import AUDITORS, MEMBERS, PARTNERS, TLP2, demo_bundles, demo_directory
from ._directory_store import store_directory
from ._feeds import router_backlog
from ._logcopy import LiveLog
from ._service import publish_bundle, receive, run_router, streams_for
from ._taxii_service import run_taxii
from .errors import ConfigError

__all__ = ["run_demo"]

log = structlog.get_logger()

_LEVEL_OF = {v: k for k, v in TLP2.items()}


async def run_demo(*, keep: Path | None, console: Console, serve_port: int | None = None) -> bool:
    """Run the demo; with ``serve_port``, keep the community up behind a TAXII server on
    loopback at that port (0: a free one) until cancelled (Ctrl-C)."""
    started = time.monotonic()
    if serve_port:
        _check_port_free(serve_port)
    if keep is not None:
        used = [name for name in ("keys", "data", "received") if (keep / name).exists()]
        if used:  # the demo writes these: another run's would collide with this one's
            raise ConfigError(
                f"--keep {keep} already holds a demo ({', '.join(used)}): give a new folder"
            )
        keep.mkdir(parents=True, exist_ok=True)  # noqa: ASYNC240 - once, at start
        return await _demo(keep, console, started, serve_port, kept=True)
    with tempfile.TemporaryDirectory(prefix="atlas-demo-") as tmp:
        return await _demo(Path(tmp), console, started, serve_port, kept=False)


def _check_port_free(port: int) -> None:
    """Fail before the demo runs, not after, when the TAXII port is taken."""
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError as exc:
            raise ConfigError(
                f"port {port} on 127.0.0.1 is in use ({exc.strerror}): pick another with "
                "--port, or --port 0 for a free one"
            ) from exc


async def _demo(
    root: Path, console: Console, started: float, serve_port: int | None, *, kept: bool
) -> bool:
    console.rule("[bold]Atlas broker demo")
    keydir = root / "keys"
    public: dict[str, list[dict[str, Any]]] = {}
    enc_paths: dict[str, Path] = {}
    for org in [*MEMBERS, *PARTNERS, *AUDITORS, "atlas-broker"]:
        generated = generate_org_keys(org, keydir / org)
        public[org] = [generated.sign_jwk, generated.enc_jwk]
        enc_paths[org] = generated.enc_path
    broker_jwks = [k for k in public.pop("atlas-broker") if k["use"] == "sig"]
    doc = demo_directory(public, broker_jwks)
    Directory.from_mapping(doc)
    (root / "directory.toml").write_text(tomli_w.dumps(doc))
    (root / "broker.jwks.json").write_bytes(orjson.dumps({"keys": broker_jwks}))
    console.print(
        f"community: {len(MEMBERS)} members, {len(PARTNERS)} partners, "
        f"{len(AUDITORS)} auditor; keys and directory in {root}"
    )

    settings = Settings(
        data_dir=root / "data",
        broker={"signing_key": keydir / "atlas-broker" / "atlas-broker.sign.pem"},
        log_level="warning",
    )
    signing_key = load_private_key(keydir / "atlas-broker" / "atlas-broker.sign.pem")
    async with nats_session(settings, embedded_ok=True, name="atlas-demo") as (nc, js):
        console.print(
            f"embedded nats-server: {nc.connected_url.geturl() if nc.connected_url else '?'}"
        )
        await ensure_streams(js, streams_for(settings))
        revision = await store_directory(js, Directory.from_mapping(doc))
        console.print(f"directory loaded (revision {revision})")
        ready = asyncio.Event()
        async with asyncio.TaskGroup() as group:
            router = group.create_task(
                run_router(js, settings, signing_key=signing_key, ready=ready)
            )
            await ready.wait()
            sids = await _publish_all(settings, js, root, keydir, console)
            await _wait_routed(js, len(sids))
            results = {}
            for org in sorted({*MEMBERS, *PARTNERS}):
                out_dir = root / "received" / org
                results[org] = await receive(
                    settings,
                    org=org,
                    key_paths=[enc_paths[org]],
                    out_dir=out_dir,
                    once=True,
                    broker_jwks=root / "broker.jwks.json",
                    js=js,
                    sign_key_path=keydir / org / f"{org}.sign.pem",
                )
            receipts_ok = await _receipts(js, settings, root, results, enc_paths, keydir, console)
            entries = [record.entry async for record in read_log(js)]
            verified = await _verify(js, root, len(entries), console)
            ok = (
                _report(console, root, results, entries, sids, kept=kept)
                and verified
                and receipts_ok
            )
            console.print(
                f"finished in {time.monotonic() - started:.1f} s — "
                + ("[bold green]OK" if ok else "[bold red]FAILED")
            )
            if ok and serve_port is not None:
                await _serve(
                    js,
                    settings,
                    signing_key,
                    root,
                    Directory.from_mapping(doc),
                    serve_port,
                    console,
                )
            router.cancel()
    return ok


async def _serve(
    js: Any,
    settings: Settings,
    signing_key: PrivateKey,
    root: Path,
    directory: Directory,
    port: int,
    console: Console,
) -> None:
    """Keep the demo community running behind the TAXII server until Ctrl-C."""
    credentials = root / "taxii-credentials.toml"
    tokens = {org: set_secret(credentials, org) for org in sorted({*MEMBERS, *PARTNERS})}
    served = settings.model_copy(
        update={
            "taxii": TaxiiSettings(
                host="127.0.0.1", port=port, credentials_file=credentials, api_root="atlas"
            )
        }
    )
    task = asyncio.current_task()

    def _started(url: str) -> None:
        _print_serving(console, url, served.taxii.api_root, directory, tokens)

    try:
        await run_taxii(js, served, signing_key=signing_key, on_started=_started)
    except asyncio.CancelledError:
        # Ctrl-C is how --serve ends: stop cleanly and report success.
        if task is None or task.uncancel() > 0:
            raise
        console.print("stopped: the demo community and its TAXII server are down")


def _print_serving(
    console: Console, url: str, api_root: str, directory: Directory, tokens: dict[str, str]
) -> None:
    community = directory.community.id
    console.rule("[bold]The demo community keeps running (Ctrl-C stops it)")
    console.print(f"TAXII 2.1 server: {url}/taxii2/", highlight=False)
    console.print(f"API root: {url}/{api_root}/", highlight=False)
    console.print(
        "Log in with HTTP Basic (user = organisation id, password = its secret) "
        "or 'Authorization: Bearer <secret>'.",
        highlight=False,
    )
    for org, token in tokens.items():
        found = directory.organisation(org)
        kind = found.kind if found is not None else "?"
        console.print(f"credential {org} ({kind}): {token}", highlight=False, soft_wrap=True)
        if found is None:
            continue
        for info in collections_for(
            community,
            member=found.kind == "member",
            groups=directory.groups_of(org),
            reader=org if found.taxii_read else None,
        ):
            mode = "read" if info.can_read else "write"
            console.print(
                f"  collection {info.id} {info.title} ({mode})", highlight=False, soft_wrap=True
            )
    console.print(
        "Try: curl -u interpol:<secret> -H 'Accept: application/taxii+json;version=2.1' "
        f"{url}/{api_root}/collections/",
        highlight=False,
        soft_wrap=True,
    )


async def _publish_all(
    settings: Settings, js: Any, root: Path, keydir: Path, console: Console
) -> dict[str, str]:
    sids: dict[str, str] = {}
    bundles_dir = root / "bundles"
    bundles_dir.mkdir(exist_ok=True)
    for n, (org, to, bundle, what) in enumerate(demo_bundles(), start=1):
        path = bundles_dir / f"{n}-{org}.json"
        path.write_bytes(orjson.dumps(bundle, option=orjson.OPT_INDENT_2))
        published = await publish_bundle(
            settings,
            path,
            org=org,
            key_path=keydir / org / f"{org}.sign.pem",
            to=tuple(to.split(",")) if to else (),
            js=js,
        )
        sids[published.sid] = org
        console.print(f"published {path.name}: {what} → submission {published.sid}")
    return sids


async def _wait_routed(js: Any, count: int) -> None:
    """Poll the routing consumers: the server has no event for 'all acknowledged'."""
    async with asyncio.timeout(30):
        while True:
            check_cancelled()
            if (await router_backlog(js)).drained(count):
                return
            await asyncio.sleep(0.05)


async def _receipts(
    js: Any,
    settings: Settings,
    root: Path,
    results: dict[str, ReceiveStats],
    enc_paths: dict[str, Path],
    keydir: Path,
    console: Console,
) -> bool:
    """Once the deliveries are checkpointed, every recipient gets, checks and acknowledges
    its receipts; the acknowledgements become log entries."""
    packages = sum(s.received for s in results.values())
    async with asyncio.timeout(30):
        while (
            await js.stream_info(RECEIPTS, subjects_filter="atlas.receipt.>")
        ).state.messages < packages:
            check_cancelled()  # the timeout's own cancel, should a NATS call drop it
            await asyncio.sleep(0.2)
    kept = sum(s.receipts for s in results.values())  # those already there on first receive
    for org, stats in results.items():
        if not stats.received:
            continue
        again = await receive(
            settings,
            org=org,
            key_paths=[enc_paths[org]],
            out_dir=root / "received" / org,
            once=True,
            broker_jwks=root / "broker.jwks.json",
            js=js,
            sign_key_path=keydir / org / f"{org}.sign.pem",
        )
        kept += again.receipts
    async with asyncio.timeout(30):
        while len([r async for r in read_log(js) if r.entry["type"] == "receipt"]) < kept:
            check_cancelled()
            await asyncio.sleep(0.2)
    console.print(
        f"receipts: {kept} of {packages} packages have a verified inclusion proof, "
        f"acknowledged by their recipients and logged"
    )
    return kept == packages


async def _verify(js: Any, root: Path, count: int, console: Console) -> bool:
    """Wait for a signed checkpoint covering the whole log, then audit it as an outsider."""
    async with asyncio.timeout(30):
        while True:
            check_cancelled()
            snap = await LiveLog(js).snapshot()
            if (snap.expected_entries or 0) >= count:
                break
            await asyncio.sleep(0.2)
    keys = log_verifiers([], root / "broker.jwks.json", log_origin("atlas-broker"))
    result = await verify_log(LiveLog(js), log_keys=keys, deliveries=js)
    console.print(f"audit verify (broker public key only): {result.summary()}")
    return result.ok


def _levels(obj: dict[str, Any]) -> str:
    for ref in obj.get("object_marking_refs", []):
        if ref in _LEVEL_OF:
            return _LEVEL_OF[ref]
    return "-"


def _report(
    console: Console,
    root: Path,
    results: dict[str, ReceiveStats],
    entries: list[dict[str, Any]],
    sids: dict[str, str],
    *,
    kept: bool,
) -> bool:
    problems: list[str] = []
    table = Table(title="What each recipient received and what was withheld")
    table.add_column("recipient")
    table.add_column("packages", justify="right")
    table.add_column("received objects by TLP")
    table.add_column("withheld by TLP (reason)")
    for org, stats in results.items():
        received: Counter[str] = Counter()
        for path in stats.files:
            bundle = orjson.loads(path.read_bytes())
            for obj in bundle.get("objects", []):
                if obj.get("type") != "marking-definition":
                    received[_levels(obj)] += 1
        withheld: Counter[str] = Counter(
            f"{e.get('tlp') or 'n/a'} ({e.get('reason')})"
            for e in entries
            if e.get("type") == "withheld" and e.get("rcpt") == org
        )
        table.add_row(
            f"{org}{' (partner)' if org in PARTNERS else ''}",
            str(stats.received),
            ", ".join(f"{k}: {v}" for k, v in sorted(received.items())) or "-",
            ", ".join(f"{k}: {v}" for k, v in sorted(withheld.items())) or "-",
        )
        if stats.quarantined:
            problems.append(f"{org}: {stats.quarantined} package(s) could not be opened")
        if org != "interpol" and received["red"]:
            problems.append(f"{org} received RED objects it was not named for")
    console.print(table)
    kinds = Counter(e.get("type") for e in entries)
    refused = [e for e in entries if e.get("type") == "submission" and e.get("result") == "refused"]
    console.print(
        f"dissemination log: {len(entries)} entries ("
        + ", ".join(f"{k}: {v}" for k, v in sorted(kinds.items()))
        + ")"
    )
    deliveries = [e for e in entries if e.get("type") == "delivery"]
    received_total = sum(s.received for s in results.values())
    if len(deliveries) != received_total:
        problems.append(
            f"{len(deliveries)} deliveries logged but {received_total} packages received"
        )
    if refused:
        problems.append(
            f"{len(refused)} demo submission(s) refused: "
            + ", ".join(str(e.get("reason")) for e in refused)
        )
    accepted = {e.get("sub") for e in entries if e.get("type") == "submission"}
    if accepted != set(sids):
        problems.append("not every submission reached the log")
    if not results.get("interpol") or not any(
        _levels(o) == "red"
        for p in results["interpol"].files
        for o in orjson.loads(p.read_bytes()).get("objects", [])
    ):
        problems.append("the RED bundle named to interpol did not arrive there")
    for problem in problems:
        console.print(f"[bold red]problem:[/] {problem}")
    if kept:
        console.print(f"received bundles are in {root / 'received'}")
    else:
        console.print("the demo's folder is deleted at exit; --keep DIR keeps it")
    return not problems
