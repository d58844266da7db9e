"""The ``taxii serve|passwd|pull`` commands, registered on the CLI by :func:`register`."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from ._config import Settings

__all__ = ["ca_file_option", "register", "until_signalled"]


async def until_signalled(job: Coroutine[Any, Any, None]) -> bool:
    """Run ``job`` until it ends or SIGINT/SIGTERM asks for a stop; True if it was asked.

    A requested stop is the normal end of a server, not a failure: the job is cancelled,
    finishes what it must (requests in flight, NATS drained) and the command exits 0.
    """
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    task = asyncio.create_task(job, name="taxii-serve")
    stopping = asyncio.create_task(stop.wait(), name="taxii-stop")
    try:
        await asyncio.wait({task, stopping}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        task.cancel()
        stopping.cancel()
        await asyncio.wait({task, stopping})
    if not task.cancelled():
        task.result()  # the job's own error, if it failed
    return stop.is_set()


def ca_file_option(help_text: str) -> Any:
    """A ``--...-ca-file`` option: an existing PEM file; the system's roots when omitted."""
    return typer.Option(exists=True, dir_okay=False, help=f"{help_text} Default: system roots.")


def register(
    app: typer.Typer,
    *,
    settings: Callable[[], Settings],
    run: Callable[[Coroutine[Any, Any, Any]], Any],
    out: Console,
    err: Console,
) -> None:
    taxii_app = typer.Typer(
        help="The TAXII 2.1 server, its credentials, and pulling from members' TAXII servers.",
        no_args_is_help=True,
    )
    app.add_typer(taxii_app, name="taxii")

    @taxii_app.command("serve")
    def serve(
        with_router: Annotated[
            bool, typer.Option("--with-router", help="Run the router in the same process.")
        ] = False,
    ) -> None:
        """Serve TAXII 2.1 (HTTPS with taxii.cert_file/key_file; plain HTTP on loopback only)."""
        from ._taxii_service import serve_taxii

        cfg = settings()

        def started(url: str) -> None:
            err.print(f"TAXII 2.1 at {url}/taxii2/ (API root {url}/{cfg.taxii.api_root}/)")

        if run(until_signalled(serve_taxii(cfg, with_router=with_router, on_started=started))):
            err.print("stopped")

    @taxii_app.command("passwd")
    def passwd(
        org: Annotated[str, typer.Option(help="Organisation id the secret is for.")],
        keep_old: Annotated[
            bool, typer.Option("--keep-old", help="Keep the previous secret(s) valid too.")
        ] = False,
    ) -> None:
        """Create or replace an organisation's TAXII secret; prints it once."""
        from adapters._taxii import set_secret

        from ._taxii_service import credentials_path

        path = credentials_path(settings())
        token = set_secret(path, org, keep_old=keep_old)
        err.print(f"stored the hash in {path}; the secret is shown once:")
        print(token)

    @taxii_app.command("pull")
    def pull(
        org: Annotated[str, typer.Option(help="Member whose TAXII server is pulled.")],
        url: Annotated[str, typer.Option(help="The member's collection URL (…/collections/ID/).")],
        user: Annotated[str | None, typer.Option(help="User for the member's server.")] = None,
        password: Annotated[
            str | None, typer.Option(envvar="ATLAS_PULL_PASSWORD", help="Its password.")
        ] = None,
        to: Annotated[str | None, typer.Option(help="Named audience, e.g. group:op-x.")] = None,
        once: Annotated[
            bool, typer.Option("--once", help="Pull what is there, then exit.")
        ] = False,
        interval: Annotated[float, typer.Option(help="Seconds between pulls.")] = 60.0,
        ca_file: Annotated[
            Path | None, ca_file_option("PEM CA bundle to trust for the member's HTTPS server.")
        ] = None,
    ) -> None:
        """Pull a member's TAXII collection into the broker on the member's behalf."""
        from ._submission import parse_audience
        from ._taxii_pull import pull_member

        stats = run(
            pull_member(
                settings(),
                org=org,
                url=url,
                user=user,
                password=password,
                to=parse_audience(to),
                once=once,
                interval=interval,
                ca_file=ca_file,
            )
        )
        out.print(
            f"pulled {stats.objects} object(s) in {stats.submissions} submission(s)"
            + (f"; {stats.refused} refused (see the log)" if stats.refused else "")
        )
