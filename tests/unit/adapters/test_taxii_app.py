"""The TAXII 2.1 HTTP layer against the in-memory backend."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson
import pytest
import structlog

from adapters._taxii import Credentials, MemoryBackend, create_app, hash_secret
from adapters._taxii._auth import FailedLogins

MT = "application/taxii+json;version=2.1"
TOKENS = {org: f"{org}.secret-{org}" for org in ("bank-a", "bank-b", "lea-1")}
T = "2026-11-02T09:30:00.000Z"


def indicator(name: str = "x", modified: str = T, obj_id: str | None = None) -> dict[str, Any]:
    return {
        "type": "indicator",
        "spec_version": "2.1",
        "id": obj_id or f"indicator--{uuid.uuid4()}",
        "created": T,
        "modified": modified,
        "name": name,
        "pattern": "[domain-name:value = 'x.example']",
        "pattern_type": "stix",
        "valid_from": T,
    }


@pytest.fixture
def backend() -> MemoryBackend:
    return MemoryBackend(
        members={"bank-a": ["op-x"], "bank-b": []}, readers=["lea-1"], max_content_length=20_000
    )


class AppClient:
    """Synchronous calls into the ASGI app (httpx's ASGI transport on a private loop)."""

    def __init__(self, app: Any, runner: asyncio.Runner) -> None:
        self._runner = runner
        self._client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://testserver"
        )

    def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        headers = {"Accept": MT, **kwargs.pop("headers", {})}
        return self._runner.run(self._client.request(method, url, headers=headers, **kwargs))

    def get(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("GET", url, **kwargs)

    def post(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("POST", url, **kwargs)

    def put(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("PUT", url, **kwargs)

    def delete(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("DELETE", url, **kwargs)


@pytest.fixture
def client(backend: MemoryBackend) -> Iterator[AppClient]:
    creds = Credentials({org: (hash_secret(tok, n=1024),) for org, tok in TOKENS.items()})
    app = create_app(backend, creds, cursor_key=b"k" * 32)
    with asyncio.Runner() as runner:
        yield AppClient(app, runner)


def basic(org: str, token: str | None = None) -> dict[str, str]:
    raw = f"{org}:{token or TOKENS[org]}".encode()
    return {"Authorization": "Basic " + base64.b64encode(raw).decode()}


def bearer(org: str, scheme: str = "Bearer") -> dict[str, str]:
    return {"Authorization": f"{scheme} {TOKENS[org]}"}


def collections(client: AppClient, org: str) -> dict[str, str]:
    body = client.get("/atlas/collections/", headers=basic(org)).json()
    return {c["title"]: c["id"] for c in body["collections"]}


def post(client: AppClient, org: str, cid: str, body: bytes, **headers: str) -> httpx.Response:
    return client.post(
        f"/atlas/collections/{cid}/objects/",
        content=body,
        headers={**basic(org), "Content-Type": MT, **headers},
    )


def assert_taxii_error(resp: httpx.Response, status: int) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"] == MT
    body: dict[str, Any] = resp.json()
    assert body["http_status"] == str(status) and body["title"] and body["description"]
    return body


@pytest.fixture
def scrypt_checks(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The tokens each scrypt check is run on, in order."""
    from adapters._taxii import _auth

    checked: list[str] = []
    real = _auth._check

    def counting(token: str, stored: str) -> bool:
        checked.append(token)
        return real(token, stored)

    monkeypatch.setattr(_auth, "_check", counting)
    return checked


class TestAuthentication:
    def test_refused_with_challenge_when_no_credentials(self, client: AppClient) -> None:
        resp = client.get("/taxii2/")
        assert_taxii_error(resp, 401)
        assert "Basic" in resp.headers["www-authenticate"]

    def test_refused_when_password_is_wrong(self, client: AppClient) -> None:
        assert_taxii_error(client.get("/taxii2/", headers=basic("bank-a", "bank-a.nope")), 401)

    @pytest.mark.parametrize(
        ("headers", "org"),
        [
            (
                {"Authorization": "Basic " + base64.b64encode(b"bank-a:Secret Pa55").decode()},
                "bank-a",
            ),
            (
                {"Authorization": "Basic " + base64.b64encode(b"bank-a:my.pa55word").decode()},
                "bank-a",
            ),
            ({"Authorization": "Basic " + base64.b64encode(b"Me Myself:my.pa55").decode()}, None),
            ({"Authorization": "Bearer Secret-Pa55"}, None),
            ({"Authorization": "Bearer bank-b.Secret-Pa55"}, "bank-b"),
        ],
    )
    def test_a_failed_login_logs_no_part_of_the_password(
        self, client: AppClient, headers: dict[str, str], org: str | None
    ) -> None:
        structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(0))
        with structlog.testing.capture_logs() as logs:
            assert_taxii_error(client.get("/taxii2/", headers=headers), 401)
        (failed,) = [entry for entry in logs if entry["event"] == "taxii.login_failed"]
        assert failed["org"] == org
        assert not any("pa55" in str(value).lower() for e in logs for value in e.values())

    def test_refused_when_token_of_another_org_is_sent_as_basic(self, client: AppClient) -> None:
        resp = client.get("/taxii2/", headers=basic("bank-a", TOKENS["bank-b"]))
        assert_taxii_error(resp, 401)

    @pytest.mark.parametrize("scheme", ["Bearer", "Token"])
    def test_accepted_when_bearer_or_token_scheme(self, client: AppClient, scheme: str) -> None:
        resp = client.get("/taxii2/", headers=bearer("bank-a", scheme))
        assert resp.status_code == 200
        assert resp.headers["content-type"] == MT

    def test_400_when_authorization_is_sent_twice(self, client: AppClient) -> None:
        """A proxy that read the last would see another caller than this server, which read
        the first: both orders are refused."""
        good, bad = basic("bank-a")["Authorization"], basic("bank-a", "bank-a.x")["Authorization"]
        for pair in ((good, bad), (bad, good)):
            resp = client.get(
                "/taxii2/", headers=httpx.Headers([("Authorization", v) for v in pair])
            )
            body = assert_taxii_error(resp, 400)
            assert "one Authorization header" in body["description"]

    def test_answers_and_errors_are_not_to_be_cached(self, client: AppClient) -> None:
        assert client.get("/taxii2/", headers=basic("bank-a")).headers["cache-control"] == (
            "no-store"
        )
        refused = client.get("/taxii2/", headers=basic("bank-a", "bank-a.x"))
        assert refused.status_code == 401
        assert refused.headers["cache-control"] == "no-store"

    def test_repeated_failures_are_slowed_down_per_address_and_org(self, client: AppClient) -> None:
        for _ in range(10):
            assert_taxii_error(client.get("/taxii2/", headers=basic("bank-a", "bank-a.x")), 401)
        # Now even the right token waits, from this address, for this organisation only.
        resp = client.get("/taxii2/", headers=basic("bank-a"))
        body = assert_taxii_error(resp, 429)
        assert "too many failed logins for 'bank-a'" in body["description"]
        assert 1 <= int(resp.headers["retry-after"]) <= 60
        assert client.get("/taxii2/", headers=basic("bank-b")).status_code == 200

    def test_unknown_organisation_costs_one_scrypt_like_a_known_one(
        self, scrypt_checks: list[str]
    ) -> None:
        checked = scrypt_checks
        creds = Credentials({"bank-a": (hash_secret(TOKENS["bank-a"], n=1024),)})
        assert asyncio.run(creds.verify(None, "ghost.guess")) is None
        assert asyncio.run(creds.verify(None, "bank-a.guess")) is None
        assert checked == ["ghost.guess", "bank-a.guess"]

    def test_failed_checks_cost_as_many_scrypts_as_the_most_secrets(
        self, scrypt_checks: list[str]
    ) -> None:
        checked = scrypt_checks
        rotating = (hash_secret("bank-a.new", n=1024), hash_secret("bank-a.old", n=1024))
        creds = Credentials({"bank-a": rotating, "bank-b": (hash_secret("bank-b.x", n=1024),)})
        for token in ("ghost.guess", "bank-a.guess", "bank-b.guess"):
            checked.clear()
            assert asyncio.run(creds.verify(None, token)) is None
            assert len(checked) == 2, token
        # A Basic user the token does not name: refused without any scrypt.
        checked.clear()
        assert asyncio.run(creds.verify("bank-b", "bank-a.new")) is None
        assert checked == []

    def test_a_token_verified_before_is_not_held_up_by_others_guesses(
        self, client: AppClient
    ) -> None:
        assert client.get("/taxii2/", headers=basic("bank-a")).status_code == 200
        for _ in range(10):
            assert_taxii_error(client.get("/taxii2/", headers=basic("bank-a", "bank-a.x")), 401)
        assert client.get("/taxii2/", headers=basic("bank-a")).status_code == 200
        assert_taxii_error(client.get("/taxii2/", headers=basic("bank-a", "bank-a.y")), 429)

    def test_guesses_naming_ever_new_organisations_are_slowed_down_too(
        self, client: AppClient
    ) -> None:
        answers = [
            client.get("/taxii2/", headers={"Authorization": f"Bearer fake{n}.x"}).status_code
            for n in range(35)
        ]
        assert answers[:30] == [401] * 30 and set(answers[30:]) == {429}

    def test_concurrent_guesses_count_as_they_start(self, backend: MemoryBackend) -> None:
        creds = Credentials({"bank-a": (hash_secret(TOKENS["bank-a"], n=1024),)})
        app = create_app(backend, creds, cursor_key=b"k" * 32)

        async def guesses() -> list[int]:
            async with httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://t"
            ) as c:
                answers = await asyncio.gather(
                    *(
                        c.get("/taxii2/", headers={"Authorization": f"Bearer bank-a.g{n}"})
                        for n in range(25)
                    )
                )
            return [a.status_code for a in answers]

        answers = asyncio.run(guesses())
        assert answers.count(401) == 10 and answers.count(429) == 15

    def test_logins_past_the_queue_are_refused_at_once_and_not_counted(
        self, backend: MemoryBackend
    ) -> None:
        creds = Credentials(
            {"bank-a": (hash_secret(TOKENS["bank-a"], n=1024),)}, max_parallel=1, max_waiting=1
        )
        app = create_app(backend, creds, cursor_key=b"k" * 32)

        async def guesses() -> tuple[list[httpx.Response], list[int]]:
            async with httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://t"
            ) as c:

                def guess(n: int) -> Any:
                    return c.get("/taxii2/", headers={"Authorization": f"Bearer bank-a.g{n}"})

                burst = await asyncio.gather(*(guess(n) for n in range(6)))
                # Two were checked (one ran, one waited) and count; the four refused at
                # once did not: eight more failures are allowed before the lockout.
                after = [(await guess(n)).status_code for n in range(10, 19)]
            return burst, after

        burst, after = asyncio.run(guesses())
        codes = sorted(r.status_code for r in burst)
        assert codes == [401, 401, 503, 503, 503, 503]
        busy = next(r for r in burst if r.status_code == 503)
        assert_taxii_error(busy, 503)
        assert busy.headers["retry-after"] == "1"
        assert "logins are being checked" in busy.json()["description"]
        assert after == [401] * 8 + [429]

    def test_cheap_refusals_do_not_count(self, client: AppClient) -> None:
        for n in range(30):
            long_token = "bank-a." + "x" * 600
            assert_taxii_error(client.get("/taxii2/", headers=basic("bank-a", long_token)), 401)
            mismatch = basic("bank-b", f"bank-a.guess{n}")
            assert_taxii_error(client.get("/taxii2/", headers=mismatch), 401)
        assert client.get("/taxii2/", headers=basic("bank-a")).status_code == 200


class TestFailedLogins:
    def test_window_slides_and_success_clears(self) -> None:
        now = [0.0]
        logins = FailedLogins(limit=3, window=60, clock=lambda: now[0])
        key = ("192.0.2.1", "bank-a")
        for t in (0.0, 10.0, 20.0):
            now[0] = t
            assert logins.wait(key) == 0
            logins.failed(key)
        assert logins.wait(key) == pytest.approx(40.0)
        now[0] = 60.5  # the first failure left the window
        assert logins.wait(key) == 0
        logins.failed(key)
        assert logins.wait(key) > 0
        logins.succeeded(key)
        assert logins.wait(key) == 0
        assert logins.wait(("192.0.2.2", "bank-a")) == 0

    def test_memory_stays_bounded_and_the_latest_failures_stay(self) -> None:
        logins = FailedLogins(limit=2, window=60, max_keys=100)
        for _ in range(2):
            logins.failed(("192.0.2.1", "bank-a"))
        for n in range(1_000):
            logins.failed((f"10.0.{n // 256}.{n % 256}", "bank-a"))
            if n % 50 == 0:
                logins.failed(("192.0.2.1", "bank-a"))  # keeps failing: stays in the table
        assert len(logins._failures) <= 100
        assert logins.wait(("192.0.2.1", "bank-a")) > 0


class TestDiscovery:
    def test_lists_the_api_root_when_asked(self, client: AppClient) -> None:
        body = client.get("/taxii2/", headers=basic("bank-a")).json()
        assert body["api_roots"] == [body["default"]] and body["default"].endswith("/atlas/")
        root = client.get("/atlas/", headers=basic("bank-a")).json()
        assert root["versions"] == [MT] and root["max_content_length"] == 20_000

    def test_member_sees_write_collections_when_listing(self, client: AppClient) -> None:
        body = client.get("/atlas/collections/", headers=basic("bank-a")).json()
        kinds = {(c["title"], c["can_read"], c["can_write"]) for c in body["collections"]}
        assert kinds == {("community", False, True), ("group:op-x", False, True)}

    def test_partner_sees_only_its_views_when_listing(self, client: AppClient) -> None:
        assert set(collections(client, "lea-1")) == {"views:lea-1"}

    def test_accepted_when_a_refused_range_sits_beside_taxii(self, client: AppClient) -> None:
        accept = "text/html;q=0, application/taxii+json;version=2.1;q=0.5"
        resp = client.get("/taxii2/", headers={**basic("bank-a"), "Accept": accept})
        assert resp.status_code == 200

    def test_accepted_when_accept_has_no_version(self, client: AppClient) -> None:
        resp = client.get(
            "/taxii2/", headers={**basic("bank-a"), "Accept": "application/taxii+json"}
        )
        assert resp.status_code == 200

    @pytest.mark.parametrize(
        "accept",
        [
            "application/json",
            "application/taxii+json;version=2.0",
            "text/html",
            "application/taxii+json;version=2.1;q=0",
            "text/html, */*;q=0.000",
        ],
    )
    def test_406_when_accept_is_not_taxii_21(self, client: AppClient, accept: str) -> None:
        resp = client.get("/taxii2/", headers={**basic("bank-a"), "Accept": accept})
        assert_taxii_error(resp, 406)

    def test_404_in_taxii_format_when_endpoint_unknown(self, client: AppClient) -> None:
        assert_taxii_error(client.get("/nope/", headers=basic("bank-a")), 404)

    def test_405_when_method_not_supported(self, client: AppClient) -> None:
        resp = client.put("/atlas/collections/", headers=basic("bank-a"))
        assert_taxii_error(resp, 405)
        assert resp.headers["allow"] == "GET, HEAD"

    def test_head_answers_as_get_where_get_is_allowed(self, client: AppClient) -> None:
        resp = client.request("HEAD", "/atlas/collections/", headers=basic("bank-a"))
        assert resp.status_code == 200
        assert resp.headers["content-type"] == MT
        views = collections(client, "lea-1")["views:lea-1"]
        resp = client.request(
            "HEAD", f"/atlas/collections/{views}/objects/", headers=basic("lea-1")
        )
        assert resp.status_code == 200

    def test_404_names_a_long_id_cut_short(self, client: AppClient) -> None:
        resp = client.get(f"/atlas/status/{'a' * 5000}/", headers=basic("bank-a"))
        assert_taxii_error(resp, 404)
        assert len(resp.json()["description"]) < 120
        assert "aaaa...'" in resp.json()["description"]

    def test_404_when_collection_is_not_visible(self, client: AppClient) -> None:
        views = collections(client, "lea-1")["views:lea-1"]
        assert_taxii_error(client.get(f"/atlas/collections/{views}/", headers=basic("bank-a")), 404)


class TestAddObjects:
    def test_202_with_status_when_envelope_is_valid(
        self, client: AppClient, backend: MemoryBackend
    ) -> None:
        cid = collections(client, "bank-a")["group:op-x"]
        obj = indicator()
        resp = post(client, "bank-a", cid, orjson.dumps({"objects": [obj]}))
        assert resp.status_code == 202 and resp.headers["content-type"] == MT
        status = resp.json()
        assert status["total_count"] == 1
        assert backend.submitted == [("bank-a", ("group:op-x",), [obj])]
        again = client.get(f"/atlas/status/{status['id']}/", headers=basic("bank-a")).json()
        assert again["successes"] == [{"id": obj["id"], "version": obj["modified"]}]

    def test_404_when_status_belongs_to_another_org(self, client: AppClient) -> None:
        cid = collections(client, "bank-a")["community"]
        status = post(client, "bank-a", cid, orjson.dumps({"objects": [indicator()]})).json()
        resp = client.get(f"/atlas/status/{status['id']}/", headers=basic("bank-b"))
        assert_taxii_error(resp, 404)

    @pytest.mark.parametrize(
        "content_type", ["application/json", f"{MT};charset=latin-1", f"{MT}; charset=utf-16"]
    )
    def test_415_when_content_type_is_not_taxii_in_utf_8(
        self, client: AppClient, content_type: str
    ) -> None:
        cid = collections(client, "bank-a")["community"]
        body = orjson.dumps({"objects": [indicator()]})
        resp = post(client, "bank-a", cid, body, **{"Content-Type": content_type})
        assert_taxii_error(resp, 415)

    def test_202_when_charset_is_utf_8(self, client: AppClient) -> None:
        cid = collections(client, "bank-a")["community"]
        body = orjson.dumps({"objects": [indicator()]})
        resp = post(client, "bank-a", cid, body, **{"Content-Type": f"{MT}; charset=UTF-8"})
        assert resp.status_code == 202, resp.text

    def test_413_when_body_is_over_the_limit(
        self, client: AppClient, backend: MemoryBackend
    ) -> None:
        cid = collections(client, "bank-a")["community"]
        big = orjson.dumps({"objects": [indicator("x" * 30_000)]})
        assert_taxii_error(post(client, "bank-a", cid, big), 413)
        assert backend.submitted == []

    def test_400_when_body_is_not_json(self, client: AppClient) -> None:
        cid = collections(client, "bank-a")["community"]
        body = assert_taxii_error(post(client, "bank-a", cid, b"{not json"), 400)
        assert "not JSON" in body["description"]

    @pytest.mark.parametrize("body", [b"[]", b'{"objects": []}', b'{"objects": {}}'])
    def test_400_when_not_an_envelope(self, client: AppClient, body: bytes) -> None:
        cid = collections(client, "bank-a")["community"]
        assert_taxii_error(post(client, "bank-a", cid, body), 400)

    def test_422_with_reason_when_object_is_not_stix(self, client: AppClient) -> None:
        cid = collections(client, "bank-a")["community"]
        bad = {"type": "indicator", "id": "nope"}
        body = assert_taxii_error(
            post(client, "bank-a", cid, orjson.dumps({"objects": [bad]})), 422
        )
        assert "STIX identifier" in body["description"]

    def test_403_when_partner_posts_to_its_read_collection(self, client: AppClient) -> None:
        cid = collections(client, "lea-1")["views:lea-1"]
        body = orjson.dumps({"objects": [indicator()]})
        assert_taxii_error(post(client, "lea-1", cid, body, **basic("lea-1")), 403)


@pytest.fixture
def filled(backend: MemoryBackend) -> Callable[[int], list[dict[str, Any]]]:
    def _fill(n: int) -> list[dict[str, Any]]:
        start = datetime(2026, 11, 2, tzinfo=UTC)
        objs = [indicator(f"n{i}") for i in range(n)]
        for i, obj in enumerate(objs):
            backend.add_view("lea-1", [obj], start + timedelta(seconds=i))
        return objs

    return _fill


class TestReads:
    def views(self, client: AppClient) -> str:
        return collections(client, "lea-1")["views:lea-1"]

    def get(self, client: AppClient, path: str, **params: Any) -> httpx.Response:
        cid = self.views(client)
        return client.get(f"/atlas/collections/{cid}/{path}", params=params, headers=basic("lea-1"))

    def test_pages_cover_everything_once_when_following_next(
        self, client: AppClient, filled: Callable[[int], list[dict[str, Any]]]
    ) -> None:
        objs = filled(25)
        seen: list[str] = []
        params: dict[str, Any] = {"limit": 10}
        while True:
            resp = self.get(client, "objects/", **params)
            body = resp.json()
            seen += [o["id"] for o in body["objects"]]
            assert (
                resp.headers["x-taxii-date-added-first"] <= resp.headers["x-taxii-date-added-last"]
            )
            if not body["more"]:
                assert "next" not in body
                break
            params = {"limit": 10, "next": body["next"]}
        assert seen == [o["id"] for o in objs]

    def test_added_after_skips_older_objects(
        self, client: AppClient, filled: Callable[[int], list[dict[str, Any]]]
    ) -> None:
        objs = filled(5)
        body = self.get(client, "objects/", added_after="2026-11-02T00:00:02Z").json()
        assert [o["id"] for o in body["objects"]] == [o["id"] for o in objs[3:]]

    def test_match_filters_select_by_id_and_type(
        self, client: AppClient, filled: Callable[[int], list[dict[str, Any]]]
    ) -> None:
        objs = filled(3)
        body = self.get(client, "objects/", **{"match[id]": objs[1]["id"]}).json()
        assert [o["id"] for o in body["objects"]] == [objs[1]["id"]]
        assert self.get(client, "objects/", **{"match[type]": "malware"}).json() == {"more": False}

    def test_versions_and_last_version_when_object_has_two(
        self, client: AppClient, backend: MemoryBackend
    ) -> None:
        old = indicator("v1")
        new = {**old, "name": "v2", "modified": "2026-11-03T00:00:00Z"}
        backend.add_view("lea-1", [old])
        backend.add_view("lea-1", [new])
        versions = self.get(client, f"objects/{old['id']}/versions/").json()
        # Ordered and compared as instants, written as each object writes its own.
        assert versions["versions"] == ["2026-11-02T09:30:00.000Z", "2026-11-03T00:00:00Z"]
        latest = self.get(client, f"objects/{old['id']}/").json()["objects"]
        assert [o["name"] for o in latest] == ["v2"]
        both = self.get(client, f"objects/{old['id']}/", **{"match[version]": "all"}).json()
        assert len(both["objects"]) == 2
        manifest = self.get(client, "manifest/").json()["objects"]
        assert [m["version"] for m in manifest] == ["2026-11-03T00:00:00Z"]

    def test_one_version_whatever_the_spelling_of_its_timestamp(
        self, client: AppClient, backend: MemoryBackend
    ) -> None:
        obj = indicator("v1", modified="2026-11-02T09:30:00.000Z")
        backend.add_view("lea-1", [obj])
        backend.add_view("lea-1", [{**obj, "modified": "2026-11-02T09:30:00Z"}])  # the same
        versions = self.get(client, f"objects/{obj['id']}/versions/").json()
        assert versions["versions"] == ["2026-11-02T09:30:00.000Z"]
        for spelling in ("2026-11-02T09:30:00Z", "2026-11-02T09:30:00.000000Z"):
            found = self.get(client, f"objects/{obj['id']}/", **{"match[version]": spelling})
            assert [o["id"] for o in found.json()["objects"]] == [obj["id"]]

    def test_versions_finer_than_microseconds_stay_apart(
        self, client: AppClient, backend: MemoryBackend
    ) -> None:
        """Two versions 100 ns apart: the router delivers both, so both are listed, each
        read by its own timestamp, and the later is the last."""
        first = indicator("a", modified="2026-11-02T09:30:00.0000001Z")
        second = {**first, "name": "b", "modified": "2026-11-02T09:30:00.0000002Z"}
        plain = {**first, "name": "c", "modified": "2026-11-02T09:30:00Z"}
        backend.add_view("lea-1", [second])
        backend.add_view("lea-1", [first, plain])
        versions = self.get(client, f"objects/{first['id']}/versions/").json()["versions"]
        assert sorted(versions) == sorted(o["modified"] for o in (first, second, plain))
        for obj in (first, second, plain):
            found = self.get(client, f"objects/{obj['id']}/", **{"match[version]": obj["modified"]})
            assert [o["name"] for o in found.json()["objects"]] == [obj["name"]]
        last = self.get(client, f"objects/{first['id']}/").json()["objects"]
        assert [o["name"] for o in last] == ["b"]
        oldest = self.get(client, f"objects/{first['id']}/", **{"match[version]": "first"})
        assert [o["name"] for o in oldest.json()["objects"]] == ["c"]

    def test_404_when_the_path_hides_a_slash_as_2f(
        self, client: AppClient, filled: Callable[[int], list[dict[str, Any]]]
    ) -> None:
        filled(1)
        cid = self.views(client)
        assert self.get(client, "objects/").status_code == 200
        for hidden in ("%2F", "%2f"):
            resp = client.get(f"/atlas/collections/{cid}{hidden}objects/", headers=basic("lea-1"))
            assert_taxii_error(resp, 404)

    def test_404_when_object_is_not_in_the_collection(self, client: AppClient) -> None:
        assert_taxii_error(self.get(client, f"objects/indicator--{uuid.uuid4()}/"), 404)

    def test_403_when_deleting(self, client: AppClient, backend: MemoryBackend) -> None:
        obj = indicator()
        backend.add_view("lea-1", [obj])
        cid = self.views(client)
        resp = client.delete(
            f"/atlas/collections/{cid}/objects/{obj['id']}/", headers=basic("lea-1")
        )
        assert_taxii_error(resp, 403)
        assert len(self.get(client, "objects/").json()["objects"]) == 1

    @pytest.mark.parametrize(
        "params",
        [
            {"limit": "0"},
            {"limit": "ten"},
            {"limit": "-1"},
            {"limit": "\u00b2"},  # superscript two: str.isdigit() but not int()
            {"limit": "\uff13"},  # fullwidth three: int() reads it, TAXII does not
            {"added_after": "yesterday"},
            {"added_after": "2026-13-01T00:00:00Z"},
            {"match[version]": "latest"},
            {"match[spec_version]": "two"},
            {"match[type]": "Bad Type"},
            {"match[colour]": "red"},
            {"next": "forged"},
        ],
    )
    def test_400_when_filter_is_malformed(self, client: AppClient, params: dict[str, str]) -> None:
        body = assert_taxii_error(self.get(client, "objects/", **params), 400)
        assert any(name.split("[")[0] in body["description"] for name in params)

    @pytest.mark.parametrize("limit", ["1001", "99999999999", "9" * 64])
    def test_a_limit_past_the_largest_page_gets_the_largest_page(
        self, client: AppClient, filled: Callable[[int], list[dict[str, Any]]], limit: str
    ) -> None:
        filled(3)
        body = self.get(client, "objects/", limit=limit).json()
        assert len(body["objects"]) == 3 and body["more"] is False

    def test_400_when_next_comes_from_another_collection(
        self, client: AppClient, filled: Callable[[int], list[dict[str, Any]]]
    ) -> None:
        filled(3)
        token = self.get(client, "objects/", limit=1).json()["next"]
        other = collections(client, "bank-a")["community"]
        resp = client.get(
            f"/atlas/collections/{other}/objects/", params={"next": token}, headers=basic("bank-a")
        )
        assert_taxii_error(resp, 403)  # write-only for the member, before the token is read

    def test_openapi_is_served_when_asked(self, client: AppClient) -> None:
        doc = client.get("/openapi.json").json()
        assert doc["openapi"].startswith("3.") and "/atlas/status/{statusId}/" in doc["paths"]


def test_discovery_advertises_the_configured_public_url(backend: MemoryBackend) -> None:
    creds = Credentials({"bank-a": (hash_secret(TOKENS["bank-a"], n=1024),)})
    app = create_app(backend, creds, cursor_key=b"k" * 32, public_url="https://taxii.example.org")
    with asyncio.Runner() as runner:
        client = AppClient(app, runner)
        body = client.get("/taxii2/", headers={**basic("bank-a"), "Host": "evil.example"}).json()
    assert body["api_roots"] == ["https://taxii.example.org/atlas/"]
    assert body["default"] == "https://taxii.example.org/atlas/"


def test_a_client_that_disconnects_mid_body_is_no_internal_error(backend: MemoryBackend) -> None:
    creds = Credentials({"bank-a": (hash_secret(TOKENS["bank-a"], n=1024),)})
    app = create_app(backend, creds, cursor_key=b"k" * 32)
    auth = basic("bank-a")["Authorization"].encode()
    scope = {
        "type": "http",
        "method": "POST",
        "path": "/atlas/collections/x/objects/",
        "raw_path": b"/atlas/collections/x/objects/",
        "query_string": b"",
        "headers": [(b"authorization", auth), (b"content-type", MT.encode())],
        "client": ("127.0.0.1", 5000),
        "server": ("testserver", 80),
        "scheme": "http",
        "http_version": "1.1",
    }
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def run() -> None:
        # The collection must exist for the body to be read: use bank-a's community one.
        listing = await _collections_via(app, auth)
        scope["path"] = f"/atlas/collections/{listing['community']}/objects/"
        await app(scope, receive, send)

    asyncio.run(run())
    assert sent[0]["status"] == 400  # not a 500 "internal error"
    assert orjson.loads(sent[1]["body"])["title"] == "Incomplete request"


async def _collections_via(app: Any, auth: bytes) -> dict[str, str]:
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://testserver"
    ) as client:
        resp = await client.get(
            "/atlas/collections/", headers={"Authorization": auth.decode(), "Accept": MT}
        )
    return {c["title"]: c["id"] for c in resp.json()["collections"]}


@pytest.mark.parametrize(
    ("host", "network"),
    [
        ("192.0.2.7", "192.0.2.7"),
        ("2001:db8:1:2:aaaa::1", "2001:db8:1:2::/64"),
        ("2001:db8:1:2:ffff:ffff:ffff:ffff", "2001:db8:1:2::/64"),
        ("::ffff:192.0.2.1", "192.0.2.1"),
        ("testclient", "testclient"),
    ],
)
def test_failed_logins_count_an_ipv6_client_by_its_64(host: str, network: str) -> None:
    from adapters._taxii._app import _network

    assert _network(host) == network


def test_a_cancelled_login_keeps_its_slot_until_its_check_ends() -> None:
    """A client that leaves cannot stop its scrypt thread: the slot stays taken until then."""
    creds = Credentials(
        {"bank-a": (hash_secret(TOKENS["bank-a"], n=2**14),)}, max_parallel=1, max_waiting=0
    )

    async def scenario() -> tuple[bool, bool, str | None]:
        first = asyncio.create_task(creds.verify(None, "bank-a.guess"))
        await asyncio.sleep(0.005)  # its check is running in a thread
        first.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await first
        busy_after_cancel = creds.busy
        for _ in range(2000):  # the thread ends within seconds
            if not creds.busy:
                break
            await asyncio.sleep(0.005)
        return busy_after_cancel, creds.busy, await creds.verify(None, TOKENS["bank-a"])

    busy_after_cancel, busy_at_end, org = asyncio.run(scenario())
    assert busy_after_cancel and not busy_at_end and org == "bank-a"
