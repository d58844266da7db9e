"""nats-server configurations generated from the directory (``deploy nats-config``).

Every organisation logs in with its own nkey **in an account of its own**; the streams live
in the broker's account (``ATLAS``), which exports to each organisation exactly the
subjects its role needs, and nothing else exists in the organisation's account:

- everyone: pull its own deliveries and receipts from the durable consumers the broker
  made for it (``rcv-<org>``, ``rct-<org>``: their info, next-message and ack subjects
  only), send acknowledgements on ``atlas.ack.<org>``, and read the directory bucket;
- members also publish on their own ``atlas.submit.<org>``;
- auditors read LOG and WITNESS message by message (stream info and get);
- a witness (``--witness NAME``) reads LOG and publishes its own cosignatures;
- the broker's user, in ``ATLAS``, may do everything.

Why accounts and not per-user permissions in one account: nats-server does not check a
publish's reply subject against the publisher's permissions, and JetStream answers a
request by publishing to that reply subject inside the account. With one account, any
user allowed one JetStream request (a pull on its own consumer) could name a stream
subject as the reply and have the server write into LOG, or name an API subject and have
it delete a stream. Across accounts, every answer goes back into the requester's own
account, where no stream or API listens; it can reach the broker's account again only
through that organisation's own imports (its submit or ack subject), which it may publish
to anyway.

Each organisation's account is capped (``ORG_MAX_CONNECTIONS``, ``ORG_MAX_SUBSCRIPTIONS``),
and what an organisation publishes lands in intake streams of its own, capped in bytes
(``SUBMIT-<org>``, ``ACK-<org>``; see ``_bus.ensure_intake``) and copied into the shared
SUBMISSIONS and RECEIPTS, so that one organisation cannot exhaust the server or its store
for the others within a day (over the shared streams' 30 days, see the README). What
remains: nats-server has no rate limit per account, so a flood of
requests from one organisation's connections still costs the server CPU.

The consumers are made by ``directory load`` and by ``serve`` (``ensure_party_consumers``):
an organisation may not create consumers, whose configuration could aim deliveries
anywhere in the broker's account. Cluster routes authenticate with a generated password
(``nkeys/route.pass``).
"""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import nkeys

from adapters import delivery_consumer, receipt_consumer
from policy import Directory, OrgKind

from .errors import ConfigError

__all__ = [
    "ORG_API_PREFIX",
    "NatsUser",
    "exports_for",
    "render_accounts",
    "render_cluster",
    "render_single",
    "route_password",
    "witness_exports",
    "write_users",
]

BROKER_USER = "atlas-broker"
BROKER_ACCOUNT = "ATLAS"
ORG_API_PREFIX = "atlas.api"
"""Where an organisation's account reaches the broker's JetStream API (``nats.api_prefix``):
``$JS.API`` itself in an account without JetStream is answered by the server, "not
enabled"."""
_API = "$JS.API"
ORG_MAX_CONNECTIONS = 16
"""Connections of one organisation's account: a receive bridge, a publisher, an audit job
use one each; the server's limit is shared by every account."""
ORG_MAX_SUBSCRIPTIONS = 1000
PULL_ANSWER_WITHIN = "30s"


@dataclass(frozen=True, slots=True)
class NatsUser:
    name: str
    nkey: str
    """The public user nkey (U...)."""
    seed_file: Path | None = None


@dataclass(frozen=True, slots=True)
class Export:
    subject: str
    stream_response: bool = False
    """The answer is several messages (a pull's batch), not one."""


def _recipient(org: str) -> list[Export]:
    out: list[Export] = []
    # The broker made these consumers with their filters: nothing here can set one.
    for mine in (delivery_consumer(org), receipt_consumer(org)):
        stream, consumer = mine.stream, mine.name
        out += [
            Export(f"{_API}.CONSUMER.INFO.{stream}.{consumer}"),
            Export(f"{_API}.CONSUMER.MSG.NEXT.{stream}.{consumer}", stream_response=True),
            Export(f"$JS.ACK.{stream}.{consumer}.>"),
        ]
    return [*out, Export(f"atlas.ack.{org}"), *_DIRECTORY_READS]


_DIRECTORY_READS = (
    Export(f"{_API}.STREAM.INFO.KV_atlas_directory"),
    Export(f"{_API}.STREAM.MSG.GET.KV_atlas_directory"),
    Export(f"{_API}.DIRECT.GET.KV_atlas_directory.>"),
)
"""Reading the community directory (a key-value bucket): recipients and auditors."""


def _auditor() -> list[Export]:
    return [
        Export(f"{_API}.STREAM.INFO.LOG"),
        Export(f"{_API}.STREAM.MSG.GET.LOG"),
        Export(f"{_API}.STREAM.INFO.WITNESS"),
        Export(f"{_API}.STREAM.MSG.GET.WITNESS"),
        *_DIRECTORY_READS,
    ]


def witness_exports(name: str) -> list[Export]:
    """A witness reads LOG (checkpoints, entries) and publishes its own cosignatures."""
    from ._witness import cosignature_subject

    return [
        Export(f"{_API}.STREAM.INFO.LOG"),
        Export(f"{_API}.STREAM.MSG.GET.LOG"),
        Export(f"{_API}.STREAM.INFO.WITNESS"),
        Export(cosignature_subject(name)),
    ]


def exports_for(directory: Directory, org: str) -> list[Export]:
    """What the broker's account lends one organisation's account."""
    found = directory.organisation(org)
    if found is None:
        raise KeyError(org)
    if found.kind == OrgKind.AUDITOR:
        return _auditor()
    exports = _recipient(org)
    if found.kind == OrgKind.MEMBER:
        exports.append(Export(f"atlas.submit.{org}"))
    return exports


def _account(party: str) -> str:
    return f"ORG-{party}"


def write_users(directory: Directory, out_dir: Path, extra: Iterable[str] = ()) -> list[NatsUser]:
    """One nkey per organisation (and the broker); seeds written 0600, never overwritten."""
    if directory.organisation(BROKER_USER) is not None:
        raise ConfigError(
            f"an organisation has the id {BROKER_USER!r}, the broker's NATS user: rename it"
        )
    out_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    users = []
    for name in [BROKER_USER, *extra, *(o.id for o in directory.organisations)]:
        path = out_dir / f"{name}.nk"
        if path.exists():
            seed = path.read_bytes().strip()
        else:
            seed = nkeys.encode_seed(os.urandom(32), nkeys.PREFIX_BYTE_USER)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as fh:
                fh.write(seed + b"\n")
        users.append(NatsUser(name, nkeys.from_seed(seed).public_key.decode(), path))
    return users


def _q(text: str) -> str:
    return '"' + text + '"'


def render_accounts(
    directory: Directory, users: list[NatsUser], witnesses: Mapping[str, str] | None = None
) -> str:
    """The ``accounts`` block: the broker's account, one per organisation, and one per
    witness (``witnesses``: NATS user name -> the witness's key name, ``--name``)."""
    by_name = {user.name: user for user in users}
    granted: dict[tuple[str, bool], list[str]] = {}
    imports: dict[str, list[Export]] = {}
    for org in directory.organisations:
        if org.id in by_name:
            imports[org.id] = exports_for(directory, org.id)
    for user, name in (witnesses or {}).items():
        imports[user] = witness_exports(name)
    for party, exports in imports.items():
        for export in exports:
            granted.setdefault((export.subject, export.stream_response), []).append(_account(party))
    lines = ["accounts {", f"  {BROKER_ACCOUNT}: {{", "    jetstream: enabled"]
    lines.append(f"    users: [{{nkey: {_q(by_name[BROKER_USER].nkey)}}}]")
    lines.append("    exports: [")
    for (subject, stream), accounts in sorted(granted.items()):
        # A pull's answers come within its 1 s wait: its response mapping need not live the
        # default 2 minutes (a flood of pulls with fresh reply subjects piles them up).
        kind = (
            f", response_type: stream, response_threshold: {_q(PULL_ANSWER_WITHIN)}"
            if stream
            else ""
        )
        names = ", ".join(_q(a) for a in sorted(accounts))
        lines.append(f"      {{service: {_q(subject)}{kind}, accounts: [{names}]}}")
    lines += ["    ]", "  }"]
    for org_id, exports in imports.items():
        lines.append(f"  # {org_id}")
        lines.append(f"  {_q(_account(org_id))}: {{")
        lines.append(f"    users: [{{nkey: {_q(by_name[org_id].nkey)}}}]")
        lines.append(
            f"    limits: {{max_connections: {ORG_MAX_CONNECTIONS}, "
            f"max_subscriptions: {ORG_MAX_SUBSCRIPTIONS}}}"
        )
        lines.append("    imports: [")
        for export in exports:
            local = export.subject
            if local.startswith(_API + "."):
                local = ORG_API_PREFIX + local[len(_API) :]
            lines.append(
                f"      {{service: {{account: {BROKER_ACCOUNT}, subject: {_q(export.subject)}}}, "
                f"to: {_q(local)}}}"
            )
        lines += ["    ]", "  }"]
    lines.append("}")
    return "\n".join(lines) + "\n"


def route_password(out_dir: Path) -> str:
    """The cluster routes' shared password: made once (0600), reused after."""
    path = out_dir / "route.pass"
    if path.exists():
        return path.read_text().strip()
    value = secrets.token_urlsafe(24)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(value + "\n")
    return value


_DURATION = re.compile(r"^[1-9][0-9]*(ms|s|m)\Z")


def check_write_deadline(value: str | None) -> None:
    """Refuse a write deadline nats-server would not read as a duration."""
    if value is not None and not _DURATION.match(value):
        raise ConfigError(f"write deadline {value!r}: give a duration such as 2s, 500ms or 1m")


def _write_deadline(value: str | None) -> str:
    """How long nats-server may take to write to a client before cutting it off as a
    slow consumer (its default: 10 s). A client that sends requests and never reads the
    answers (probe F9, 16 connections of one organisation) took nats-server to 3.7-4.0 GB
    with the default and 1.3 GB at 2 s; at 2 s a receive bridge's pull of 16 packages of
    up to 1 MiB each needs a link of about 64 Mbit/s. Unset: nats-server's default."""
    check_write_deadline(value)
    return "" if value is None else f'write_deadline: "{value}"\n'


def render_single(
    directory: Directory,
    users: list[NatsUser],
    *,
    store_dir: Path,
    host: str = "127.0.0.1",
    port: int = 4222,
    witnesses: Mapping[str, str] | None = None,
    write_deadline: str | None = None,
) -> str:
    """One node: JetStream with fsync on every write (no replica to recover from)."""
    return (
        "# Generated by `atlas-broker deploy nats-config` from the community directory.\n"
        f'listen: "{host}:{port}"\n'
        "max_payload: 1MB\n"
        + _write_deadline(write_deadline)
        + f'jetstream {{\n  store_dir: "{store_dir}"\n  sync_interval: always\n}}\n'
        + render_accounts(directory, users, witnesses)
    )


def render_cluster(
    directory: Directory,
    users: list[NatsUser],
    *,
    node: int,
    store_dir: Path,
    hosts: tuple[str, str, str] = ("127.0.0.1", "127.0.0.1", "127.0.0.1"),
    client_ports: tuple[int, int, int] = (4222, 4223, 4224),
    cluster_ports: tuple[int, int, int] = (6222, 6223, 6224),
    route_secret: str,
    witnesses: Mapping[str, str] | None = None,
    write_deadline: str | None = None,
) -> str:
    """Node ``node`` (0-2) of a 3-node cluster; streams are created with R3 on it.

    Routes log in with ``route_secret``: a server that cannot is not a node of this
    cluster, and sees nothing.
    """
    routes = ", ".join(
        f'"nats-route://route:{route_secret}@{hosts[i]}:{cluster_ports[i]}"'
        for i in range(3)
        if i != node
    )
    return (
        "# Generated by `atlas-broker deploy nats-config --cluster` (node "
        f"{node + 1} of 3).\n"
        f'server_name: "atlas-{node + 1}"\n'
        f'listen: "{hosts[node]}:{client_ports[node]}"\n'
        "max_payload: 1MB\n"
        + _write_deadline(write_deadline)
        + f'jetstream {{\n  store_dir: "{store_dir}"\n}}\n'
        f'cluster {{\n  name: "atlas"\n  listen: "{hosts[node]}:{cluster_ports[node]}"\n'
        f'  authorization {{\n    user: "route"\n    password: "{route_secret}"\n  }}\n'
        f"  routes: [{routes}]\n}}\n" + render_accounts(directory, users, witnesses)
    )
