"""The demo community and its bundles: realistic, deterministic, valid STIX 2.1."""

from __future__ import annotations

import uuid
from typing import Any

import orjson
import stix2

__all__ = ["TLP2", "demo_bundles", "demo_directory"]

TLP2 = {
    "clear": "marking-definition--94868c89-83c2-464b-929b-a1a8aa3c8487",
    "green": "marking-definition--bab4a63c-aed9-4cf5-a766-dfca5abac2bb",
    "amber": "marking-definition--55d920b0-5e8b-4f79-9ee9-91f868d9b421",
    "amber+strict": "marking-definition--939a9414-2ddd-4d32-a0cd-375ea402b003",
    "red": "marking-definition--e828b379-4e03-4974-9ac4-e53a884c97c1",
}
_NS = uuid.UUID("6f1c3e3a-9a43-4d55-8f7b-8d1c2a51a7e0")
_T = "2026-11-02T09:30:00.000Z"

MEMBERS = {
    "northbank": "Northbank Group (retail bank)",
    "paystream": "PayStream (payment processor)",
    "ledgerguard": "LedgerGuard (crypto exchange security)",
}
PARTNERS = {"interpol": "INTERPOL Cybercrime Directorate", "ec3": "Europol EC3"}
AUDITORS = {"audit-office": "Community audit office"}


def _id(kind: str, name: str) -> str:
    return f"{kind}--{uuid.uuid5(_NS, name)}"


def demo_directory(
    public_keys: dict[str, list[dict[str, Any]]], broker_keys: list[dict[str, Any]]
) -> dict[str, Any]:
    """The directory document (as TOML would parse it) for the demo community."""
    orgs: list[dict[str, Any]] = []
    for kind, names in (("member", MEMBERS), ("partner", PARTNERS), ("auditor", AUDITORS)):
        for org_id, name in names.items():
            orgs.append(
                {
                    "id": org_id,
                    "name": name,
                    "kind": kind,
                    "in_community": True,
                    # Partners may also read their views over TAXII (demo --serve).
                    "taxii_read": kind == "partner",
                    "stix_identity": _id("identity", org_id),
                    "keys": [{"jwk": jwk, "use": jwk["use"]} for jwk in public_keys[org_id]],
                }
            )
    return {
        "community": {
            "id": "atlas-demo",
            "name": "Atlas demo community",
            "partners_in_community": True,
        },
        "broker": {
            "id": "atlas-broker",
            "name": "Atlas broker",
            "stix_identity": _id("identity", "atlas-broker"),
            "keys": [{"jwk": jwk, "use": "sig"} for jwk in broker_keys],
        },
        "organisations": orgs,
        "groups": [
            {
                "id": "op-tanglebot",
                "name": "Operation TangleBot",
                "members": ["northbank", "paystream", "ec3"],
            }
        ],
        "subscriptions": [
            {"recipient": "interpol", "originators": ["*"]},
            {"recipient": "ec3", "originators": ["*"]},
        ],
    }


def _d(obj: Any) -> dict[str, Any]:
    return orjson.loads(obj.serialize())  # type: ignore[no-any-return]


def _identity(org: str, tlp: str = "clear") -> dict[str, Any]:
    name = {**MEMBERS, **PARTNERS}[org]
    return _d(
        stix2.v21.Identity(
            id=_id("identity", org),
            name=name,
            identity_class="organization",
            created=_T,
            modified=_T,
            object_marking_refs=[TLP2[tlp]],
        )
    )


def _bundle(name: str, objects: list[dict[str, Any]]) -> dict[str, Any]:
    return {"type": "bundle", "id": _id("bundle", name), "objects": objects}


def demo_bundles() -> list[tuple[str, str | None, dict[str, Any], str]]:
    """(originator, --to, bundle, description) for each demo submission."""
    m = TLP2
    nb = _id("identity", "northbank")
    tangle = _d(
        stix2.v21.Malware(
            id=_id("malware", "tanglebot"),
            name="TangleBot",
            is_family=True,
            malware_types=["trojan", "spyware"],
            created=_T,
            modified=_T,
            created_by_ref=nb,
            object_marking_refs=[m["clear"]],
        )
    )
    domain = _d(
        stix2.v21.DomainName(
            value="secure-login-northbank.example", object_marking_refs=[m["green"]]
        )
    )
    ind = _d(
        stix2.v21.Indicator(
            id=_id("indicator", "nb-phish"),
            name="Phishing domain",
            pattern="[domain-name:value = 'secure-login-northbank.example']",
            pattern_type="stix",
            valid_from=_T,
            created=_T,
            modified=_T,
            created_by_ref=nb,
            indicator_types=["malicious-activity"],
            object_marking_refs=[m["green"]],
        )
    )
    infra = _d(
        stix2.v21.Infrastructure(
            id=_id("infrastructure", "nb-kit"),
            name="Phishing kit hosting",
            created=_T,
            modified=_T,
            infrastructure_types=["phishing"],
            created_by_ref=nb,
            object_marking_refs=[m["green"]],
        )
    )
    rel1 = _d(
        stix2.v21.Relationship(
            id=_id("relationship", "nb-r1"),
            relationship_type="indicates",
            source_ref=ind["id"],
            target_ref=tangle["id"],
            created=_T,
            modified=_T,
            created_by_ref=nb,
            object_marking_refs=[m["green"]],
        )
    )
    rel2 = _d(
        stix2.v21.Relationship(
            id=_id("relationship", "nb-r2"),
            relationship_type="consists-of",
            source_ref=infra["id"],
            target_ref=domain["id"],
            created=_T,
            modified=_T,
            created_by_ref=nb,
            object_marking_refs=[m["green"]],
        )
    )
    b1 = _bundle("b1", [_identity("northbank"), tangle, domain, ind, infra, rel1, rel2])

    ps = _id("identity", "paystream")
    ip = _d(stix2.v21.IPv4Address(value="203.0.113.77", object_marking_refs=[m["amber"]]))
    c2 = _d(
        stix2.v21.Infrastructure(
            id=_id("infrastructure", "ps-c2"),
            name="TangleBot C2",
            infrastructure_types=["command-and-control"],
            created=_T,
            modified=_T,
            created_by_ref=ps,
            object_marking_refs=[m["amber"]],
        )
    )
    rel3 = _d(
        stix2.v21.Relationship(
            id=_id("relationship", "ps-r1"),
            relationship_type="consists-of",
            source_ref=c2["id"],
            target_ref=ip["id"],
            created=_T,
            modified=_T,
            created_by_ref=ps,
            object_marking_refs=[m["amber"]],
        )
    )
    forged = {
        "type": "marking-definition",
        "spec_version": "2.1",
        "id": _id("marking-definition", "forged-green"),
        "created": _T,
        "name": "TLP:GREEN",
        "definition_type": "tlp",
        "definition": {"tlp": "green"},
    }
    mule = _d(
        stix2.v21.Indicator(
            id=_id("indicator", "ps-mule"),
            name="Money-mule account",
            pattern="[bank-account:iban = 'XX00TEST0000000000']",
            pattern_type="stix",
            valid_from=_T,
            created=_T,
            modified=_T,
            created_by_ref=ps,
            indicator_types=["attribution"],
            object_marking_refs=[forged["id"]],
            allow_custom=True,
        )
    )
    report = _d(
        stix2.v21.Report(
            id=_id("report", "ps-report"),
            name="TangleBot C2 cluster",
            published=_T,
            created=_T,
            modified=_T,
            created_by_ref=ps,
            report_types=["threat-report"],
            object_refs=[c2["id"], ip["id"], rel3["id"]],
            object_marking_refs=[m["amber"]],
        )
    )
    b2 = _bundle("b2", [_identity("paystream"), c2, ip, rel3, report, forged, mule])

    lg = _id("identity", "ledgerguard")
    actor = _d(
        stix2.v21.ThreatActor(
            id=_id("threat-actor", "lg-actor"),
            name="Cash-out crew 7",
            threat_actor_types=["crime-syndicate"],
            created=_T,
            modified=_T,
            created_by_ref=lg,
            object_marking_refs=[m["red"]],
        )
    )
    wallet = _d(
        stix2.v21.Indicator(
            id=_id("indicator", "lg-wallet"),
            name="Laundering wallet",
            pattern="[cryptocurrency-wallet:address = 'bc1qdemo0000']",
            pattern_type="stix",
            valid_from=_T,
            created=_T,
            modified=_T,
            created_by_ref=lg,
            indicator_types=["attribution"],
            object_marking_refs=[m["red"]],
            allow_custom=True,
        )
    )
    note = _d(
        stix2.v21.Note(
            id=_id("note", "lg-note"),
            content="Seizure window: next 72 hours.",
            object_refs=[actor["id"]],
            created=_T,
            modified=_T,
            created_by_ref=lg,
            object_marking_refs=[m["amber+strict"]],
        )
    )
    rel4 = _d(
        stix2.v21.Relationship(
            id=_id("relationship", "lg-r1"),
            relationship_type="attributed-to",
            source_ref=wallet["id"],
            target_ref=actor["id"],
            created=_T,
            modified=_T,
            created_by_ref=lg,
            object_marking_refs=[m["red"]],
        )
    )
    b3 = _bundle("b3", [_identity("ledgerguard"), actor, wallet, rel4, note])

    secret = _d(
        stix2.v21.ThreatActor(
            id=_id("threat-actor", "nb-insider"),
            name="Insider lead",
            threat_actor_types=["insider-disgruntled"],
            created=_T,
            modified=_T,
            created_by_ref=nb,
            object_marking_refs=[m["red"]],
        )
    )
    b4 = _bundle("b4", [secret])
    return [
        ("northbank", None, b1, "phishing infrastructure, CLEAR and GREEN"),
        (
            "paystream",
            "group:op-tanglebot",
            b2,
            "C2 cluster, AMBER to Operation TangleBot, one object under an unknown marking",
        ),
        ("ledgerguard", "org:interpol", b3, "attribution, RED and AMBER+STRICT named to INTERPOL"),
        ("northbank", None, b4, "insider lead, RED with nobody named"),
    ]
