"""Test data for policy tests: a community directory document and plain-dict STIX objects."""

from __future__ import annotations

import copy
import hashlib
import hmac
import json
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from stix2validator import ValidationOptions, validate_instance

from policy import View

KEY = b"test-digest-key-0123456789abcdef"
NOW = datetime(2024, 6, 1, 12, 30, 15, 123456, tzinfo=UTC)
TS = "2024-05-01T00:00:00.000Z"

TLP1 = {
    "white": "marking-definition--613f2e26-407d-48c7-9eca-b8e91df99dc9",
    "green": "marking-definition--34098fce-860f-48ae-8e50-ebd3cc5e41da",
    "amber": "marking-definition--f88d31f6-486f-44da-b317-01333bde0b82",
    "red": "marking-definition--5e57c739-391a-4eb3-b6be-7d15ca92d5ed",
}
TLP2 = {
    "clear": "marking-definition--94868c89-83c2-464b-929b-a1a8aa3c8487",
    "green": "marking-definition--bab4a63c-aed9-4cf5-a766-dfca5abac2bb",
    "amber": "marking-definition--55d920b0-5e8b-4f79-9ee9-91f868d9b421",
    "amber+strict": "marking-definition--939a9414-2ddd-4d32-a0cd-375ea402b003",
    "red": "marking-definition--e828b379-4e03-4974-9ac4-e53a884c97c1",
}
PAP_GREEN = "marking-definition--c43594d1-4b11-4c59-93ab-1c9b14d53ce9"
NO_LE = "marking-definition--0c3a2b1e-7f55-4d7a-9a1e-6b2c2f3d4e5f"
"""A statement marking the community registered a rule for: no law enforcement."""
BANK_A_IDENTITY = "identity--6c5e3a55-8f0f-4f8e-9d55-0c4f2a1b9e01"
BROKER_IDENTITY = "identity--8c3d5f0e-4c8b-5a44-9a8e-2f4f7b0d6a11"


def community_doc() -> dict[str, Any]:
    return {
        "community": {"id": "atlas", "name": "Atlas", "partners_in_community": False},
        "organisations": [
            {
                "id": "bank-a",
                "name": "Bank A",
                "kind": "member",
                "stix_identity": BANK_A_IDENTITY,
            },
            {"id": "bank-b", "name": "Bank B", "kind": "member"},
            {"id": "vendor-c", "name": "Vendor C", "kind": "member"},
            {"id": "lea-1", "name": "LEA 1", "kind": "partner"},
            {"id": "lea-2", "name": "LEA 2", "kind": "partner", "in_community": False},
            {"id": "outsider", "name": "Outsider", "kind": "member", "in_community": False},
            {"id": "auditor", "name": "Auditor", "kind": "auditor"},
        ],
        "groups": [
            {"id": "lea", "members": ["lea-1", "lea-2"]},
            {"id": "banks", "members": ["bank-a", "bank-b"]},
        ],
        "subscriptions": [
            {"recipient": "bank-b", "originators": ["*"]},
            {"recipient": "vendor-c", "originators": ["bank-a"]},
            {"recipient": "lea-1", "originators": ["*"]},
            {"recipient": "lea-2", "groups": ["banks"]},
            {"recipient": "outsider", "feeds": ["ioc"]},
            {"recipient": "auditor", "originators": ["*"]},
        ],
        "statement_rules": [
            {"marking": NO_LE, "deny_kinds": ["partner"], "description": "no law enforcement"}
        ],
    }


class Stix:
    """Builds plain-dict STIX 2.1 objects with deterministic ids."""

    def __init__(self) -> None:
        self._n = 0

    def new_id(self, kind: str) -> str:
        self._n += 1
        return f"{kind}--{uuid.UUID(int=(0x1234 << 64) + self._n, version=4)}"

    def sdo(self, kind: str, tlp: str | None = None, **props: Any) -> dict[str, Any]:
        obj: dict[str, Any] = {
            "type": kind,
            "spec_version": "2.1",
            "id": props.pop("id", None) or self.new_id(kind),
            "created": TS,
            "modified": TS,
        }
        if tlp is not None:
            obj["object_marking_refs"] = [TLP2[tlp]]
        obj.update(props)
        return obj

    def indicator(self, tlp: str | None = "clear", **props: Any) -> dict[str, Any]:
        defaults = {
            "name": "bad domain",
            "pattern": "[domain-name:value = 'evil.example']",
            "pattern_type": "stix",
            "valid_from": TS,
        }
        return self.sdo("indicator", tlp, **{**defaults, **props})

    def malware(self, tlp: str | None = "clear", **props: Any) -> dict[str, Any]:
        return self.sdo("malware", tlp, **{"name": "evilbot", "is_family": True, **props})

    def identity(self, tlp: str | None = "clear", **props: Any) -> dict[str, Any]:
        return self.sdo(
            "identity", tlp, **{"name": "ACME", "identity_class": "organization", **props}
        )

    def relationship(
        self, source: dict[str, Any], target: dict[str, Any], tlp: str | None = "clear", **p: Any
    ) -> dict[str, Any]:
        props = {
            "relationship_type": "indicates",
            "source_ref": source["id"],
            "target_ref": target["id"],
            **p,
        }
        return self.sdo("relationship", tlp, **props)

    def report(
        self, refs: Iterable[dict[str, Any]], tlp: str | None = "clear", **p: Any
    ) -> dict[str, Any]:
        return self.sdo(
            "report",
            tlp,
            **{"name": "report", "published": TS, "object_refs": [o["id"] for o in refs], **p},
        )

    def grouping(
        self, refs: Iterable[dict[str, Any]], tlp: str | None = "clear", **p: Any
    ) -> dict[str, Any]:
        return self.sdo(
            "grouping",
            tlp,
            **{"context": "suspicious-activity", "object_refs": [o["id"] for o in refs], **p},
        )

    def note(
        self, refs: Iterable[dict[str, Any]], tlp: str | None = "clear", **p: Any
    ) -> dict[str, Any]:
        return self.sdo(
            "note", tlp, **{"content": "seen", "object_refs": [o["id"] for o in refs], **p}
        )

    def ipv4(self, value: str, tlp: str | None = "clear", **props: Any) -> dict[str, Any]:
        namespace = uuid.UUID("00abedb4-aa42-466c-9c01-fed23315a9b7")
        obj: dict[str, Any] = {
            "type": "ipv4-addr",
            "spec_version": "2.1",
            "id": f"ipv4-addr--{uuid.uuid5(namespace, json.dumps({'value': value}))}",
            "value": value,
        }
        if tlp is not None:
            obj["object_marking_refs"] = [TLP2[tlp]]
        obj.update(props)
        return obj

    def statement(self, text: str = "Copyright ACME", **props: Any) -> dict[str, Any]:
        obj: dict[str, Any] = {
            "type": "marking-definition",
            "spec_version": "2.1",
            "id": props.pop("id", None) or self.new_id("marking-definition"),
            "created": TS,
            "definition_type": "statement",
            "definition": {"statement": text},
        }
        obj.update(props)
        return obj


def bundle(*objects: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "bundle",
        "id": "bundle--0d9d6e6a-2f6e-4d6b-8d2a-3e3b8f0c0b01",
        "objects": [copy.deepcopy(o) for o in objects],
    }


def ids_of(view: View) -> set[str]:
    if view.bundle is None:
        return set()
    return {o["id"] for o in view.bundle["objects"]}


def reasons_of(view: View) -> dict[str, str]:
    """object type -> reason, for views whose input has one object per type."""
    return {d.object_type: d.reason for d in view.decisions}


def objects_of(view: View) -> dict[str, dict[str, Any]]:
    if view.bundle is None:
        return {}
    return {o["id"]: o for o in view.bundle["objects"]}


def decision_for(view: View, obj: dict[str, Any]) -> Any:
    """The decision about ``obj`` (found through its keyed digest)."""
    digest = hmac.new(
        KEY, f"{obj['id']}|{obj.get('modified', '')}".encode(), hashlib.sha256
    ).hexdigest()
    matches = [d for d in view.decisions if d.object_digest == digest]
    assert len(matches) == 1, f"no single decision for {obj['id']}"
    return matches[0]


def assert_valid_stix(view: View) -> None:
    """The view is a valid STIX 2.1 bundle according to stix2-validator."""
    assert view.bundle is not None
    result = validate_instance(view.bundle, ValidationOptions(version="2.1"))
    assert result.is_valid, [str(e) for e in result.errors]
