"""Schemathesis against our OpenAPI description: no 500s, every answer a TAXII message."""

from __future__ import annotations

import base64
import uuid
from datetime import UTC, datetime

import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error

from adapters._taxii import Credentials, MemoryBackend, create_app, hash_secret

MT = "application/taxii+json;version=2.1"
TOKEN = "lea-1.fuzz-secret"


def _app() -> object:
    backend = MemoryBackend(members={"lea-1": ["op-x"]}, readers=["lea-1"])
    backend.add_view(
        "lea-1",
        [
            {
                "type": "indicator",
                "spec_version": "2.1",
                "id": f"indicator--{uuid.uuid4()}",
                "created": "2026-11-02T09:30:00.000Z",
                "modified": "2026-11-02T09:30:00.000Z",
            }
        ],
        datetime.now(UTC),
    )
    creds = Credentials({"lea-1": (hash_secret(TOKEN, n=1024),)})
    return create_app(backend, creds, cursor_key=b"f" * 32)


schema = schemathesis.openapi.from_asgi("/openapi.json", _app())
AUTH = {"Authorization": "Basic " + base64.b64encode(f"lea-1:{TOKEN}".encode()).decode()}


@schemathesis.check
def taxii_message(ctx: object, response: schemathesis.Response, case: schemathesis.Case) -> bool:
    assert response.headers["content-type"][0] == MT, response.headers
    if response.status_code >= 400:
        body = response.json()
        assert body["http_status"] == str(response.status_code) and body["title"]
    return True


@schema.parametrize()
@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
)
def test_no_server_error_and_taxii_format_when_fuzzed(case: schemathesis.Case) -> None:
    case.headers = {**(case.headers or {}), **AUTH, "Accept": MT}
    response = case.call()
    case.validate_response(response, checks=[not_a_server_error, taxii_message])
