"""The hostile input corpus: every case, what it sends, and how it must be answered.

The corpus is data plus deterministic code: the malformed JSON documents are stored under
``corpus/malformed-json/`` (add a file there to add a case on both paths); everything else
is generated here from fixed names (object ids are UUIDv5 of the case name), so two runs
send the same bytes apart from the keys, which are made fresh per run, and the clock.

A case goes one of two ways in:

- ``nats``: the bytes a hostile participant publishes on ``atlas.submit.<org>`` itself,
  bypassing our client (the router is the last line). Where our own publisher would refuse
  the bundle first, ``client`` names the error ``make_submission`` must raise too.
- ``taxii``: an HTTP POST to the TAXII front (real HTTP on loopback).

and must come out one of these ways (``Expect.kind``):

========== =====================================================================
refused    a ``submission`` log entry, ``result: refused``, with ``reason``; the
           router's ``submission.refused`` warning names the problem (``message``)
withheld   accepted, but every ``hostile`` object is withheld from every recipient
           with ``reason`` (the design's fail-closed answer to bad markings); a
           clean object of the same bundle is delivered, so the withholding is
           per object and not an accident
neutralised accepted; the forged copy of a well-known TLP definition is never
           delivered, the broker's canonical copy travels instead (by design)
client     the publish itself fails: ``error`` raised, ``message`` in it, nothing stored
http       the TAXII front answers ``status`` with a TAXII error whose description
           matches ``message``; nothing is submitted
taxii-*    202 and a status record; then as ``refused`` / ``withheld`` above, the
           status saying ``refused by the broker: <reason>`` for refusals
========== =====================================================================
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import nats.errors
import nats.js.errors
import orjson
from cryptography.hazmat.primitives import hashes, hmac
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from broker._config import LimitSettings
from keys import PrivateKey, sign_submission
from tests.conftest import TLP2, stix_identity

CORPUS = Path(__file__).parent / "corpus"
NS = uuid.UUID("7b0d3c1e-5a4f-4e8b-9c2d-1f6a8e4b3c20")
T = "2026-11-02T09:30:00.000Z"
MAX_BUNDLE_BYTES = LimitSettings().max_bundle_bytes  # the default, used by the broker
TLP1_RED = "marking-definition--5e57c739-391a-4eb3-b6be-7d15ca92d5ed"
TLP2_EXT = "extension-definition--60a3c5c5-0d10-413e-aab3-9e08dde9e88d"
DROP = object()
"""An envelope or header value of DROP leaves the member out."""

Kind = Literal[
    "refused",
    "withheld",
    "neutralised",
    "client",
    "http",
    "taxii-refused",
    "taxii-withheld",
    "taxii-neutralised",
]


@dataclass(frozen=True)
class Expect:
    kind: Kind
    reason: str = ""
    message: str = ""
    """A regular expression the error, description or refusal detail must match."""
    status: int = 0
    error: type[BaseException] | tuple[type[BaseException], ...] = ()


@dataclass
class Keys:
    """What a hostile party may hold: its own keys, and public ones."""

    orgs: dict[str, PrivateKey]
    raw: dict[str, ed25519.Ed25519PrivateKey]
    """The same members' keys as ``cryptography`` objects, for hand-made JWS headers."""
    broker: PrivateKey
    intruder: PrivateKey
    intruder_es256: ec.EllipticCurvePrivateKey
    enc_kid: dict[str, str]
    revoked: ed25519.Ed25519PrivateKey
    revoked_kid: str


@dataclass
class Ctx:
    """Run-time inputs of the builders: keys, the clock, what was accepted before."""

    keys: Keys
    now: int
    before: dict[str, bytes] = field(default_factory=dict)
    """Tokens of submissions accepted before the corpus (for replays), by name."""
    package: bytes = b""
    """A sealed package (JWE) delivered before the corpus."""


@dataclass(frozen=True)
class Case:
    id: str
    category: str
    path: Literal["nats", "taxii"]
    expect: Expect
    token: Callable[[Ctx], bytes] | None = None
    subject_org: str = "bank-a"
    client: tuple[bytes, str] | None = None
    """(bundle bytes, message): our publisher must refuse them with SubmissionError."""
    body: bytes | Callable[[Ctx], bytes] = b""
    org: str = "bank-a"
    collection: str = "community"
    headers: dict[str, str] = field(default_factory=dict)
    auth: tuple[str, str] | None = None
    """(user, token) instead of the org's own credentials; ("", token) means Bearer."""
    hostile: tuple[tuple[str, str], ...] = ()
    """(id, modified) of the objects that must be withheld from everyone."""
    xfail: str = ""


def uid(name: str) -> str:
    return str(uuid.uuid5(NS, name))


def sid(name: str) -> str:
    return uuid.uuid5(NS, "sid:" + name).hex


def b64(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


def sdo(kind: str, key: str, tlp: str | None = "clear", **props: Any) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "type": kind,
        "spec_version": "2.1",
        "id": f"{kind}--{uid(key)}",
        "created": T,
        "modified": T,
    }
    if tlp is not None:
        obj["object_marking_refs"] = [TLP2.get(tlp, tlp)]
    obj.update(props)
    return obj


def ind(key: str, tlp: str | None = "clear", **props: Any) -> dict[str, Any]:
    base = {"name": key, "pattern": "[domain-name:value = 'x.example']", "pattern_type": "stix"}
    return sdo("indicator", key, tlp, valid_from=T, **{**base, **props})


def bundle(name: str, *objects: Any, **extra: Any) -> dict[str, Any]:
    return {
        "type": "bundle",
        "id": f"bundle--{uid('bundle:' + name)}",
        "objects": list(objects),
        **extra,
    }


def envelope(ctx: Ctx, name: str, data: Any, **over: Any) -> dict[str, Any]:
    env: dict[str, Any] = {
        "v": 1,
        "sid": sid(name),
        "org": "bank-a",
        "iat": ctx.now,
        "to": [],
        "feed": None,
        "bundle": data,
    }
    env.update(over)
    return {k: v for k, v in env.items() if v is not DROP}


def signed(ctx: Ctx, payload: bytes, *, by: str = "bank-a", org: str = "bank-a") -> bytes:
    key = ctx.keys.broker if by == "broker" else ctx.keys.orgs[by]
    return sign_submission(payload, key, org=org, now=ctx.now).encode()


def hand_jws(ctx: Ctx, header: dict[str, Any], payload: bytes, *, by: str = "bank-a") -> bytes:
    """A compact JWS with any header, validly signed by a member's Ed25519 key."""
    head: dict[str, Any] = {"alg": "EdDSA", "kid": ctx.keys.orgs[by].public.thumbprint}
    head.update({"typ": "atlas-sub+jws", "org": by, "iat": ctx.now})
    head.update(header)
    head = {k: v for k, v in head.items() if v is not DROP}
    signing_input = b64(orjson.dumps(head)) + b"." + b64(payload)
    return signing_input + b"." + b64(ctx.keys.raw[by].sign(signing_input))


def splice(ctx: Ctx, name: str, raw: bytes, **over: Any) -> bytes:
    """An envelope whose ``bundle`` is ``raw`` as is (which may be broken JSON)."""
    marker = b'"@@BUNDLE@@"'
    text = orjson.dumps(envelope(ctx, name, "@@BUNDLE@@", **over))
    return text.replace(marker, raw)


def splice_token(name: str, raw: bytes) -> Callable[[Ctx], bytes]:
    return lambda ctx: signed(ctx, splice(ctx, name, raw))


def const_token(data: bytes) -> Callable[[Ctx], bytes]:
    return lambda ctx: data


def good_token(name: str, data: Any, **over: Any) -> Callable[[Ctx], bytes]:
    return lambda ctx: signed(ctx, orjson.dumps(envelope(ctx, name, data, **over)))


def json_token(name: str, data: Any, **over: Any) -> Callable[[Ctx], bytes]:
    """Like good_token, with the stdlib encoder (for values orjson refuses to write)."""
    return lambda ctx: signed(ctx, json.dumps(envelope(ctx, name, data, **over)).encode())


def refused(reason: str, message: str = "") -> Expect:
    return Expect("refused", reason=reason, message=message)


def taxii_refused(reason: str) -> Expect:
    return Expect("taxii-refused", reason=reason)


def http(status: int, message: str) -> Expect:
    return Expect("http", status=status, message=message)


def nested(depth: int, leaf: Any = "x", *, as_dict: bool = False) -> Any:
    """``depth`` containers around ``leaf``."""
    value = leaf
    for _ in range(depth):
        value = {"k": value} if as_dict else [value]
    return value


def nested_text(depth: int, *, as_dict: bool = False) -> bytes:
    """``nested(depth)`` as JSON text, for depths no encoder would write."""
    if as_dict:
        return b'{"k":' * depth + b'"x"' + b"}" * depth
    return b"[" * depth + b'"x"' + b"]" * depth


def taxii_body(*objects: Any) -> bytes:
    return orjson.dumps({"objects": list(objects)})


# ---------------------------------------------------------------- malformed JSON


def _malformed() -> list[Case]:
    out: list[Case] = []
    for path in sorted((CORPUS / "malformed-json").iterdir()):
        raw = path.read_bytes()
        name = f"malformed-json/{path.stem}"
        out.append(
            Case(
                f"nats/{name}",
                "malformed JSON",
                "nats",
                refused("malformed", "Invalid JSON"),
                token=splice_token(name, raw),
                client=(raw, "not JSON"),
            )
        )
        out.append(
            Case(
                f"taxii/{name}",
                "malformed JSON",
                "taxii",
                http(400, "not JSON"),
                body=raw,
            )
        )
    # The JWS itself is not a JWS: refused before anything is read.
    garbage: dict[str, bytes] = {
        "empty-message": b"",
        "plain-json": b'{"v": 1, "org": "bank-a"}',
        "two-parts": b"eyJhbGciOiJFZERTQSJ9.e30",
        "four-parts": b"eyJhbGciOiJFZERTQSJ9.e30.e30.e30",
        "jwe-shaped": b"a.b.c.d.e",
        "header-not-base64": b"!!!.e30.AAAA",
        "header-not-json": b64(b"not json") + b".e30.AAAA",
        "header-json-array": b64(b"[1, 2]") + b".e30.AAAA",
        "header-json-string": b64(b'"EdDSA"') + b".e30.AAAA",
        "payload-not-base64": b64(b'{"alg": "EdDSA", "kid": "x"}') + b".***.AAAA",
        "random-bytes": bytes(range(256)) * 4,
        "nul-bytes": b"\x00" * 1024,
    }
    for name, data in garbage.items():
        out.append(
            Case(
                f"nats/not-a-jws/{name}",
                "malformed JSON",
                "nats",
                refused("bad-signature", "submission signature invalid"),
                token=const_token(data),
            )
        )
    envelopes: dict[str, bytes] = {
        "top-level-list": b"[]",
        "top-level-string": b'"objects"',
        "top-level-null": b"null",
        "no-objects": b"{}",
        "objects-empty": b'{"objects": []}',
        "objects-object": b'{"objects": {"type": "indicator"}}',
        "objects-string": b'{"objects": "indicator"}',
        "objects-null": b'{"objects": null}',
    }
    for name, data in envelopes.items():
        out.append(
            Case(
                f"taxii/malformed-envelope/{name}",
                "malformed JSON",
                "taxii",
                http(400, "TAXII envelope"),
                body=data,
            )
        )
    return out


# ---------------------------------------------------------------- wrong types


_ENVELOPE_TYPES: dict[str, tuple[dict[str, Any], str, str]] = {
    # name: (envelope changes, reason, message)
    "v-string": ({"v": "one"}, "malformed", "envelope v"),
    "v-2": ({"v": 2}, "malformed", "envelope v"),
    "v-0": ({"v": 0}, "malformed", "envelope v"),
    "v-missing": ({"v": DROP}, "malformed", "envelope v"),
    "sid-number": ({"sid": 12345}, "malformed", "envelope sid"),
    "sid-uppercase": ({"sid": "A" * 32}, "malformed", "envelope sid"),
    "sid-31-hex": ({"sid": "a" * 31}, "malformed", "envelope sid"),
    "sid-path": ({"sid": "../../etc/passwd"}, "malformed", "envelope sid"),
    "sid-missing": ({"sid": DROP}, "malformed", "envelope sid"),
    # "$" would match before a final newline, which then went into subjects and keys.
    "sid-trailing-newline": ({"sid": "a" * 32 + "\n"}, "malformed", "envelope sid"),
    "to-trailing-newline": ({"to": ["org:lea-1\n"]}, "malformed", "not org:<id> or group:<id>"),
    "org-number": ({"org": 7}, "malformed", "envelope org"),
    "org-null": ({"org": None}, "malformed", "envelope org"),
    "org-missing": ({"org": DROP}, "malformed", "envelope org"),
    "iat-word": ({"iat": "now"}, "malformed", "envelope iat"),
    "iat-fraction": ({"iat": 1.5}, "malformed", "envelope iat"),
    "iat-null": ({"iat": None}, "malformed", "envelope iat"),
    "iat-missing": ({"iat": DROP}, "malformed", "envelope iat"),
    "iat-boolean": ({"iat": True}, "stale", "older than"),
    "to-string": ({"to": "org:lea-1"}, "malformed", "envelope to"),
    "to-number-item": ({"to": [5]}, "malformed", "envelope to"),
    "to-bare-id": ({"to": ["lea-1"]}, "malformed", "not org:<id> or group:<id>"),
    "to-uppercase": ({"to": ["org:LEA-1"]}, "malformed", "not org:<id> or group:<id>"),
    "to-wildcard": ({"to": ["group:*"]}, "malformed", "not org:<id> or group:<id>"),
    "to-object": ({"to": {"org": "lea-1"}}, "malformed", "envelope to"),
    "feed-number": ({"feed": 5}, "malformed", "envelope feed"),
    "feed-list": ({"feed": ["ioc"]}, "malformed", "envelope feed"),
    "via-unknown": ({"via": "smtp"}, "malformed", "envelope via"),
    "via-number": ({"via": 1}, "malformed", "envelope via"),
    "bundle-list": ({"bundle": []}, "malformed", "envelope bundle"),
    "bundle-string": ({"bundle": "bundle"}, "malformed", "envelope bundle"),
    "bundle-null": ({"bundle": None}, "malformed", "envelope bundle"),
    "bundle-missing": ({"bundle": DROP}, "malformed", "envelope bundle"),
    "extra-member": ({"x_admin": True}, "malformed", "Extra inputs are not permitted"),
}


def _bundle_types() -> dict[str, tuple[Any, str]]:
    """Bundles the STIX gate refuses: (bundle, message)."""
    good = ind("wrong-types/good")

    def with_obj(name: str, obj: Any) -> Any:
        return bundle(name, obj)

    def changed(name: str, **props: Any) -> Any:
        obj = {**ind(name), **props}
        return bundle(name, {k: v for k, v in obj.items() if v is not DROP})

    return {
        "bundle-type-missing": (
            {k: v for k, v in bundle("b1").items() if k != "type"},
            "'type' is None",
        ),
        "bundle-type-capitalised": ({**bundle("b2"), "type": "Bundle"}, "expected 'bundle'"),
        "bundle-type-number": ({**bundle("b3"), "type": 1}, "expected 'bundle'"),
        "bundle-id-missing": (
            {k: v for k, v in bundle("b4").items() if k != "id"},
            "not a bundle id",
        ),
        "bundle-id-number": ({**bundle("b5"), "id": 5}, "not a bundle id"),
        "bundle-id-other-type": ({**bundle("b6"), "id": good["id"]}, "not a bundle id"),
        "bundle-stix-2.0": ({**bundle("b7", good), "spec_version": "2.0"}, "STIX 2.0"),
        "objects-object": ({**bundle("b8"), "objects": {"0": good}}, "'objects' is a object"),
        "objects-string": ({**bundle("b9"), "objects": "indicator"}, "'objects' is a string"),
        "objects-null": ({**bundle("b10"), "objects": None}, "'objects' is a null"),
        "object-number": (with_obj("o1", 42), r"objects\[0\] is a number"),
        "object-string": (with_obj("o2", good["id"]), r"objects\[0\] is a string"),
        "object-null": (with_obj("o3", None), r"objects\[0\] is a null"),
        "object-list": (with_obj("o4", [good]), r"objects\[0\] is a list"),
        "object-boolean": (with_obj("o5", True), r"objects\[0\] is a boolean"),
        "type-missing": (changed("o6", type=DROP), "missing 'type'"),
        "type-number": (changed("o7", type=3), "missing 'type'"),
        "type-empty": (changed("o8", type=""), "missing 'type'"),
        "id-missing": (changed("o9", id=DROP), "not a STIX identifier"),
        "id-number": (changed("o10", id=1), "not a STIX identifier"),
        "id-not-uuid": (changed("o11", id="indicator--x"), "not a STIX identifier"),
        "id-trailing-newline": (
            changed("o16", id=f"indicator--{uid('o16')}\n"),
            "not a STIX identifier",
        ),
        "id-other-type": (changed("o12", id=f"malware--{uid('o12')}"), "does not match type"),
        "spec-version-missing": (changed("o13", spec_version=DROP), "'spec_version'"),
        "spec-version-2.0": (changed("o14", spec_version="2.0"), "'spec_version'"),
        "spec-version-number": (changed("o15", spec_version=2.1), "'spec_version'"),
    }


def _numbers() -> dict[str, tuple[str, str, Expect]]:
    """Numbers JSON parsers disagree on: (raw JSON value, router message, TAXII outcome)."""
    return {
        "nan": ("NaN", "not finite", http(400, "not JSON")),
        "infinity": ("Infinity", "not finite", http(400, "not JSON")),
        "minus-infinity": ("-Infinity", "not finite", http(400, "not JSON")),
        "overflowing-float": ("1e400", "not finite", http(400, "not JSON")),
        # orjson alone would read these as floats and pass them on, changed.
        "integer-over-64-bits": (str(2**64), "64-bit", http(422, "outside the 64-bit range")),
        "integer-under-64-bits": (
            str(-(2**63) - 1),
            "64-bit",
            http(422, "outside the 64-bit range"),
        ),
        "integer-of-40-digits": ("9" * 40, "64-bit", http(422, "outside the 64-bit range")),
    }


def _refused_at_the_edge(name: str, obj: dict[str, Any], message: str) -> list[Case]:
    """One object refused as invalid-bundle over NATS and as a 422 over TAXII."""
    case_name = f"wrong-types/{name}"
    return [
        Case(
            f"nats/{case_name}",
            "wrong types",
            "nats",
            refused("invalid-bundle", message),
            token=good_token(case_name, bundle(case_name, obj)),
        ),
        Case(
            f"taxii/{case_name}",
            "wrong types",
            "taxii",
            http(422, message),
            body=taxii_body(obj),
        ),
    ]


def _wrong_types() -> list[Case]:
    out: list[Case] = []
    for name, (changes, reason, message) in _ENVELOPE_TYPES.items():
        case_name = f"wrong-types/envelope-{name}"
        out.append(
            Case(
                f"nats/{case_name}",
                "wrong types",
                "nats",
                refused(reason, message),
                token=good_token(case_name, bundle(case_name, ind(case_name)), **changes),
            )
        )
    for name, (data, message) in _bundle_types().items():
        case_name = f"wrong-types/{name}"
        raw = orjson.dumps(data)
        out.append(
            Case(
                f"nats/{case_name}",
                "wrong types",
                "nats",
                refused("invalid-bundle", message),
                token=good_token(case_name, data),
                client=(raw, message),
            )
        )
        objects = data.get("objects") if isinstance(data, dict) else None
        if name.startswith(("object-", "type-", "id-", "spec-version-")) and objects:
            out.append(
                Case(
                    f"taxii/{case_name}",
                    "wrong types",
                    "taxii",
                    http(422, message.replace("objects\\[0\\]", "envelope: objects\\[0\\]")),
                    body=taxii_body(*objects),
                )
            )
    timestamps: dict[str, tuple[dict[str, Any], str]] = {
        "modified-number": ({"modified": 20261102}, "'modified' .* is not a STIX timestamp"),
        "modified-list": ({"modified": [T]}, "'modified' .* is not a STIX timestamp"),
        "modified-word": ({"modified": "yesterday"}, "'modified' 'yesterday' is not a STIX"),
        "modified-unpadded": (
            {"modified": "2024-1-1T0:0:0Z"},
            "'modified' '2024-1-1T0:0:0Z' is not a STIX",
        ),
        "modified-offset": (
            {"modified": "2026-11-02T10:00:00+01:00"},
            "'modified' .* is not a STIX timestamp",
        ),
        "modified-no-such-day": (
            {"modified": "2026-02-30T00:00:00Z"},
            "'modified' .* is not a STIX timestamp",
        ),
        "created-null": ({"created": None}, "'created' None is not a STIX timestamp"),
        "modified-before-created": (
            {"modified": "2026-11-01T23:59:59.999Z"},
            "'modified' is earlier than 'created'",
        ),
    }
    forged_ip = {
        "type": "ipv4-addr",
        "spec_version": "2.1",
        "id": "ipv4-addr--0198f97b-e65d-5025-87e5-58bc39d4bdb4",  # the UUIDv5 of 1.2.3.4
        "value": "10.0.0.1",
    }
    unversioned = {k: v for k, v in ind("wrong-types/sdo-without-modified").items()}
    del unversioned["modified"]
    undated = {k: v for k, v in unversioned.items() if k != "created"}
    for name, obj, message in (
        ("sdo-without-modified", unversioned, "with 'created' needs 'modified'"),
        ("observable-id-of-another-value", forged_ip, "UUIDv5 id is not the one its 'value'"),
        (
            "observable-with-modified",
            {
                "type": "ipv4-addr",
                "spec_version": "2.1",
                "id": "ipv4-addr--6b3e1f0e-1f9b-5a8f-8f3e-2b2f4c7a9d10",
                "value": "203.0.113.5",
                "modified": T,
            },
            "observables are not versioned",
        ),
        ("sdo-without-created-and-modified", undated, "indicator objects need 'created' and"),
        (
            "created-by-ref-with-a-space",
            ind("wrong-types/cbr-space", created_by_ref=stix_identity("bank-a") + " "),
            "'created_by_ref' holds .* not a STIX identifier",
        ),
        (
            "created-by-ref-not-an-identity",
            ind("wrong-types/cbr-type", created_by_ref=f"indicator--{uid('x')}"),
            "'created_by_ref' .* is not an identity",
        ),
        (
            "created-by-ref-list",
            ind("wrong-types/cbr-list", created_by_ref=[stix_identity("bank-a")]),
            "'created_by_ref' holds .* not a STIX identifier",
        ),
        (
            "source-ref-with-newline",
            sdo(
                "relationship",
                "wrong-types/rel-newline",
                relationship_type="indicates",
                source_ref=f"indicator--{uid('a')}\n",
                target_ref=f"malware--{uid('b')}",
            ),
            "'source_ref' holds .* not a STIX identifier",
        ),
        (
            "indicator-without-pattern",
            {k: v for k, v in ind("wrong-types/no-pattern").items() if k != "pattern"},
            "indicator objects need 'pattern'",
        ),
        (
            "indicator-pattern-type-number",
            ind("wrong-types/pattern-type-number", pattern_type=5),
            "'pattern_type' is 5, expected a string",
        ),
        (
            "indicator-pattern-unpaired",
            ind("wrong-types/pattern-unpaired", pattern="[[["),
            "'pattern' .* do not pair up",
        ),
        (
            "indicator-pattern-open-quote",
            ind("wrong-types/pattern-open-quote", pattern="[domain-name:value = 'x]"),
            "'pattern' .* never closed",
        ),
        (
            "relationship-without-target",
            sdo(
                "relationship",
                "wrong-types/rel-no-target",
                relationship_type="indicates",
                source_ref=f"indicator--{uid('a')}",
            ),
            "relationship objects need 'target_ref'",
        ),
        (
            "report-empty-object-refs",
            sdo("report", "wrong-types/report-empty", name="r", published=T, object_refs=[]),
            "'object_refs' is \\[\\], expected a non-empty list",
        ),
        (
            "domain-name-without-value",
            {
                "type": "domain-name",
                "spec_version": "2.1",
                "id": f"domain-name--{uid('wrong-types/domain-no-value')}",
            },
            "domain-name objects need 'value'",
        ),
    ):
        out += _refused_at_the_edge(name, obj, message)
    for name, (props, message) in timestamps.items():
        out += _refused_at_the_edge(name, ind(f"wrong-types/{name}", **props), message)
    # A granular selector that names nothing restricts nothing the broker could find: a
    # derived copy once kept the field it meant (external_references[0].url, no dot).
    red = TLP2["red"]
    refs = [{"source_name": "x", "url": "https://red.example/"}]
    for name, selector in {
        "points-nowhere": "no_such_property",
        "index-nowhere": "labels.[99]",
        "index-without-dot": "external_references[0].url",
        "case-differs": "Description",
        "leading-space": " description",
        "into-a-string": "description.[0]",
    }.items():
        case_name = f"wrong-types/granular-selector-{name}"
        obj = ind(
            case_name,
            tlp="clear",
            description="for RED eyes",
            labels=["a"],
            external_references=refs,
            granular_markings=[{"marking_ref": red, "selectors": [selector]}],
        )
        out += _refused_at_the_edge(f"granular-selector-{name}", obj, "names nothing in the object")
    for name in ("object_marking_refs", "granular_markings"):
        case_name = f"wrong-types/bundle-level-{name}"
        data = {**bundle(case_name, ind(case_name)), name: [TLP2["red"]]}
        if name == "granular_markings":
            data[name] = [{"marking_ref": red, "selectors": ["objects"]}]
        out.append(
            Case(
                f"nats/{case_name}",
                "wrong types",
                "nats",
                refused("invalid-bundle", f"the bundle itself has '{name}'"),
                token=good_token(case_name, data),
                client=(orjson.dumps(data), f"the bundle itself has '{name}'"),
            )
        )
    for name, (value, message, taxii) in _numbers().items():
        case_name = f"wrong-types/number-{name}"
        obj = ind(case_name, x_value="@@N@@")
        raw = orjson.dumps(bundle(case_name, obj)).replace(b'"@@N@@"', value.encode())
        out.append(
            Case(
                f"nats/{case_name}",
                "wrong types",
                "nats",
                refused("invalid-bundle", message),
                token=splice_token(case_name, raw),
            )
        )
        body = taxii_body(obj).replace(b'"@@N@@"', value.encode())
        out.append(Case(f"taxii/{case_name}", "wrong types", "taxii", taxii, body=body))
    return out


# ---------------------------------------------------------------- deep nesting


def _deep() -> list[Case]:
    out: list[Case] = []
    router_cases: dict[str, tuple[bytes, str, str, str]] = {
        # name: (value put in x_deep, reason, router message, client message)
        "list-33": (nested_text(32), "invalid-bundle", "nested deeper than 32", "nested deeper"),
        "dict-33": (
            nested_text(32, as_dict=True),
            "invalid-bundle",
            "nested deeper",
            "nested deeper",
        ),
        "list-100": (nested_text(100), "invalid-bundle", "nested deeper", "nested deeper"),
        "list-190": (nested_text(190), "invalid-bundle", "nested deeper", "nested deeper"),
        "list-300": (nested_text(300), "malformed", "recursion limit", "nested deeper"),
        "list-1000": (nested_text(1000), "malformed", "recursion limit", "nested deeper"),
        "dict-5000": (nested_text(5000, as_dict=True), "malformed", "recursion limit", "not JSON"),
    }
    for name, (value, reason, message, client) in router_cases.items():
        case_name = f"deep-nesting/{name}"
        data = bundle(case_name, ind(case_name, x_deep="@@D@@"))
        raw = orjson.dumps(data).replace(b'"@@D@@"', value)
        out.append(
            Case(
                f"nats/{case_name}",
                "deep nesting",
                "nats",
                refused(reason, message),
                token=splice_token(case_name, raw),
                client=(raw, client),
            )
        )
    placed: dict[str, dict[str, Any]] = {
        "in-granular-markings": {
            "granular_markings": [
                {"selectors": ["name"], "marking_ref": TLP2["clear"], "x": nested(40)}
            ]
        },
        "in-extensions": {
            "extensions": {f"extension-definition--{uid('ext')}": nested(40, as_dict=True)}
        },
        "in-external-references": {"external_references": [{"source_name": "x", "x": nested(35)}]},
    }
    for name, props in placed.items():
        case_name = f"deep-nesting/{name}"
        data = bundle(case_name, ind(case_name, **props))
        out.append(
            Case(
                f"nats/{case_name}",
                "deep nesting",
                "nats",
                refused("invalid-bundle", "nested deeper"),
                token=json_token(case_name, data),
                client=(json.dumps(data).encode(), "nested deeper"),
            )
        )
        out.append(
            Case(
                f"taxii/{case_name}",
                "deep nesting",
                "taxii",
                http(422, "nested deeper than 32"),
                body=json.dumps({"objects": data["objects"]}).encode(),
            )
        )
    for depth, status, message, xfail in (
        (33, 422, "nested deeper", ""),
        (260, 422, "nested deeper", ""),
        (600, 422, "nested deeper", ""),
        (3000, 400, "not JSON", ""),
    ):
        case_name = f"deep-nesting/list-{depth}"
        obj = ind(case_name, x_deep="@@D@@")
        body = taxii_body(obj).replace(b'"@@D@@"', nested_text(depth - 1))
        out.append(
            Case(
                f"taxii/{case_name}",
                "deep nesting",
                "taxii",
                http(status, message),
                body=body,
                xfail=xfail,
            )
        )
    for name, changes in (
        ("to", {"to": nested(300)}),
        ("feed", {"feed": nested(50, as_dict=True)}),
    ):
        case_name = f"deep-nesting/envelope-{name}"
        out.append(
            Case(
                f"nats/{case_name}",
                "deep nesting",
                "nats",
                refused("malformed", f"envelope {name}|recursion limit"),
                token=json_token(case_name, bundle(case_name, ind(case_name)), **changes),
            )
        )
    return out


# ---------------------------------------------------------------- huge strings


def _huge() -> list[Case]:
    out: list[Case] = []
    big = "A" * 300_000
    env_cases: dict[str, tuple[dict[str, Any], str, str]] = {
        "sid": ({"sid": "a" * 300_000}, "malformed", "envelope sid"),
        "envelope-org": ({"org": "bank-a" + "x" * 300_000}, "org-mismatch", "envelope names"),
        "audience": ({"to": ["org:" + "a" * 300_000]}, "malformed", "not org:<id>"),
    }
    for name, (changes, reason, message) in env_cases.items():
        case_name = f"huge-strings/{name}"
        out.append(
            Case(
                f"nats/{case_name}",
                "huge strings",
                "nats",
                refused(reason, message),
                token=good_token(case_name, bundle(case_name, ind(case_name)), **changes),
            )
        )
    header_cases: dict[str, tuple[dict[str, Any], str, str]] = {
        "header-kid": ({"kid": big}, "bad-signature", "header is longer than 8192"),
        "header-typ": ({"typ": big}, "bad-signature", "header is longer than 8192"),
        "header-org": ({"org": "bank-a" + big}, "bad-signature", "header is longer than 8192"),
        "header-alg": ({"alg": big}, "bad-signature", "header is longer than 8192"),
        # Under the header cap: a long org is read, and is not the subject's.
        "header-org-5000": ({"org": "bank-a" + "x" * 5000}, "org-mismatch", "signed for"),
    }
    for name, (header, reason, message) in header_cases.items():
        case_name = f"huge-strings/{name}"

        def token(ctx: Ctx, case_name: str = case_name, header: dict[str, Any] = header) -> bytes:
            payload = orjson.dumps(envelope(ctx, case_name, bundle(case_name, ind(case_name))))
            return hand_jws(ctx, header, payload)

        out.append(
            Case(f"nats/{case_name}", "huge strings", "nats", refused(reason, message), token=token)
        )
    object_cases: dict[str, tuple[dict[str, Any], str]] = {
        "object-type": (
            {"type": "indicator" * 20_000},
            "does not match type|not a STIX identifier",
        ),
        "object-id": ({"id": "indicator--" + "0" * 200_000}, "not a STIX identifier"),
        "spec-version": ({"spec_version": "2.1" * 50_000}, "'spec_version'"),
    }
    for name, (props, message) in object_cases.items():
        case_name = f"huge-strings/{name}"
        data = bundle(case_name, {**ind(case_name), **props})
        out.append(
            Case(
                f"nats/{case_name}",
                "huge strings",
                "nats",
                refused("invalid-bundle", message),
                token=good_token(case_name, data),
                client=(orjson.dumps(data), message),
            )
        )
        out.append(
            Case(
                f"taxii/{case_name}",
                "huge strings",
                "taxii",
                http(422, message),
                body=taxii_body(*data["objects"]),
            )
        )
    paths: tuple[Literal["nats"], Literal["taxii"]] = ("nats", "taxii")
    for path in paths:
        case_name = f"huge-strings/marking-ref-{path}"
        hostile = ind(
            case_name, tlp=None, object_marking_refs=["marking-definition--" + "f" * 100_000]
        )
        clean = ind(case_name + "/clean")
        data = bundle(case_name, hostile, clean)
        kind: Kind = "withheld" if path == "nats" else "taxii-withheld"
        out.append(
            Case(
                f"{path}/{case_name}",
                "huge strings",
                path,
                Expect(kind, reason="unknown-marking"),
                token=good_token(case_name, data),
                body=taxii_body(hostile, clean),
                hostile=((hostile["id"], T),),
            )
        )
    out.append(
        Case(
            "taxii/huge-strings/bearer-token",
            "huge strings",
            "taxii",
            http(401, "valid credentials are required"),
            body=taxii_body(ind("huge-strings/bearer")),
            auth=("", "bank-a." + "x" * 8000),
        )
    )
    out.append(
        Case(
            "taxii/huge-strings/content-type",
            "huge strings",
            "taxii",
            http(415, "send the envelope as"),
            body=taxii_body(ind("huge-strings/content-type")),
            headers={"Content-Type": "application/stix+json;" + "x=y;" * 1500},
        )
    )
    return out


# ---------------------------------------------------------------- sizes


def _padded(name: str, size: int) -> dict[str, Any]:
    """A clean bundle whose JSON is about ``size`` bytes."""
    return bundle(name, ind(name, description="p" * max(size - 400, 1)))


def _sizes() -> list[Case]:
    out: list[Case] = []
    minimal = [
        {"type": "x", "id": f"x--{uuid.UUID(int=i)}", "spec_version": "2.1"} for i in range(100_000)
    ]
    count_cases: dict[str, tuple[Any, str, str]] = {
        "100000-empty-objects": ([{}] * 100_000, "too-many-objects", "100,000 objects"),
        "100000-numbers": ([0] * 100_000, "too-many-objects", "100,000 objects"),
        "100000-nulls": ([None] * 100_000, "too-many-objects", "100,000 objects"),
        "10001-empty-objects": ([{}] * 10_001, "too-many-objects", "10,001 objects"),
        "10000-empty-objects": ([{}] * 10_000, "invalid-bundle", r"objects\[0\]: missing 'type'"),
    }
    for name, (objects, reason, message) in count_cases.items():
        case_name = f"100000-objects/{name}"
        data = bundle(case_name, *objects)
        out.append(
            Case(
                f"nats/{case_name}",
                "100,000-object bundles",
                "nats",
                refused(reason, message),
                token=good_token(case_name, data),
                client=(orjson.dumps(data), message),
            )
        )
        if name.startswith(("100000-empty", "10001")):
            out.append(
                Case(
                    f"taxii/{case_name}",
                    "100,000-object bundles",
                    "taxii",
                    http(422, message),
                    body=taxii_body(*objects),
                )
            )
    full = bundle("100000-objects/valid", *minimal)
    out.append(
        Case(
            "nats/100000-objects/valid-minimal-objects",
            "100,000-object bundles",
            "nats",
            Expect("client", message="payload", error=nats.errors.MaxPayloadError),
            token=good_token("100000-objects/valid", full),
            client=(orjson.dumps(full), "over the size limit"),
        )
    )
    out.append(
        Case(
            "taxii/100000-objects/valid-minimal-objects",
            "100,000-object bundles",
            "taxii",
            http(413, "the body exceeds"),
            body=taxii_body(*minimal),
        )
    )
    sizes: dict[str, tuple[int, Expect]] = {
        # token sizes: over the SUBMISSIONS stream's max_msg_size, and over max_payload
        "just-over-stream-limit": (
            MAX_BUNDLE_BYTES + 1,
            Expect("client", message="maximum", error=nats.js.errors.APIError),
        ),
        "between-limits": (
            980_000,
            Expect("client", message="maximum", error=nats.js.errors.APIError),
        ),
        "over-max-payload": (
            2_000_000,
            Expect("client", message="payload", error=nats.errors.MaxPayloadError),
        ),
    }
    for name, (size, expect) in sizes.items():
        case_name = f"oversize/{name}"

        def token(ctx: Ctx, case_name: str = case_name, size: int = size) -> bytes:
            # Pad the description until the signed token is exactly ``size`` bytes.
            env = envelope(ctx, case_name, _padded(case_name, 100))
            base = len(signed(ctx, orjson.dumps(env)))
            pad = (size - base) * 3 // 4
            obj = env["bundle"]["objects"][0]
            obj["description"] += "p" * pad
            tok = signed(ctx, orjson.dumps(env))
            while len(tok) < size:
                obj["description"] += "p"
                tok = signed(ctx, orjson.dumps(env))
            return tok

        out.append(Case(f"nats/{case_name}", "oversize messages", "nats", expect, token=token))
    out.append(
        Case(
            "nats/oversize/client-bundle-over-limit",
            "oversize messages",
            "nats",
            Expect("client", message="payload", error=nats.errors.MaxPayloadError),
            token=good_token("oversize/client", _padded("oversize/client", 1_200_000)),
            client=(orjson.dumps(_padded("oversize/client", 1_200_000)), "over the size limit"),
        )
    )
    out.append(
        Case(
            "nats/oversize/client-signed-token-over-limit",
            "oversize messages",
            "nats",
            Expect("client", message="maximum", error=nats.js.errors.APIError),
            token=good_token("oversize/signed", _padded("oversize/signed", 700_000)),
            client=(orjson.dumps(_padded("oversize/signed", 700_000)), "signed submission"),
        )
    )
    limit_body = b" " * 700_000
    for name, body, headers in (
        ("declared-content-length", taxii_body(_padded("oversize/t1", 800_000)), {}),
        ("whitespace-padding", b'{"objects": [' + limit_body + b"]}", {}),
        ("two-megabytes", taxii_body(_padded("oversize/t2", 2_000_000)), {}),
        ("chunked-no-length", taxii_body(_padded("oversize/t3", 800_000)), {"x-chunked": "1"}),
    ):
        out.append(
            Case(
                f"taxii/oversize/{name}",
                "oversize messages",
                "taxii",
                http(413, "the body exceeds"),
                body=body,
                headers=headers,
            )
        )
    return out


# ---------------------------------------------------------------- duplicate ids


def _duplicates() -> list[Case]:
    out: list[Case] = []
    a = ind("dup/a", description="first")
    b = {**a, "description": "second"}
    # Observables have no modified: one id twice in a bundle, other content.
    nomod = {
        "type": "ipv4-addr",
        "spec_version": "2.1",
        "id": "ipv4-addr--4f3a1c2e-9b7d-4e21-8c55-0d1e2f3a4b5c",  # random (v4): not derived
        "value": "198.51.100.7",
    }
    nomod2 = {**nomod, "value": "198.51.100.8"}
    third = {**a, "labels": ["x"]}
    tlp_dup = {**ind("dup/marking"), "object_marking_refs": [TLP2["clear"], TLP2["clear"]]}
    in_bundle: dict[str, list[Any]] = {
        "same-id-and-modified": [a, b],
        "same-id-no-modified": [nomod, nomod2],
        "three-versions": [a, b, third],
        "far-apart": [a, *[ind(f"dup/filler-{i}") for i in range(50)], b],
        "differ-in-marking": [ind("dup/m", tlp="clear"), ind("dup/m", tlp="red")],
        "differ-in-key-only-unicode": [
            ind("dup/u", name="caf\u00e9"),
            ind("dup/u", name="cafe\u0301"),
        ],
        "duplicated-marking-ref": [tlp_dup, {**tlp_dup, "object_marking_refs": [TLP2["clear"]]}],
    }
    for name, objects in in_bundle.items():
        case_name = f"duplicate-ids/{name}"
        out.append(
            Case(
                f"nats/{case_name}",
                "duplicate ids",
                "nats",
                refused("bundle-rejected", "share an id and modified but differ in content"),
                token=good_token(case_name, bundle(case_name, *objects)),
            )
        )
        out.append(
            Case(
                f"taxii/{case_name}",
                "duplicate ids",
                "taxii",
                taxii_refused("bundle-rejected"),
                body=taxii_body(*objects),
            )
        )
    changed = {**ORIGINAL, "name": "same id and modified, other content"}
    out.append(
        Case(
            "nats/duplicate-ids/across-submissions",
            "duplicate ids",
            "nats",
            refused("version-conflict", "reuse an id and modified"),
            token=good_token("duplicate-ids/across", bundle("duplicate-ids/across", changed)),
        )
    )
    out.append(
        Case(
            "taxii/duplicate-ids/across-submissions",
            "duplicate ids",
            "taxii",
            taxii_refused("version-conflict"),
            body=taxii_body({**ORIGINAL, "name": "changed over TAXII"}),
        )
    )
    out.append(
        Case(
            "nats/duplicate-ids/submission-id-reused",
            "duplicate ids",
            "nats",
            refused("duplicate-id", "was already used"),
            token=lambda ctx: signed(
                ctx,
                orjson.dumps(
                    envelope(ctx, "before/0", bundle("dup/sid", ind("dup/sid")), sid=BEFORE_SID)
                ),
            ),
        )
    )
    # Another member reusing a sid it saw in a package: it names log chunks, deliveries and
    # receipts, so it is one submission's across all organisations.
    out.append(
        Case(
            "nats/duplicate-ids/other-members-submission-id",
            "duplicate ids",
            "nats",
            refused("duplicate-id", "was already used"),
            token=lambda ctx: signed(
                ctx,
                orjson.dumps(
                    envelope(
                        ctx,
                        "dup/other-sid",
                        bundle("dup/other-sid", ind("dup/other-sid")),
                        sid=BEFORE_SID,
                        org="bank-b",
                    )
                ),
                by="bank-b",
                org="bank-b",
            ),
            subject_org="bank-b",
        )
    )
    return out


ORIGINAL = ind("before/original", description="accepted before the corpus")
BEFORE_SID = sid("before/0")


# ---------------------------------------------------------------- invalid markings


def _markings() -> list[Case]:
    unknown = f"marking-definition--{uid('unknown-marking')}"
    forged_def = {
        "type": "marking-definition",
        "spec_version": "2.1",
        "id": f"marking-definition--{uid('forged-tlp-clear')}",
        "created": T,
        "name": "TLP:CLEAR",
        "definition_type": "tlp",
        "definition": {"tlp": "clear"},
    }
    forged_v2 = {
        "type": "marking-definition",
        "spec_version": "2.1",
        "id": f"marking-definition--{uid('forged-tlp2-clear')}",
        "created": T,
        "name": "TLP:CLEAR",
        "extensions": {TLP2_EXT: {"extension_type": "property-extension", "tlp_2_0": "clear"}},
    }
    statement_red = {
        "type": "marking-definition",
        "spec_version": "2.1",
        "id": f"marking-definition--{uid('statement-red')}",
        "created": T,
        "definition_type": "statement",
        "definition": {"statement": "(c) ACME"},
        "object_marking_refs": [TLP2["red"]],
    }
    bad_statement = {
        **statement_red,
        "id": f"marking-definition--{uid('bad-st')}",
        "definition": {"statement": 5},
    }
    del bad_statement["object_marking_refs"]
    red = TLP2["red"]
    cases: dict[str, tuple[dict[str, Any], str, list[dict[str, Any]]]] = {
        # name: (props of the hostile indicator, reason, extra objects also withheld)
        "unknown-ref": ({"object_marking_refs": [unknown]}, "unknown-marking", []),
        "empty-string-ref": ({"object_marking_refs": [""]}, "unknown-marking", []),
        "uppercase-tlp-id": (
            {"object_marking_refs": [TLP2["clear"].upper()]},
            "unknown-marking",
            [],
        ),
        "padded-tlp-id": ({"object_marking_refs": [TLP2["clear"] + " "]}, "unknown-marking", []),
        "tlp-uuid-wrong-type": (
            {"object_marking_refs": ["indicator--" + TLP2["clear"].split("--")[1]]},
            "unknown-marking",
            [],
        ),
        "tlp-with-unknown": (
            {"object_marking_refs": [TLP2["clear"], unknown]},
            "unknown-marking",
            [],
        ),
        "refs-string": ({"object_marking_refs": TLP2["clear"]}, "unreadable-marking", []),
        "refs-object": ({"object_marking_refs": {"tlp": "clear"}}, "unreadable-marking", []),
        "refs-number-item": ({"object_marking_refs": [1]}, "unreadable-marking", []),
        "refs-object-item": (
            {"object_marking_refs": [{"id": TLP2["clear"]}]},
            "unreadable-marking",
            [],
        ),
        "refs-list-item": ({"object_marking_refs": [[TLP2["clear"]]]}, "unreadable-marking", []),
        "refs-null": ({"object_marking_refs": None}, "unreadable-marking", []),
        "granular-string": ({"granular_markings": "name"}, "unreadable-marking", []),
        "granular-item-string": ({"granular_markings": [red]}, "unreadable-marking", []),
        "granular-no-selectors": (
            {"granular_markings": [{"marking_ref": red}]},
            "unreadable-marking",
            [],
        ),
        "granular-empty-selectors": (
            {"granular_markings": [{"marking_ref": red, "selectors": []}]},
            "unreadable-marking",
            [],
        ),
        "granular-selector-number": (
            {"granular_markings": [{"marking_ref": red, "selectors": [0]}]},
            "unreadable-marking",
            [],
        ),
        "granular-ref-object": (
            {"granular_markings": [{"marking_ref": {"id": red}, "selectors": ["name"]}]},
            "unreadable-marking",
            [],
        ),
        "granular-null": ({"granular_markings": None}, "unreadable-marking", []),
        "granular-ref-points-nowhere": (
            {"granular_markings": [{"marking_ref": unknown, "selectors": ["name"]}]},
            "granular",
            [],
        ),
        "forged-tlp1-definition": (
            {"object_marking_refs": [forged_def["id"]]},
            "unknown-marking",
            [forged_def],
        ),
        "forged-tlp2-definition": (
            {"object_marking_refs": [forged_v2["id"]]},
            "unknown-marking",
            [forged_v2],
        ),
        "forged-content-under-red-id": (
            {"object_marking_refs": [TLP1_RED]},
            "red-not-named",
            [],
        ),
        "restricted-statement-definition": (
            {"object_marking_refs": [TLP2["clear"], statement_red["id"]]},
            "marking-restricted",
            [statement_red],
        ),
        "statement-not-a-string": (
            {"object_marking_refs": [TLP2["clear"], bad_statement["id"]]},
            "unknown-marking",
            [bad_statement],
        ),
    }
    forged_red_def = {
        "type": "marking-definition",
        "spec_version": "2.1",
        "id": TLP1_RED,
        "created": T,
        "name": "TLP:CLEAR",
        "definition_type": "tlp",
        "definition": {"tlp": "white"},
    }
    out: list[Case] = []
    paths: tuple[Literal["nats"], Literal["taxii"]] = ("nats", "taxii")
    for path in paths:
        for name, (props, reason, extra) in cases.items():
            case_name = f"markings/{name}/{path}"
            # A readable TLP:CLEAR unless the case is about object_marking_refs itself.
            tlp = None if "object_marking_refs" in props else "clear"
            hostile = ind(case_name, tlp=tlp, **props)
            clean = ind(case_name + "/clean")
            objects = [hostile, clean, *extra]
            if name == "forged-content-under-red-id":
                objects.append(forged_red_def)
            hostile_ids = [(hostile["id"], T)]
            if name.startswith("forged-tlp"):
                hostile_ids += [(o["id"], "") for o in extra]
            kind: Kind = "withheld" if path == "nats" else "taxii-withheld"
            out.append(
                Case(
                    f"{path}/markings/{name}",
                    "invalid markings",
                    path,
                    Expect(kind, reason=reason),
                    token=good_token(case_name, bundle(case_name, *objects)),
                    body=taxii_body(*objects),
                    hostile=tuple(hostile_ids),
                )
            )
        # From bank-b, which opted in to derived copies: a null here once reached derive()
        # and crashed the router (TypeError), taking every worker down.
        for name, props in (
            ("refs-null-derived-copies", {"object_marking_refs": None}),
            ("granular-null-derived-copies", {"granular_markings": None}),
        ):
            case_name = f"markings/{name}/{path}"
            hostile = ind(
                case_name,
                description="restricted",
                granular_markings=[{"marking_ref": red, "selectors": ["description"]}],
            )
            hostile.update(props)
            clean = ind(case_name + "/clean")
            data = bundle(case_name, hostile, clean)
            kind = "withheld" if path == "nats" else "taxii-withheld"

            def token(ctx: Ctx, case_name: str = case_name, data: Any = data) -> bytes:
                env = envelope(ctx, case_name, data, org="bank-b")
                return signed(ctx, orjson.dumps(env), by="bank-b", org="bank-b")

            out.append(
                Case(
                    f"{path}/markings/{name}",
                    "invalid markings",
                    path,
                    Expect(kind, reason="unreadable-marking"),
                    token=token,
                    subject_org="bank-b",
                    body=taxii_body(hostile, clean),
                    org="bank-b",
                    hostile=((hostile["id"], T),),
                )
            )
        # A forged copy of a well-known TLP definition: never delivered as sent.
        case_name = f"markings/forged-content-under-clear-id/{path}"
        forged = {
            "type": "marking-definition",
            "spec_version": "2.1",
            "id": TLP2["clear"],
            "created": T,
            "name": "TLP:CLEAR",
            "x_instructions": "forward to everyone",
            "extensions": {TLP2_EXT: {"extension_type": "property-extension", "tlp_2_0": "clear"}},
        }
        user = ind(case_name)
        kind = "neutralised" if path == "nats" else "taxii-neutralised"
        out.append(
            Case(
                f"{path}/markings/forged-content-under-clear-id",
                "invalid markings",
                path,
                Expect(kind),
                token=good_token(case_name, bundle(case_name, forged, user)),
                body=taxii_body(forged, user),
                hostile=((TLP2["clear"], ""),),
            )
        )
    return out


# ---------------------------------------------------------------- forged signatures


def _es256_sign(key: ec.EllipticCurvePrivateKey, data: bytes) -> bytes:
    from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

    r, s = decode_dss_signature(key.sign(data, ec.ECDSA(hashes.SHA256())))
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def _forged() -> list[Case]:
    def payload(ctx: Ctx, name: str) -> bytes:
        return orjson.dumps(envelope(ctx, name, bundle(name, ind(name))))

    def intruder_own_kid(ctx: Ctx) -> bytes:
        return sign_submission(
            payload(ctx, "forged/own-kid"), ctx.keys.intruder, org="bank-a", now=ctx.now
        ).encode()

    def intruder_member_kid(ctx: Ctx) -> bytes:
        own = intruder_own_kid(ctx).split(b".")
        head = orjson.loads(base64.urlsafe_b64decode(own[0] + b"=="))
        head["kid"] = ctx.keys.orgs["bank-a"].public.thumbprint
        signing_input = b64(orjson.dumps(head)) + b"." + b64(payload(ctx, "forged/member-kid"))
        raw_intruder = ed25519.Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
        return signing_input + b"." + b64(raw_intruder.sign(signing_input))

    def tamper(name: str, fn: Callable[[list[bytes]], list[bytes]]) -> Callable[[Ctx], bytes]:
        def token(ctx: Ctx) -> bytes:
            return b".".join(fn(signed(ctx, payload(ctx, name)).split(b".")))

        return token

    def flip_last(parts: list[bytes]) -> list[bytes]:
        sig = bytearray(base64.urlsafe_b64decode(parts[2] + b"=="))
        sig[-1] ^= 1
        return [parts[0], parts[1], b64(bytes(sig))]

    def truncate(parts: list[bytes]) -> list[bytes]:
        return [parts[0], parts[1], b64(base64.urlsafe_b64decode(parts[2] + b"==")[:63])]

    def change_payload(parts: list[bytes]) -> list[bytes]:
        body = base64.urlsafe_b64decode(parts[1] + b"==").replace(b'"to":[]', b'"to":["org:lea-2"]')
        return [parts[0], b64(body), parts[2]]

    def change_header(parts: list[bytes]) -> list[bytes]:
        head = orjson.loads(base64.urlsafe_b64decode(parts[0] + b"=="))
        head["x"] = 1
        return [b64(orjson.dumps(head)), parts[1], parts[2]]

    def spliced_sig(ctx: Ctx) -> bytes:
        one = signed(ctx, payload(ctx, "forged/splice-a")).split(b".")
        two = signed(ctx, payload(ctx, "forged/splice-b")).split(b".")
        return b".".join([one[0], one[1], two[2]])

    def alg_none(ctx: Ctx) -> bytes:
        head = {
            "alg": "none",
            "kid": ctx.keys.orgs["bank-a"].public.thumbprint,
            "typ": "atlas-sub+jws",
            "org": "bank-a",
            "iat": ctx.now,
        }
        return b64(orjson.dumps(head)) + b"." + b64(payload(ctx, "forged/none")) + b"."

    def alg_hs256(ctx: Ctx) -> bytes:
        kid = ctx.keys.orgs["bank-a"].public.thumbprint
        head = {"alg": "HS256", "kid": kid, "typ": "atlas-sub+jws", "org": "bank-a", "iat": ctx.now}
        signing_input = b64(orjson.dumps(head)) + b"." + b64(payload(ctx, "forged/hs256"))
        mac = hmac.HMAC(kid.encode(), hashes.SHA256())
        mac.update(signing_input)
        return signing_input + b"." + b64(mac.finalize() * 2)

    def es256_on_member_kid(ctx: Ctx) -> bytes:
        kid = ctx.keys.orgs["bank-a"].public.thumbprint
        head = {"alg": "ES256", "kid": kid, "typ": "atlas-sub+jws", "org": "bank-a", "iat": ctx.now}
        signing_input = b64(orjson.dumps(head)) + b"." + b64(payload(ctx, "forged/es256"))
        return signing_input + b"." + b64(_es256_sign(ctx.keys.intruder_es256, signing_input))

    def revoked(ctx: Ctx) -> bytes:
        head = {
            "alg": "EdDSA",
            "kid": ctx.keys.revoked_kid,
            "typ": "atlas-sub+jws",
            "org": "bank-a",
            "iat": ctx.now,
        }
        signing_input = b64(orjson.dumps(head)) + b"." + b64(payload(ctx, "forged/revoked"))
        return signing_input + b"." + b64(ctx.keys.revoked.sign(signing_input))

    def json_serialization(ctx: Ctx) -> bytes:
        parts = signed(ctx, payload(ctx, "forged/json")).split(b".")
        return orjson.dumps(
            {
                "protected": parts[0].decode(),
                "payload": parts[1].decode(),
                "signature": parts[2].decode(),
            }
        )

    def header(name: str, changes: dict[str, Any]) -> Callable[[Ctx], bytes]:
        return lambda ctx: hand_jws(ctx, changes, payload(ctx, name))

    def by(org: str, name: str, header_org: str = "bank-a") -> Callable[[Ctx], bytes]:
        return lambda ctx: signed(ctx, payload(ctx, name), by=org, org=header_org)

    cases: dict[str, tuple[Callable[[Ctx], bytes], str]] = {
        "unknown-key-own-kid": (intruder_own_kid, "not a known key"),
        "unknown-key-member-kid": (intruder_member_kid, "does not verify"),
        "signature-bit-flipped": (tamper("forged/flip", flip_last), "does not verify"),
        "signature-truncated": (tamper("forged/trunc", truncate), "63 bytes"),
        "signature-empty": (tamper("forged/empty", lambda p: [p[0], p[1], b""]), "0 bytes"),
        "payload-changed-after-signing": (
            tamper("forged/payload", change_payload),
            "does not verify",
        ),
        "header-changed-after-signing": (tamper("forged/header", change_header), "does not verify"),
        "signature-from-another-message": (spliced_sig, "does not verify"),
        "alg-none": (alg_none, "alg 'none'"),
        "alg-hs256-with-public-kid": (alg_hs256, "'HS256' does not match"),
        "alg-es256-on-ed25519-kid": (es256_on_member_kid, "'ES256' does not match"),
        "revoked-member-key": (revoked, "not a known key"),
        "json-serialization": (json_serialization, "submission signature invalid"),
        "crit-header": (header("forged/crit", {"crit": ["x"], "x": 1}), "crit"),
        "b64-false-header": (header("forged/b64", {"b64": False}), "b64"),
        "typ-jwt": (header("forged/typ", {"typ": "JWT"}), "typ 'JWT'"),
        "typ-package": (
            header("forged/typ-pkg", {"typ": "atlas-pkg+jwt"}),
            "typ 'atlas-pkg\\+jwt'",
        ),
        "typ-missing": (header("forged/typ-none", {"typ": DROP}), "typ None"),
        "org-missing": (header("forged/org-none", {"org": DROP}), "no 'org'"),
        "org-number": (header("forged/org-int", {"org": 5}), "no 'org'"),
        "iat-missing": (header("forged/iat-none", {"iat": DROP}), "no integer 'iat'"),
        "iat-string": (header("forged/iat-str", {"iat": "now"}), "no integer 'iat'"),
        "kid-number": (header("forged/kid-int", {"kid": 5}), "no string 'kid'"),
        "kid-of-encryption-key": (
            lambda ctx: hand_jws(
                ctx, {"kid": ctx.keys.enc_kid["bank-a"]}, payload(ctx, "forged/enc-kid")
            ),
            "not a known key",
        ),
        "partner-key": (by("lea-1", "forged/partner"), "not a known key"),
    }
    return [
        Case(
            f"nats/forged-signatures/{name}",
            "forged signatures",
            "nats",
            refused("bad-signature", message),
            token=token,
        )
        for name, (token, message) in cases.items()
    ]


# ---------------------------------------------------------------- replays


def _replays() -> list[Case]:
    def old(ctx: Ctx, name: str, iat: int) -> bytes:
        env = envelope(ctx, name, bundle(name, ind(name)), iat=iat)
        return sign_submission(
            orjson.dumps(env), ctx.keys.orgs["bank-a"], org="bank-a", now=iat
        ).encode()

    cases: dict[str, tuple[Callable[[Ctx], bytes], str, str, str]] = {
        # name: (token, subject org, reason, message)
        "accepted-token-again": (
            lambda ctx: ctx.before["nats-0"],
            "bank-a",
            "replayed",
            "already received",
        ),
        "taxii-edge-token": (
            lambda ctx: ctx.before["taxii"],
            "bank-a",
            "replayed",
            "already received",
        ),
        "other-members-token": (
            lambda ctx: ctx.before["nats-2"],
            "bank-b",
            "replayed",
            "already received",
        ),
        "accepted-token-on-other-subject": (
            lambda ctx: ctx.before["nats-1"],
            "bank-b",
            "bad-signature",
            "not a known key",
        ),
        "signed-31-days-ago": (
            lambda ctx: old(ctx, "replay/old", ctx.now - 31 * 86400),
            "bank-a",
            "stale",
            "older than",
        ),
        "signed-for-next-week": (
            lambda ctx: old(ctx, "replay/future", ctx.now + 7 * 86400),
            "bank-a",
            "stale",
            "in the future",
        ),
        "delivered-package-as-submission": (
            lambda ctx: ctx.package,
            "bank-a",
            "bad-signature",
            "submission signature invalid",
        ),
    }
    return [
        Case(
            f"nats/replayed-signatures/{name}",
            "replayed signatures",
            "nats",
            refused(reason, message),
            token=token,
            subject_org=subject,
        )
        for name, (token, subject, reason, message) in cases.items()
    ]


# ---------------------------------------------------------------- someone else's behalf


def _behalf() -> list[Case]:
    def payload(ctx: Ctx, name: str, **over: Any) -> bytes:
        return orjson.dumps(envelope(ctx, name, bundle(name, ind(name)), **over))

    def tok(
        name: str, *, by: str = "bank-a", org: str = "bank-a", **over: Any
    ) -> Callable[[Ctx], bytes]:
        return lambda ctx: signed(ctx, payload(ctx, name, **over), by=by, org=org)

    nats_cases: dict[str, tuple[Callable[[Ctx], bytes], str, str, str]] = {
        # name: (token, subject org, reason, message)
        "own-key-on-other-members-subject": (
            tok("behalf/1"),
            "bank-b",
            "bad-signature",
            "not a known key",
        ),
        "own-key-claims-other-org-in-header": (
            tok("behalf/2", org="bank-b"),
            "bank-a",
            "org-mismatch",
            "signed for 'bank-b'",
        ),
        "own-key-other-org-header-and-subject": (
            tok("behalf/3", org="bank-b"),
            "bank-b",
            "bad-signature",
            "not a known key",
        ),
        "envelope-names-other-org": (
            lambda ctx: signed(ctx, payload(ctx, "behalf/4", org="bank-b")),
            "bank-a",
            "org-mismatch",
            "envelope names 'bank-b'",
        ),
        "member-key-claims-via-taxii": (
            tok("behalf/5", via="taxii"),
            "bank-a",
            "bad-signature",
            "needs a broker key",
        ),
        "member-key-claims-via-taxii-pull": (
            tok("behalf/6", via="taxii-pull"),
            "bank-a",
            "bad-signature",
            "needs a broker key",
        ),
        "member-key-via-on-other-subject": (
            lambda ctx: signed(
                ctx, payload(ctx, "behalf/7", org="bank-b", via="taxii"), org="bank-b"
            ),
            "bank-b",
            "bad-signature",
            "not a known key",
        ),
        "broker-key-without-via": (
            tok("behalf/8", by="broker"),
            "bank-a",
            "bad-signature",
            "without saying via",
        ),
        "broker-key-for-unknown-org": (
            lambda ctx: signed(
                ctx, payload(ctx, "behalf/9", org="ghost", via="taxii"), by="broker", org="ghost"
            ),
            "ghost",
            "unknown-org",
            "not in the directory",
        ),
        "partner-key-claims-via": (
            tok("behalf/10", by="lea-1", via="taxii"),
            "bank-a",
            "bad-signature",
            "not a known key",
        ),
        "other-members-key-on-subject": (
            tok("behalf/11", by="bank-b"),
            "bank-a",
            "bad-signature",
            "not a known key",
        ),
        "unknown-org-subject": (
            tok("behalf/12", org="ghost"),
            "ghost",
            "unknown-org",
            "not in the directory",
        ),
        "broker-id-as-subject": (
            tok("behalf/13", org="atlas-broker"),
            "atlas-broker",
            "unknown-org",
            "not in the directory",
        ),
    }
    # Signed correctly by bank-b, but speaking for bank-a: its object, or in its name.
    later = "2026-11-03T09:30:00.000Z"

    def as_b(name: str, *objects: Any) -> Callable[[Ctx], bytes]:
        return lambda ctx: signed(
            ctx,
            orjson.dumps(envelope(ctx, name, bundle(name, *objects), org="bank-b")),
            by="bank-b",
            org="bank-b",
        )

    bank_a = stix_identity("bank-a")
    content_cases: dict[str, tuple[Callable[[Ctx], bytes], str, str]] = {
        "revokes-other-members-object": (
            as_b("behalf/14", {**ORIGINAL, "modified": later, "revoked": True}),
            "not-owner",
            "only an object's originator may supersede or revoke it",
        ),
        "supersedes-other-members-object": (
            as_b("behalf/15", {**ORIGINAL, "modified": later, "name": "taken over"}),
            "not-owner",
            "new versions of objects another organisation published",
        ),
        "created-by-other-member": (
            as_b("behalf/16", ind("behalf/16", created_by_ref=bank_a)),
            "impersonation",
            "speaks for another organisation|names it in created_by_ref",
        ),
        "other-members-identity-object": (
            as_b(
                "behalf/17",
                sdo("identity", "behalf/17", "clear", name="Bank A", identity_class="organization")
                | {"id": bank_a},
            ),
            "impersonation",
            "is another organisation's identity",
        ),
        "other-members-object-under-upper-case-id": (
            as_b(
                "behalf/18",
                {
                    **ORIGINAL,
                    "id": "indicator--" + ORIGINAL["id"].partition("--")[2].upper(),
                    "modified": later,
                },
            ),
            "not-owner",
            "only an object's originator",
        ),
    }
    out = [
        Case(
            f"nats/someone-elses-behalf/{name}",
            "someone else's behalf",
            "nats",
            refused(reason, message),
            token=token,
            subject_org="bank-b",
        )
        for name, (token, reason, message) in content_cases.items()
    ]
    out += [
        Case(
            f"nats/someone-elses-behalf/{name}",
            "someone else's behalf",
            "nats",
            # A subject of no organisation in the directory has no intake stream: nothing
            # takes it, and the publisher is told so (before, the router refused it).
            Expect(
                "client",
                message="no response from stream",
                error=nats.js.errors.NoStreamResponseError,
            )
            if subject in ("ghost", "atlas-broker")
            else refused(reason, message),
            token=token,
            subject_org=subject,
        )
        for name, (token, subject, reason, message) in nats_cases.items()
    ]
    body = taxii_body(ind("behalf/taxii"))
    taxii_cases: dict[str, tuple[dict[str, Any], Expect]] = {
        "group-not-a-member-of": ({"collection": "group:op-y"}, http(404, "no collection")),
        "partner-posts-to-community": ({"org": "lea-1"}, http(404, "no collection")),
        "partner-posts-to-own-views": (
            {"org": "lea-1", "collection": "views:lea-1"},
            http(403, "read-only"),
        ),
        "basic-user-of-other-org": (
            {"auth": ("bank-a", "@bank-b")},
            http(401, "valid credentials"),
        ),
        "bearer-of-unknown-org": (
            {"auth": ("", "ghost.abcdefghijklmnop")},
            http(401, "valid credentials"),
        ),
        "basic-wrong-secret": (
            {"auth": ("bank-a", "bank-a.wrong-secret")},
            http(401, "valid credentials"),
        ),
        "no-credentials": ({"auth": ("-", "")}, http(401, "valid credentials")),
    }
    revoked = {**ORIGINAL, "modified": later, "revoked": True}
    out.append(
        Case(
            "taxii/someone-elses-behalf/revokes-other-members-object",
            "someone else's behalf",
            "taxii",
            taxii_refused("not-owner"),
            body=taxii_body(revoked),
            org="bank-b",
        )
    )
    out.append(
        Case(
            "taxii/someone-elses-behalf/created-by-other-member",
            "someone else's behalf",
            "taxii",
            taxii_refused("impersonation"),
            body=taxii_body(ind("behalf/taxii-forged", created_by_ref=bank_a)),
            org="bank-b",
        )
    )
    for name, (changes, expect) in taxii_cases.items():
        out.append(
            Case(
                f"taxii/someone-elses-behalf/{name}",
                "someone else's behalf",
                "taxii",
                expect,
                body=body,
                **changes,
            )
        )
    return out


def all_cases() -> list[Case]:
    cases = [
        *_malformed(),
        *_wrong_types(),
        *_deep(),
        *_huge(),
        *_sizes(),
        *_duplicates(),
        *_markings(),
        *_forged(),
        *_replays(),
        *_behalf(),
    ]
    ids = [c.id for c in cases]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        raise AssertionError(f"case ids are not unique: {duplicates}")
    return cases
