"""The HTTP monitor of ``atlas-broker serve``: ``/healthz``, ``/readyz`` and ``/metrics``.

- ``/healthz``: the process is alive and its event loop runs (answering at all proves the
  loop turns; the heartbeat task measures how late it runs timers). 200, or 503 when the
  heartbeat stopped.
- ``/readyz``: the broker can route: NATS connected, the streams present, a directory
  loaded, workers running and every organisation's routing consumer (``route-<org>``)
  present and fetched from. 200, or 503 with
  ``{"ready": false, "reason": ...}`` naming the first check that failed.
- ``/metrics``: Prometheus text format from the process's own registry, JetStream figures
  (consumer lag, checkpoint lag) refreshed on each scrape.

It is served by uvicorn inside the broker's event loop and task tree, on loopback by
default (``[monitor]``); the bound URL is written to ``data_dir/monitor/url`` while it
runs so that ``atlas-broker status`` on the same data folder finds it. If the port cannot
be bound the error is logged and the broker keeps routing: the data path matters more.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import nats.errors
import nats.js.errors
import structlog
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from adapters import AdapterError, cancel_and_wait
from adapters._taxii import bind_listener, is_loopback, serve_socket

from ._bus import DELIVERIES, LOG, RECEIPTS, SUBMISSIONS, VIEWS
from ._config import MonitorSettings
from ._feeds import route_consumer, route_consumers
from ._metrics import SAMPLE_ERRORS, BrokerMetrics
from ._router import Router

__all__ = ["Monitor", "monitor_url_file", "running_monitor_url"]

log = structlog.get_logger()

_STREAMS = (SUBMISSIONS, DELIVERIES, VIEWS, RECEIPTS, LOG)
_HEARTBEAT = 0.5
_CHECK_TIMEOUT = 3.0


def monitor_url_file(data_dir: Path) -> Path:
    return data_dir / "monitor" / "url"


def running_monitor_url(data_dir: Path) -> str | None:
    """The URL a running ``serve`` on ``data_dir`` wrote, if any."""
    try:
        text = monitor_url_file(data_dir).read_text().strip()
    except FileNotFoundError:
        return None
    return text or None


class Monitor:
    """Health, readiness and metrics of one broker process over HTTP."""

    def __init__(
        self,
        nc: NATS,
        js: JetStreamContext,
        metrics: BrokerMetrics,
        *,
        settings: MonitorSettings,
        data_dir: Path,
    ) -> None:
        self._nc = nc
        self._js = js
        self.metrics = metrics
        self._settings = settings
        self._url_file = monitor_url_file(data_dir)
        self._router: Router | None = None
        self._scrape = asyncio.Lock()
        self._started = time.monotonic()
        self._lag = 0.0
        self._heart: asyncio.Task[None] | None = None
        self.url = ""

    def attach(self, router: Router) -> None:
        """The router whose readiness ``/readyz`` reports (``run_router`` calls it)."""
        self._router = router

    # -- checks ---------------------------------------------------------------------------

    def health(self) -> tuple[bool, dict[str, Any]]:
        alive = self._heart is not None and not self._heart.done()
        body: dict[str, Any] = {
            "status": "ok" if alive else "event loop heartbeat stopped",
            "loop_lag_seconds": round(self._lag, 6),
            "uptime_seconds": round(time.monotonic() - self._started, 3),
        }
        return alive, body

    async def readiness(self) -> tuple[bool, dict[str, Any]]:
        checks: dict[str, str] = {}
        reason = await self._first_failure(checks)
        body: dict[str, Any] = {"ready": reason is None, "checks": checks}
        if reason is not None:
            body["reason"] = reason
        return reason is None, body

    async def _first_failure(self, checks: dict[str, str]) -> str | None:
        if not self._nc.is_connected:
            return "nats: not connected (reconnecting)"
        checks["nats"] = "connected"
        router = self._router
        if router is None:
            return "router: not started yet"
        why = router.unready_reason()
        if why is not None:
            return why
        checks["directory"] = "loaded"
        checks["router"] = (
            f"{router.bound_workers} worker(s), {len(router.feeding)} organisation(s) fed"
        )
        try:
            async with asyncio.timeout(_CHECK_TIMEOUT):
                for stream in _STREAMS:
                    try:
                        await self._js.stream_info(stream)
                    except nats.js.errors.NotFoundError:
                        return f"streams: {stream} does not exist"
                checks["streams"] = "present"
                present = await route_consumers(self._js)
                missing = sorted(router.feeding - set(present))
                if missing:
                    names = ", ".join(route_consumer(org) for org in missing[:5])
                    return f"router: the durable consumer(s) {names} do not exist"
                checks["consumers"] = f"{len(present)} present"
        except TimeoutError:
            return f"nats: JetStream did not answer within {_CHECK_TIMEOUT:.0f} s"
        except (nats.errors.Error, OSError) as exc:
            return f"nats: {str(exc) or type(exc).__name__}"
        return None

    async def refresh(self) -> None:
        """Bring the sampled figures up to date (bounded; failures are counted, not raised)."""
        self.metrics.nats_connected.set(1 if self._nc.is_connected else 0)
        if self._router is not None:
            self.metrics.deferred.set(self._router.deferred)
        if not self._nc.is_connected:
            return
        async with self._scrape:
            try:
                async with asyncio.timeout(_CHECK_TIMEOUT):
                    await self.metrics.sample(self._js)
            except SAMPLE_ERRORS as exc:
                self.metrics.sample_failures.inc()
                log.warning("monitor.sample_failed", error=str(exc) or type(exc).__name__)

    # -- HTTP -----------------------------------------------------------------------------

    def app(self) -> Starlette:
        async def healthz(request: Request) -> Response:
            ok, body = self.health()
            return JSONResponse(body, status_code=200 if ok else 503)

        async def readyz(request: Request) -> Response:
            ok, body = await self.readiness()
            return JSONResponse(body, status_code=200 if ok else 503)

        async def metrics(request: Request) -> Response:
            await self.refresh()
            return Response(self.metrics.render(), media_type=CONTENT_TYPE_LATEST)

        return Starlette(
            routes=[
                Route("/healthz", healthz, methods=["GET"]),
                Route("/readyz", readyz, methods=["GET"]),
                Route("/metrics", metrics, methods=["GET"]),
            ]
        )

    async def run(self, *, on_started: Callable[[str], None] | None = None) -> None:
        """Serve until cancelled; a port that cannot be bound is logged, not fatal."""
        cfg = self._settings
        try:
            sock = bind_listener(cfg.host, cfg.port)
        except OSError as exc:
            log.error(
                "monitor.unavailable",
                host=cfg.host,
                port=cfg.port,
                error=str(exc),
                hint="set monitor.port (0 = a free port) or monitor.enabled = false",
            )
            return

        def _started(url: str) -> None:
            self.url = url
            self._publish_url()
            log.info("monitor.started", url=url, loopback=is_loopback(cfg.host))
            if on_started is not None:
                on_started(url)

        self._heart = asyncio.create_task(self._heartbeat(), name="monitor-heartbeat")
        try:
            await serve_socket(self.app(), sock, host=cfg.host, on_started=_started)
        except AdapterError as exc:
            log.error("monitor.unavailable", error=str(exc))
        finally:
            with contextlib.suppress(FileNotFoundError):
                self._url_file.unlink()
            await cancel_and_wait(self._heart)

    def _publish_url(self) -> None:
        self._url_file.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = self._url_file.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(self.url + "\n")
        tmp.replace(self._url_file)

    async def _heartbeat(self) -> None:
        while True:
            before = time.monotonic()
            await asyncio.sleep(_HEARTBEAT)
            self._lag = max(0.0, time.monotonic() - before - _HEARTBEAT)
            self.metrics.loop_lag.set(self._lag)
