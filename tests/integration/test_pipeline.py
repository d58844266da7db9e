"""The walking skeleton end to end against a real nats-server."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
from nats.js import JetStreamContext

from broker._audit import read_log
from broker._bus import DELIVERIES, deliver_subject, submit_subject
from broker._router import PKG_ID_HEADER, VIEW_HEADER
from broker._submission import make_submission
from keys import PrivateKey, load_private_key, sign_submission
from tests.conftest import stix_identity
from tests.integration.helpers import (
    bundle,
    indicator,
    publish,
    receive_all,
    received_ids,
    wait_routed,
)


async def _log(js: JetStreamContext) -> list[dict[str, Any]]:
    return [r.entry async for r in read_log(js)]


class TestTlpRouting:
    async def test_red_reaches_only_the_named_recipient(
        self,
        js: JetStreamContext,
        make_community: Callable[..., Any],
        running_router: Any,
        tmp_path: Path,
    ) -> None:
        community = make_community()
        settings = await running_router(community)
        red = indicator("red", "named only")
        clear = indicator("clear", "for everyone")
        await publish(
            settings, js, community, tmp_path, "bank-a", bundle(red, clear), to=("org:lea-1",)
        )
        await wait_routed(js, 1)
        got1 = await receive_all(settings, js, community, "lea-1", tmp_path / "lea-1")
        got2 = await receive_all(settings, js, community, "lea-2", tmp_path / "lea-2")
        assert got1.received == 1 and got2.received == 1
        assert received_ids(tmp_path / "lea-1") == {red["id"], clear["id"]}
        assert received_ids(tmp_path / "lea-2") == {clear["id"]}
        entries = await _log(js)
        withheld = [e for e in entries if e["type"] == "withheld"]
        assert [(e["rcpt"], e["tlp"]) for e in withheld] == [("lea-2", "red")]
        # The named recipient has it: nothing for the originator to be told.
        assert [e for e in entries if e["type"] == "notice"] == []

    async def test_red_with_nobody_named_is_withheld_from_everyone(
        self,
        js: JetStreamContext,
        make_community: Callable[..., Any],
        running_router: Any,
        tmp_path: Path,
    ) -> None:
        community = make_community()
        settings = await running_router(community)
        await publish(settings, js, community, tmp_path, "bank-a", bundle(indicator("red")))
        await wait_routed(js, 1)
        info = await js.stream_info(DELIVERIES)
        assert info.state.messages == 0
        entries = await _log(js)
        reasons = {(e["rcpt"], e["reason"]) for e in entries if e["type"] == "withheld"}
        assert reasons == {("lea-1", "red-not-named"), ("lea-2", "red-not-named")}
        notices = [e for e in entries if e["type"] == "notice"]
        assert [(n["org"], n["reason"], n["objects"]) for n in notices] == [
            ("bank-a", "red-not-named", 1)
        ]
        told = await js.get_last_msg("RECEIPTS", "atlas.notice.bank-a")
        assert orjson.loads(told.data)["reason"] == "red-not-named"

    async def test_green_never_reaches_an_organisation_outside_the_community(
        self,
        js: JetStreamContext,
        make_community: Callable[..., Any],
        running_router: Any,
        tmp_path: Path,
    ) -> None:
        community = make_community(outside=("ncu-x",))
        settings = await running_router(community)
        green = indicator("green")
        clear = indicator("clear")
        await publish(settings, js, community, tmp_path, "bank-a", bundle(green, clear))
        await wait_routed(js, 1)
        await receive_all(settings, js, community, "ncu-x", tmp_path / "out")
        await receive_all(settings, js, community, "lea-1", tmp_path / "in")
        assert received_ids(tmp_path / "out") == {clear["id"]}
        assert received_ids(tmp_path / "in") == {green["id"], clear["id"]}

    async def test_unknown_marking_is_withheld(
        self,
        js: JetStreamContext,
        make_community: Callable[..., Any],
        running_router: Any,
        tmp_path: Path,
    ) -> None:
        community = make_community()
        settings = await running_router(community)
        forged_def = {
            "type": "marking-definition",
            "spec_version": "2.1",
            "id": "marking-definition--11111111-2222-4333-8444-555555555555",
            "created": "2026-01-01T00:00:00.000Z",
            "name": "TLP:CLEAR",
            "definition_type": "tlp",
            "definition": {"tlp": "clear"},
        }
        forged = indicator(forged_def["id"], "forged clear")
        clear = indicator("clear")
        await publish(
            settings, js, community, tmp_path, "bank-a", bundle(forged_def, forged, clear)
        )
        await wait_routed(js, 1)
        await receive_all(settings, js, community, "lea-1", tmp_path / "lea-1")
        got = received_ids(tmp_path / "lea-1")
        assert clear["id"] in got
        assert forged["id"] not in got and forged_def["id"] not in got


class TestRefusals:
    async def test_forged_submission_is_refused_and_logged(
        self,
        js: JetStreamContext,
        make_community: Callable[..., Any],
        running_router: Any,
        tmp_path: Path,
    ) -> None:
        community = make_community()
        await running_router(community)
        intruder = PrivateKey.generate("Ed25519")
        envelope = {
            "v": 1,
            "sid": "a" * 32,
            "org": "bank-a",
            "iat": 1_900_000_000,
            "to": [],
            "feed": None,
            "bundle": bundle(indicator("clear")),
        }
        import time

        envelope["iat"] = int(time.time())
        token = sign_submission(
            orjson.dumps(envelope), intruder, org="bank-a", now=int(time.time())
        )
        await js.publish(submit_subject("bank-a"), token.encode())
        await wait_routed(js, 1)
        entries = await _log(js)
        assert [(e["type"], e["result"], e["reason"]) for e in entries] == [
            ("submission", "refused", "bad-signature")
        ]
        assert (await js.stream_info(DELIVERIES)).state.messages == 0

    async def test_submission_on_another_members_subject_is_refused(
        self,
        js: JetStreamContext,
        make_community: Callable[..., Any],
        running_router: Any,
        tmp_path: Path,
    ) -> None:
        community = make_community()
        settings = await running_router(community)
        import time

        from keys import load_private_key

        key = load_private_key(community.sign_key("bank-a"))
        envelope = {
            "v": 1,
            "sid": "b" * 32,
            "org": "bank-a",
            "iat": int(time.time()),
            "to": [],
            "feed": None,
            "bundle": bundle(indicator("clear")),
        }
        token = sign_submission(orjson.dumps(envelope), key, org="bank-a", now=int(time.time()))
        await js.publish(submit_subject("bank-b"), token.encode())
        await wait_routed(js, 1)
        entries = await _log(js)
        assert entries[0]["result"] == "refused"
        assert entries[0]["reason"] in {"bad-signature", "org-mismatch"}
        del settings


class TestPackages:
    async def test_package_for_a_key_not_given_is_held_and_opened_once_the_key_is(
        self,
        js: JetStreamContext,
        make_community: Callable[..., Any],
        running_router: Any,
        tmp_path: Path,
    ) -> None:
        """A wrong --key is the receiver's mistake, not the package's: quarantining (and
        acking) would lose the partner's backlog. The package stays in the stream."""
        community = make_community()
        settings = await running_router(community)
        await publish(settings, js, community, tmp_path, "bank-a", bundle(indicator("clear")))
        await wait_routed(js, 1)
        wrong = await receive_all(
            settings, js, community, "lea-1", tmp_path / "out", key=community.enc_key("lea-2")
        )
        assert (wrong.received, wrong.quarantined, wrong.held) == (0, 0, 1)
        assert not list((tmp_path / "out" / ".atlas" / "quarantine").iterdir())
        assert not list((tmp_path / "out").glob("*.json"))
        right = await receive_all(settings, js, community, "lea-1", tmp_path / "out")
        assert (right.received, right.quarantined, right.held) == (1, 0, 0)

    async def test_a_genuine_package_under_another_subject_is_quarantined(
        self,
        js: JetStreamContext,
        make_community: Callable[..., Any],
        running_router: Any,
        tmp_path: Path,
    ) -> None:
        community = make_community()
        settings = await running_router(community)
        sid = await publish(settings, js, community, tmp_path, "bank-a", bundle(indicator("clear")))
        await wait_routed(js, 1)
        genuine = await js.get_last_msg(DELIVERIES, deliver_subject("lea-1", sid))
        # The subject is not signed: the same bytes republished under another submission id.
        await js.publish(deliver_subject("lea-1", "f" * 32), genuine.data)

        stats = await receive_all(settings, js, community, "lea-1", tmp_path / "out")

        assert stats.received == 1 and stats.quarantined == 1
        assert sorted(p.name for p in (tmp_path / "out").glob("*.json")) == [f"{sid}.json"]
        reasons = list((tmp_path / "out" / ".atlas" / "quarantine").glob("*.reason.json"))
        detail = orjson.loads(reasons[0].read_bytes())["detail"]
        assert f"package for submission '{sid}' arrived on subject" in detail

    async def test_delivery_entry_describes_the_package_an_earlier_attempt_stored(
        self,
        js: JetStreamContext,
        make_community: Callable[..., Any],
        running_router: Any,
        tmp_path: Path,
    ) -> None:
        community = make_community()
        await running_router(community)
        signed = make_submission(
            orjson.dumps(bundle(indicator("clear"))),
            org="bank-a",
            key=load_private_key(community.sign_key("bank-a")),
            to=(),
            feed=None,
            now=int(time.time()),
            max_bytes=1 << 20,
            max_objects=1000,
        )
        # What a worker killed after storing lea-1's package (and before logging) left.
        earlier = {"view_sha256": "e" * 64, "objects": {"delivered": 1, "withheld": 0,
                   "derived": 0}, "tlp": "clear"}  # fmt: skip
        await js.publish(
            deliver_subject("lea-1", signed.sid),
            b"the earlier attempt's package",
            headers={
                PKG_ID_HEADER: "pkg-earlier",
                VIEW_HEADER: orjson.dumps(earlier).decode(),
                "Nats-Expected-Last-Subject-Sequence": "0",
            },
        )
        await js.publish(submit_subject("bank-a"), signed.token)
        await wait_routed(js, 1)

        deliveries = {e["rcpt"]: e for e in await _log(js) if e["type"] == "delivery"}
        assert deliveries["lea-1"]["pkg"] == "pkg-earlier"
        assert deliveries["lea-1"]["view_sha256"] == "e" * 64
        assert deliveries["lea-2"]["pkg"] != "pkg-earlier"
        assert deliveries["lea-2"]["view_sha256"] != "e" * 64

    async def test_jwcrypto_opens_a_delivered_package(
        self,
        js: JetStreamContext,
        make_community: Callable[..., Any],
        running_router: Any,
        tmp_path: Path,
    ) -> None:
        from jwcrypto import jwe, jwk, jws

        community = make_community()
        settings = await running_router(community)
        ind = indicator("clear")
        sid = await publish(settings, js, community, tmp_path, "bank-a", bundle(ind))
        await wait_routed(js, 1)
        msg = await js.get_last_msg(DELIVERIES, deliver_subject("lea-1", sid))
        recipient_key = jwk.JWK.from_pem(community.enc_key("lea-1").read_bytes())
        outer = jwe.JWE()
        outer.deserialize(msg.data.decode(), key=recipient_key)
        assert outer.jose_header["alg"] == "ECDH-ES+A256KW"
        assert outer.jose_header["enc"] == "A256GCM"
        inner = jws.JWS()
        inner.deserialize(outer.payload.decode())
        broker_pub = jwk.JWK(**community.public["atlas-broker"][0])
        inner.verify(broker_pub)
        claims = orjson.loads(inner.payload)
        assert claims["aud"] == "lea-1"
        assert claims["src"]["submission"] == sid
        assert [o["id"] for o in claims["stix"]["objects"]] == [ind["id"]]


class TestVersions:
    async def test_same_id_and_modified_with_other_content_is_refused(
        self,
        js: JetStreamContext,
        make_community: Callable[..., Any],
        running_router: Any,
        tmp_path: Path,
    ) -> None:
        community = make_community()
        settings = await running_router(community)
        first = indicator("clear", "original")
        await publish(settings, js, community, tmp_path, "bank-a", bundle(first))
        await wait_routed(js, 1)
        changed = {**first, "name": "silently changed"}
        await publish(settings, js, community, tmp_path, "bank-b", bundle(changed))
        await wait_routed(js, 2)
        results = [
            (e["result"], e.get("reason")) for e in await _log(js) if e["type"] == "submission"
        ]
        assert results == [("accepted", None), ("refused", "version-conflict")]
        assert (await js.stream_info(DELIVERIES)).state.messages == 2

    async def test_revocation_reaches_those_who_received_the_earlier_version(
        self,
        js: JetStreamContext,
        make_community: Callable[..., Any],
        running_router: Any,
        tmp_path: Path,
    ) -> None:
        community = make_community()
        settings = await running_router(community)
        original = indicator("amber", "to be revoked")
        await publish(
            settings, js, community, tmp_path, "bank-a", bundle(original), to=("org:lea-1",)
        )
        await wait_routed(js, 1)  # a revocation is judged on what was delivered before it
        revoked = {**original, "modified": "2026-11-03T09:30:00.000Z", "revoked": True}
        sid = await publish(settings, js, community, tmp_path, "bank-a", bundle(revoked))
        await wait_routed(js, 2)
        await receive_all(settings, js, community, "lea-1", tmp_path / "lea-1")
        await receive_all(settings, js, community, "lea-2", tmp_path / "lea-2")
        got = orjson.loads((tmp_path / "lea-1" / f"{sid}.json").read_bytes())
        assert [(o["id"], o.get("revoked")) for o in got["objects"]] == [(original["id"], True)]
        assert received_ids(tmp_path / "lea-2") == set()

    async def test_only_the_author_versions_an_object_others_may_relay_it(
        self,
        js: JetStreamContext,
        make_community: Callable[..., Any],
        running_router: Any,
        tmp_path: Path,
    ) -> None:
        community = make_community()
        settings = await running_router(community)
        original = {**indicator("clear", "bank-a's"), "created_by_ref": stix_identity("bank-a")}
        await publish(settings, js, community, tmp_path, "bank-a", bundle(original))
        await wait_routed(js, 1)
        later = "2026-11-03T09:30:00.000Z"
        attempts = [
            ("bank-b", {**original, "modified": later, "revoked": True}),
            ("bank-b", original),  # relayed unchanged: allowed
            ("bank-b", {**indicator("clear", "forged"), "created_by_ref": stix_identity("bank-a")}),
            ("bank-a", {**original, "modified": later, "revoked": True}),
        ]
        for n, (org, obj) in enumerate(attempts, start=2):
            await publish(settings, js, community, tmp_path, org, bundle(obj))
            await wait_routed(js, n)
        results = [
            (e["org"], e["result"], e.get("reason"))
            for e in await _log(js)
            if e["type"] == "submission"
        ]
        assert results == [
            ("bank-a", "accepted", None),
            # Authored by bank-a (created_by_ref): a new version in its name.
            ("bank-b", "refused", "impersonation"),
            ("bank-b", "accepted", None),
            ("bank-b", "refused", "impersonation"),
            ("bank-a", "accepted", None),
        ]


class TestPostQuantum:
    async def test_x_wing_recipient_opens_its_package_and_gets_no_classical_copy(
        self,
        js: JetStreamContext,
        make_community: Callable[..., Any],
        running_router: Any,
        tmp_path: Path,
    ) -> None:
        community = make_community(enc="X-Wing")
        settings = await running_router(community)
        ind = indicator("clear")
        sid = await publish(settings, js, community, tmp_path, "bank-a", bundle(ind))
        await wait_routed(js, 1)
        msg = await js.get_last_msg(DELIVERIES, deliver_subject("lea-1", sid))
        header = orjson.loads(_b64(msg.data.split(b".")[0]))
        assert header["alg"] == "HPKE-9-KE" and "ek" in header
        assert (await js.stream_info(DELIVERIES)).state.messages == 2  # one per partner
        stats = await receive_all(settings, js, community, "lea-1", tmp_path / "pq")
        assert stats.received == 1 and stats.quarantined == 0
        assert received_ids(tmp_path / "pq") == {ind["id"]}


def _b64(part: bytes) -> bytes:
    import base64

    return base64.urlsafe_b64decode(part + b"=" * (-len(part) % 4))
