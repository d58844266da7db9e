"""The TAXII server over HTTPS with a configured certificate (trustme CA), and the refusal of
plain HTTP anywhere but loopback."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pydantic
import pytest
import requests
import trustme
from nats.js import JetStreamContext
from taxii2client.v21 import Collection, Server

from adapters import AdapterError, BridgeError
from adapters._taxii import MemoryBackend, create_app, serve_http, set_secret
from adapters._taxii._auth import Credentials
from adapters._taxii._push import taxii_pusher
from broker._config import Settings, TaxiiSettings, load_settings
from broker._taxii_pull import pull_member
from broker._taxii_service import run_taxii
from broker.errors import ConfigError
from tests.conftest import Community
from tests.integration.helpers import indicator, wait_routed


@pytest.fixture(autouse=True)
def _session_verify_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    """requests lets REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE override a session's ``verify``
    (psf/requests#4726), and taxii2-client sets ``session.verify``: without these variables
    the CA each test passes is the one used."""
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)


@dataclass
class TlsFront:
    url: str
    ca_pem: Path
    tokens: dict[str, str]
    settings: Settings


@pytest.fixture
async def tls_front(
    js: JetStreamContext,
    make_community: Callable[..., Community],
    running_router: Any,
    tmp_path: Path,
) -> AsyncIterator[TlsFront]:
    ca = trustme.CA()
    leaf = ca.issue_cert("127.0.0.1", "localhost")
    ca_pem, cert_pem, key_pem = (tmp_path / n for n in ("ca.pem", "cert.pem", "key.pem"))
    ca.cert_pem.write_to_path(str(ca_pem))
    for i, blob in enumerate(leaf.cert_chain_pems):
        blob.write_to_path(str(cert_pem), append=i > 0)
    leaf.private_key_pem.write_to_path(str(key_pem))
    community = make_community()
    community.org("lea-1")["taxii_read"] = True
    settings: Settings = await running_router(community)
    creds = tmp_path / "taxii-credentials.toml"
    tokens = {org: set_secret(creds, org, n=1024) for org in ("bank-a", "lea-1")}
    taxii = TaxiiSettings(port=0, credentials_file=creds, cert_file=cert_pem, key_file=key_pem)
    settings = settings.model_copy(update={"taxii": taxii})
    started: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(
        run_taxii(js, settings, signing_key=community.broker_key, on_started=started.set_result)
    )
    try:
        url = await asyncio.wait_for(asyncio.shield(started), 30)
        yield TlsFront(url=url, ca_pem=ca_pem, tokens=tokens, settings=settings)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


class TestHttps:
    @pytest.mark.timeout(90)
    async def test_client_trusting_the_ca_writes_and_reads_when_served_over_https(
        self, tls_front: TlsFront, js: JetStreamContext
    ) -> None:
        assert tls_front.url.startswith("https://127.0.0.1:")
        obj = indicator("clear", "over tls")
        verify = str(tls_front.ca_pem)

        def write() -> Any:
            member = Server(
                f"{tls_front.url}/taxii2/",
                user="bank-a",
                password=tls_front.tokens["bank-a"],
                verify=verify,
            )
            root = member.api_roots[0]
            collection = next(c for c in root.collections if c.title == "community")
            return collection.add_objects({"objects": [obj]}, poll_interval=0.2, timeout=30)

        status = await asyncio.to_thread(write)
        assert status.status == "complete" and status.success_count == 1
        await wait_routed(js, 1)

        def read() -> tuple[str, list[dict[str, Any]]]:
            partner = Server(
                f"{tls_front.url}/taxii2/",
                user="lea-1",
                password=tls_front.tokens["lea-1"],
                verify=verify,
            )
            views = next(c for c in partner.api_roots[0].collections if c.can_read)
            return partner.title, views.get_objects().get("objects", [])

        title, got = await asyncio.to_thread(read)
        assert title and got == [obj]

    @pytest.mark.timeout(90)
    async def test_client_refuses_the_server_when_it_does_not_trust_the_ca(
        self, tls_front: TlsFront
    ) -> None:
        def discover(verify: bool | str) -> Any:
            server = Server(
                f"{tls_front.url}/taxii2/",
                user="bank-a",
                password=tls_front.tokens["bank-a"],
                verify=verify,
            )
            return server.api_roots

        with pytest.raises(requests.exceptions.SSLError):
            await asyncio.to_thread(discover, True)  # the system's roots only
        other = trustme.CA()
        other_pem = tls_front.ca_pem.with_name("other-ca.pem")
        other.cert_pem.write_to_path(str(other_pem))
        with pytest.raises(requests.exceptions.SSLError):
            await asyncio.to_thread(discover, str(other_pem))

        def plain() -> requests.Response:
            url = tls_front.url.replace("https://", "http://") + "/taxii2/"
            return requests.get(url, auth=("bank-a", tls_front.tokens["bank-a"]), timeout=10)

        with pytest.raises(requests.exceptions.ConnectionError):
            await asyncio.to_thread(plain)


ANY = "0.0.0.0"  # noqa: S104 - the point: every interface, refused without a certificate


class TestPlainHttpOnlyOnLoopback:
    @pytest.mark.parametrize("host", [ANY, "192.0.2.10", "::", "atlas.example"])
    def test_settings_refuse_when_host_is_not_loopback_without_cert(self, host: str) -> None:
        with pytest.raises(pydantic.ValidationError, match="not loopback"):
            TaxiiSettings(host=host)

    def test_config_file_names_the_setting_when_host_is_not_loopback(self, tmp_path: Path) -> None:
        config = tmp_path / "atlas.toml"
        config.write_text('[taxii]\nhost = "0.0.0.0"\n')
        with pytest.raises(ConfigError, match=r"taxii.*0\.0\.0\.0.*cert_file"):
            load_settings(config)

    def test_settings_accept_any_host_when_cert_and_key_are_set(self, tmp_path: Path) -> None:
        cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
        assert TaxiiSettings(host=ANY, cert_file=cert, key_file=key).host == ANY
        with pytest.raises(pydantic.ValidationError, match="go together"):
            TaxiiSettings(host="127.0.0.1", cert_file=cert)

    @pytest.mark.timeout(30)
    async def test_server_refuses_to_listen_when_host_is_not_loopback_without_cert(self) -> None:
        app = create_app(
            MemoryBackend(members={"bank-a": ()}),
            Credentials({}),
            cursor_key=b"k" * 32,
        )
        with pytest.raises(AdapterError, match=r"refusing plain HTTP on 0\.0\.0\.0"):
            await serve_http(app, host=ANY, port=0)


class TestOurClientsTrustAGivenCa:
    """The receive bridge's ``--push-ca-file`` (and ``taxii pull --ca-file``, same helper)."""

    @staticmethod
    async def _collection_url(front: TlsFront, org: str, *, write: bool) -> str:
        """The URL of the first collection ``org`` may write (or read) on the front."""

        def find() -> str:
            server = Server(
                f"{front.url}/taxii2/",
                user=org,
                password=front.tokens[org],
                verify=str(front.ca_pem),
            )
            found = server.api_roots[0].collections
            return str(next(c for c in found if (c.can_write if write else c.can_read)).url)

        return await asyncio.to_thread(find)

    async def _community_url(self, front: TlsFront) -> str:
        return await self._collection_url(front, "bank-a", write=True)

    @pytest.mark.timeout(90)
    async def test_push_succeeds_with_the_ca_file_even_when_the_environment_names_another(
        self, tls_front: TlsFront, js: JetStreamContext, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        url = await self._community_url(tls_front)
        other = trustme.CA()
        other_pem = tls_front.ca_pem.with_name("other-ca.pem")
        other.cert_pem.write_to_path(str(other_pem))
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(other_pem))

        def plain_client() -> Any:
            with Collection(
                url,
                user="bank-a",
                password=tls_front.tokens["bank-a"],
                verify=str(tls_front.ca_pem),
            ) as collection:
                return collection.get_manifest()

        # The control: a stock client's verify= loses to the environment (psf/requests#4726).
        with pytest.raises(requests.exceptions.SSLError):
            await asyncio.to_thread(plain_client)

        push = taxii_pusher(
            url, user="bank-a", password=tls_front.tokens["bank-a"], ca_file=tls_front.ca_pem
        )
        await push({"type": "bundle", "objects": [indicator("clear", "pushed over tls")]})
        await wait_routed(js, 1)

    @pytest.mark.timeout(90)
    async def test_push_names_the_certificate_problem_without_the_ca_file(
        self, tls_front: TlsFront, js: JetStreamContext
    ) -> None:
        url = await self._community_url(tls_front)
        push = taxii_pusher(url, user="bank-a", password=tls_front.tokens["bank-a"])
        with pytest.raises(BridgeError, match=r"push to https://.*CERTIFICATE_VERIFY_FAILED"):
            await push({"type": "bundle", "objects": [indicator("clear", "refused")]})
        assert (await js.stream_info("SUBMISSIONS")).state.messages == 0

    @pytest.mark.timeout(90)
    async def test_pull_reads_an_https_collection_with_the_ca_file(
        self, tls_front: TlsFront, js: JetStreamContext
    ) -> None:
        push = taxii_pusher(
            await self._community_url(tls_front),
            user="bank-a",
            password=tls_front.tokens["bank-a"],
            ca_file=tls_front.ca_pem,
        )
        await push({"type": "bundle", "objects": [indicator("clear", "to be pulled")]})
        await wait_routed(js, 1)

        stats = await pull_member(
            tls_front.settings,
            org="bank-a",
            url=await self._collection_url(tls_front, "lea-1", write=False),
            user="lea-1",
            password=tls_front.tokens["lea-1"],
            js=js,
            ca_file=tls_front.ca_pem,
        )
        assert stats.objects == 1
