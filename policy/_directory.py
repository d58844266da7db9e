"""The community directory: organisations, their public keys, groups and subscriptions.

The directory is the broker's source of truth for *who* may receive *what*. It is parsed
from TOML (or JSON from the key-value bucket) into frozen pydantic models with
``extra="forbid"`` so that a typo is an error rather than a silently ignored setting.
Public keys are carried as JWK dictionaries; ``broker`` validates them with ``keys``
(``policy`` stays free of cryptography).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from ._errors import DirectoryError
from ._tlp import Tlp

__all__ = [
    "BrokerIdentity",
    "Community",
    "Directory",
    "Group",
    "OrgKind",
    "Organisation",
    "PublicKeyEntry",
    "StatementRule",
    "Subscription",
]

# Organisation and group ids appear in NATS subjects (atlas.submit.<org>,
# atlas.deliver.<recipient>.<submission>): no dots, no wildcards, no whitespace.
_ID_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}\Z")
_STIX_ID_RE = re.compile(
    r"^[a-z][a-z0-9-]+--[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\Z"
)


def _check_id(value: str) -> str:
    if not _ID_RE.match(value):
        raise ValueError(
            f"{value!r} is not a valid id: use 1-63 lowercase letters, digits, '-' or '_', "
            "starting with a letter or digit"
        )
    return value


OrgId = Annotated[str, AfterValidator(_check_id)]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class OrgKind(StrEnum):
    MEMBER = "member"
    PARTNER = "partner"
    AUDITOR = "auditor"


class PublicKeyEntry(_Frozen):
    """One published public key of an organisation or of the broker."""

    jwk: dict[str, str]
    use: Literal["sig", "enc"]
    current: bool = True
    """For encryption keys: the key new packages are sealed to (one per organisation)."""
    not_after: datetime | None = None
    """End of a rotation overlap: the key stays valid for opening/verifying until then."""
    revoked_at: datetime | None = None

    @field_validator("jwk")
    @classmethod
    def _public_only(cls, jwk: dict[str, str]) -> dict[str, str]:
        for private in ("d", "priv"):
            if private in jwk:
                raise ValueError(
                    f"contains a private key member {private!r}: publish only the public JWK"
                )
        if "kty" not in jwk:
            raise ValueError("has no 'kty' member")
        return jwk


class Organisation(_Frozen):
    id: OrgId
    name: str
    kind: OrgKind
    in_community: bool = True
    default_tlp: Tlp | None = None
    """TLP applied to unmarked objects from this originator (AMBER when unset)."""
    derived_copies: bool = False
    """Originator opts in to broker-issued derived copies instead of withholding whole."""
    stix_identity: str | None = None
    taxii_read: bool = False
    """The broker keeps this recipient's views readable over its TAXII server (in plaintext
    at rest in the VIEWS stream); otherwise packages are only ever stored sealed."""
    keys: tuple[PublicKeyEntry, ...] = ()

    @field_validator("stix_identity")
    @classmethod
    def _identity(cls, value: str | None) -> str | None:
        if value is not None and not (value.startswith("identity--") and _STIX_ID_RE.match(value)):
            raise ValueError(f"{value!r} is not a STIX identity id (identity--<uuid>)")
        return value

    @model_validator(mode="after")
    def _one_current_encryption_key(self) -> Organisation:
        current = [k for k in self.keys if k.use == "enc" and k.current and k.revoked_at is None]
        if len(current) > 1:
            raise ValueError(
                f"organisation {self.id!r} marks {len(current)} encryption keys current; "
                "mark exactly one"
            )
        return self

    def signing_keys(self) -> tuple[PublicKeyEntry, ...]:
        return tuple(k for k in self.keys if k.use == "sig")

    def current_encryption_key(self) -> PublicKeyEntry | None:
        for entry in self.keys:
            if entry.use == "enc" and entry.current and entry.revoked_at is None:
                return entry
        return None


class Group(_Frozen):
    id: OrgId
    name: str = ""
    members: tuple[str, ...]


class Subscription(_Frozen):
    """Which originators, groups or feeds a recipient follows. ``"*"`` follows everyone."""

    recipient: str
    originators: tuple[str, ...] = ()
    groups: tuple[str, ...] = ()
    feeds: tuple[str, ...] = ()

    @model_validator(mode="after")
    def _not_empty(self) -> Subscription:
        if not (self.originators or self.groups or self.feeds):
            raise ValueError(
                f"subscription of {self.recipient!r} follows nothing: "
                "give originators, groups or feeds"
            )
        return self


class StatementRule(_Frozen):
    """A community rule attached to a statement marking-definition id."""

    marking: str
    deny_kinds: tuple[OrgKind, ...] = ()
    deny_orgs: tuple[str, ...] = ()
    description: str = ""


class Community(_Frozen):
    id: OrgId
    name: str
    partners_in_community: bool = False
    """Whether TLP:GREEN reaches partners (public-sector) as part of the community."""


class BrokerIdentity(_Frozen):
    id: OrgId = "atlas-broker"
    name: str = "Atlas broker"
    stix_identity: str = "identity--8c3d5f0e-4c8b-5a44-9a8e-2f4f7b0d6a11"
    keys: tuple[PublicKeyEntry, ...] = ()


class Directory(_Frozen):
    community: Community
    broker: BrokerIdentity = Field(default_factory=BrokerIdentity)
    organisations: tuple[Organisation, ...]
    groups: tuple[Group, ...] = ()
    subscriptions: tuple[Subscription, ...] = ()
    statement_rules: tuple[StatementRule, ...] = ()

    @model_validator(mode="after")
    def _references_resolve(self) -> Directory:
        ids = [o.id for o in self.organisations]
        seen: set[str] = set()
        for i, org_id in enumerate(ids):
            if org_id in seen:
                raise ValueError(f"organisations[{i}].id: duplicate organisation id {org_id!r}")
            seen.add(org_id)
        group_ids: set[str] = set()
        for i, group in enumerate(self.groups):
            if group.id in group_ids or group.id in seen:
                raise ValueError(f"groups[{i}].id: {group.id!r} is already used")
            group_ids.add(group.id)
            for j, member in enumerate(group.members):
                if member not in seen:
                    raise ValueError(f"groups[{i}].members[{j}]: unknown organisation {member!r}")
        for i, sub in enumerate(self.subscriptions):
            if sub.recipient not in seen:
                raise ValueError(
                    f"subscriptions[{i}].recipient: unknown organisation {sub.recipient!r}"
                )
            for j, orig in enumerate(sub.originators):
                if orig != "*" and orig not in seen:
                    raise ValueError(
                        f"subscriptions[{i}].originators[{j}]: unknown organisation {orig!r}"
                    )
            for j, grp in enumerate(sub.groups):
                if grp not in group_ids:
                    raise ValueError(f"subscriptions[{i}].groups[{j}]: unknown group {grp!r}")
        identities: dict[str, str] = {}
        identities[self.broker.stix_identity.lower()] = "the broker"
        for i, entry in enumerate(self.organisations):
            if entry.stix_identity is None:
                continue
            holder = identities.setdefault(entry.stix_identity.lower(), repr(entry.id))
            if holder != repr(entry.id):
                raise ValueError(
                    f"organisations[{i}].stix_identity: {entry.stix_identity!r} is already "
                    f"the identity of {holder}"
                )
        for i, rule in enumerate(self.statement_rules):
            for j, org in enumerate(rule.deny_orgs):
                if org not in seen:
                    raise ValueError(
                        f"statement_rules[{i}].deny_orgs[{j}]: unknown organisation {org!r}"
                    )
        return self

    # -- construction -------------------------------------------------------------------

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> Directory:
        """Validate a parsed TOML/JSON document; errors name the offending key path."""
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise DirectoryError(_describe(exc)) from exc

    # -- queries -------------------------------------------------------------------------

    def organisation(self, org_id: str) -> Organisation | None:
        return self._orgs_by_id().get(org_id)

    def _orgs_by_id(self) -> dict[str, Organisation]:
        cache: dict[str, Organisation] | None = self.__dict__.get("_org_cache")
        if cache is None:
            cache = {o.id: o for o in self.organisations}
            # Frozen model: store a derived index outside pydantic's field set.
            object.__setattr__(self, "_org_cache", cache)
        return cache

    def identity_owners(self) -> dict[str, str]:
        """STIX identity id, lowercase → the organisation it stands for."""
        cache: dict[str, str] | None = self.__dict__.get("_identity_cache")
        if cache is None:
            cache = {
                org.stix_identity.lower(): org.id
                for org in self.organisations
                if org.stix_identity is not None
            }
            object.__setattr__(self, "_identity_cache", cache)
        return cache

    def group(self, group_id: str) -> Group | None:
        for group in self.groups:
            if group.id == group_id:
                return group
        return None

    def groups_of(self, org_id: str) -> frozenset[str]:
        return frozenset(g.id for g in self.groups if org_id in g.members)

    def expand(self, names: Iterable[str]) -> frozenset[str]:
        """Resolve ``org:X`` / ``group:Y`` / bare ids to organisation ids."""
        out: set[str] = set()
        for name in names:
            kind, _, ident = name.partition(":") if ":" in name else ("org", "", name)
            if kind == "org":
                out.add(ident)
            elif kind == "group":
                group = self.group(ident)
                if group is not None:
                    out.update(group.members)
        return frozenset(out)

    def subscribers(self, originator: str, feed: str | None = None) -> frozenset[str]:
        """Organisations that follow ``originator`` (directly, through a group, or a feed)."""
        origin_groups = self.groups_of(originator)
        out: set[str] = set()
        for sub in self.subscriptions:
            if sub.recipient == originator:
                continue
            if (
                "*" in sub.originators
                or originator in sub.originators
                or origin_groups.intersection(sub.groups)
                or (feed is not None and feed in sub.feeds)
            ):
                out.add(sub.recipient)
        return frozenset(out)


def _describe(exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        path = ""
        for part in err["loc"]:
            path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
        msg = err["msg"].removeprefix("Value error, ")
        lines.append(f"{path}: {msg}" if path else msg)
    return "invalid directory: " + "; ".join(lines)
