"""NATS URLs: a malformed one is named at once; secrets in one never reach a message."""

from __future__ import annotations

import pytest

from broker._bus import _servers, _without_secret
from broker.errors import ConfigError


@pytest.mark.parametrize(
    "url",
    [
        "nats://127.0.0.1:4222",
        "127.0.0.1:4222",
        "tls://nats.example:4222",
        "nats://a:4222, nats://b:4222",
        "nats://user:pass@[::1]:4222",
        "nats://h:4222/",
    ],
)
def test_server_urls_are_taken(url: str) -> None:
    assert _servers(url)


@pytest.mark.parametrize(
    "url",
    ["nats//bad:42", "ftp://127.0.0.1:1", "nats://127.0.0.1:99999", "nats://h:4222/x", "nats://"],
)
def test_a_malformed_url_is_refused_naming_it(url: str) -> None:
    with pytest.raises(ConfigError, match="is not a server URL"):
        _servers(url)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("nats://u:s3cret@h:1", "nats://u:***@h:1"),
        ("nats://t0ken@h:1", "nats://***@h:1"),
        ("nats://h:1", "nats://h:1"),
        ("h:1", "h:1"),
    ],
)
def test_messages_show_urls_without_their_secret(url: str, shown: str) -> None:
    assert _without_secret(url) == shown
