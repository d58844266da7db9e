"""Policy speed: objects evaluated per second per recipient on a 1,000-object bundle.

The bundle mixes indicators, malware and SCOs at every TLP level, 300 relationships
crossing levels, 99 reports and a few granular markings. Beside it, measured in the same
run: parsing the same bundle with orjson (the floor any hot path pays) and, for scale,
``stix2.parse`` of it. Target: at least 100,000 objects/s per recipient on one core.
"""

from __future__ import annotations

import random
import statistics
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import orjson
import stix2

from policy import Directory, Submission, evaluate, evaluate_all, recipients

TLP2 = {
    "clear": "marking-definition--94868c89-83c2-464b-929b-a1a8aa3c8487",
    "green": "marking-definition--bab4a63c-aed9-4cf5-a766-dfca5abac2bb",
    "amber": "marking-definition--55d920b0-5e8b-4f79-9ee9-91f868d9b421",
    "amber+strict": "marking-definition--939a9414-2ddd-4d32-a0cd-375ea402b003",
    "red": "marking-definition--e828b379-4e03-4974-9ac4-e53a884c97c1",
}
TS = "2026-05-01T00:00:00.000Z"
LEVELS = ["clear", "green", "green", "amber", "amber+strict", "red"]


def _directory(derive: bool) -> Directory:
    members = ["bank-a", "bank-b", "vendor-c"]
    partners = ["europol", "nca"]
    return Directory.from_mapping(
        {
            "community": {"id": "atlas", "name": "Atlas", "partners_in_community": True},
            "organisations": [
                *(
                    {
                        "id": m,
                        "name": m,
                        "kind": "member",
                        "derived_copies": derive and m == "bank-a",
                    }
                    for m in members
                ),
                *(
                    {"id": p, "name": p, "kind": "partner", "in_community": p != "nca"}
                    for p in partners
                ),
                {"id": "outsider", "name": "o", "kind": "member", "in_community": False},
            ],
            "groups": [{"id": "le", "members": partners}],
            "subscriptions": [
                {"recipient": r, "originators": ["*"]}
                for r in ["bank-b", "vendor-c", "europol", "nca", "outsider"]
            ],
        }
    )


def make_bundle(seed: int = 7) -> dict[str, Any]:
    rnd = random.Random(seed)

    def new_id(kind: str) -> str:
        return f"{kind}--{uuid.UUID(int=rnd.getrandbits(128), version=4)}"

    ident = new_id("identity")
    objs: list[dict[str, Any]] = [
        {
            "type": "identity",
            "spec_version": "2.1",
            "id": ident,
            "created": TS,
            "modified": TS,
            "name": "A",
            "identity_class": "organization",
            "object_marking_refs": [TLP2["clear"]],
        }
    ]
    nodes = []
    for i in range(600):
        kind = rnd.choice(["indicator", "malware", "ipv4-addr"])
        if kind == "indicator":
            obj: dict[str, Any] = {
                "type": "indicator",
                "spec_version": "2.1",
                "id": new_id("indicator"),
                "created": TS,
                "modified": TS,
                "created_by_ref": ident,
                "name": f"ind {i}",
                "description": "phishing kit on bulletproof hosting",
                "pattern_type": "stix",
                "pattern": "[ipv4-addr:value = '198.51.100.7']",
                "valid_from": TS,
            }
        elif kind == "malware":
            obj = {
                "type": "malware",
                "spec_version": "2.1",
                "id": new_id("malware"),
                "created": TS,
                "modified": TS,
                "created_by_ref": ident,
                "name": f"m{i}",
                "is_family": True,
                "malware_types": ["trojan"],
            }
        else:
            obj = {
                "type": "ipv4-addr",
                "spec_version": "2.1",
                "id": new_id("ipv4-addr"),
                "value": f"198.51.{i // 250}.{i % 250}",
            }
        obj["object_marking_refs"] = [TLP2[rnd.choice(LEVELS)]]
        if i % 40 == 0 and kind != "ipv4-addr":
            selector = "description" if kind == "indicator" else "malware_types"
            obj["granular_markings"] = [{"marking_ref": TLP2["red"], "selectors": [selector]}]
        objs.append(obj)
        nodes.append(obj)
    for _ in range(300):
        a, b = rnd.sample(nodes, 2)
        objs.append(
            {
                "type": "relationship",
                "spec_version": "2.1",
                "id": new_id("relationship"),
                "created": TS,
                "modified": TS,
                "relationship_type": "related-to",
                "source_ref": a["id"],
                "target_ref": b["id"],
                "created_by_ref": ident,
                "object_marking_refs": [TLP2[rnd.choice(LEVELS[:4])]],
            }
        )
    for _ in range(99):
        objs.append(
            {
                "type": "report",
                "spec_version": "2.1",
                "id": new_id("report"),
                "created": TS,
                "modified": TS,
                "name": "r",
                "published": TS,
                "created_by_ref": ident,
                "object_refs": [x["id"] for x in rnd.sample(nodes, 5)],
                "object_marking_refs": [TLP2[rnd.choice(LEVELS[:3])]],
            }
        )
    return {"type": "bundle", "id": new_id("bundle"), "objects": objs}


def _median(fn: Callable[[], object], reps: int) -> float:
    samples = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
    return statistics.median(samples)


def run(quick: bool = False) -> dict[str, Any]:
    reps = 5 if quick else 30
    bundle = make_bundle()
    raw = orjson.dumps(bundle)
    n = len(bundle["objects"])
    now = datetime(2026, 6, 1, tzinfo=UTC)
    key = b"k" * 32
    submission = Submission(
        originator="bank-a",
        submission_id="s1",
        named=frozenset({"europol"}),
        named_groups=frozenset({"le"}),
    )
    t_parse = _median(lambda: orjson.loads(raw), reps)
    t_stix2 = _median(lambda: stix2.parse(raw.decode(), allow_custom=True), 1 if quick else 3)
    out: dict[str, Any] = {
        "objects": n,
        "orjson_loads_objects_per_s": round(n / t_parse),
        "stix2_parse_objects_per_s": round(n / t_stix2),
        "target_objects_per_s_per_recipient": 100_000,
    }
    for derive in (False, True):
        directory = _directory(derive)
        rcpts = recipients(directory, submission)
        t_one = _median(
            lambda d=directory: evaluate(  # type: ignore[misc]
                bundle,
                directory=d,
                submission=submission,
                recipient="bank-b",
                now=now,
                digest_key=key,
            ),
            reps,
        )
        t_all = _median(
            lambda d=directory, r=rcpts: evaluate_all(  # type: ignore[misc]
                bundle, directory=d, submission=submission, recipients=r, now=now, digest_key=key
            ),
            reps,
        )
        per_rcpt = n * len(rcpts) / t_all
        out["derived_copies" if derive else "withhold_whole"] = {
            "recipients": len(rcpts),
            "evaluate_one_recipient_objects_per_s": round(n / t_one),
            "evaluate_all_objects_per_s_per_recipient": round(per_rcpt),
            "ratio_to_orjson_parse": round(per_rcpt / (n / t_parse), 3),
        }
    return out
