"""The broker refuses a nats-server without durable sourcing, naming both versions."""

from __future__ import annotations

import pytest
from nats.aio.client import ServerVersion

from broker._bus import check_server_version
from broker.errors import ConfigError


def test_a_server_older_than_2_14_is_refused_with_both_versions_named() -> None:
    with pytest.raises(ConfigError) as caught:
        check_server_version(ServerVersion("2.10.22"))
    message = str(caught.value)
    assert "nats-server 2.10.22" in message and "2.14 or later" in message
    assert "durable sourcing" in message


@pytest.mark.parametrize("version", ["2.14.0", "2.15.1", "3.0.0"])
def test_a_server_with_durable_sourcing_is_taken(version: str) -> None:
    check_server_version(ServerVersion(version))
