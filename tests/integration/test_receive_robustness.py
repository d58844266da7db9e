"""The receive bridge and publish against a partner's or member's own mistakes."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from nats.js import JetStreamContext

from broker._config import Settings
from broker._service import publish_bundle, receive
from broker._submission import SubmissionTooLarge
from broker.errors import ConfigError
from tests.conftest import Community
from tests.integration.helpers import bundle, indicator, publish, wait_routed


@pytest.fixture
async def routed(
    make_community: Callable[..., Community], running_router: Any
) -> tuple[Community, Settings]:
    """A community with its router running."""
    community = make_community()
    return community, await running_router(community)


async def test_a_removed_output_folder_is_made_again_while_receiving(
    js: JetStreamContext, routed: tuple[Community, Settings], tmp_path: Path
) -> None:
    community, settings = routed
    out = tmp_path / "lea-1"
    job = asyncio.create_task(
        receive(
            settings,
            org="lea-1",
            key_paths=[community.enc_key("lea-1")],
            out_dir=out,
            once=False,
            js=js,
        )
    )
    try:
        first = await publish(
            settings, js, community, tmp_path, "bank-a", bundle(indicator("clear"))
        )
        await _until(lambda: (out / f"{first}.json").exists())
        shutil.rmtree(out)  # an operator cleaning up, a volume remounted
        second = await publish(
            settings, js, community, tmp_path, "bank-a", bundle(indicator("clear"))
        )
        await _until(lambda: (out / f"{second}.json").exists())
        await wait_routed(js, 2)
    finally:
        job.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await job


async def _until(check: Callable[[], bool], seconds: float = 30) -> None:
    for _ in range(int(seconds / 0.05)):
        if check():
            return
        await asyncio.sleep(0.05)
    pytest.fail(f"not within {seconds} s")


async def test_once_stops_and_says_so_when_the_folder_cannot_be_written(
    js: JetStreamContext, routed: tuple[Community, Settings], tmp_path: Path
) -> None:
    """An unwritable folder was waited out as a NATS outage: `--once` ran for ever under a
    warning about NATS. Now the package stays in the stream, and the run ends saying so."""
    community, settings = routed
    sid = await publish(settings, js, community, tmp_path, "bank-a", bundle(indicator("clear")))
    await wait_routed(js, 1)
    out = tmp_path / "lea-1"
    packages = out / ".atlas" / "packages"

    def _break(_: Any) -> None:  # after the receiver made its folders
        shutil.rmtree(packages)
        packages.write_bytes(b"not a folder")

    key = [community.enc_key("lea-1")]
    async with asyncio.timeout(60):
        failed = await receive(
            settings, org="lea-1", key_paths=key, out_dir=out, once=True, js=js, on_ready=_break
        )
    assert (failed.received, failed.write_failed) == (0, 1)
    info = await js.consumer_info("DELIVERIES", "rcv-lea-1")
    assert info.num_pending + info.num_ack_pending == 1  # not acked: it comes again
    packages.unlink()
    async with asyncio.timeout(90):
        again = await receive(settings, org="lea-1", key_paths=key, out_dir=out, once=True, js=js)
    assert (again.received, again.write_failed) == (1, 0)
    assert (out / f"{sid}.json").exists()


@pytest.mark.parametrize("org", ["ec3.>", "*", "Bank A", ""])
async def test_an_org_that_cannot_be_one_is_refused_naming_it(
    make_community: Callable[..., Any], tmp_path: Path, org: str
) -> None:
    community = make_community()
    settings = Settings(data_dir=tmp_path / "data")
    with pytest.raises(ConfigError, match="is not an organisation id"):
        await receive(
            settings, org=org, key_paths=[community.enc_key("lea-1")], out_dir=tmp_path, once=True
        )
    with pytest.raises(ConfigError, match="is not an organisation id"):
        await publish_bundle(
            settings, tmp_path / "x.json", org=org, key_path=community.sign_key("bank-a")
        )


async def test_an_org_the_directory_does_not_name_is_refused(
    js: JetStreamContext, routed: tuple[Community, Settings], tmp_path: Path
) -> None:
    """A typo in --org used to drain a consumer nobody delivers to and report success."""
    community, settings = routed
    with pytest.raises(ConfigError, match="'lea-9' is not an organisation of the community"):
        await receive(
            settings,
            org="lea-9",
            key_paths=[community.enc_key("lea-1")],
            out_dir=tmp_path / "out",
            once=True,
            js=js,
        )
    assert not (tmp_path / "out").exists()


async def test_an_auditor_is_told_it_receives_nothing(
    js: JetStreamContext,
    make_community: Callable[..., Community],
    running_router: Any,
    tmp_path: Path,
) -> None:
    """Auditors are in the directory but nothing is delivered to them: receive used to
    wait on a consumer of its own making and report success."""
    community = make_community()
    community.doc["organisations"].append(
        {"id": "audit-1", "name": "Auditor", "kind": "auditor", "keys": []}
    )
    settings = await running_router(community)
    with pytest.raises(ConfigError, match="'audit-1' is an auditor"):
        await receive(
            settings,
            org="audit-1",
            key_paths=[community.enc_key("lea-1")],
            out_dir=tmp_path / "out",
            once=True,
            js=js,
        )
    assert "rcv-audit-1" not in [c.name for c in await js.consumers_info("DELIVERIES")]


async def test_publish_reads_no_further_than_the_size_limit(
    make_community: Callable[..., Any], tmp_path: Path
) -> None:
    community = make_community()
    settings = Settings(data_dir=tmp_path / "data")
    with pytest.raises(SubmissionTooLarge, match="over the size limit"):
        await publish_bundle(
            settings, Path("/dev/zero"), org="bank-a", key_path=community.sign_key("bank-a")
        )


async def test_a_failed_push_leaves_the_package_to_come_again(
    js: JetStreamContext, routed: tuple[Community, Settings], tmp_path: Path
) -> None:
    from adapters._taxii._push import taxii_pusher
    from tests.integration.medallion import collection_url, free_port

    community, settings = routed
    sid = await publish(settings, js, community, tmp_path, "bank-a", bundle(indicator("clear")))
    await wait_routed(js, 1)
    out = tmp_path / "lea-1"
    key = [community.enc_key("lea-1")]
    nobody = taxii_pusher(collection_url(free_port()), user="u", password="p")
    first = await receive(
        settings, org="lea-1", key_paths=key, out_dir=out, once=True, js=js, push=nobody
    )
    assert (first.received, first.push_failed) == (1, 1)  # stored, not pushed, not acked
    assert (out / f"{sid}.json").exists()
    again = await receive(settings, org="lea-1", key_paths=key, out_dir=out, once=True, js=js)
    assert (again.received, again.duplicates) == (1, 0)  # it came again
