"""The TAXII front on a real nats-server and real HTTP, driven by taxii2-client unmodified."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nats
import orjson
import pytest
import requests
from nats.js import JetStreamContext
from taxii2client.v21 import ApiRoot, Collection, Server, as_pages

from adapters._taxii import set_secret
from broker._bus import (
    SUBMISSIONS,
    Streams,
    ensure_intake,
    ensure_streams,
    submit_stream,
    submit_subject,
)
from broker._config import Settings, TaxiiSettings
from broker._directory_store import store_directory
from broker._embedded import EmbeddedNats
from broker._taxii_backend import NatsTaxiiBackend, StatusIds
from broker._taxii_service import load_cursor_key, run_taxii
from keys import PrivateKey
from tests.conftest import Community
from tests.integration.helpers import indicator, wait_routed

ORGS = ("bank-a", "bank-b", "lea-1")


@dataclass
class Front:
    url: str
    tokens: dict[str, str]
    settings: Settings
    community: Community

    def root(self, org: str, password: str | None = None) -> ApiRoot:
        server = Server(f"{self.url}/taxii2/", user=org, password=password or self.tokens[org])
        return server.api_roots[0]

    def collection(self, org: str, title: str) -> Collection:
        return next(c for c in self.root(org).collections if c.title == title)


@pytest.fixture
async def front(
    js: JetStreamContext,
    make_community: Callable[..., Community],
    running_router: Any,
    tmp_path: Path,
) -> AsyncIterator[Front]:
    community = make_community()
    community.org("lea-1")["taxii_read"] = True
    community.doc["groups"] = [{"id": "op-x", "members": ["bank-a", "lea-1"]}]
    settings: Settings = await running_router(community)
    creds = tmp_path / "taxii-credentials.toml"
    tokens = {org: set_secret(creds, org, n=1024) for org in ORGS}
    settings = settings.model_copy(update={"taxii": TaxiiSettings(port=0, credentials_file=creds)})
    started: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(
        run_taxii(js, settings, signing_key=community.broker_key, on_started=started.set_result)
    )
    try:
        url = await asyncio.wait_for(asyncio.shield(started), 10)
        yield Front(url=url, tokens=tokens, settings=settings, community=community)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def _add(front: Front, org: str, title: str, objects: list[dict[str, Any]]) -> Any:
    collection = front.collection(org, title)
    return collection.add_objects({"objects": objects}, poll_interval=0.1, timeout=20)


class TestTaxiiClientFlow:
    async def test_member_post_reaches_partner_reader_when_routed(
        self, front: Front, js: JetStreamContext
    ) -> None:
        clear = [indicator("clear", f"c{i}") for i in range(5)]
        red = indicator("red", "not named")
        status = await asyncio.to_thread(_add, front, "bank-a", "community", [*clear, red])
        assert status.status == "complete" and status.success_count == 6
        await wait_routed(js, 1)

        def read() -> tuple[list[str], list[str], list[str], Any, Any]:
            views = front.collection("lea-1", "views:lea-1")
            paged = [
                o["id"]
                for page in as_pages(views.get_objects, per_request=2)
                for o in page.get("objects", [])
            ]
            manifest = [m["id"] for m in views.get_manifest()["objects"]]
            typed = [o["id"] for o in views.get_objects(type="indicator")["objects"]]
            one = views.get_object(clear[0]["id"])
            versions = views.object_versions(clear[0]["id"])
            return paged, manifest, typed, one, versions

        paged, manifest, typed, one, versions = await asyncio.to_thread(read)
        ids = [o["id"] for o in clear]
        # every allowed object once, in date-added order, never the RED one
        assert sorted(paged) == sorted(ids) and manifest == paged and typed == paged
        assert one["objects"] == [clear[0]]
        assert versions["versions"] == [clear[0]["modified"]]  # as the object writes it

    async def test_new_version_is_listed_when_reposted(
        self, front: Front, js: JetStreamContext
    ) -> None:
        obj = indicator("clear", "v1")
        newer = {**obj, "name": "v2", "modified": "2026-11-03T09:30:00.000Z"}
        first = await asyncio.to_thread(_add, front, "bank-a", "community", [obj])
        again = await asyncio.to_thread(_add, front, "bank-a", "community", [obj])
        second = await asyncio.to_thread(_add, front, "bank-a", "group:op-x", [newer])
        assert (first.success_count, again.success_count, second.success_count) == (1, 1, 1)
        await wait_routed(js, 3)

        def read() -> tuple[Any, Any, Any]:
            views = front.collection("lea-1", "views:lea-1")
            return (
                views.object_versions(obj["id"]),
                views.get_object(obj["id"]),
                views.get_objects(added_after="2000-01-01T00:00:00Z", version="all"),
            )

        versions, latest, every = await asyncio.to_thread(read)
        assert versions["versions"] == [obj["modified"], newer["modified"]]
        assert [o["name"] for o in latest["objects"]] == ["v2"]
        assert [o["name"] for o in every["objects"]] == ["v1", "v2"]

    async def test_failure_with_reason_when_version_conflicts(
        self, front: Front, js: JetStreamContext
    ) -> None:
        obj = indicator("clear", "original")
        await asyncio.to_thread(_add, front, "bank-a", "community", [obj])
        changed = {**obj, "name": "same id and modified, other content"}
        status = await asyncio.to_thread(_add, front, "bank-a", "community", [changed])
        assert status.status == "complete" and status.failure_count == 1
        assert "version-conflict" in status.failures[0]["message"]

    async def test_refused_when_password_is_wrong(self, front: Front) -> None:
        with pytest.raises(requests.HTTPError) as caught:
            await asyncio.to_thread(front.root, "bank-a", "bank-a.wrong")
        assert caught.value.response.status_code == 401
        assert caught.value.response.headers["Content-Type"] == "application/taxii+json;version=2.1"


class TestBadInput:
    async def test_nothing_stored_when_input_is_bad(
        self, front: Front, js: JetStreamContext
    ) -> None:
        mt = "application/taxii+json;version=2.1"
        token = front.tokens["bank-a"]

        def attempts() -> dict[int, requests.Response]:
            url = front.collection("bank-a", "community").url + "objects/"
            limit = front.root("bank-a").max_content_length

            def post(data: bytes, content_type: str = mt, auth: Any = ("bank-a", token)) -> Any:
                headers = {"Content-Type": content_type, "Accept": mt}
                return requests.post(url, data=data, auth=auth, headers=headers, timeout=10)

            return {
                415: post(b'{"objects": []}', "application/json"),
                400: post(b"{nope"),
                422: post(b'{"objects": [{"type": "indicator", "id": "x"}]}'),
                413: post(b'{"objects": [' + b" " * limit + b"]}"),
                401: post(b'{"objects": []}', auth=("bank-a", "bank-a.wrong")),
            }

        for code, resp in (await asyncio.to_thread(attempts)).items():
            assert resp.status_code == code, (code, resp.text)
            assert resp.headers["Content-Type"] == mt and resp.json()["description"]
        info = await js.stream_info(SUBMISSIONS)
        assert info.state.messages == 0

    async def test_404_when_reading_another_members_status(self, front: Front) -> None:
        status = await asyncio.to_thread(_add, front, "bank-a", "community", [indicator("clear")])
        with pytest.raises(requests.HTTPError) as caught:
            await asyncio.to_thread(lambda: front.root("bank-b").get_status(status.id))
        assert caught.value.response.status_code == 404
        mine = await asyncio.to_thread(lambda: front.root("bank-a").get_status(status.id))
        assert mine.id == status.id
        assert uuid.UUID(mine.id).version == 4  # TAXII's identifier: an RFC 4122 v4 UUID

    async def test_404_when_a_status_id_is_changed_or_made_up(self, front: Front) -> None:
        status = await asyncio.to_thread(_add, front, "bank-a", "community", [indicator("clear")])
        digit = "0" if status.id[-1] != "0" else "1"
        made_up = [status.id[:-1] + digit, str(uuid.uuid4()), "not-a-uuid"]
        for status_id in made_up:
            with pytest.raises(requests.HTTPError) as caught:
                await asyncio.to_thread(lambda i=status_id: front.root("bank-a").get_status(i))
            assert caught.value.response.status_code == 404, status_id

    async def test_404_when_a_status_id_names_the_place_of_another_submission(
        self, front: Front
    ) -> None:
        """An id that decodes to a real submission's place but not to its id is not it: a
        stale id after the stream was recreated, or one made with a guessed sequence."""
        status = await asyncio.to_thread(_add, front, "bank-a", "community", [indicator("clear")])
        ids = StatusIds(load_cursor_key(front.settings))
        seq = ids.read(status.id)
        assert seq is not None
        other_sid = ids.make(seq, secrets.token_hex(16))
        with pytest.raises(requests.HTTPError) as caught:
            await asyncio.to_thread(lambda: front.root("bank-a").get_status(other_sid))
        assert caught.value.response.status_code == 404

    async def test_another_server_instance_answers_a_status(
        self, front: Front, js: JetStreamContext
    ) -> None:
        """Statuses are read from the stream: a second instance (behind a load balancer, or
        the same server restarted) knows the first one's."""
        status = await asyncio.to_thread(_add, front, "bank-a", "community", [indicator("clear")])
        started: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        second = asyncio.create_task(
            run_taxii(
                js,
                front.settings,
                signing_key=front.community.broker_key,
                on_started=started.set_result,
            )
        )
        try:
            url = await asyncio.wait_for(asyncio.shield(started), 10)
            assert url != front.url
            other = Front(url, front.tokens, front.settings, front.community)
            # Another member first: nothing of the submission is known to this server yet,
            # so the answer comes from reading the stream, not from a cache.
            with pytest.raises(requests.HTTPError) as caught:
                await asyncio.to_thread(lambda: other.root("bank-b").get_status(status.id))
            assert caught.value.response.status_code == 404
            forms = [status.id.upper(), f"urn:uuid:{status.id}", status.id.replace("-", "")]
            for form in [status.id, *forms]:
                found = await asyncio.to_thread(lambda f=form: other.root("bank-a").get_status(f))
                assert (found.id, found.status, found.success_count) == (status.id, "complete", 1)
                assert found.request_timestamp == status.request_timestamp
                assert found.successes == status.successes
        finally:
            second.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await second


class TestRateLimit:
    async def test_429_with_retry_after_when_a_member_posts_over_its_rate(
        self, front: Front, js: JetStreamContext
    ) -> None:
        limits = front.settings.limits.model_copy(
            update={"submissions_per_second": 0.2, "burst": 2}
        )
        settings = front.settings.model_copy(update={"limits": limits})
        started: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        task = asyncio.create_task(
            run_taxii(
                js, settings, signing_key=front.community.broker_key, on_started=started.set_result
            )
        )
        try:
            limited = Front(
                url=await asyncio.wait_for(asyncio.shield(started), 10),
                tokens=front.tokens,
                settings=settings,
                community=front.community,
            )
            mt = "application/taxii+json;version=2.1"

            def posts() -> list[requests.Response]:
                out = []
                for org in ("bank-a", "bank-a", "bank-a", "bank-b"):
                    url = limited.collection(org, "community").url + "objects/"
                    body = b'{"objects": [%s]}' % orjson.dumps(indicator("clear"))
                    out.append(
                        requests.post(
                            url,
                            data=body,
                            auth=(org, limited.tokens[org]),
                            headers={"Content-Type": mt, "Accept": mt},
                            timeout=10,
                        )
                    )
                return out

            first, second, third, other = await asyncio.to_thread(posts)
            assert [r.status_code for r in (first, second, other)] == [202, 202, 202]
            assert third.status_code == 429, third.text
            assert third.headers["Content-Type"] == mt
            assert int(third.headers["Retry-After"]) >= 1
            assert "over its submission rate" in third.json()["description"]
            await wait_routed(js, 3)
            assert (await js.stream_info(SUBMISSIONS)).state.messages == 3
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


class TestStoreUnavailable:
    """A POST is answered 202 only once the submission is stored."""

    @staticmethod
    def _post(front: Front) -> requests.Response:
        mt = "application/taxii+json;version=2.1"
        url = front.collection("bank-a", "community").url + "objects/"
        body = b'{"objects": [%s]}' % orjson.dumps(indicator("clear"))
        return requests.post(
            url,
            data=body,
            auth=("bank-a", front.tokens["bank-a"]),
            headers={"Content-Type": mt, "Accept": mt},
            timeout=30,
        )

    async def test_503_and_nothing_accepted_when_the_submission_cannot_be_stored(
        self, front: Front, js: JetStreamContext
    ) -> None:
        await asyncio.to_thread(front.collection, "bank-a", "community")  # logged in
        await js.delete_stream(submit_stream("bank-a"))
        resp = await asyncio.to_thread(self._post, front)
        assert resp.status_code == 503, resp.text
        assert resp.headers["Content-Type"] == "application/taxii+json;version=2.1"
        assert int(resp.headers["Retry-After"]) >= 1
        assert "nothing was accepted" in resp.json()["description"]

    async def test_202_when_the_stream_is_back_before_the_last_retry(
        self, front: Front, js: JetStreamContext
    ) -> None:
        await asyncio.to_thread(front.collection, "bank-a", "community")
        intake = submit_stream("bank-a")
        config = (await js.stream_info(intake)).config
        await js.delete_stream(intake)
        posting = asyncio.create_task(asyncio.to_thread(self._post, front))
        await asyncio.sleep(0.3)  # the first attempts find no stream
        assert not posting.done()
        await js.add_stream(config)
        resp = await posting
        assert resp.status_code == 202, resp.text
        assert (await js.stream_info(intake)).state.messages == 1

    async def test_429_when_the_organisation_sent_its_days_allowance(
        self, front: Front, js: JetStreamContext
    ) -> None:
        await asyncio.to_thread(front.collection, "bank-a", "community")
        await ensure_streams(js, Streams(intake_max_bytes=1024**2))  # the least allowed
        for size in (64 * 1024, 1024):  # bank-a's intake filled (the router refuses junk)
            with pytest.raises(nats.js.errors.APIError, match="maximum bytes"):
                for _ in range(1100):
                    await js.publish(submit_subject("bank-a"), b"x" * size)
        resp = await asyncio.to_thread(self._post, front)
        assert resp.status_code == 429, resp.text
        assert int(resp.headers["Retry-After"]) >= 60
        assert "nats.intake_max_bytes" in resp.json()["description"]
        collection = await asyncio.to_thread(front.collection, "bank-b", "community")
        other = collection.url + "objects/"  # bank-b's allowance is its own
        mt = "application/taxii+json;version=2.1"
        answer = await asyncio.to_thread(
            requests.post,
            other,
            data=b'{"objects": [%s]}' % orjson.dumps(indicator("clear")),
            auth=("bank-b", front.tokens["bank-b"]),
            headers={"Content-Type": mt, "Accept": mt},
            timeout=30,
        )
        assert answer.status_code == 202, answer.text


async def test_413_when_the_server_takes_smaller_messages_than_the_limits_allow(
    make_community: Callable[..., Community],
    settings_for: Callable[..., Settings],
    tmp_path: Path,
) -> None:
    """nats-server's own max_payload is smaller than the broker was told: nats-py refuses
    the publish before sending; the POST says the submission is too large."""
    community = make_community()
    async with EmbeddedNats(tmp_path / "small", max_payload=64 * 1024, publish_url=False) as server:
        nc = await nats.connect(server.url)
        try:
            small_js = nc.jetstream()
            await ensure_streams(small_js)
            await store_directory(small_js, community.directory())
            creds = tmp_path / "taxii-credentials.toml"
            token = set_secret(creds, "bank-a", n=1024)
            settings = settings_for(community, server.url).model_copy(
                update={"taxii": TaxiiSettings(port=0, credentials_file=creds)}
            )
            started: asyncio.Future[str] = asyncio.get_running_loop().create_future()
            task = asyncio.create_task(
                run_taxii(
                    small_js,
                    settings,
                    signing_key=community.broker_key,
                    on_started=started.set_result,
                )
            )
            try:
                url = await asyncio.wait_for(asyncio.shield(started), 10)

                def post() -> requests.Response:
                    root = Server(f"{url}/taxii2/", user="bank-a", password=token).api_roots[0]
                    target = next(c for c in root.collections if c.title == "community")
                    objects = [indicator("clear", "x" * 2000 + str(i)) for i in range(60)]
                    mt = "application/taxii+json;version=2.1"
                    return requests.post(
                        target.url + "objects/",
                        data=orjson.dumps({"objects": objects}),
                        auth=("bank-a", token),
                        headers={"Content-Type": mt, "Accept": mt},
                        timeout=30,
                    )

                resp = await asyncio.to_thread(post)
            finally:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            assert resp.status_code == 413, resp.text
            assert "nats.max_payload" in resp.json()["description"]
            assert (await small_js.stream_info(SUBMISSIONS)).state.messages == 0
        finally:
            await nc.close()


class TestFindAfterLostAck:
    """When no acknowledgement of a publish came back, the POST looks for the submission in
    the store before answering that it cannot confirm it."""

    @staticmethod
    async def _backend(js: JetStreamContext) -> NatsTaxiiBackend:
        await ensure_streams(js)
        await ensure_intake(js, ["bank-a", "bank-b"])
        return NatsTaxiiBackend(
            js,
            lambda: pytest.fail("the directory is not needed to find a submission"),
            signing_key=PrivateKey.generate("Ed25519"),
            status_key=bytes(32),
            max_bundle_bytes=1 << 20,
            max_objects=100,
        )

    async def test_finds_the_token_when_it_is_the_organisations_last(
        self, js: JetStreamContext
    ) -> None:
        backend = await self._backend(js)
        await js.publish(submit_subject("bank-b"), b"token-x")
        ack = await js.publish(submit_subject("bank-a"), b"token-a")
        await js.publish(submit_subject("bank-b"), b"token-b")
        assert await backend._find("bank-a", b"token-a") == ack.seq
        assert await backend._find("bank-b", b"token-a") is None  # another organisation's

    async def test_finds_the_token_among_later_ones_after_the_last_acknowledged(
        self, js: JetStreamContext
    ) -> None:
        backend = await self._backend(js)
        before = await js.publish(submit_subject("bank-a"), b"token-0")
        backend._acked["bank-a"] = before.seq
        ack = await js.publish(submit_subject("bank-a"), b"token-a")
        for n in range(3):  # the organisation's other POSTs, stored after it
            await js.publish(submit_subject("bank-a"), b"later-%d" % n)
        assert await backend._find("bank-a", b"token-a") == ack.seq
        assert await backend._find("bank-a", b"token-never-stored") is None

    async def test_finds_nothing_when_the_store_cannot_be_read(self, js: JetStreamContext) -> None:
        backend = await self._backend(js)
        await js.delete_stream(submit_stream("bank-a"))
        assert await backend._find("bank-a", b"token-a") is None
