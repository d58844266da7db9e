"""The ``audit verify|query|export|report|vkey`` and ``witness`` commands.

Registered on the CLI's Typer apps by :func:`register`, so that ``cli.py`` only wires them.
Every command reads a live LOG (the configured NATS) or, with ``--from DIR``, a copy made
by ``audit export --format log``; it needs public keys only.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import AsyncIterator, Callable, Coroutine
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, TypeVar

import orjson
import structlog
import typer
from nats.js import JetStreamContext
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from ._config import Settings

__all__ = ["register"]

_TLP_NAMES = ("clear", "green", "amber", "amber+strict", "red", "none")

log = structlog.get_logger()
T = TypeVar("T")
Run = Callable[[Coroutine[Any, Any, T]], T]

FromDir = Annotated[
    Path | None, typer.Option("--from", help="A log copy (audit export --format log).")
]
LogKey = Annotated[
    list[str] | None, typer.Option("--log-key", help="Log verifier key name+id+key (repeat).")
]
BrokerJwks = Annotated[
    Path | None, typer.Option(help="The broker's public JWK set; its Ed25519 keys sign the log.")
]
WitnessKey = Annotated[
    list[str] | None, typer.Option("--witness-key", help="Witness verifier key (repeat).")
]


def register(
    audit_app: typer.Typer,
    app: typer.Typer,
    *,
    settings: Callable[[], Settings],
    run: Run[Any],
    out: Console,
    err: Console,
) -> None:
    """Add the audit and witness commands to the CLI."""

    @contextlib.asynccontextmanager
    async def source_for(
        from_dir: Path | None,
    ) -> AsyncIterator[tuple[Any, JetStreamContext | None]]:
        from ._bus import nats_session
        from ._logcopy import LiveLog, LogCopy

        if from_dir is not None:
            yield LogCopy(from_dir), None
            return
        async with nats_session(settings(), embedded_ok=False, name="atlas-audit") as (_, js):
            yield LiveLog(js), js

    async def keys_for(
        source: Any,
        js: JetStreamContext | None,
        log_key: list[str] | None,
        jwks: Path | None,
        witness_key: list[str] | None,
        *,
        required: bool,
    ) -> tuple[list[Any], list[Any]]:
        from ._audit_jobs import log_verifiers
        from ._directory_store import fetch_directory
        from ._note import COSIGNATURE_V1, NoteVerifier

        snap = await source.snapshot()
        logs = log_verifiers(log_key or [], jwks, snap.origin)
        if not logs and js is not None and snap.origin is not None and required:
            ring = (await fetch_directory(js)).broker_keyring
            logs = [
                NoteVerifier.from_public_key(snap.origin, k)
                for k in ring.public_keys.values()
                if k.kind == "Ed25519"
            ]
            err.print(
                "[yellow]warning:[/] log keys taken from the directory on the bus; "
                "pin them with --log-key or --broker-jwks"
            )
        witnesses = [NoteVerifier.from_vkey(v) for v in witness_key or []]
        for w in witnesses:
            if w.sig_type != COSIGNATURE_V1:
                raise typer.BadParameter(
                    f"{w.vkey} is a type 0x{w.sig_type:02x} key, not a witness's cosignature "
                    "key (type 0x04): use the key `atlas-broker witness` prints at start",
                    param_hint="--witness-key",
                )
        return logs, witnesses

    def progress_bar() -> tuple[Progress, Callable[[int, int | None], None]]:
        bar = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=err,
            transient=True,
        )
        task = bar.add_task("entries", total=None)

        def update(done: int, total: int | None) -> None:
            bar.update(task, completed=done, total=max(total or 0, done) or None)

        return bar, update

    @audit_app.command("verify")
    def audit_verify(
        from_dir: FromDir = None,
        log_key: LogKey = None,
        broker_jwks: BrokerJwks = None,
        witness_key: WitnessKey = None,
        deliveries: Annotated[
            bool,
            typer.Option(help="Also check every package in DELIVERIES has its entry (live only)."),
        ] = True,
        grace: Annotated[
            float, typer.Option(help="Seconds a package may wait for its entry (being routed).")
        ] = 60.0,
        require_signed: Annotated[
            bool,
            typer.Option(
                "--require-signed",
                help="Exit 2 when entries follow the last signed checkpoint (nothing verifies "
                "them; in an exported copy anyone could have appended them).",
            ),
        ] = False,
    ) -> None:
        """Verify entries, checkpoints, cosignatures and consistency; exit 1 naming the index.

        Entries after the last signed checkpoint are counted and reported as not verified.
        """
        from ._audit_jobs import verify_log

        witness_keys_given: list[str] = []

        async def _verify() -> Any:
            async with source_for(from_dir) as (source, js):
                logs, witnesses = await keys_for(
                    source, js, log_key, broker_jwks, witness_key, required=True
                )
                witness_keys_given.extend(w.name for w in witnesses)
                bar, update = progress_bar()
                with bar:
                    return await verify_log(
                        source,
                        log_keys=logs,
                        witness_keys=witnesses,
                        deliveries=js if deliveries else None,
                        grace=grace,
                        progress=update,
                    )

        result = run(_verify())
        for problem in sorted(result.problems, key=lambda p: (p.index is None, p.index or 0))[:20]:
            where = "" if problem.index is None else f"index {problem.index}: "
            # What the log says is data, never console markup: a note holding "[/x]" crashed
            # the verdict and "[conceal]" hid an attacker's text from the auditor.
            err.print(
                f"[red]✘[/] {where}{escape(problem.message)}", highlight=False, soft_wrap=True
            )
        if result.deliveries_unreadable:
            err.print(f"[yellow]⚠[/] {escape(result.deliveries_unreadable)}", highlight=False)
        if result.ok and result.entries and not result.checkpointed_size:
            # Nothing wrong found, and nothing checked: no ✔ for that.
            err.print(
                f"[yellow]⚠[/] none of the {result.entries} entries is covered by a signed "
                "checkpoint: nothing is verified",
                highlight=False,
                soft_wrap=True,
            )
            raise typer.Exit(2)
        if result.ok:
            out.print(
                f"[bold green]✔[/] {escape(result.summary())}", highlight=False, soft_wrap=True
            )
            for witness in witness_keys_given:
                seen = result.witnessed_size.get(witness, 0)
                if seen < result.checkpointed_size:
                    # Normal while a witness catches up; what the auditor relies on it for
                    # ends there all the same.
                    err.print(
                        f"[yellow]⚠[/] witness {escape(witness)} cosigned up to size {seen}: "
                        f"entries {seen}..{result.checkpointed_size - 1} are signed by the log "
                        "alone",
                        highlight=False,
                        soft_wrap=True,
                    )
            if result.unverified_tail:
                err.print(
                    f"[yellow]⚠[/] entries {result.checkpointed_size}..{result.entries - 1} are "
                    "not covered by a signed checkpoint: treat them as unverified",
                    highlight=False,
                    soft_wrap=True,
                )
                if require_signed:
                    raise typer.Exit(2)
            return
        out.print(f"[bold red]✘[/] {escape(result.summary())}", highlight=False, soft_wrap=True)
        raise typer.Exit(1)

    @audit_app.command("query")
    def audit_query(
        from_dir: FromDir = None,
        org: Annotated[str | None, typer.Option(help="Originator or recipient.")] = None,
        originator: Annotated[
            str | None, typer.Option(help="The organisation that submitted.")
        ] = None,
        recipient: Annotated[str | None, typer.Option(help="The receiving organisation.")] = None,
        tlp: Annotated[str | None, typer.Option(help="clear|green|amber|amber+strict|red")] = None,
        action: Annotated[
            str | None,
            typer.Option(
                help="An entry type (submission|delivery|withheld|derived|receipt|key|"
                "directory|notice) or a result (accepted|refused)"
            ),
        ] = None,
        reason: Annotated[str | None, typer.Option(help="A reason code.")] = None,
        since: Annotated[str | None, typer.Option(help="From this time (RFC 3339).")] = None,
        until: Annotated[str | None, typer.Option(help="Before this time (RFC 3339).")] = None,
        as_json: Annotated[bool, typer.Option("--json", help="JSON lines.")] = False,
    ) -> None:
        """Entries by organisation, recipient, TLP, action and time."""
        from ._audit_jobs import Query, flatten, normalise_time

        if tlp is not None and tlp.lower() not in _TLP_NAMES:
            err.print(
                f"[bold red]error:[/] --tlp {escape(tlp)!r}: use one of {', '.join(_TLP_NAMES)}",
                highlight=False,
            )
            raise typer.Exit(2)

        async def _query() -> list[dict[str, Any]]:
            query = Query(
                org=org,
                originator=originator,
                recipient=recipient,
                tlp=tlp,
                action=action,
                reason=reason,
                since=normalise_time(since),
                until=normalise_time(until),
            )
            rows = []
            async with source_for(from_dir) as (source, _):
                async for record in source.records():
                    try:
                        entry = orjson.loads(record.raw)
                    except orjson.JSONDecodeError:
                        continue
                    if isinstance(entry, dict) and query.matches(entry):
                        rows.append(flatten(record, entry))
            return rows

        rows = run(_query())
        if as_json:
            for row in rows:
                sys.stdout.write(orjson.dumps(row).decode() + "\n")
        else:
            table = Table()
            columns = ("index", "ts", "type", "originator", "recipient", "tlp", "reason", "pkg")
            for column in columns:
                table.add_column(column)
            for row in rows:
                table.add_row(*(Text("" if row[c] is None else str(row[c])) for c in columns))
            out.print(table)
        err.print(f"{len(rows)} entr{'y' if len(rows) == 1 else 'ies'}")

    @audit_app.command("export")
    def audit_export(
        out_path: Annotated[
            Path,
            typer.Option(
                "--out", help="File (csv, jsonl) or new folder (log); '-' for standard output."
            ),
        ],
        fmt: Annotated[
            str,
            typer.Option(
                "--format",
                help="csv | jsonl (flattened) | raw (entries as logged) | log (a verifiable copy)",
            ),
        ] = "jsonl",
        from_dir: FromDir = None,
    ) -> None:
        """Export the log: CSV or JSON lines for people and tools, or a verifiable copy."""
        from ._audit_jobs import write_entries
        from ._logcopy import write_copy

        if fmt not in ("csv", "jsonl", "raw", "log"):
            err.print(f"[bold red]error:[/] --format {fmt!r}: use csv, jsonl, raw or log")
            raise typer.Exit(2)

        async def _export() -> str:
            async with source_for(from_dir) as (source, _):
                if fmt == "log":
                    manifest = await write_copy(source, out_path)
                    return f"{manifest['entries']} entries, {manifest['checkpoints']} checkpoints"
                if str(out_path) == "-":
                    try:
                        count = await write_entries(source, sys.stdout, fmt=fmt)
                    except BrokenPipeError:
                        # The reader had enough (`| head`): stop reading the log, quietly.
                        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
                        return "entries until the reader closed the pipe"
                else:
                    with out_path.open("w", newline="", encoding="utf-8") as fh:
                        count = await write_entries(source, fh, fmt=fmt)
                return f"{count} entries"

        err.print(f"exported {run(_export())} to {escape(str(out_path))}", highlight=False)

    @audit_app.command("report")
    def audit_report(
        html: Annotated[Path, typer.Option("--html", help="The HTML file to write.")],
        from_dir: FromDir = None,
        log_key: LogKey = None,
        broker_jwks: BrokerJwks = None,
        witness_key: WitnessKey = None,
    ) -> None:
        """One self-contained HTML page: verification, flows by TLP, withheld, timeline."""
        from ._audit_jobs import collect_report
        from ._log import timestamp
        from ._report import render_html

        async def _report() -> Any:
            async with source_for(from_dir) as (source, js):
                logs, witnesses = await keys_for(
                    source, js, log_key, broker_jwks, witness_key, required=True
                )
                bar, update = progress_bar()
                with bar:
                    return await collect_report(
                        source,
                        log_keys=logs,
                        witness_keys=witnesses,
                        deliveries=js,
                        progress=update,
                    )

        stats, result = run(_report())
        label = str(from_dir) if from_dir is not None else "the live LOG stream"
        html.write_text(
            render_html(stats, result, source=label, generated=timestamp(datetime.now(UTC))),
            encoding="utf-8",
        )
        verdict = "not verified" if result is None else result.summary()
        err.print(f"wrote {escape(str(html))}: {escape(verdict)}", highlight=False)
        if result is not None and not result.ok:
            raise typer.Exit(1)

    @audit_app.command("vkey")
    def audit_vkey(
        broker_jwks: Annotated[Path, typer.Option(help="The broker's public JWK set.")],
        origin: Annotated[str, typer.Option(help="The log origin (<broker id>/log).")],
    ) -> None:
        """Print the log verifier keys (name+id+key) for a broker JWK set."""
        from ._audit_jobs import log_verifiers

        if not origin.endswith("/log"):
            err.print(
                f"[yellow]⚠[/] origin {escape(origin)!r} does not end in /log: a log's origin is "
                "'<broker id>/log' (the first line of its checkpoints), and keys for another "
                "name verify nothing",
                highlight=False,
                soft_wrap=True,
            )

        async def _vkeys() -> list[str]:
            return [v.vkey for v in log_verifiers([], broker_jwks, origin)]

        for vkey in run(_vkeys()):
            print(vkey)

    @app.command()
    def witness(
        key: Annotated[Path, typer.Option(help="The witness's Ed25519 private key (PEM).")],
        name: Annotated[str, typer.Option(help="Witness key name, e.g. witness.example/w1.")],
        state: Annotated[Path, typer.Option(help="State file (last cosigned checkpoint).")],
        log_key: LogKey = None,
        broker_jwks: BrokerJwks = None,
        origin: Annotated[
            str | None,
            typer.Option(
                help="The log origin (<broker id>/log); cosign only its checkpoints. "
                "Required with --broker-jwks."
            ),
        ] = None,
        once: Annotated[bool, typer.Option("--once", help="Catch up, then exit.")] = False,
    ) -> None:
        """Cosign checkpoints consistent with the last one cosigned; refuse any other.

        Exit 1 when a checkpoint was refused (inconsistent, rolled back, forked); 3 with
        --once when a cosignature was not stored (logged; the next run publishes it again).
        """
        from keys import load_private_key

        from ._audit_jobs import log_verifiers
        from ._bus import nats_session
        from ._witness import Witness, run_witness
        from .errors import ConfigError

        async def _witness() -> Any:
            if broker_jwks is not None and origin is None:
                raise ConfigError(
                    "--broker-jwks needs --origin (<broker id>/log): the log the witness "
                    "cosigns for"
                )
            logs = log_verifiers(log_key or [], broker_jwks, origin)
            if not logs:
                raise ConfigError("give --log-key, or --broker-jwks with --origin")
            w = Witness(
                name=name,
                signing_key=load_private_key(key),
                log_keys=logs,
                state_path=state,
                origin=origin,
            )
            err.print(f"witness verifier key: {w.verifier.vkey}", highlight=False, soft_wrap=True)
            async with nats_session(settings(), embedded_ok=False, name="atlas-witness") as (_, js):
                return await run_witness(js, w, once=once)

        stats = run(_witness())
        err.print(f"cosigned {stats.cosigned}, refused {stats.refused}, not stored {stats.failed}")
        if stats.refused:
            raise typer.Exit(1)
        if stats.failed:  # published again on the next pass: not cosigned yet, say so
            raise typer.Exit(3)
