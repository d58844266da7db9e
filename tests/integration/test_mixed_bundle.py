"""One mixed bundle through the real pipeline to five recipients of different standing.

Each recipient's folder is compared object by object with the view its standing allows:
named one by one (RED), named through a group (AMBER), community member (GREEN), a
partner outside the community (CLEAR).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
from nats.js import JetStreamContext
from stix2validator import validate_instance

from tests.integration.helpers import bundle, indicator, publish, receive_all, sdo, wait_routed


async def test_each_recipient_gets_exactly_the_view_its_standing_allows(
    js: JetStreamContext,
    make_community: Callable[..., Any],
    running_router: Any,
    tmp_path: Path,
) -> None:
    community = make_community(
        members=("bank-a", "bank-b", "vendor-c"),
        partners=("lea-1", "lea-2"),
        outside=("ncu-x",),
    )
    community.doc["groups"] = [{"id": "op", "members": ["lea-2", "vendor-c"]}]
    community.doc["subscriptions"].append({"recipient": "bank-b", "originators": ["*"]})
    settings = await running_router(community)

    c1 = indicator("clear", "clear")
    g1 = indicator("green", "green")
    a1 = indicator("amber", "amber")
    s1 = indicator("amber+strict", "strict")
    r1 = sdo("threat-actor", "red", name="crew", threat_actor_types=["crime-syndicate"])
    rel_g = sdo(
        "relationship",
        "green",
        relationship_type="related-to",
        source_ref=g1["id"],
        target_ref=c1["id"],
    )
    rel_r = sdo(
        "relationship",
        "amber",
        relationship_type="attributed-to",
        source_ref=a1["id"],
        target_ref=r1["id"],
    )
    granular = indicator("green", "with a red description")
    granular["description"] = "source: informant"
    granular["granular_markings"] = [
        {
            "marking_ref": "marking-definition--e828b379-4e03-4974-9ac4-e53a884c97c1",
            "selectors": ["description"],
        }
    ]
    malware = sdo("malware", None, name="TangleBot", is_family=True)
    report = sdo(
        "report",
        "amber",
        name="cluster",
        published="2026-11-02T09:30:00.000Z",
        report_types=["threat-report"],
        object_refs=[a1["id"], g1["id"], c1["id"], malware["id"]],
    )
    everything = [c1, g1, a1, s1, r1, rel_g, rel_r, granular, malware, report]
    sid = await publish(
        settings,
        js,
        community,
        tmp_path,
        "bank-a",
        bundle(*everything),
        to=("org:lea-1", "group:op"),
    )
    await wait_routed(js, 1)

    amber_view = {c1["id"], g1["id"], rel_g["id"], a1["id"], malware["id"], report["id"]}
    expected = {
        "lea-1": {o["id"] for o in everything},
        "lea-2": amber_view,
        "vendor-c": amber_view,
        "bank-b": {c1["id"], g1["id"], rel_g["id"]},
        "ncu-x": {c1["id"]},
    }
    for org, ids in expected.items():
        out = tmp_path / "received" / org
        stats = await receive_all(settings, js, community, org, out)
        assert stats.received == 1 and stats.quarantined == 0
        view = orjson.loads((out / f"{sid}.json").read_bytes())
        got = {o["id"]: o for o in view["objects"]}
        assert set(got) == ids, org
        for object_id in ids:
            original = next(o for o in everything if o["id"] == object_id)
            assert got[object_id] == original, f"{org}: {object_id} changed in transit"
        result = validate_instance(view)
        assert result.is_valid, (org, [str(e) for e in result.errors])
