"""Cyber observables (SCOs): what identifies one, for the router's checks across submissions.

STIX does not version observables (they have no ``modified``) and two producers legitimately
send one id with other optional properties. What may not differ is what the id stands for:
the id-contributing properties of STIX 2.1 (section 6, per type), from which a UUIDv5 id is
derived (namespace ``00abedb4-aa42-466c-9c01-fed23315a9b7``, name the RFC 8785 JSON of those
properties). ``identifying`` returns them; ``id_problem`` checks a UUIDv5 id against them
for the types identified by one plain property (a forged ``ipv4-addr`` whose id is another
address's would otherwise squat that address for everyone).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from typing import Any, Final

__all__ = ["ID_CONTRIBUTING", "id_problem", "identifying"]

SCO_NAMESPACE: Final = uuid.UUID("00abedb4-aa42-466c-9c01-fed23315a9b7")

ID_CONTRIBUTING: Final[Mapping[str, tuple[str, ...]]] = {
    "artifact": ("hashes", "payload_bin"),
    "autonomous-system": ("number",),
    "directory": ("path",),
    "domain-name": ("value",),
    "email-addr": ("value",),
    "email-message": ("from_ref", "subject", "body"),
    "file": ("hashes", "name", "extensions", "parent_directory_ref"),
    "ipv4-addr": ("value",),
    "ipv6-addr": ("value",),
    "mac-addr": ("value",),
    "mutex": ("name",),
    "network-traffic": (
        "start", "end", "src_ref", "dst_ref", "src_port", "dst_port", "protocols", "extensions",
    ),
    "software": ("name", "cpe", "swid", "vendor", "version"),
    "url": ("value",),
    "user-account": ("account_type", "user_id", "account_login"),
    "windows-registry-key": ("key", "values"),
    "x509-certificate": ("hashes", "serial_number"),
}  # fmt: skip
"""STIX 2.1's id-contributing properties per SCO type (``process`` has none)."""

_PLAIN: Final = {t for t, props in ID_CONTRIBUTING.items() if len(props) == 1}
_OBSERVABLE_TYPES: Final = frozenset({*ID_CONTRIBUTING, "process"})


def is_observable(obj_type: str) -> bool:
    """A STIX 2.1 cyber-observable type (they carry no created/modified)."""
    return obj_type in _OBSERVABLE_TYPES


def identifying(obj: Mapping[str, Any], obj_type: str) -> dict[str, Any] | None:
    """What identifies an observable of a type identified by one plain property (``value``,
    ``number``, ``path``, ``name``); None for the others.

    For types with several (``file``: hashes, name, ...) producers derive the id from a
    selection (stix2 takes one hash of several), so two correct observables with one id
    can differ in them: comparing them would refuse correct submissions."""
    if obj_type not in _PLAIN:
        return None
    return {p: obj[p] for p in ID_CONTRIBUTING[obj_type] if p in obj}


def id_problem(obj: Mapping[str, Any], obj_id: str, obj_type: str) -> str | None:
    """Why a UUIDv5 id is not the one its plain identifying property gives, or None.

    Only types identified by one property (``value``, ``number``, ``path``, ``name``), and
    only UUIDv5 ids: a random (v4) id is allowed by the spec and stands for itself."""
    if obj_type not in _PLAIN:
        return None
    try:
        given = uuid.UUID(obj_id.partition("--")[2])
    except ValueError:
        return None
    fields = identifying(obj, obj_type)
    if given.version != 5 or not fields:
        return None
    name = json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    if uuid.uuid5(SCO_NAMESPACE, name) != given:
        prop = next(iter(fields))
        return f"its UUIDv5 id is not the one its '{prop}' gives (STIX 2.1 deterministic ids)"
    return None
