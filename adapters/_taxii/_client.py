"""Our TAXII clients' connections to other organisations' servers (poller and pusher).

Every request has a timeout (``TIMEOUT``; requests has none by default).

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

__all__ = ["TIMEOUT", "open_collection"]


TIMEOUT = (10.0, 120.0)
"""Seconds to connect and to wait for each read from the other server: one that accepts a
connection and never answers must not hold a poller or a partner's receiver forever."""


class _Adapter(HTTPAdapter):
    """Gives every request a timeout and, with ``ca_file``, verifies HTTPS against that CA
    bundle only, whatever the environment says."""

    def __init__(self, ca_file: str | None, timeout: tuple[float, float]) -> None:
        super().__init__()
        self._ca_file = ca_file
        self._timeout = timeout

    def send(self, request: Any, *args: Any, **kwargs: Any) -> Any:
        if self._ca_file is not None:
            kwargs["verify"] = self._ca_file
        if kwargs.get("timeout") is None:
            kwargs["timeout"] = self._timeout
        return super().send(request, *args, **kwargs)


def open_collection(
    url: str,
    *,
    user: str | None,
    password: str | None,
    ca_file: Path | None = None,
    timeout: tuple[float, float] = TIMEOUT,
) -> Collection:
    """A taxii2-client ``Collection`` at ``url`` whose requests time out (``timeout``:
    connect, read); with ``ca_file``, trusting only that CA."""
    verify: bool | str = str(ca_file) if ca_file is not None else True
    conn = _HTTPConnection(user=user, password=password, verify=verify, version="2.1")
    adapter = _Adapter(str(ca_file) if ca_file is not None else None, timeout)
    conn.session.mount("https://", adapter)
    conn.session.mount("http://", adapter)
    return Collection(url, conn=conn)
