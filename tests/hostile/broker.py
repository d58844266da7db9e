"""One broker for the whole corpus: a real nats-server, the router, the TAXII front.

``run_corpus`` submits what must survive (before), every case of the corpus, then a normal
submission on each path (after); waits until the router has answered everything; and
collects what each case needs to be judged: the log, the router's refusal details, the
TAXII answers and status records, and what the partners' receive bridges wrote.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import nats
import orjson
import structlog
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from nats.js import JetStreamContext
from structlog.testing import LogCapture

from adapters._taxii import set_secret
from broker._audit import read_log
from broker._audit_jobs import verify_log
from broker._auditor import VerifyResult
from broker._bus import (
    DELIVERIES,
    SUBMISSIONS,
    copy_origin,
    deliver_subject,
    ensure_streams,
    submit_stream,
    submit_subject,
)
from broker._checkpoint import CHECKPOINT_SUBJECT, CheckpointMessage, log_origin
from broker._config import Settings, TaxiiSettings
from broker._directory_store import store_directory
from broker._embedded import EmbeddedNats
from broker._feeds import router_backlog
from broker._logcopy import LiveLog
from broker._note import NoteVerifier
from broker._service import publish_bundle, receive, run_router, streams_for
from broker._taxii_backend import StatusIds
from broker._taxii_service import load_cursor_key, run_taxii
from keys import PrivateKey, PublicKey, generate_org_keys, load_private_key
from policy import Directory
from tests.conftest import Community, stix_identity
from tests.hostile.cases import BEFORE_SID, ORIGINAL, Case, Ctx, Expect, Keys, bundle, ind
from tests.integration.helpers import intake_total

MEMBERS = ("bank-a", "bank-b")
PARTNERS = ("lea-1", "lea-2")
TAXII_MT = "application/taxii+json;version=2.1"


def build_community(root: Path) -> tuple[Community, Keys]:
    """Two members, two partners (lea-1 reads over TAXII), two groups; bank-a holds a
    second signing key that the directory lists as revoked."""
    public: dict[str, list[dict[str, Any]]] = {}
    for org in (*MEMBERS, *PARTNERS, "atlas-broker"):
        generated = generate_org_keys(org, root / org)
        public[org] = [generated.sign_jwk, generated.enc_jwk]
    revoked = ed25519.Ed25519PrivateKey.generate()
    revoked_pub = PublicKey.from_cryptography(revoked.public_key())
    orgs = []
    for org in (*MEMBERS, *PARTNERS):
        entries = [{"jwk": jwk, "use": jwk["use"]} for jwk in public[org]]
        if org == "bank-a":
            past = (datetime.now(UTC) - timedelta(days=1)).isoformat()
            entries.append({"jwk": revoked_pub.to_jwk(), "use": "sig", "revoked_at": past})
        orgs.append(
            {
                "id": org,
                "name": org.upper(),
                "kind": "member" if org in MEMBERS else "partner",
                "taxii_read": org == "lea-1",
                "derived_copies": org == "bank-b",
                "stix_identity": stix_identity(org),
                "keys": entries,
            }
        )
    doc = {
        "community": {"id": "test", "name": "Test community", "partners_in_community": True},
        "broker": {
            "id": "atlas-broker",
            "keys": [{"jwk": j, "use": "sig"} for j in public["atlas-broker"] if j["use"] == "sig"],
        },
        "organisations": orgs,
        "groups": [
            {"id": "op-x", "members": ["bank-a", "lea-1"]},
            {"id": "op-y", "members": ["bank-b", "lea-2"]},
        ],
        "subscriptions": [{"recipient": r, "originators": ["*"]} for r in PARTNERS],
    }
    broker_key = load_private_key(root / "atlas-broker" / "atlas-broker.sign.pem")
    community = Community(root=root, doc=doc, broker_key=broker_key, public=public)
    raw = {}
    for org in (*MEMBERS, *PARTNERS):
        loaded = serialization.load_pem_private_key(community.sign_key(org).read_bytes(), None)
        assert isinstance(loaded, ed25519.Ed25519PrivateKey)
        raw[org] = loaded
    keys = Keys(
        orgs={org: load_private_key(community.sign_key(org)) for org in (*MEMBERS, *PARTNERS)},
        raw=raw,
        broker=broker_key,
        intruder=PrivateKey.generate("Ed25519"),
        intruder_es256=ec.generate_private_key(ec.SECP256R1()),
        enc_kid={
            org: PublicKey.from_jwk(public[org][1]).thumbprint for org in (*MEMBERS, *PARTNERS)
        },
        revoked=revoked,
        revoked_kid=revoked_pub.thumbprint,
    )
    return community, keys


@dataclass
class Answer:
    """What happened to one case on the way in."""

    seq: int | None = None
    """NATS: the sequence in the member's intake stream (its acknowledgement)."""
    stream_seq: int | None = None
    """NATS: the sequence of its copy in SUBMISSIONS, which the router logs."""
    sha256: str = ""
    error: BaseException | None = None
    status: int = 0
    body: dict[str, Any] = field(default_factory=dict)
    content_type: str = ""
    record: dict[str, Any] | None = None
    """TAXII: the final status resource (GET /status/<id>/) of a 202."""
    record_sha: str = ""
    """TAXII: the first 32 hex digits of the SHA-256 of the submission the front signed."""


@dataclass
class Run:
    answers: dict[str, Answer]
    log: list[dict[str, Any]]
    details: dict[int, str]
    """Router refusal details (``submission.refused`` warnings) by stream sequence."""
    unlogged: dict[str, str]
    """Refusals that no valid signature vouched for and that the router counted into a
    later entry's ``suppressed`` instead of logging them on their own: their
    ``src_sha256`` -> reason (its ``submission.refused`` warning says ``logged=False``)."""
    digest_key: bytes
    received: dict[str, list[dict[str, Any]]]
    """Every object the partners' receive bridges wrote, per partner."""
    before: dict[str, dict[str, Any]]
    """Submissions accepted before the corpus: name -> {"sha": ..., "ids": [...]}."""
    after: dict[str, dict[str, Any]]
    verify: VerifyResult
    stored_submissions: int
    settings: Settings
    keys: Keys
    now: int

    def digest(self, obj_id: str, modified: str) -> str:
        return hmac.new(self.digest_key, f"{obj_id}|{modified}".encode(), "sha256").hexdigest()

    def entries_for(self, sha: str) -> list[dict[str, Any]]:
        """Every log entry about the submission whose token digest starts with ``sha``."""
        out = []
        for e in self.log:
            src = e.get("src")
            digest = src.get("sha256", "") if isinstance(src, dict) else e.get("src_sha256", "")
            if sha and digest.startswith(sha):
                out.append(e)
        return out


async def _wait_routed(js: JetStreamContext, seconds: float = 150) -> None:
    """Until everything published so far is copied into SUBMISSIONS and routed."""
    async with asyncio.timeout(seconds):
        while True:
            intake = await intake_total(js)
            copied = (await js.stream_info(SUBMISSIONS)).state.last_seq or 0
            backlog = await router_backlog(js)
            if copied >= intake and backlog.drained() and backlog.delivered > 0:
                return
            await asyncio.sleep(0.1)


async def _copies(js: JetStreamContext) -> dict[tuple[str, int], int]:
    """SUBMISSIONS sequence of each intake message: (intake stream, its sequence) -> seq."""
    out: dict[tuple[str, int], int] = {}
    last = (await js.stream_info(SUBMISSIONS)).state.last_seq or 0
    for seq in range(1, last + 1):
        msg = await js.get_msg(SUBMISSIONS, seq)
        origin = copy_origin(msg.headers)
        assert origin is not None, f"SUBMISSIONS seq {seq} is not a copy"
        out[origin] = seq
    return out


async def _wait_checkpointed(js: JetStreamContext, size: int, seconds: float = 60) -> None:
    async with asyncio.timeout(seconds):
        while True:
            try:
                last = await js.get_last_msg("LOG", CHECKPOINT_SUBJECT)
                if CheckpointMessage.decode(last.data or b"").size >= size:
                    return
            except nats.js.errors.NotFoundError:
                pass
            await asyncio.sleep(0.2)


class Taxii:
    """A TAXII client on real HTTP: the members' and partners' credentials."""

    def __init__(self, url: str, tokens: dict[str, str]) -> None:
        self.url = url
        self.tokens = tokens
        self.client = httpx.AsyncClient(base_url=url, timeout=60)
        self.collections: dict[str, str] = {}

    async def load_collections(self) -> None:
        for org in self.tokens:
            resp = await self.client.get(
                "/atlas/collections/", auth=(org, self.tokens[org]), headers={"Accept": TAXII_MT}
            )
            resp.raise_for_status()
            for c in resp.json().get("collections", []):
                self.collections[c["title"]] = c["id"]

    def _auth_headers(self, case: Case) -> dict[str, str]:
        if case.auth is None:
            user, secret = case.org, self.tokens[case.org]
        else:
            user, secret = case.auth
            if secret.startswith("@"):
                secret = self.tokens[secret[1:]]
        if user == "-":
            return {}
        if user == "":
            return {"Authorization": f"Bearer {secret}"}
        basic = base64.b64encode(f"{user}:{secret}".encode()).decode()
        return {"Authorization": f"Basic {basic}"}

    async def post(self, case: Case, ctx: Ctx) -> Answer:
        body = case.body(ctx) if callable(case.body) else case.body
        headers = {"Content-Type": TAXII_MT, "Accept": TAXII_MT, **self._auth_headers(case)}
        headers.update(case.headers)
        content: bytes | AsyncIterator[bytes] = body
        if headers.pop("x-chunked", None):

            async def chunks() -> AsyncIterator[bytes]:
                for i in range(0, len(body), 65536):
                    yield body[i : i + 65536]

            content = chunks()
        url = f"/atlas/collections/{self.collections[case.collection]}/objects/"
        resp = await self.client.post(url, content=content, headers=headers)
        answer = Answer(status=resp.status_code, content_type=resp.headers.get("content-type", ""))
        try:
            answer.body = resp.json()
        except ValueError:
            answer.body = {"description": resp.text}
        return answer

    async def status(self, org: str, status_id: str) -> dict[str, Any]:
        resp = await self.client.get(
            f"/atlas/status/{status_id}/",
            auth=(org, self.tokens[org]),
            headers={"Accept": TAXII_MT},
        )
        resp.raise_for_status()
        return resp.json()  # type: ignore[no-any-return]


async def _publish_file(
    settings: Settings, js: JetStreamContext, community: Community, tmp: Path, org: str, data: Any
) -> tuple[str, bytes]:
    path = tmp / f"{uuid.uuid4().hex}.json"
    path.write_bytes(orjson.dumps(data))
    published = await publish_bundle(
        settings, path, org=org, key_path=community.sign_key(org), js=js
    )
    stored = await js.get_msg(submit_stream(org), published.intake_seq)
    return published.sid, stored.data or b""


async def run_corpus(
    cases: list[Case],
    tmp: Path,
    *,
    background: Callable[[Awaitable[Any]], Any],
    stop: Callable[[], Awaitable[None]],
) -> Run:
    """Everything, in order; ``background`` owns the long-running tasks (router, TAXII),
    and ``stop`` ends them before the connection and the server go."""
    capture = LogCapture()
    structlog.configure(
        processors=[structlog.contextvars.merge_contextvars, capture],
        cache_logger_on_first_use=False,
    )
    community, hostile_keys = build_community(tmp / "keys")
    server = EmbeddedNats(tmp / "nats-data", publish_url=False)
    await server.start()
    nc = await nats.connect(server.url, max_reconnect_attempts=2)
    try:
        return await _run(cases, tmp, community, hostile_keys, nc, capture, background)
    finally:
        await stop()
        structlog.reset_defaults()
        await nc.close()
        await server.stop()


async def _run(
    cases: list[Case],
    tmp: Path,
    community: Community,
    hostile_keys: Keys,
    nc: Any,
    capture: LogCapture,
    background: Callable[[Awaitable[Any]], Any],
) -> Run:
    js = nc.jetstream()
    creds = tmp / "taxii-credentials.toml"
    tokens = {org: set_secret(creds, org, n=1024) for org in ("bank-a", "bank-b", "lea-1")}
    settings = Settings(
        data_dir=tmp / "broker-data",
        nats={"url": "nats://unused"},
        broker={"signing_key": community.root / "atlas-broker" / "atlas-broker.sign.pem"},
        taxii=TaxiiSettings(port=0, credentials_file=creds),
    )
    await ensure_streams(js, streams_for(settings))
    await store_directory(js, Directory.from_mapping(community.doc))
    ready = asyncio.Event()
    background(run_router(js, settings, signing_key=community.broker_key, ready=ready))
    await ready.wait()
    started: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    background(
        run_taxii(js, settings, signing_key=community.broker_key, on_started=started.set_result)
    )
    taxii = Taxii(await asyncio.wait_for(started, 30), tokens)
    try:
        await taxii.load_collections()
        return await _phases(cases, tmp, community, hostile_keys, js, settings, taxii, capture)
    finally:
        await taxii.client.aclose()


async def _phases(
    cases: list[Case],
    tmp: Path,
    community: Community,
    hostile_keys: Keys,
    js: JetStreamContext,
    settings: Settings,
    taxii: Taxii,
    capture: LogCapture,
) -> Run:
    # -- before: what must not be lost, and what the replays replay
    ctx = Ctx(keys=hostile_keys, now=int(time.time()))
    before: dict[str, dict[str, Any]] = {}
    for n, (org, objects) in enumerate(
        [
            ("bank-a", [ORIGINAL, ind("before/a1")]),
            ("bank-a", [ind("before/a2", tlp="green")]),
            ("bank-b", [ind("before/b1"), ind("before/b2", tlp="green")]),
        ]
    ):
        data = bundle(f"before/{n}", *objects)
        _, token = await _publish_file(settings, js, community, tmp, org, data)
        before[f"nats-{n}"] = {
            "sha": hashlib.sha256(token).hexdigest(),
            "ids": [o["id"] for o in objects],
        }
        ctx.before[f"nats-{n}"] = token
    # A known sid, so that a case can reuse it with other content.
    fixed = bundle("before/fixed-sid", ind("before/fixed"))
    token = await _signed_with_sid(ctx, fixed, BEFORE_SID)
    await js.publish(submit_subject("bank-a"), token, stream=submit_stream("bank-a"))
    before["fixed-sid"] = {
        "sha": hashlib.sha256(token).hexdigest(),
        "ids": [o["id"] for o in fixed["objects"]],
    }
    taxii_objects = [ind("before/taxii")]
    answer = await taxii.post(
        Case(
            "before",
            "",
            "taxii",
            expect=Expect("http"),
            body=orjson.dumps({"objects": taxii_objects}),
        ),
        ctx,
    )
    assert answer.status == 202, answer.body
    last = await js.get_last_msg(submit_stream("bank-a"), submit_subject("bank-a"))
    ctx.before["taxii"] = last.data or b""
    before["taxii"] = {
        "sha": hashlib.sha256(ctx.before["taxii"]).hexdigest(),
        "ids": [o["id"] for o in taxii_objects],
    }
    await _wait_routed(js)
    package = await js.get_last_msg(DELIVERIES, deliver_subject("lea-1", BEFORE_SID))
    ctx.package = package.data or b""

    # -- the corpus
    answers: dict[str, Answer] = {}
    for case in cases:
        if case.path == "nats":
            assert case.token is not None
            token = case.token(ctx)
            answer = Answer(sha256=hashlib.sha256(token).hexdigest())
            try:
                ack = await js.publish(
                    submit_subject(case.subject_org),
                    token,
                    stream=submit_stream(case.subject_org),
                    timeout=30,
                )
            except Exception as exc:  # judged per case: the error is the answer
                answer.error = exc
            else:
                answer.seq = ack.seq
        else:
            answer = await taxii.post(case, ctx)
        answers[case.id] = answer
    # Each case is found in the log by the digest of what it sent; only replays resend.
    shas = [
        a.sha256
        for c in cases
        if (a := answers[c.id]).seq is not None and c.category != "replayed signatures"
    ]
    shas += [b["sha"] for b in before.values()]
    assert len(shas) == len(set(shas)), "two cases published the same bytes"
    # The TAXII 202s published too: wait for the router to reach the end of the stream.
    await _wait_routed(js)
    copies = await _copies(js)
    for case in cases:
        answer = answers[case.id]
        if case.path == "nats" and answer.seq is not None:
            answer.stream_seq = copies[(submit_stream(case.subject_org), answer.seq)]

    # -- after: the broker still serves, on both paths
    after: dict[str, dict[str, Any]] = {}
    data = bundle("after/nats", ind("after/nats"))
    _, token = await _publish_file(settings, js, community, tmp, "bank-a", data)
    after["nats"] = {"sha": hashlib.sha256(token).hexdigest(), "ids": [ind("after/nats")["id"]]}
    answer = await taxii.post(
        Case(
            "after",
            "",
            "taxii",
            expect=Expect("http"),
            body=orjson.dumps({"objects": [ind("after/taxii")]}),
        ),
        ctx,
    )
    assert answer.status == 202, answer.body
    last = await js.get_last_msg(submit_stream("bank-a"), submit_subject("bank-a"))
    after["taxii"] = {
        "sha": hashlib.sha256(last.data or b"").hexdigest(),
        "ids": [ind("after/taxii")["id"]],
    }
    await _wait_routed(js)

    # -- TAXII statuses of every 202, and the submission each names
    ids = StatusIds(load_cursor_key(settings))
    for case in cases:
        answer = answers[case.id]
        if case.path == "taxii" and answer.status == 202:
            answer.record = await taxii.status(case.org, answer.body["id"])
            seq = ids.read(answer.body["id"])
            assert seq is not None, answer.body["id"]
            stored = await js.get_msg(submit_stream(case.org), seq)
            answer.record_sha = hashlib.sha256(stored.data or b"").hexdigest()[:32]

    # -- what the partners' receive bridges write, and the log
    received: dict[str, list[dict[str, Any]]] = {}
    for partner in PARTNERS:
        out = tmp / "inbox" / partner
        await receive(
            settings,
            org=partner,
            key_paths=[community.enc_key(partner)],
            out_dir=out,
            once=True,
            js=js,
        )
        received[partner] = [
            obj for path in out.glob("*.json") for obj in orjson.loads(path.read_bytes())["objects"]
        ]
    log = [r.entry async for r in read_log(js)]
    await _wait_checkpointed(js, len(log))
    verifier = NoteVerifier.from_public_key(
        log_origin(settings.broker.id), community.broker_key.public
    )
    result = await verify_log(LiveLog(js), log_keys=[verifier], deliveries=js, grace=0)
    details = {
        int(e["msg_seq"]): str(e.get("detail", ""))
        for e in capture.entries
        if e.get("event") == "submission.refused" and "msg_seq" in e
    }
    unlogged = {
        str(e["src_sha256"]): str(e["reason"])
        for e in capture.entries
        if e.get("event") == "submission.refused" and e.get("logged") is False
    }
    info = await js.stream_info(SUBMISSIONS)
    return Run(
        answers=answers,
        log=log,
        details=details,
        unlogged=unlogged,
        digest_key=(settings.data_dir / "digest.key").read_bytes(),
        received=received,
        before=before,
        after=after,
        verify=result,
        stored_submissions=info.state.messages,
        settings=settings,
        keys=hostile_keys,
        now=ctx.now,
    )


async def _signed_with_sid(ctx: Ctx, data: Any, sid: str) -> bytes:
    from tests.hostile.cases import envelope, signed

    return signed(ctx, orjson.dumps(envelope(ctx, "before/fixed", data, sid=sid)))
