"""Our TAXII clients' connections to other organisations' servers (poller and pusher).

A partner's or member's server often carries a certificate from its own CA: ``ca_file``
names the PEM bundle to trust for it, instead of the system's roots. requests lets
``REQUESTS_CA_BUNDLE`` / ``CURL_CA_BUNDLE`` override a session's ``verify``
(psf/requests#4726); a CA file given here wins over them, for this connection only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from requests.adapters import HTTPAdapter
from taxii2client.common import _HTTPConnection
from taxii2client.v21 import Collection

__all__ = ["open_collection"]


class _TrustOnly(HTTPAdapter):
    """Verifies every HTTPS request against one CA bundle, whatever the environment says."""

    def __init__(self, ca_file: str) -> None:
        super().__init__()
        self._ca_file = ca_file

    def send(self, request: Any, *args: Any, **kwargs: Any) -> Any:
        kwargs["verify"] = self._ca_file
        return super().send(request, *args, **kwargs)


def open_collection(
    url: str, *, user: str | None, password: str | None, ca_file: Path | None = None
) -> Collection:
    """A taxii2-client ``Collection`` at ``url``; with ``ca_file``, trusting only that CA."""
    if ca_file is None:
        return Collection(url, user=user, password=password)
    conn = _HTTPConnection(user=user, password=password, verify=str(ca_file), version="2.1")
    conn.session.mount("https://", _TrustOnly(str(ca_file)))
    return Collection(url, conn=conn)
