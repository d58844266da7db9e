"""Connecting to a configured NATS server with each kind of credential."""

from __future__ import annotations

from pathlib import Path

import nkeys
import pytest

from broker import EmbeddedNats, NatsUnavailable, Settings
from broker._bus import nats_session


def _seed() -> tuple[bytes, str]:
    import os

    seed = nkeys.encode_seed(os.urandom(32), nkeys.PREFIX_BYTE_USER)
    return seed, nkeys.from_seed(seed).public_key.decode()


async def _check(settings: Settings) -> None:
    async with nats_session(settings, embedded_ok=False) as (nc, js):
        assert nc.is_connected
        await js.account_info()


class TestCredentials:
    async def test_user_password_and_nkey_logins_work_when_configured(self, tmp_path: Path) -> None:
        seed, public = _seed()
        seed_file = tmp_path / "user.nk"
        seed_file.write_bytes(seed)
        seed_file.chmod(0o600)
        auth = (
            "authorization {\n  users = [\n"
            '    {user: "atlas", password: "s3cret"}\n'
            f'    {{nkey: "{public}"}}\n  ]\n}}\n'
        )
        async with EmbeddedNats(tmp_path, publish_url=False, extra_config=auth) as server:
            await _check(Settings(nats={"url": server.url, "user": "atlas", "password": "s3cret"}))  # type: ignore[arg-type]
            await _check(Settings(nats={"url": server.url, "nkey_seed_file": seed_file}))  # type: ignore[arg-type]
            with pytest.raises(NatsUnavailable, match="cannot connect to NATS"):
                await _check(
                    Settings(
                        nats={
                            "url": server.url,
                            "user": "atlas",
                            "password": "wrong",
                            "connect_timeout": 2,
                        }
                    )
                )  # type: ignore[arg-type]

    async def test_token_login_works_when_configured(self, tmp_path: Path) -> None:
        auth = 'authorization {\n  token: "t0ken-value"\n}\n'
        async with EmbeddedNats(tmp_path, publish_url=False, extra_config=auth) as server:
            await _check(Settings(nats={"url": server.url, "token": "t0ken-value"}))  # type: ignore[arg-type]
            with pytest.raises(NatsUnavailable):
                await _check(
                    Settings(nats={"url": server.url, "token": "nope", "connect_timeout": 2})
                )  # type: ignore[arg-type]
