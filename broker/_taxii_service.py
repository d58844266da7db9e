"""The TAXII jobs behind the CLI: serve the TAXII front, set a secret, pull a member's server.

The server runs on the same JetStream as the router (in the same process with
``taxii serve --with-router``, or beside ``atlas-broker serve``), hands the TAXII app its
NATS-backed backend, and stops cleanly when cancelled.
"""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import Callable
from pathlib import Path

import structlog
from nats.js import JetStreamContext

from adapters._taxii import (
    TAXII_MEDIA_TYPE,
    Credentials,
    HttpLimits,
    create_app,
    is_loopback,
    serve_http,
)
from keys import PrivateKey

from ._bus import ensure_streams, nats_session
from ._config import Settings
from ._directory_store import DirectoryWatcher, ensure_directory_intake
from ._limits import SubmissionLimiter
from ._service import broker_signing_key, run_router, streams_for
from ._taxii_backend import NatsTaxiiBackend
from .errors import ATLAS_ERRORS, ConfigError

__all__ = ["credentials_path", "load_cursor_key", "run_taxii", "serve_taxii"]

log = structlog.get_logger()


def credentials_path(settings: Settings) -> Path:
    return settings.taxii.credentials_file or settings.data_dir / "taxii-credentials.toml"


def load_cursor_key(settings: Settings) -> bytes:
    """The key of the ``next`` tokens and status ids; created (0600) on first use, shared by
    instances."""
    path = settings.taxii.cursor_key_file or settings.data_dir / "taxii-cursor.key"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(secrets.token_bytes(32))
    if path.stat().st_mode & 0o077:
        raise ConfigError(f"taxii.cursor_key_file {path} is readable by others: chmod 600 it")
    data = path.read_bytes()
    if len(data) < 32:
        raise ConfigError(f"taxii.cursor_key_file {path} holds {len(data)} bytes; 32 are needed")
    return data


def load_credentials(settings: Settings) -> Credentials:
    path = credentials_path(settings)
    if not path.exists():
        raise ConfigError(
            f"no TAXII credentials at {path}: create them with "
            "`atlas-broker taxii passwd --org ID` (or set taxii.credentials_file)"
        )
    return Credentials.from_file(path)


async def run_taxii(
    js: JetStreamContext,
    settings: Settings,
    *,
    signing_key: PrivateKey,
    on_started: Callable[[str], None] | None = None,
) -> None:
    """Serve TAXII on ``js`` until cancelled."""
    credentials = load_credentials(settings)
    cursor_key = load_cursor_key(settings)
    await ensure_streams(js, streams_for(settings))
    await ensure_directory_intake(js)  # it publishes into the members' intakes
    async with DirectoryWatcher(js) as watcher:
        backend = NatsTaxiiBackend(
            js,
            lambda: watcher.current,
            signing_key=signing_key,
            status_key=cursor_key,
            max_bundle_bytes=settings.limits.max_bundle_bytes,
            max_objects=settings.limits.max_objects,
        )
        await backend.start()
        # Its own limiter: the router counts again whatever the front lets through.
        limiter = SubmissionLimiter(settings.limits)
        app = create_app(
            backend,
            credentials,
            cursor_key=cursor_key,
            api_root=settings.taxii.api_root,
            public_url=settings.taxii.public_url,
            rate_limit=limiter.retry_after if limiter.enabled else None,
        )
        cfg = settings.taxii

        def _started(url: str) -> None:
            log.info("taxii.started", url=url, api_root=f"{url}/{cfg.api_root}/")
            if cfg.public_url is None and not is_loopback(cfg.host):
                # Discovery then writes its URLs from each request's Host header: what a
                # client asked for, not what this server is known as (nor, behind a proxy
                # terminating TLS, with the scheme clients use).
                log.warning(
                    "taxii.public_url_unset",
                    host=cfg.host,
                    hint="set taxii.public_url to the URL clients reach this server at",
                )
            if on_started is not None:
                on_started(url)

        await serve_http(
            app,
            host=cfg.host,
            port=cfg.port,
            cert_file=cfg.cert_file,
            key_file=cfg.key_file,
            on_started=_started,
            trusted_proxies=cfg.trusted_proxies,
            error_media_type=TAXII_MEDIA_TYPE,
            limits=HttpLimits(
                max_connections=cfg.max_connections,
                max_connections_per_address=cfg.max_connections_per_address,
                header_timeout=cfg.header_timeout,
                body_timeout=cfg.body_timeout,
                body_deadline=cfg.body_deadline,
            ),
        )


async def serve_taxii(
    settings: Settings,
    *,
    with_router: bool,
    on_started: Callable[[str], None] | None = None,
) -> None:
    """``atlas-broker taxii serve``: the TAXII front (and the router with ``with_router``)."""
    signing_key = broker_signing_key(settings)
    load_credentials(settings)  # missing secrets stop startup before anything connects
    load_cursor_key(settings)
    async with nats_session(settings, embedded_ok=with_router, name="atlas-taxii") as (_, js):
        try:
            async with asyncio.TaskGroup() as group:
                if with_router:
                    group.create_task(run_router(js, settings, signing_key=signing_key))
                group.create_task(
                    run_taxii(js, settings, signing_key=signing_key, on_started=on_started)
                )
        except* ATLAS_ERRORS as failed:
            # one job failed (the others were cancelled): its error, not a group, for the CLI
            error: BaseException = failed
            while isinstance(error, BaseExceptionGroup):
                error = error.exceptions[0]
            raise error from None
