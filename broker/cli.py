"""``atlas-broker``: the command line. The only module that configures logging."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Coroutine
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, TypeVar

import orjson
import structlog
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from keys import generate_org_keys

from ._allocator import keep_heap_top
from ._config import Settings, load_settings
from ._taxii_cli import ca_file_option
from .errors import ATLAS_ERRORS

__all__ = ["app", "main"]

T = TypeVar("T")

app = typer.Typer(
    name="atlas-broker",
    help="Atlas broker: share STIX 2.1 intelligence under TLP, sealed per recipient, logged "
    "for audit.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
directory_app = typer.Typer(help="Load and show the community directory.", no_args_is_help=True)
keys_app = typer.Typer(
    help="Generate, rotate, revoke and list organisation and broker keys.", no_args_is_help=True
)
audit_app = typer.Typer(
    help="Read, verify, query, export and report on the dissemination log.", no_args_is_help=True
)
app.add_typer(directory_app, name="directory")
app.add_typer(keys_app, name="keys")
app.add_typer(audit_app, name="audit")
deploy_app = typer.Typer(help="Generate deployment files from the directory.", no_args_is_help=True)
app.add_typer(deploy_app, name="deploy")

out = Console()
err = Console(stderr=True)

_state: dict[str, Any] = {}


def configure_logging(fmt: str, level: str) -> None:
    """Human-readable on a terminal, JSON lines otherwise; always to stderr."""
    use_console = fmt == "console" or (fmt == "auto" and sys.stderr.isatty())
    renderer: Any = (
        structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
        if use_console
        else structlog.processors.JSONRenderer()
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )


def settings() -> Settings:
    cached = _state.get("settings")
    if cached is None:
        overrides: dict[str, Any] = {}
        if _state.get("data_dir") is not None:
            overrides["data_dir"] = _state["data_dir"]
        cached = load_settings(_state.get("config"), **overrides)
        if _state.get("nats_url"):
            cached = cached.model_copy(
                update={"nats": cached.nats.model_copy(update={"url": _state["nats_url"]})}
            )
        _state["settings"] = cached
    return cached


def await_chain(task: asyncio.Task[Any]) -> list[str]:
    """Where ``task`` waits, outermost first: every coroutine of its await chain.

    ``Task.get_stack`` gives only the outermost frame of a suspended task, which says
    little (a worker shows as its TaskGroup's ``async with``).
    """
    lines: list[str] = []
    coro: Any = task.get_coro()
    while coro is not None:
        frame = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None)
        if frame is None:
            break
        lines.append(f"{frame.f_code.co_filename}:{frame.f_lineno} in {frame.f_code.co_name}")
        coro = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None)
    return lines


def _dump_tasks() -> None:
    """SIGUSR2: where every asyncio task of the process is waiting, to stderr (diagnosis)."""
    for task in asyncio.all_tasks():
        stack = "".join(f"  {line}\n" for line in await_chain(task))
        print(f"task {task.get_name()}:\n{stack}", file=sys.stderr, flush=True)


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run a job; our errors become one clear line and exit code 1; Ctrl-C stops cleanly."""

    async def _main() -> T:
        task = asyncio.current_task()
        loop = asyncio.get_running_loop()
        if task is not None:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, task.cancel)
        loop.add_signal_handler(signal.SIGUSR2, _dump_tasks)
        return await coro

    try:
        return asyncio.run(_main())
    except ATLAS_ERRORS as exc:
        err.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from exc
    except ExceptionGroup as group:
        # A task of a group (serve's router, monitor) stopped on one of our errors.
        ours, rest = group.split(ATLAS_ERRORS)
        if ours is None or rest is not None:
            raise  # a bug beside our error keeps its traceback
        first = _leaves(ours)[0]
        err.print(f"[bold red]error:[/] {escape(str(first))}", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from group
    except asyncio.CancelledError:
        err.print("stopped")
        raise typer.Exit(130) from None


def _leaves(group: BaseExceptionGroup[Any]) -> list[BaseException]:
    out: list[BaseException] = []
    for exc in group.exceptions:
        out.extend(_leaves(exc) if isinstance(exc, BaseExceptionGroup) else [exc])
    return out


class LogFormat(StrEnum):
    auto = "auto"
    console = "console"
    json = "json"


class LogLevel(StrEnum):
    debug = "debug"
    info = "info"
    warning = "warning"
    error = "error"


@app.callback()
def _global(
    config: Annotated[
        Path | None,
        typer.Option("--config", "-c", help="TOML configuration file (or ATLAS_CONFIG)."),
    ] = None,
    data_dir: Annotated[
        Path | None, typer.Option(help="Data folder (embedded NATS store, digest key).")
    ] = None,
    nats_url: Annotated[
        str | None, typer.Option(help="NATS server URL; default: the embedded server.")
    ] = None,
    log_format: Annotated[
        LogFormat | None,
        typer.Option(
            case_sensitive=False,
            help="Logs on stderr: console on a terminal, else JSON lines (auto).",
        ),
    ] = None,
    log_level: Annotated[
        LogLevel | None, typer.Option(case_sensitive=False, help="Least level logged.")
    ] = None,
) -> None:
    _state.clear()
    _state.update(
        config=config,
        data_dir=data_dir,
        nats_url=nats_url,
        log_format=log_format,
        log_level=log_level,
    )
    try:
        cfg = settings()
    except ATLAS_ERRORS as exc:
        err.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from exc
    configure_logging(
        log_format.value if log_format else cfg.log_format,
        log_level.value if log_level else cfg.log_level,
    )
    keep_heap_top()


@app.command()
def serve() -> None:
    """Run the broker: router workers, log checkpointer and HTTP monitor, until Ctrl-C.

    NATS: nats.url, else an embedded nats-server with its store in the data folder.
    Needs the broker's Ed25519 key: broker.signing_key or ATLAS_BROKER__SIGNING_KEY.
    Exits 130 on Ctrl-C.
    """
    from ._service import serve as _serve

    run(_serve(settings()))


@app.command()
def publish(
    bundle: Annotated[Path, typer.Argument(help="STIX 2.1 bundle (JSON file).")],
    org: Annotated[str, typer.Option(help="Your organisation id.")],
    key: Annotated[Path, typer.Option(help="Your private signing key (PEM, mode 0600).")],
    to: Annotated[
        str | None, typer.Option(help="Named audience, e.g. org:ec3,group:op-tanglebot.")
    ] = None,
    feed: Annotated[str | None, typer.Option(help="Feed name subscribers may follow.")] = None,
    wait: Annotated[
        float,
        typer.Option(
            min=0,
            help="Also wait up to this many seconds for the router's decision: exit 1 if it "
            "refused the submission (the reason is printed), 3 if it had not decided yet.",
        ),
    ] = 0.0,
) -> None:
    """Sign a bundle and submit it; prints the submission id once JetStream stored it."""
    from ._service import publish_bundle
    from ._submission import parse_audience

    result = run(
        publish_bundle(
            settings(),
            bundle,
            org=org,
            key_path=key,
            to=_audience(parse_audience, to),
            feed=feed,
            passphrase=_passphrase(),
            wait=wait,
        )
    )
    print(result.sid)
    if wait <= 0:
        return
    if result.outcome == "refused":
        err.print(
            f"[bold red]refused:[/] the router refused submission {result.sid}: "
            f"{result.reason or 'no reason logged'}",
            highlight=False,
            soft_wrap=True,
        )
        raise typer.Exit(1)
    if result.outcome is None:
        err.print(
            f"stored, but no decision logged within {wait:g} s: is `atlas-broker serve` "
            "running? (A refusal that no valid signature vouches for, e.g. signed with "
            "another key than the directory's, is logged once a minute per organisation.)",
            highlight=False,
            soft_wrap=True,
        )
        raise typer.Exit(3)
    err.print("routed: the router accepted it", highlight=False)
    if result.unknown_to:
        err.print(
            f"[yellow]⚠[/] --to names what the directory does not know: "
            f"{', '.join(result.unknown_to)} (bare ids are organisations; groups are "
            "group:<id>)",
            highlight=False,
            soft_wrap=True,
        )


def _audience(parse: Any, text: str | None) -> tuple[str, ...]:
    try:
        return parse(text)  # type: ignore[no-any-return]
    except ATLAS_ERRORS as exc:
        err.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False)
        raise typer.Exit(2) from exc


def _passphrase() -> bytes | None:
    value = os.environ.get("ATLAS_KEY_PASSPHRASE")
    return value.encode() if value else None


@app.command()
def receive(
    org: Annotated[str, typer.Option(help="Your organisation id.")],
    key: Annotated[
        list[Path],
        typer.Option(help="Your private encryption key(s) (PEM); repeat during rotation."),
    ],
    out_dir: Annotated[Path, typer.Option("--out", help="Folder the STIX bundles are written to.")],
    once: Annotated[bool, typer.Option("--once", help="Drain what is pending, then exit.")] = False,
    broker_jwks: Annotated[
        Path | None, typer.Option(help="Pinned broker public keys (JWK set); default: directory.")
    ] = None,
    sign_key: Annotated[
        Path | None,
        typer.Option(help="Your signing key: acknowledge each verified receipt (logged)."),
    ] = None,
    push: Annotated[
        str | None,
        typer.Option(help="Also add each bundle to this TAXII 2.1 collection URL; ack after."),
    ] = None,
    push_user: Annotated[str | None, typer.Option(help="User for --push.")] = None,
    push_password: Annotated[
        str | None, typer.Option(envvar="ATLAS_PUSH_PASSWORD", help="Password for --push.")
    ] = None,
    push_ca_file: Annotated[
        Path | None, ca_file_option("PEM CA bundle to trust for the --push server.")
    ] = None,
) -> None:
    """Open this organisation's packages and write their bundles to a folder.

    Receipts (inclusion proofs of each delivery in the signed log) are verified and kept
    in DIR/.atlas/receipts/; with --sign-key each is acknowledged back to the broker.
    """
    from ._service import receive as _receive

    pusher = None
    if push:
        from adapters._taxii._push import taxii_pusher

        pusher = taxii_pusher(push, user=push_user, password=push_password, ca_file=push_ca_file)
    stats = run(
        _receive(
            settings(),
            org=org,
            key_paths=key,
            out_dir=out_dir,
            once=once,
            broker_jwks=broker_jwks,
            passphrase=_passphrase(),
            sign_key_path=sign_key,
            push=pusher,
        )
    )
    out.print(
        f"received {stats.received} package(s), {stats.objects} object(s); "
        f"{stats.duplicates} duplicate(s), {stats.quarantined} quarantined, "
        f"{stats.receipts} receipt(s) kept"
    )
    if stats.held:
        err.print(
            f"{stats.held} package(s) left unopened in the stream: this receiver's keys "
            "cannot open them (see package.held in the log: a wrong --key, or a broker key "
            "set without the broker's current key); nothing was acked, fix and run again"
        )
        raise typer.Exit(3)
    if stats.write_failed:
        err.print(
            f"{stats.write_failed} package(s) could not be written to {escape(str(out_dir))} "
            "(see receive.write_failed in the log); they stay in the stream and come again "
            "once it is writable",
            highlight=False,
        )
        raise typer.Exit(3)
    if stats.push_failed:
        err.print(
            f"{stats.push_failed} package(s) stored but not pushed (see receive.push_failed in "
            "the log); they stay in the stream and are pushed again on the next run"
        )
        raise typer.Exit(3)


@directory_app.command("load")
def directory_load(
    file: Annotated[Path, typer.Argument(help="Directory TOML file.")],
) -> None:
    """Validate a directory file and store it in the key-value bucket; logged.

    Refused when the file would make a key revoked with `keys revoke` valid again. Keys
    the file drops (one made current by `keys rotate`, say) are named: they stop being
    valid at once.
    """
    from ._bus import ensure_streams, nats_session
    from ._directory_store import read_directory_file
    from ._keyops import load_directory
    from ._service import streams_for

    async def _load() -> Any:
        directory = read_directory_file(file)
        cfg = settings()
        async with nats_session(cfg, embedded_ok=False, name="atlas-directory") as (_, js):
            await ensure_streams(js, streams_for(cfg))
            return await load_directory(js, directory, source=str(file))

    loaded = run(_load())
    for key in loaded.dropped:
        err.print(
            f"[yellow]⚠[/] {key} is not in {file}: that key is no longer valid",
            highlight=False,
            soft_wrap=True,
        )
    out.print(f"directory stored (revision {loaded.revision})")


@directory_app.command("show")
def directory_show(
    as_json: Annotated[bool, typer.Option("--json", help="Print the stored JSON.")] = False,
) -> None:
    """Print the directory the workers use."""
    from ._bus import nats_session
    from ._directory_store import fetch_directory

    async def _show() -> Any:
        async with nats_session(settings(), embedded_ok=False, name="atlas-directory") as (_, js):
            return await fetch_directory(js)

    resolved = run(_show())
    directory = resolved.directory
    if as_json:
        print(directory.model_dump_json(indent=2))
        return
    table = Table(title=f"{directory.community.name} (revision {resolved.revision})")
    for column in ("id", "name", "kind", "community", "groups", "keys", "encrypts to"):
        table.add_column(column)
    for org in directory.organisations:
        enc = resolved.orgs[org.id].encryption
        table.add_row(
            org.id,
            org.name,
            str(org.kind),
            "yes" if org.in_community else "no",
            ", ".join(sorted(directory.groups_of(org.id))),
            str(len(org.keys)),
            enc.thumbprint[:16] + "…" if enc else "-",
        )
    out.print(table)


class SignKind(StrEnum):
    ED25519 = "Ed25519"
    ES256 = "ES256"


class EncKind(StrEnum):
    X25519 = "X25519"
    P256 = "P-256"
    X_WING = "X-Wing"


@keys_app.command("generate")
def keys_generate(
    org: Annotated[str, typer.Option(help="Organisation id the keys belong to.")],
    out_dir: Annotated[Path, typer.Option("--out", help="Folder for the private key files.")],
    sign: Annotated[SignKind, typer.Option(help="Signing key type.")] = SignKind.ED25519,
    enc: Annotated[EncKind, typer.Option(help="Encryption key type.")] = EncKind.X25519,
    toml: Annotated[
        bool,
        typer.Option(
            "--toml", help="Print the public keys as directory TOML, ready to paste, not JSON."
        ),
    ] = False,
) -> None:
    """Write private keys (mode 0600, never overwritten); print the public JWKs.

    Set ATLAS_KEY_PASSPHRASE to encrypt the key files with a passphrase.
    """
    try:
        generated = generate_org_keys(
            org,
            out_dir,
            sign=sign.value,
            enc=enc.value,
            passphrase=_passphrase(),
        )
    except ATLAS_ERRORS as exc:
        err.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False)
        raise typer.Exit(1) from exc
    err.print(f"wrote {generated.sign_path} and {generated.enc_path} (mode 0600)")
    if toml:
        print(_directory_toml(org, [generated.sign_jwk, generated.enc_jwk]), end="")
        return
    print(
        orjson.dumps(
            {"keys": [generated.sign_jwk, generated.enc_jwk]}, option=orjson.OPT_INDENT_2
        ).decode()
    )


def _directory_toml(org: str, jwks: list[dict[str, str]]) -> str:
    """The ``keys`` entries of a directory file for these public JWKs (inline tables)."""
    table = "broker.keys" if org == "atlas-broker" else "organisations.keys"
    where = "after [broker]" if table == "broker.keys" else "under its [[organisations]] entry"
    lines = [f"# {org}: paste {where}"]
    for jwk in jwks:
        if table == "broker.keys" and jwk["use"] != "sig":
            continue  # the directory publishes the broker's signing keys only
        members = ", ".join(
            f"{name} = {orjson.dumps(value).decode()}" for name, value in jwk.items()
        )
        lines.append(f"[[{table}]]")
        lines.append(f'use = "{jwk["use"]}"')
        if jwk["use"] == "enc":
            lines.append("current = true")
        lines.append(f"jwk = {{ {members} }}")
    return "\n".join(lines) + "\n"


@keys_app.command("list")
def keys_list(
    org: Annotated[str | None, typer.Option(help="Only this organisation's keys.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="JSON lines, one key per line.")] = False,
) -> None:
    """List the keys the directory publishes, with their state.

    States: current (new packages are sealed to it), overlap (a rotated-out key still valid
    for opening and verifying until not_after), expired (its overlap is over), revoked,
    valid (a signing key that is not the only one).
    """
    from ._bus import nats_session
    from ._directory_store import fetch_directory
    from ._keyops import key_rows

    async def _list() -> list[dict[str, str]]:
        async with nats_session(settings(), embedded_ok=False, name="atlas-keys") as (_, js):
            return key_rows((await fetch_directory(js)).directory, org)

    rows = run(_list())
    if as_json:
        for row in rows:
            sys.stdout.write(orjson.dumps(row).decode() + "\n")
        return
    table = Table(title="keys")
    for column in ("org", "use", "kty", "kid", "state", "not_after", "revoked_at"):
        table.add_column(column, overflow="fold", no_wrap=column == "kid")
    for row in rows:
        table.add_row(
            *(row[c] for c in ("org", "use", "kty", "kid", "state", "not_after", "revoked_at"))
        )
    out.print(table)


@keys_app.command("rotate")
def keys_rotate(
    org: Annotated[str, typer.Option(help="Organisation id (or atlas-broker).")],
    jwk: Annotated[
        Path,
        typer.Option(
            help="File with the new public JWK (or a JWK set: the key of the same use is taken)."
        ),
    ],
    use: Annotated[str, typer.Option(help="sig | enc: which key of a JWK set to take.")] = "enc",
    overlap_hours: Annotated[
        float,
        typer.Option(min=0, help="Hours the previous key stays valid for opening/verifying."),
    ] = 168.0,
) -> None:
    """Make a new key current; the previous one stays valid for the overlap. Logged."""
    from datetime import timedelta

    from ._bus import nats_session
    from ._keyops import rotate_key

    data = _read_json(jwk)
    candidates = data.get("keys", [data]) if isinstance(data, dict) else []
    chosen = next((k for k in candidates if isinstance(k, dict) and k.get("use") == use), None)
    if chosen is None:
        err.print(f"[bold red]error:[/] {jwk}: no JWK with use {use!r}", highlight=False)
        raise typer.Exit(1)

    async def _rotate() -> Any:
        async with nats_session(settings(), embedded_ok=False, name="atlas-keys") as (_, js):
            return await rotate_key(js, org=org, jwk=chosen, overlap=timedelta(hours=overlap_hours))

    event = run(_rotate())
    out.print(
        f"{org}: {event.use} key {event.kid} is current (directory revision {event.revision})"
    )


@keys_app.command("revoke")
def keys_revoke(
    org: Annotated[str, typer.Option(help="Organisation id (or atlas-broker).")],
    kid: Annotated[str, typer.Option(help="Key id (RFC 7638 thumbprint) to revoke.")],
) -> None:
    """Revoke a key now: nothing more is sealed to it or accepted from it. Logged."""
    from ._bus import nats_session
    from ._keyops import revoke_key

    async def _revoke() -> Any:
        async with nats_session(settings(), embedded_ok=False, name="atlas-keys") as (_, js):
            return await revoke_key(js, org=org, kid=kid)

    event = run(_revoke())
    out.print(f"{org}: {event.use} key {event.kid} revoked (directory revision {event.revision})")


def _read_json(path: Path) -> Any:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        reason = escape(str(exc.strerror or exc))
        err.print(
            f"[bold red]error:[/] {escape(str(path))}: cannot read: {reason}", highlight=False
        )
        raise typer.Exit(1) from exc
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        hint = (
            " it is a PEM key; give the public JWK (JSON) that `keys generate` printed"
            if raw.lstrip().startswith(b"-----BEGIN")
            else f" {exc}"
        )
        err.print(
            f"[bold red]error:[/] {escape(str(path))}: not JSON:{escape(hint)}", highlight=False
        )
        raise typer.Exit(1) from exc


@audit_app.command("list")
def audit_list(
    org: Annotated[str | None, typer.Option(help="Only entries about this organisation.")] = None,
    since: Annotated[
        str | None, typer.Option(help="Only entries at or after this time (RFC 3339, UTC).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="JSON lines, exactly as logged.")] = False,
) -> None:
    """Print the dissemination log entries."""
    from ._audit import matches, read_log
    from ._bus import nats_session

    async def _list() -> int:
        count = 0
        async with nats_session(settings(), embedded_ok=False, name="atlas-audit") as (_, js):
            async for record in read_log(js):
                if not matches(record.entry, org=org, since=since):
                    continue
                count += 1
                if as_json:
                    sys.stdout.write(record.raw.decode() + "\n")
                else:
                    line = _describe_entry(record.index, record.entry)
                    out.print(line, highlight=False, markup=False)
        return count

    count = run(_list())
    err.print(f"{count} entr{'y' if count == 1 else 'ies'}")


def _describe_entry(index: int, e: dict[str, Any]) -> str:
    src = e.get("src") or {}
    kind = e.get("type")
    head = f"{index:>6}  {e.get('ts', '')}  {kind!s:<10}"
    if kind == "submission":
        return f"{head} {e.get('org')} {e.get('result')} {e.get('reason') or ''} {e.get('sub', '')}"
    if kind == "delivery":
        objects = e.get("objects")
        counts = (
            " ".join(f"{name}={n}" for name, n in objects.items())
            if isinstance(objects, dict)
            else objects
        )
        return (
            f"{head} {src.get('org')} → {e.get('rcpt')}  tlp={e.get('tlp')} "
            f"{counts} pkg={e.get('pkg')}"
        )
    if kind == "receipt":
        if e.get("result") == "refused":
            why = "the acknowledgement did not verify or names no delivery to it"
            return f"{head} from {e.get('rcpt')}  REFUSED ({why})"
        return f"{head} from {e.get('rcpt')}  acknowledged pkg={e.get('pkg')}"
    if kind == "key":
        return f"{head} {e.get('event')} {e.get('org')} {e.get('use')} key {e.get('kid')}"
    if kind == "directory":
        return (
            f"{head} {e.get('event')} revision {e.get('directory_revision')}"
            f"  keys added {len(e.get('keys_added') or [])}, "
            f"dropped {len(e.get('keys_dropped') or [])}"
        )
    if kind not in ("withheld", "derived"):
        return f"{head} " + " ".join(
            f"{name}={value}" for name, value in e.items() if name not in ("v", "ts", "type")
        )
    return (
        f"{head} {src.get('org')} → {e.get('rcpt')}  {e.get('obj_type', '')} "
        f"reason={e.get('reason')} tlp={e.get('tlp')}"
    )


@app.command()
def demo(
    keep: Annotated[
        Path | None, typer.Option(help="Keep the demo's folder here instead of a temporary one.")
    ] = None,
    serve: Annotated[
        bool,
        typer.Option(
            "--serve",
            help="Afterwards keep the demo community running behind a TAXII server on "
            "loopback and print its URL, collections and credentials; Ctrl-C stops it.",
        ),
    ] = False,
    port: Annotated[
        int, typer.Option(help="TAXII port with --serve (0: a free one).", min=0, max=65535)
    ] = 9443,
) -> None:
    """Run the whole path end to end on an embedded NATS and report what each partner got."""
    from ._demo import run_demo

    if _state.get("log_level") is None:  # keep the demo's report readable
        configure_logging(_state.get("log_format") or settings().log_format, "warning")
    console = out if out.is_terminal else Console(width=120)
    ok = run(run_demo(keep=keep, console=console, serve_port=port if serve else None))
    if not ok:
        raise typer.Exit(1)


@deploy_app.command("nats-config")
def deploy_nats_config(
    directory: Annotated[Path, typer.Option(help="Directory TOML file.")],
    out_dir: Annotated[Path, typer.Option("--out", help="Folder for configs and nkey seeds.")],
    cluster: Annotated[bool, typer.Option(help="Three cluster nodes instead of one.")] = False,
    store: Annotated[Path, typer.Option(help="JetStream store folder on the server.")] = Path(
        "/var/lib/nats"
    ),
    witness: Annotated[
        list[str] | None,
        typer.Option(
            help="A witness's key name (its `witness --name`); repeat for several. Each "
            "gets an account and a seed nkeys/witness-<n>.nk: it reads LOG and publishes "
            "only its own cosignatures."
        ),
    ] = None,
    write_deadline: Annotated[
        str | None,
        typer.Option(
            help="How long nats-server may take to write to a client before cutting it off "
            "as a slow consumer (2s, 500ms; default: nats-server's 10s). Shorter bounds the "
            "memory a client that never reads can cost (measured: 4.0 GB -> 1.3 GB at 2s, "
            "deploy/README.md) but cuts off clients on slow links."
        ),
    ] = None,
) -> None:
    """nats-server configs: one account and nkey per organisation, lent only its subjects.

    Every file is checked with `nats-server -t`. Seeds are written 0600 and reused when
    present; hand each organisation its own seed only.
    """
    import subprocess

    from ._deploy import (
        check_write_deadline,
        render_cluster,
        render_single,
        route_password,
        write_users,
    )
    from ._directory_store import read_directory_file
    from ._embedded import find_nats_server

    try:
        parsed = read_directory_file(directory)
        check_write_deadline(write_deadline)
        witnesses = {f"witness-{n}": name for n, name in enumerate(witness or [], start=1)}
        users = write_users(parsed, out_dir / "nkeys", extra=witnesses)
    except ATLAS_ERRORS as exc:
        err.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False)
        raise typer.Exit(1) from exc
    files: list[Path] = []
    if cluster:
        secret = route_password(out_dir / "nkeys")
        for node in range(3):
            path = out_dir / f"nats-node{node + 1}.conf"
            text = render_cluster(
                parsed,
                users,
                node=node,
                store_dir=store / f"n{node}",
                route_secret=secret,
                witnesses=witnesses,
                write_deadline=write_deadline,
            )
            path.write_text(text)
            path.chmod(0o600)  # it holds the routes' password
            files.append(path)
    else:
        path = out_dir / "nats.conf"
        path.write_text(
            render_single(
                parsed,
                users,
                store_dir=store,
                witnesses=witnesses,
                write_deadline=write_deadline,
            )
        )
        files.append(path)
    binary = str(find_nats_server())
    for path in files:
        check = subprocess.run(  # noqa: S603 - our own binary and file
            [binary, "-t", "-c", str(path)], capture_output=True, text=True, check=False
        )
        if check.returncode != 0:
            err.print(f"[bold red]error:[/] {path}: {escape(check.stderr.strip() or check.stdout)}")
            raise typer.Exit(1)
        out.print(f"{path}: valid")
    out.print(
        f"{len(users)} nkey users, each in an account of its own; seeds in "
        f"{out_dir / 'nkeys'} (0600). Clients set nats.nkey_seed_file. Run `directory "
        "load` with the broker's seed: it makes each organisation's consumers."
    )


def _register_log_commands() -> None:
    """``audit verify|query|export|report|vkey`` and ``witness`` live in broker._audit_cli."""
    from ._audit_cli import register

    register(audit_app, app, settings=settings, run=run, out=out, err=err)


_register_log_commands()


def _register_taxii_commands() -> None:
    """``taxii serve|passwd|pull`` live in broker._taxii_cli."""
    from ._taxii_cli import register

    register(app, settings=settings, run=run, out=out, err=err)


_register_taxii_commands()


def _register_status_command() -> None:
    """``status`` lives in broker._status."""
    from ._status import register

    register(app, settings=settings, out=out, err=err)


_register_status_command()


def main() -> None:
    try:
        with contextlib.suppress(BrokenPipeError):
            app()
    except ATLAS_ERRORS as exc:
        # A command that runs no job (``run`` catches these itself), e.g. ``taxii passwd``
        # given an id that is not one: the same one clear line as every other command.
        err.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        sys.exit(1)
