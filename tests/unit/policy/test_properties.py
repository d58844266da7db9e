"""Property-based tests over generated bundles, communities and recipient sets.

The oracle here is written from the design's rules, independently of the implementation:
it checks upper bounds (nothing above entitlement, no foreign id) rather than recomputing
the exact view.
"""

from __future__ import annotations

import copy
import json
import os
import random
import re
from collections.abc import Callable
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from policy import (
    Directory,
    OrgKind,
    Submission,
    Tlp,
    View,
    evaluate,
    evaluate_all,
    recipients,
)

from ._support import (
    BROKER_IDENTITY,
    KEY,
    NO_LE,
    NOW,
    PAP_GREEN,
    TLP1,
    TLP2,
    TS,
    Stix,
    assert_valid_stix,
    community_doc,
)

RANK = {
    TLP1["white"]: 0,
    TLP1["green"]: 1,
    TLP1["amber"]: 2,
    TLP1["red"]: 4,
    TLP2["clear"]: 0,
    TLP2["green"]: 1,
    TLP2["amber"]: 2,
    TLP2["amber+strict"]: 3,
    TLP2["red"]: 4,
}
LEVELS = ["clear", "green", "amber", "amber+strict", "red"]
UUID_RE = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
SCO_TYPES = {"ipv4-addr"}
CONTAINERS = {"report", "grouping", "observed-data"}
SETTINGS = settings(
    max_examples=int(os.environ.get("PBT_EXAMPLES", "250")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


# -- generation ----------------------------------------------------------------------------


@st.composite
def communities(draw: st.DrawFn) -> Directory:
    doc = community_doc()
    originator = doc["organisations"][0]
    originator["derived_copies"] = draw(st.booleans())
    default = draw(st.sampled_from([None, *LEVELS]))
    if default is not None:
        originator["default_tlp"] = default
    originator["in_community"] = draw(st.booleans())
    doc["community"]["partners_in_community"] = draw(st.booleans())
    if draw(st.booleans()):
        doc["statement_rules"] = []
    return Directory.from_mapping(doc)


@st.composite
def submissions(draw: st.DrawFn) -> Submission:
    others = ["bank-b", "vendor-c", "lea-1", "lea-2", "outsider", "auditor", "ghost"]
    return Submission(
        originator="bank-a",
        submission_id=draw(st.sampled_from(["s-1", "s-2"])),
        named=frozenset(draw(st.lists(st.sampled_from(others), max_size=3))),
        named_groups=frozenset(
            draw(st.lists(st.sampled_from(["lea", "banks", "none"]))),
        ),
        feed=draw(st.sampled_from([None, "ioc"])),
    )


@st.composite
def bundles(draw: st.DrawFn, *, clear_only: bool = False) -> dict[str, Any]:
    stix = Stix()
    objects: list[dict[str, Any]] = []
    statements = [stix.statement(f"statement {n}") for n in range(draw(st.integers(0, 1)))]
    unknown = stix.new_id("marking-definition")

    def markings(allow_none: bool = True) -> list[str]:
        if clear_only:
            return [draw(st.sampled_from([TLP2["clear"], TLP1["white"]]))]
        pool = [*RANK, PAP_GREEN, NO_LE, unknown, *(s["id"] for s in statements)]
        weights = st.sampled_from(list(RANK)) | st.sampled_from(pool)
        refs = draw(st.lists(weights, max_size=2, unique=True))
        if not refs and not allow_none:
            refs = [TLP2["clear"]]
        return refs

    def mark(obj: dict[str, Any], allow_none: bool = True) -> dict[str, Any]:
        refs = markings(allow_none)
        if refs:
            obj["object_marking_refs"] = refs
        return obj

    for statement in statements:
        if not clear_only and draw(st.booleans()):
            statement["object_marking_refs"] = [draw(st.sampled_from(list(RANK)))]
        objects.append(statement)
    identities = [mark(stix.identity(None)) for _ in range(draw(st.integers(0, 2)))]
    objects += identities
    extension = None
    if draw(st.booleans()) and identities:
        extension = mark(
            stix.sdo(
                "extension-definition",
                None,
                name="x-acme",
                created_by_ref=identities[0]["id"],
                schema="https://acme.example/schema.json",
                version="1.0.0",
                extension_types=["property-extension"],
            )
        )
        objects.append(extension)
    nodes: list[dict[str, Any]] = []
    for n in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["indicator", "malware"]))
        obj = stix.indicator(None) if kind == "indicator" else stix.malware(None)
        mark(obj)
        if draw(st.booleans()) and identities:
            obj["created_by_ref"] = draw(st.sampled_from(identities))["id"]
        if draw(st.booleans()):
            obj["description"] = f"description {n}"
        if draw(st.booleans()):
            obj["labels"] = ["one", "two"]
        if draw(st.booleans()) and extension is not None:
            obj["extensions"] = {extension["id"]: {"extension_type": "property-extension"}}
        if not clear_only and draw(st.booleans()):
            selectors = [p for p in ("description", "labels.[1]", "name") if _has(obj, p)]
            obj["granular_markings"] = [
                {
                    "marking_ref": draw(st.sampled_from([*RANK, NO_LE, unknown])),
                    "selectors": draw(
                        st.lists(st.sampled_from(selectors), min_size=1, unique=True)
                    ),
                }
            ]
        nodes.append(obj)
    for n in range(draw(st.integers(0, 2))):
        nodes.append(mark(stix.ipv4(f"192.0.2.{n + 1}", None)))
    objects += nodes
    scos = [n for n in nodes if n["type"] in SCO_TYPES]
    if draw(st.booleans()) and scos:
        observed = stix.sdo(
            "observed-data",
            None,
            first_observed=TS,
            last_observed=TS,
            number_observed=1,
            object_refs=[o["id"] for o in scos],
            labels=["seen"],
        )
        if not clear_only and draw(st.booleans()):
            observed["granular_markings"] = [
                {"marking_ref": draw(st.sampled_from(list(RANK))), "selectors": ["labels"]}
            ]
        objects.append(mark(observed))
    for _ in range(draw(st.integers(0, 3))):
        source = draw(st.sampled_from(nodes))
        target = draw(st.sampled_from(nodes))
        objects.append(
            mark(stix.relationship(source, target, None, relationship_type="related-to"))
        )
    if draw(st.booleans()) and identities:
        indicator = draw(st.sampled_from(nodes))
        sighting = stix.sdo(
            "sighting",
            None,
            sighting_of_ref=indicator["id"],
            where_sighted_refs=[draw(st.sampled_from(identities))["id"]],
        )
        objects.append(mark(sighting))
    for _ in range(draw(st.integers(0, 2))):
        kind = draw(st.sampled_from(["report", "grouping", "note"]))
        members = draw(st.lists(st.sampled_from(objects), min_size=1, max_size=4, unique_by=id))
        maker: Callable[..., dict[str, Any]] = getattr(stix, kind)
        container = mark(maker(members, None))
        if not clear_only and draw(st.booleans()):
            container["description"] = f"mentions {draw(st.sampled_from(nodes))['id']}"
        objects.append(container)
    if draw(st.booleans()):
        original = draw(st.sampled_from(nodes))
        if "modified" in original:
            newer = copy.deepcopy(original)
            newer["modified"] = "2024-05-02T00:00:00.000Z"
            newer["revoked"] = draw(st.booleans())
            mark(newer)
            objects.append(newer)
    if not clear_only and draw(st.booleans()):
        objects.append(
            {
                "type": "marking-definition",
                "spec_version": "2.1",
                "id": unknown,
                "created": TS,
                "name": "TLP:GREEN",
                "definition_type": "tlp",
                "definition": {"tlp": "green"},
            }
        )
    if draw(st.booleans()):
        objects.append(
            {
                "type": "marking-definition",
                "spec_version": "2.1",
                "id": TLP2["green"],
                "created": "2022-10-01T00:00:00.000Z",
                "name": "TLP:GREEN",
            }
        )
    return {"type": "bundle", "id": stix.new_id("bundle"), "objects": objects}


def _has(obj: dict[str, Any], selector: str) -> bool:
    return selector.partition(".")[0] in obj


# -- oracle --------------------------------------------------------------------------------


def _clearance(directory: Directory, submission: Submission, recipient: str) -> int | None:
    org = directory.organisation(recipient)
    originator = directory.organisation(submission.originator)
    assert org is not None and originator is not None
    if org.kind == OrgKind.AUDITOR:
        return None
    if recipient in submission.named:
        return 4
    if recipient in directory.expand(f"group:{g}" for g in submission.named_groups):
        return 2
    if (
        originator.in_community
        and org.in_community
        and (org.kind != OrgKind.PARTNER or directory.community.partners_in_community)
    ):
        return 1
    return 0


def _known(ref: str, data: dict[str, Any], directory: Directory) -> bool:
    if ref in RANK or ref == PAP_GREEN:
        return True
    if ref in {rule.marking for rule in directory.statement_rules}:
        return True
    return any(o["id"] == ref and o.get("definition_type") == "statement" for o in data["objects"])


def _cleared(
    refs: list[str], data: dict[str, Any], directory: Directory, recipient: str, rank: int
) -> bool:
    org = directory.organisation(recipient)
    assert org is not None
    denied = {
        rule.marking
        for rule in directory.statement_rules
        if org.kind in rule.deny_kinds or org.id in rule.deny_orgs
    }
    for ref in refs:
        if not _known(ref, data, directory) or ref in denied:
            return False
        if RANK.get(ref, 0) > rank:
            return False
    return True


def _uuid(obj_id: str) -> str:
    return obj_id.partition("--")[2].lower()


def _check_view(
    data: dict[str, Any],
    view: View,
    directory: Directory,
    submission: Submission,
    recipient: str,
    earlier: int = -1,
) -> None:
    rank = _clearance(directory, submission, recipient)
    originator = directory.organisation(submission.originator)
    assert originator is not None
    default = RANK[TLP2[originator.default_tlp or "amber"]]
    versions = {(o["id"], o.get("modified", "")): o for o in data["objects"]}
    input_ids = {o["id"] for o in data["objects"]}
    by_uuid = {_uuid(i): i for i in input_ids}
    assert len(view.decisions) == len(versions)
    if view.bundle is None:
        assert view.delivered == view.derived == 0
        return
    assert rank is not None, "auditors never receive content"
    assert_valid_stix(view)
    delivered = view.bundle["objects"]
    delivered_ids = {o["id"] for o in delivered}
    originals = {o["id"]: o for o in delivered if o["id"] in input_ids}
    derived_from = {
        o["source_ref"]: o["target_ref"]
        for o in delivered
        if o.get("relationship_type") == "derived-from"
        and o.get("created_by_ref") == BROKER_IDENTITY
        and o["id"] not in input_ids
    }
    for obj in delivered:
        key = (obj["id"], obj.get("modified", ""))
        if obj["id"] in input_ids:
            source = versions[key]
            if obj["type"] != "marking-definition" or obj["id"] not in RANK:
                assert obj == source, "delivered originals are never changed"
            # A revocation may reach an earlier receiver up to the level it had before.
            allowed = max(rank, earlier) if obj.get("revoked") is True else rank
            _check_original(obj, data, directory, recipient, allowed, default)
        elif obj["id"] == BROKER_IDENTITY:
            continue
        elif obj["id"] in derived_from:
            original_id = derived_from[obj["id"]]
            assert original_id.partition("--")[0] not in SCO_TYPES
            originals_of = [o for k, o in versions.items() if k[0] == original_id]
            assert any(_copy_of(obj, o, data, directory, recipient, rank) for o in originals_of)
        else:
            assert obj["type"] == "relationship"
            assert obj["source_ref"] in derived_from
    # Closure, and no foreign or withheld id anywhere (ids, bare UUIDs, free text).
    for obj in delivered:
        own = {_uuid(obj["id"])}
        if obj["id"] in derived_from:
            own.add(_uuid(derived_from[obj["id"]]))
        if obj.get("source_ref") in derived_from:
            own.add(_uuid(obj["target_ref"]))
        for found in UUID_RE.findall(json.dumps(obj)):
            mentioned = by_uuid.get(found.lower())
            if mentioned is None or found.lower() in own:
                continue
            assert mentioned in delivered_ids, f"{obj['type']} mentions a withheld object"
    for withheld in input_ids - delivered_ids:
        if withheld.partition("--")[0] in SCO_TYPES:
            assert _uuid(withheld) not in json.dumps(view.bundle).lower()
    assert set(originals) <= input_ids


def _check_original(
    obj: dict[str, Any],
    data: dict[str, Any],
    directory: Directory,
    recipient: str,
    rank: int,
    default: int,
) -> None:
    if obj["type"] == "marking-definition" and obj["id"] in RANK:
        return
    refs = obj.get("object_marking_refs", [])
    assert _cleared(refs, data, directory, recipient, rank)
    for entry in obj.get("granular_markings", []):
        if "marking_ref" in entry:
            assert _cleared([entry["marking_ref"]], data, directory, recipient, rank)
    if obj["type"] in {"marking-definition", "extension-definition"}:
        return
    if not any(ref in RANK for ref in refs):
        assert default <= rank, "unmarked objects take at least the default"
        for container in data["objects"]:
            if container["type"] in CONTAINERS and obj["id"] in container.get("object_refs", []):
                levels = [RANK[r] for r in container.get("object_marking_refs", []) if r in RANK]
                assert max(levels, default=0) <= rank, "containers raise unmarked contents"


def _copy_of(
    made: dict[str, Any],
    original: dict[str, Any],
    data: dict[str, Any],
    directory: Directory,
    recipient: str,
    rank: int,
) -> bool:
    if made.get("object_marking_refs") != original.get("object_marking_refs"):
        return False
    if not _cleared(original.get("object_marking_refs", []), data, directory, recipient, rank):
        return False
    restricted: set[str] = set()
    for entry in original.get("granular_markings", []):
        if "marking_ref" in entry and not _cleared(
            [entry["marking_ref"]], data, directory, recipient, rank
        ):
            restricted |= {s.partition(".")[0] for s in entry["selectors"]}
    for key, value in made.items():
        if key in {"id", "created", "modified", "created_by_ref"}:
            continue
        if key in restricted or key not in original:
            return False
        if key == "object_refs":
            if not set(value) <= set(original[key]):
                return False
        elif key == "granular_markings":
            if not all(
                _cleared([e["marking_ref"]], data, directory, recipient, rank)
                for e in value
                if "marking_ref" in e
            ):
                return False
        elif value != original[key]:
            return False
    return True


# -- properties ----------------------------------------------------------------------------


class TestViewProperties:
    @SETTINGS
    @given(
        data=bundles(),
        directory=communities(),
        submission=submissions(),
        earlier=st.sampled_from([None, *Tlp]),
    )
    def test_no_recipient_gets_anything_above_entitlement_and_views_are_valid_and_closed(
        self,
        data: dict[str, Any],
        directory: Directory,
        submission: Submission,
        earlier: Tlp | None,
    ) -> None:
        everyone = [o.id for o in directory.organisations if o.id != submission.originator]
        # Every recipient is said to have received every id before, at one level.
        received = {
            recipient: {o["id"]: earlier for o in data["objects"]} for recipient in everyone
        }
        views = evaluate_all(
            data,
            directory=directory,
            submission=submission,
            recipients=everyone,
            now=NOW,
            digest_key=KEY,
            received_before=received,
        )
        for recipient, view in views.items():
            _check_view(
                data,
                view,
                directory,
                submission,
                recipient,
                -1 if earlier is None else earlier.rank,
            )

    @SETTINGS
    @given(
        data=bundles(),
        directory=communities(),
        submission=submissions(),
        seed=st.integers(0, 2**32 - 1),
    )
    def test_views_deterministic_and_independent_of_object_order(
        self, data: dict[str, Any], directory: Directory, submission: Submission, seed: int
    ) -> None:
        shuffled = copy.deepcopy(data)
        random.Random(seed).shuffle(shuffled["objects"])
        for recipient in recipients(directory, submission):
            first = evaluate(
                data,
                directory=directory,
                submission=submission,
                recipient=recipient,
                now=NOW,
                digest_key=KEY,
            )
            second = evaluate(
                shuffled,
                directory=directory,
                submission=submission,
                recipient=recipient,
                now=NOW,
                digest_key=KEY,
            )
            assert first == second

    @SETTINGS
    @given(data=bundles(clear_only=True), directory=communities(), submission=submissions())
    def test_clear_only_bundles_reach_every_subscriber_whole(
        self, data: dict[str, Any], directory: Directory, submission: Submission
    ) -> None:
        expected = {
            (o["id"], o.get("modified", "")): o
            for o in data["objects"]
            if o["type"] not in {"marking-definition", "extension-definition"}
            or any(o["id"] in json.dumps(other) for other in data["objects"] if other is not o)
        }
        for recipient in recipients(directory, submission):
            view = evaluate(
                data,
                directory=directory,
                submission=submission,
                recipient=recipient,
                now=NOW,
                digest_key=KEY,
            )
            assert view.derived == 0
            got = {
                (o["id"], o.get("modified", ""))
                for o in (view.bundle or {"objects": []})["objects"]
            }
            assert got == set(expected)
