from __future__ import annotations

import os
from pathlib import Path

import nats
import pytest

from broker import EmbeddedNats, NatsUnavailable
from broker._embedded import go_runtime_env, running_url


class TestEmbeddedNats:
    async def test_serves_jetstream_on_loopback_and_publishes_its_url(self, tmp_path: Path) -> None:
        async with EmbeddedNats(tmp_path) as server:
            assert server.url.startswith("nats://127.0.0.1:")
            assert running_url(tmp_path) == server.url
            conf = (tmp_path / "nats" / "nats-server.conf").read_text()
            assert "sync_interval: always" in conf
            nc = await nats.connect(server.url)
            info = await nc.jetstream().account_info()
            assert info.limits is not None
            await nc.close()
        assert running_url(tmp_path) is None

    async def test_refuses_a_second_server_on_the_same_data_folder(self, tmp_path: Path) -> None:
        async with EmbeddedNats(tmp_path):
            with pytest.raises(NatsUnavailable, match="already runs"):
                await EmbeddedNats(tmp_path).start()

    async def test_error_names_the_cause_when_the_port_is_taken(self, tmp_path: Path) -> None:
        async with EmbeddedNats(tmp_path / "a", publish_url=False) as first:
            port = int(first.url.rsplit(":", 1)[1])
            with pytest.raises(NatsUnavailable, match="exited at start"):
                await EmbeddedNats(tmp_path / "b", port=port, publish_url=False).start()

    async def test_writes_its_stderr_to_a_file_not_an_unread_pipe(self, tmp_path: Path) -> None:
        # A pipe nobody reads fills at 64 KiB (Go runtime traces, warnings) and then blocks
        # the server on its next write to stderr.
        async with EmbeddedNats(tmp_path, publish_url=False) as server:
            assert server.pid is not None
            stderr = os.readlink(f"/proc/{server.pid}/fd/2")
            assert stderr == str(tmp_path / "nats" / "nats-server.stderr")

    async def test_keeps_its_store_across_restarts(self, tmp_path: Path) -> None:
        for expected in (1, 2):
            async with EmbeddedNats(tmp_path, publish_url=False) as server:
                nc = await nats.connect(server.url)
                js = nc.jetstream()
                await js.add_stream(name="T", subjects=["t"])
                await js.publish("t", b"x")
                assert (await js.stream_info("T")).state.messages == expected
                await nc.close()


class TestGoRuntime:
    """nats-server's Go runtime collects less often by default (see broker._embedded)."""

    def test_defaults_when_the_environment_sets_neither(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setattr("broker._embedded._CGROUP_LIMITS", (tmp_path / "none",))
        env = go_runtime_env({"PATH": "/usr/bin"})
        assert env["PATH"] == "/usr/bin" and env["GOGC"] == "400"
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        assert env["GOMEMLIMIT"] == f"{memory // 4 // 2**20}MiB"

    @pytest.mark.parametrize(
        ("v2", "v1", "expected_mib"),
        [
            ("1073741824", None, 256),  # a 1 GiB container (cgroup v2)
            (None, "2147483648", 512),  # a 2 GiB container (cgroup v1)
            ("max", None, None),  # no limit: the machine's memory
            (None, "9223372036854771712", None),  # cgroup v1's "no limit"
        ],
    )
    def test_a_lower_container_limit_is_what_counts(
        self,
        tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch,
        v2: str | None,
        v1: str | None,
        expected_mib: int | None,
    ) -> None:
        files = (tmp_path / "memory.max", tmp_path / "memory.limit_in_bytes")
        for path, text in zip(files, (v2, v1), strict=True):
            if text is not None:
                path.write_text(text + "\n")
        monkeypatch.setattr("broker._embedded._CGROUP_LIMITS", files)
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        expected = expected_mib if expected_mib is not None else memory // 4 // 2**20
        assert go_runtime_env({})["GOMEMLIMIT"] == f"{expected}MiB"

    @pytest.mark.parametrize("given", [{"GOGC": "100"}, {"GOMEMLIMIT": "2GiB"}])
    def test_an_operators_setting_is_left_whole(self, given: dict[str, str]) -> None:
        assert go_runtime_env(given) == given

    async def test_the_server_runs_with_them(self, tmp_path: Path) -> None:
        expected = {k: v for k, v in go_runtime_env().items() if k in ("GOGC", "GOMEMLIMIT")}
        assert expected  # the defaults, or this process's own settings
        async with EmbeddedNats(tmp_path, publish_url=False) as server:
            environ = _environ_of(server.pid)
        assert {k: environ.get(k) for k in expected} == expected == server.go_runtime


def _environ_of(pid: int | None) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    return dict(item.split("=", 1) for item in raw.decode().split("\0") if "=" in item)
