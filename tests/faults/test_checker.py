"""The fault checker itself: it must name each kind of failure it exists to catch."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import orjson
import pytest
from nats.js import JetStreamContext

from broker._bus import deliver_subject
from broker._embedded import EmbeddedNats
from broker._router import PKG_ID_HEADER
from keys import PublicKey, seal
from tests.conftest import Community
from tests.faults.checker import RANK, Accepted, check, expected_views
from tests.faults.rig import PARTNERS, SHAPES, Load, Rig, receive_once, router_idle, until


def test_the_oracle_follows_the_tlp_table(community: Community) -> None:
    objects = {f"indicator--{n}": tlp for n, tlp in enumerate(RANK)}
    views = expected_views(
        community.doc, [Accepted(sid="s", org="bank-b", to=("org:lea-2",), objects=objects)]
    )
    levels = {rcpt: sorted(objects[i] for i in ids) for (rcpt, _), ids in views.items()}
    assert levels == {
        "lea-2": sorted(RANK),  # named one by one: up to RED
        "lea-1": ["clear", "green"],  # a partner in the community
        "ngo-x": ["clear"],  # outside the community
    }
    via_group = expected_views(
        community.doc, [Accepted(sid="s", org="bank-b", to=("group:op",), objects=objects)]
    )
    assert sorted(objects[i] for i in via_group[("bank-a", "s")]) == ["amber", "clear", "green"]
    assert ("bank-b", "s") not in via_group  # never the originator


@pytest.mark.timeout(90)
async def test_the_checker_names_loss_leaks_and_duplicates(
    js: JetStreamContext,
    nats_server: EmbeddedNats,
    running_router: Callable[[Community], Any],
    rig: Rig,
    community: Community,
) -> None:
    await running_router(community)
    load = Load(js, community)
    await load.run(len(SHAPES))
    await until(lambda: router_idle(js), within=30, what="the router")
    await receive_once(js, rig, PARTNERS)

    async def _problems() -> str:
        with pytest.raises(AssertionError) as failed:
            await check(
                js,
                community=community,
                accepted=load.accepted,
                receivers={org: rig.inbox(org) for org in PARTNERS},
                nats_url=nats_server.url,
                jwks=rig.jwks,
            )
        return str(failed.value)

    # An acknowledged submission the broker never routed.
    load.accepted.append(
        Accepted(sid="f" * 32, org="bank-a", to=(), objects={"indicator--x": "clear"})
    )
    assert "lost: no package for ('lea-1', 'ffff" in await _problems()
    assert f"submission {'f' * 32} logged accepted 0 times" in await _problems()
    load.accepted.pop()

    # A receive bridge that lost a bundle.
    first = next(rig.inbox("lea-1").glob("*.json"))
    first.unlink()
    assert f"lea-1 never wrote {first.stem} (lost)" in await _problems()

    # A package to a recipient that is not entitled to it (a group AMBER submission that
    # lea-2 may not see), and a second package on a subject that already has one.
    group_sid = load.accepted[4].sid
    enc = next(j for j in community.public["lea-2"] if j["use"] == "enc")
    leak = seal(
        stix={"type": "bundle", "id": "bundle--1", "objects": []},
        iss="atlas-broker",
        aud="lea-2",
        src={"org": "bank-b", "submission": group_sid, "sha256": "0" * 64},
        tlp="amber",
        signing_key=community.broker_key,
        recipient_key=PublicKey.from_jwk(enc),
        now=int(time.time()),
        ttl=3600,
        dumps=orjson.dumps,
    )
    headers = {PKG_ID_HEADER: leak.jti}
    await js.publish(deliver_subject("lea-2", group_sid), leak.token.encode(), headers=headers)
    await js.publish(deliver_subject("lea-2", group_sid), leak.token.encode(), headers=headers)
    problems = await _problems()
    assert f"not entitled: a package for ('lea-2', '{group_sid}')" in problems
    assert f"duplicate: 2 packages for ('lea-2', '{group_sid}')" in problems
    assert f"('lea-2', '{group_sid}'): 0 delivery entries for 2 packages" in problems
