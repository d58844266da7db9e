"""The fault checker: what was accepted against what every recipient actually got.

Accepted is what the publishers had acknowledged by JetStream. Expected is computed here
from the community directory and the TLP table of the design, independently of
``policy/`` (a bug there must not move the oracle with it):

| object TLP          | reaches a recipient whose clearance for this submission is at least |
|---------------------|----------------------------------------------------------------------|
| CLEAR               | anyone the submission reaches                                        |
| GREEN               | GREEN: originator and recipient in the community (partners only when |
|                     | the community includes them)                                         |
| AMBER               | AMBER: named through a group (or RED below)                          |
| AMBER+STRICT, RED   | RED: named one by one in this submission                             |

A submission reaches the originator's subscribers and the organisations it names, never
the originator itself nor an auditor; a recipient with nothing it may see gets no package.

The checker then reads, with the recipients' private keys, every package in DELIVERIES,
the dissemination log, and each receive bridge's folder, and finally runs the auditor's
path (``atlas-broker audit verify``) on the log once every entry is under a signed
checkpoint. :func:`check` fails with every problem it found, not only the first.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import nats.errors
import orjson
from nats.js import JetStreamContext

from broker._audit import read_log
from broker._audit_jobs import verify_log
from broker._bus import DELIVERIES
from broker._checkpoint import log_origin, read_stream
from broker._logcopy import LiveLog
from broker._note import NoteVerifier
from broker._router import PKG_ID_HEADER
from keys import BrokerKeyring, PackageError, PrivateKey, load_private_key, open_package
from tests.conftest import Community

T = TypeVar("T")

RANK = {"clear": 0, "green": 1, "amber": 2, "amber+strict": 3, "red": 4}


@dataclass(frozen=True, slots=True)
class Accepted:
    """A submission JetStream acknowledged to its publisher."""

    sid: str
    org: str
    to: tuple[str, ...]
    objects: Mapping[str, str]
    """STIX id -> TLP level of each object in the bundle."""


def expected_views(
    doc: Mapping[str, Any], accepted: Iterable[Accepted]
) -> dict[tuple[str, str], frozenset[str]]:
    """(recipient, submission) -> the object ids that recipient must get; no empty views."""
    orgs = {o["id"]: o for o in doc["organisations"]}
    groups = {g["id"]: set(g["members"]) for g in doc.get("groups", [])}
    partners_in = bool(doc["community"].get("partners_in_community", False))
    out: dict[tuple[str, str], frozenset[str]] = {}
    for sub in accepted:
        named = {t[4:] for t in sub.to if t.startswith("org:")}
        via_group = set().union(*(groups[t[6:]] for t in sub.to if t.startswith("group:")))
        followers = set()
        for follow in doc.get("subscriptions", []):
            if set(follow) - {"recipient", "originators"}:
                raise NotImplementedError("the oracle only knows originator subscriptions")
            if "*" in follow["originators"] or sub.org in follow["originators"]:
                followers.add(follow["recipient"])
        origin = orgs[sub.org]
        for rcpt in (followers | named | via_group) - {sub.org}:
            org = orgs.get(rcpt)
            if org is None or org["kind"] == "auditor":
                continue
            if rcpt in named:
                clearance = RANK["red"]
            elif rcpt in via_group:
                clearance = RANK["amber"]
            elif (
                origin.get("in_community", True)
                and org.get("in_community", True)
                and (org["kind"] != "partner" or partners_in)
            ):
                clearance = RANK["green"]
            else:
                clearance = RANK["clear"]
            view = frozenset(i for i, tlp in sub.objects.items() if RANK[tlp] <= clearance)
            if view:
                out[(rcpt, sub.sid)] = view
    return out


@dataclass
class Verdict:
    submissions: int = 0
    packages: int = 0
    files: dict[str, int] = field(default_factory=dict)
    refused_replays: int = 0
    rereads: int = 0
    """Reads repeated after a transient NATS error (none, on a healthy system)."""
    audit: str = ""
    problems: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class _Package:
    jti: str
    jwe_sha256: str
    objects: frozenset[str]


async def check(
    js: JetStreamContext,
    *,
    community: Community,
    accepted: list[Accepted],
    receivers: Mapping[str, Path],
    nats_url: str,
    jwks: Path,
    checkpoint_timeout: float = 60,
) -> Verdict:
    """Fail unless every accepted submission reached exactly its entitled recipients, once."""
    verdict = Verdict(submissions=len(accepted))
    problems = verdict.problems
    expected = expected_views(community.doc, accepted)
    stored, unopened = await _reread(verdict, lambda: _packages(js, community))
    problems.extend(unopened)
    verdict.packages = sum(len(v) for v in stored.values())

    # Deliveries: one package per entitled (recipient, submission), with exactly its view.
    for key, packages in sorted(stored.items()):
        if len(packages) > 1:
            problems.append(f"duplicate: {len(packages)} packages for {key}")
        if key not in expected:
            problems.append(f"not entitled: a package for {key}")
            continue
        for pkg in packages:
            if pkg.objects != expected[key]:
                extra = sorted(pkg.objects - expected[key])
                missing = sorted(expected[key] - pkg.objects)
                problems.append(f"{key}: objects not entitled {extra}, missing {missing}")
    for key in sorted(set(expected) - set(stored)):
        problems.append(f"lost: no package for {key}")

    # The log: each accepted submission once, each package's delivery entry once.
    entries = await _reread(verdict, lambda: _entries(js))
    subs = Counter(
        str(e["sub"])
        for e in entries
        if e["type"] == "submission" and e.get("result") == "accepted"
    )
    for e in entries:
        if e["type"] == "submission" and e.get("result") == "refused":
            if e.get("reason") == "replayed":
                verdict.refused_replays += 1
            else:
                problems.append(f"refused submission in the log: {e.get('reason')}")
    for sub in accepted:
        if subs.get(sub.sid) != 1:
            problems.append(f"submission {sub.sid} logged accepted {subs.get(sub.sid, 0)} times")
    unknown = set(subs) - {s.sid for s in accepted}
    if unknown:
        problems.append(f"log accepts submissions nobody had acknowledged: {sorted(unknown)}")
    logged: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for e in entries:
        if e["type"] == "delivery":
            logged.setdefault((e["rcpt"], e["src"]["submission"]), []).append(e)
    for key in sorted(set(logged) | set(stored)):
        found, packages = logged.get(key, []), stored.get(key, [])
        if len(found) != 1 or len(packages) != 1:
            problems.append(f"{key}: {len(found)} delivery entries for {len(packages)} packages")
        elif (found[0]["pkg"], found[0]["jwe_sha256"]) != (packages[0].jti, packages[0].jwe_sha256):
            problems.append(f"{key}: the delivery entry does not describe the stored package")

    # Receive bridges: exactly the entitled bundles, each opened once.
    for org, out in sorted(receivers.items()):
        verdict.files[org] = _check_inbox(org, out, expected, stored, problems)

    if not problems:
        verdict.audit = await _audit(js, community, nats_url, jwks, checkpoint_timeout, verdict)
    assert not problems, "\n".join(problems[:40])
    return verdict


async def _reread(verdict: Verdict, read: Callable[[], Awaitable[T]]) -> T:
    """``read()`` again after a transient NATS error: on a cluster that has just recovered,
    a fresh reading consumer can get 503 (no responders) before its leader is reachable."""
    for attempt in range(5):
        try:
            return await read()
        except (nats.errors.Error, OSError):
            if attempt == 4:
                raise
            verdict.rereads += 1
            await asyncio.sleep(0.5)
    raise AssertionError("unreachable")


async def _entries(js: JetStreamContext) -> list[dict[str, Any]]:
    return [r.entry async for r in read_log(js)]


async def _packages(
    js: JetStreamContext, community: Community
) -> tuple[dict[tuple[str, str], list[_Package]], list[str]]:
    """Every package in DELIVERIES, opened with its recipient's own private key."""
    problems: list[str] = []
    ring = BrokerKeyring.of(community.broker_key.public)
    keys: dict[str, dict[str, PrivateKey]] = {}
    out: dict[tuple[str, str], list[_Package]] = {}
    async for msg in read_stream(js, "atlas.deliver.>", stream=DELIVERIES):
        _, _, rcpt, sid = msg.subject.split(".")
        if rcpt not in keys:
            key = load_private_key(community.enc_key(rcpt))
            keys[rcpt] = {key.public.thumbprint: key}
        try:
            opened = await asyncio.to_thread(
                open_package,
                msg.data,
                recipient=rcpt,
                decryption_keys=keys[rcpt],
                broker_keys=ring,
                now=int(time.time()),
                replay=None,
            )
        except PackageError as exc:
            problems.append(f"{msg.subject}: does not open for {rcpt}: {exc}")
            continue
        if opened.claims.get("src", {}).get("submission") != sid:
            problems.append(f"{msg.subject}: package names another submission")
        if (msg.headers or {}).get(PKG_ID_HEADER) != opened.jti:
            problems.append(f"{msg.subject}: header package id is not the sealed jti")
        out.setdefault((rcpt, sid), []).append(
            _Package(
                jti=opened.jti,
                jwe_sha256=_sha256(msg.data),
                objects=frozenset(o["id"] for o in opened.stix.get("objects", [])),
            )
        )
    return out, problems


def _check_inbox(
    org: str,
    out: Path,
    expected: Mapping[tuple[str, str], frozenset[str]],
    stored: Mapping[tuple[str, str], list[_Package]],
    problems: list[str],
) -> int:
    want = {sid for (rcpt, sid) in expected if rcpt == org}
    files = {p.stem: p for p in out.glob("*.json")}
    for sid in sorted(want - set(files)):
        problems.append(f"{org} never wrote {sid} (lost)")
    for sid in sorted(set(files) - want):
        problems.append(f"{org} wrote {sid}, which it is not entitled to")
    for sid in sorted(want & set(files)):
        ids = frozenset(o["id"] for o in orjson.loads(files[sid].read_bytes())["objects"])
        if ids != expected[(org, sid)]:
            problems.append(f"{org}/{sid}.json holds {len(ids)} objects, not its view")
        meta = orjson.loads((out / ".atlas" / "packages" / f"{sid}.json").read_bytes())
        if [meta["jti"]] != [p.jti for p in stored.get((org, sid), [])]:
            problems.append(f"{org}/{sid}: opened package {meta['jti']} is not the stored one")
    seen = Counter(
        orjson.loads(line)["jti"]
        for line in (out / ".atlas" / "replay.jsonl").read_bytes().splitlines()
        if line.strip()
    )
    twice = [jti for jti, n in seen.items() if n > 1]
    if twice:
        problems.append(f"{org} opened {len(twice)} package(s) twice: {twice[:3]}")
    quarantined = list((out / ".atlas" / "quarantine").glob("*"))
    if quarantined:
        problems.append(f"{org} quarantined {len(quarantined)} file(s)")
    return len(files)


async def _audit(
    js: JetStreamContext,
    community: Community,
    nats_url: str,
    jwks: Path,
    within: float,
    verdict: Verdict,
) -> str:
    """``audit verify`` once a signed checkpoint covers every entry (checkpoints come every
    5 s): in process first, to wait, then the CLI itself, as an auditor runs it."""
    problems = verdict.problems
    verifier = NoteVerifier.from_public_key(log_origin("atlas-broker"), community.broker_key.public)
    deadline = time.monotonic() + within
    while True:
        result = await _reread(
            verdict,
            lambda: verify_log(LiveLog(js), log_keys=[verifier], deliveries=js, grace=0),
        )
        if not result.ok:
            problems.append(f"audit verify (in process): {result.summary()}")
            return ""
        if result.entries and result.unverified_tail == 0:
            break
        if time.monotonic() > deadline:
            problems.append(f"{result.unverified_tail} log entries never checkpointed")
            return ""
        await asyncio.sleep(0.5)
    for _ in range(3):
        code, summary, errors = await _audit_verify_cli(nats_url, jwks)
        if code == 0 or "FAILED" in summary:
            break
        verdict.rereads += 1  # the command stopped on an error without a verdict: again
    if code != 0 or "OK:" not in summary:
        problems.append(f"atlas-broker audit verify exited {code}: {summary} {errors}")
    return summary


async def _audit_verify_cli(nats_url: str, jwks: Path) -> tuple[int | None, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "broker",
        "--nats-url",
        nats_url,
        "audit",
        "verify",
        "--broker-jwks",
        str(jwks),
        "--grace",
        "0",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=jwks.parent,
        env={k: v for k, v in os.environ.items() if not k.startswith("ATLAS_")},
    )
    async with asyncio.timeout(60):
        stdout, stderr = await proc.communicate()
    return (
        proc.returncode,
        stdout.decode(errors="replace").strip(),
        stderr.decode(errors="replace").strip(),
    )


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
