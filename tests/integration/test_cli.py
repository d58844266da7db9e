"""The atlas-broker command line against a real nats-server, as a user runs it."""

from __future__ import annotations

import asyncio
import re
import signal
import stat
import subprocess
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import tomli_w
from nats.js import JetStreamContext

from broker._bus import SUBMISSIONS, submit_stream
from broker._directory_store import store_directory
from broker._embedded import EmbeddedNats
from policy import Directory
from tests.integration.helpers import bundle, cli, indicator, start_broker, wait_routed

ROOT = Path(__file__).resolve().parents[2]


class TestKeysGenerate:
    def test_writes_0600_keys_and_prints_public_jwks(self, tmp_path: Path) -> None:
        result = cli("keys", "generate", "--org", "bank-a", "--out", str(tmp_path / "k"))
        assert result.returncode == 0, result.stderr
        jwks = orjson.loads(result.stdout)["keys"]
        assert {k["use"] for k in jwks} == {"sig", "enc"}
        assert all("d" not in k for k in jwks)
        for name in ("bank-a.sign.pem", "bank-a.enc.pem"):
            assert stat.S_IMODE((tmp_path / "k" / name).stat().st_mode) == 0o600

    def test_toml_output_pastes_into_a_directory_file(self, tmp_path: Path) -> None:
        doc = tomllib.loads((ROOT / "deploy" / "directory.example.toml").read_text())
        for org in ("atlas-broker", "ec3"):
            result = cli("keys", "generate", "--org", org, "--out", str(tmp_path), "--toml")
            assert result.returncode == 0, result.stderr
            pasted = tomllib.loads(result.stdout)
            if org == "atlas-broker":
                doc["broker"]["keys"] = pasted["broker"]["keys"]
                assert [k["use"] for k in doc["broker"]["keys"]] == ["sig"]
            else:
                ec3 = next(o for o in doc["organisations"] if o["id"] == "ec3")
                ec3["keys"] = pasted["organisations"]["keys"]
        directory = Directory.from_mapping(doc)
        ec3_keys = next(o for o in directory.organisations if o.id == "ec3").keys
        assert [(k.use, k.current) for k in ec3_keys] == [("sig", True), ("enc", True)]

    def test_refuses_to_overwrite_existing_keys(self, tmp_path: Path) -> None:
        assert cli("keys", "generate", "--org", "bank-a", "--out", str(tmp_path)).returncode == 0
        before = (tmp_path / "bank-a.sign.pem").read_bytes()
        result = cli("keys", "generate", "--org", "bank-a", "--out", str(tmp_path))
        assert result.returncode == 1
        assert "already exists" in result.stderr
        assert (tmp_path / "bank-a.sign.pem").read_bytes() == before


class TestConfiguration:
    def test_serve_stops_with_a_message_naming_the_missing_key(self, tmp_path: Path) -> None:
        result = cli("--data-dir", str(tmp_path), "serve")
        assert result.returncode == 1
        assert "broker.signing_key is not set" in result.stderr
        assert "set [broker] signing_key in the configuration" in result.stderr

    def test_serve_refuses_a_p256_broker_key_naming_why(self, tmp_path: Path) -> None:
        keys = tmp_path / "k"
        made = cli(
            "keys", "generate", "--org", "atlas-broker", "--sign", "ES256", "--out", str(keys)
        )
        assert made.returncode == 0, made.stderr
        result = cli(
            "--data-dir",
            str(tmp_path / "data"),
            "serve",
            env={"ATLAS_BROKER__SIGNING_KEY": str(keys / "atlas-broker.sign.pem")},
        )
        assert result.returncode == 1
        assert "must be Ed25519" in result.stderr and "checkpoints" in result.stderr
        assert "Traceback" not in result.stderr
        # Refused before anything started: no embedded server was left behind.
        assert not (tmp_path / "data" / "nats" / "url").exists()

    def test_an_unknown_log_level_or_format_is_named_without_a_traceback(self) -> None:
        for option, value in (("--log-level", "loud"), ("--log-format", "yaml")):
            result = cli(option, value, "status")
            assert result.returncode == 2, result.stderr
            assert f"Invalid value for '{option}'" in result.stderr
            assert "Traceback" not in result.stderr

    def test_invalid_setting_stops_startup_naming_it(self, tmp_path: Path) -> None:
        result = cli("serve", env={"ATLAS_ROUTER__WORKERS": "zero"})
        assert result.returncode == 2
        assert "router.workers" in result.stderr

    def test_publish_without_a_server_says_how_to_get_one(self, tmp_path: Path) -> None:
        data = tmp_path / "b.json"
        data.write_bytes(orjson.dumps(bundle(indicator("clear"))))
        cli("keys", "generate", "--org", "bank-a", "--out", str(tmp_path))
        result = cli(
            "--data-dir",
            str(tmp_path / "none"),
            "publish",
            str(data),
            "--org",
            "bank-a",
            "--key",
            str(tmp_path / "bank-a.sign.pem"),
        )
        assert result.returncode == 1
        assert "no NATS URL configured and no embedded server running" in result.stderr


class TestDirectoryAndPublish:
    async def test_directory_load_names_the_offending_key_path(
        self, nats_server: EmbeddedNats, make_community: Callable[..., Any], tmp_path: Path
    ) -> None:
        community = make_community()
        community.doc["subscriptions"].append({"recipient": "nobody", "originators": ["*"]})
        path = tmp_path / "dir.toml"
        path.write_text(tomli_w.dumps(community.doc))
        result = await asyncio.to_thread(cli, "directory", "load", str(path), url=nats_server.url)
        assert result.returncode == 1
        assert "subscriptions[2].recipient: unknown organisation 'nobody'" in result.stderr

    async def test_full_path_through_the_cli(
        self,
        js: JetStreamContext,
        nats_server: EmbeddedNats,
        make_community: Callable[..., Any],
        tmp_path: Path,
    ) -> None:
        community = make_community()
        url = nats_server.url
        path = tmp_path / "dir.toml"
        path.write_text(tomli_w.dumps(community.doc))
        loaded = await asyncio.to_thread(cli, "directory", "load", str(path), url=url)
        assert loaded.returncode == 0, loaded.stderr
        shown = await asyncio.to_thread(cli, "directory", "show", "--json", url=url)
        assert orjson.loads(shown.stdout)["community"]["id"] == "test"

        bad = tmp_path / "bad.json"
        bad.write_text('{"type": "bundle", "objects": [')
        refused = await asyncio.to_thread(
            cli,
            "publish",
            str(bad),
            "--org",
            "bank-a",
            "--key",
            str(community.sign_key("bank-a")),
            url=url,
        )
        assert refused.returncode == 1
        assert f"{bad}: not JSON" in refused.stderr
        assert (await js.stream_info(SUBMISSIONS)).state.messages == 0

        good = tmp_path / "good.json"
        ind = indicator("amber")
        good.write_bytes(orjson.dumps(bundle(ind)))
        published = await asyncio.to_thread(
            cli,
            "publish",
            str(good),
            "--org",
            "bank-a",
            "--key",
            str(community.sign_key("bank-a")),
            "--to",
            "org:lea-1",
            url=url,
        )
        assert published.returncode == 0, published.stderr
        sid = published.stdout.strip()
        assert re.fullmatch(r"[0-9a-f]{32}", sid)
        assert (await js.stream_info(SUBMISSIONS)).state.messages == 1

        config = tmp_path / "atlas.toml"
        broker_key = community.root / "atlas-broker" / "atlas-broker.sign.pem"
        config.write_text(
            f'data_dir = "{tmp_path / "data"}"\n[nats]\nurl = "{url}"\n'
            f'[broker]\nsigning_key = "{broker_key}"\n'
        )
        proc = await start_broker(config, "serve", stderr=asyncio.subprocess.PIPE, json_logs=False)
        try:
            await wait_routed(js, 1)
        finally:
            proc.send_signal(signal.SIGINT)
            _, stderr = await proc.communicate()
        assert proc.returncode == 130, stderr.decode()

        out = tmp_path / "received"
        received = await asyncio.to_thread(
            cli,
            "receive",
            "--org",
            "lea-1",
            "--key",
            str(community.enc_key("lea-1")),
            "--out",
            str(out),
            "--once",
            url=url,
        )
        assert received.returncode == 0, received.stderr
        assert "received 1 package(s), 1 object(s)" in received.stdout
        got = orjson.loads((out / f"{sid}.json").read_bytes())
        assert [o["id"] for o in got["objects"]] == [ind["id"]]

        listed = await asyncio.to_thread(cli, "audit", "list", "--json", "--org", "lea-2", url=url)
        entries = [orjson.loads(line) for line in listed.stdout.splitlines()]
        assert [(e["type"], e["rcpt"], e["tlp"]) for e in entries] == [
            ("withheld", "lea-2", "amber")
        ]


class TestPublishWait:
    async def test_wait_reports_the_routers_decision_and_refusal_exits_1(
        self,
        nats_server: EmbeddedNats,
        make_community: Callable[..., Any],
        running_router: Any,
        tmp_path: Path,
    ) -> None:
        community = make_community()
        await running_router(community)
        path = tmp_path / "b.json"
        path.write_bytes(orjson.dumps(bundle(indicator("clear"))))

        def publish(key: str, *extra: str) -> subprocess.CompletedProcess[str]:
            args = ["publish", str(path), "--org", "bank-a", "--key", key, *extra]
            return cli(*args, url=nats_server.url)

        good = await asyncio.to_thread(publish, str(community.sign_key("bank-a")), "--wait", "30")
        assert good.returncode == 0, good.stderr
        assert "routed: the router accepted it" in good.stderr
        assert "does not know" not in good.stderr

        misnamed = await asyncio.to_thread(
            publish, str(community.sign_key("bank-a")), "--wait", "30", "--to", "lea,group:nope"
        )
        assert misnamed.returncode == 0, misnamed.stderr
        assert "names what the directory does not know: group:nope, org:lea" in misnamed.stderr

        # Signed with another member's key: stored by JetStream, refused by the router.
        forged = await asyncio.to_thread(publish, str(community.sign_key("bank-b")), "--wait", "30")
        assert forged.returncode == 1, forged.stderr
        sid = forged.stdout.strip()
        assert re.search(rf"refused:.*{sid}: \S+", forged.stderr), forged.stderr

        unwaited = await asyncio.to_thread(publish, str(community.sign_key("bank-b")))
        assert unwaited.returncode == 0 and "refused" not in unwaited.stderr

    async def test_wait_exits_3_when_nothing_routes_the_submission(
        self,
        js: JetStreamContext,
        nats_server: EmbeddedNats,
        make_community: Callable[..., Any],
        tmp_path: Path,
    ) -> None:
        community = make_community()  # the streams exist (the js fixture), no router runs
        await store_directory(js, community.directory())  # and the members' intake
        path = tmp_path / "b.json"
        path.write_bytes(orjson.dumps(bundle(indicator("clear"))))
        args = ["publish", str(path), "--org", "bank-a", "--wait", "0.5"]
        key = ["--key", str(community.sign_key("bank-a"))]
        result = await asyncio.to_thread(cli, *args, *key, url=nats_server.url)
        assert result.returncode == 3, result.stderr
        assert "no decision logged within 0.5 s" in result.stderr
        assert (await js.stream_info(submit_stream("bank-a"))).state.messages == 1


async def test_a_second_serve_on_the_same_data_folder_is_refused_naming_the_first(
    make_community: Callable[..., Any], tmp_path: Path
) -> None:
    community = make_community()
    broker_key = community.root / "atlas-broker" / "atlas-broker.sign.pem"
    config = tmp_path / "atlas.toml"
    config.write_text(
        f'data_dir = "{tmp_path / "data"}"\n[nats]\nport = 0\n'
        f'[broker]\nsigning_key = "{broker_key}"\n[monitor]\nport = 0\n'
    )
    first = await start_broker(config, "serve", stderr=asyncio.subprocess.PIPE)
    try:
        url_file = tmp_path / "data" / "nats" / "url"
        for _ in range(300):
            if url_file.exists() and url_file.read_text().strip():
                break
            await asyncio.sleep(0.1)
        second = await start_broker(config, "serve", stderr=asyncio.subprocess.PIPE)
        _, stderr = await asyncio.wait_for(second.communicate(), 60)
        assert second.returncode == 1, stderr.decode()
        assert "another `atlas-broker serve` already runs on" in stderr.decode()
        assert first.returncode is None  # the first one runs on
    finally:
        first.send_signal(signal.SIGINT)
        await asyncio.wait_for(first.communicate(), 60)
