"""``atlas-broker status``: a running broker's health, readiness and figures, for a person.

It reads the broker's HTTP monitor (``/healthz``, ``/readyz``, ``/metrics``) at ``--url``,
else at the URL ``serve`` wrote to ``data_dir/monitor/url``, else at the configured
``monitor.host``/``monitor.port``; and prints a table, or JSON with ``--json``. When
nothing answers it says so, naming the URL it tried.
"""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any

import orjson
import typer
from prometheus_client.parser import text_string_to_metric_families
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from ._config import Settings
from ._monitor import monitor_url_file, running_monitor_url
from .errors import BrokerError

__all__ = ["MonitorUnreachable", "read_status", "register", "status_url"]

_TIMEOUT = 5.0


class MonitorUnreachable(BrokerError):
    """No broker monitor answers at the URL tried (the message names it)."""


def status_url(settings: Settings, explicit: str | None) -> str:
    """Where to ask: ``--url``, the file ``serve`` wrote, or the configured fixed port."""
    if explicit:
        return explicit.rstrip("/")
    found = running_monitor_url(settings.data_dir)
    if found:
        return found.rstrip("/")
    cfg = settings.monitor
    if cfg.port == 0 or not cfg.enabled:
        raise MonitorUnreachable(
            f"no broker monitor URL in {monitor_url_file(settings.data_dir)}: is "
            f"`atlas-broker serve` running on this data folder ({settings.data_dir})? "
            "Or give --url"
        )
    host = f"[{cfg.host}]" if ":" in cfg.host else cfg.host
    return f"http://{host}:{cfg.port}"


def _get(url: str) -> tuple[int, bytes]:
    if not url.startswith(("http://", "https://")):
        raise MonitorUnreachable(f"{url}: not an http(s) URL (write it as http://HOST:PORT)")
    try:
        with urllib.request.urlopen(url, timeout=_TIMEOUT) as resp:  # noqa: S310 - checked
            return int(resp.status), resp.read()
    except urllib.error.HTTPError as exc:  # 503 from /readyz still carries its JSON
        with exc:
            return exc.code, exc.read()
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise MonitorUnreachable(
            f"no broker monitor answers at {url}: {reason} "
            "(is `atlas-broker serve` running, with [monitor] enabled?)"
        ) from exc


@dataclass(frozen=True, slots=True)
class Status:
    url: str
    healthy: bool
    health: dict[str, Any]
    ready: bool
    readiness: dict[str, Any]
    figures: dict[str, Any]

    def as_json(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "healthy": self.healthy,
            "health": self.health,
            "ready": self.ready,
            "readiness": self.readiness,
            "figures": self.figures,
        }


def read_status(url: str) -> Status:
    """Ask the monitor at ``url``; raises ``MonitorUnreachable`` naming it."""
    code_h, body_h = _get(f"{url}/healthz")
    code_r, body_r = _get(f"{url}/readyz")
    code_m, body_m = _get(f"{url}/metrics")
    if code_m != 200:
        raise MonitorUnreachable(f"{url}/metrics answered HTTP {code_m}: not a broker monitor?")
    try:
        health = orjson.loads(body_h)
        readiness = orjson.loads(body_r)
        figures = figures_from_metrics(body_m.decode())
    except (orjson.JSONDecodeError, ValueError, UnicodeDecodeError) as exc:
        raise MonitorUnreachable(f"{url} did not answer like a broker monitor: {exc}") from exc
    return Status(
        url=url,
        healthy=code_h == 200,
        health=health,
        ready=code_r == 200,
        readiness=readiness,
        figures=figures,
    )


def figures_from_metrics(text: str) -> dict[str, Any]:
    """The figures a person wants, from Prometheus text."""
    samples: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append((dict(sample.labels), sample.value))

    def total(name: str) -> int:
        return int(sum(v for _, v in samples.get(name, [])))

    def by(name: str, label: str) -> dict[str, int]:
        out: dict[str, int] = {}
        for labels, value in samples.get(name, []):
            key = labels.get(label, "")
            out[key] = out.get(key, 0) + int(value)
        return dict(sorted(out.items()))

    def gauge(name: str) -> float:
        values = samples.get(name, [])
        return float(values[0][1]) if values else 0.0

    consumers: dict[str, dict[str, int]] = {}
    for labels, value in samples.get("atlas_consumer_pending", []):
        name = labels.get("recipient") or labels.get("consumer", "?")
        consumers.setdefault(name, {})["pending"] = int(value)
    for labels, value in samples.get("atlas_consumer_ack_pending", []):
        name = labels.get("recipient") or labels.get("consumer", "?")
        consumers.setdefault(name, {})["ack_pending"] = int(value)
    router = {"pending": 0, "ack_pending": 0, **consumers.pop("router", {})}
    return {
        "submissions": {
            "accepted": total("atlas_submissions_accepted_total"),
            "accepted_by_org": by("atlas_submissions_accepted_total", "org"),
            "refused": total("atlas_submissions_refused_total"),
            "refused_by_reason": by("atlas_submissions_refused_total", "reason"),
            "rate_limited": total("atlas_submissions_rate_limited_total"),
            "rate_limited_by_org": by("atlas_submissions_rate_limited_total", "org"),
            "retried": total("atlas_submissions_retried_total"),
        },
        "deliveries": total("atlas_deliveries_total"),
        "withheld_objects": total("atlas_withheld_objects_total"),
        "withheld_by_reason": by("atlas_withheld_objects_total", "reason"),
        "in_flight": {
            "submissions": int(gauge("atlas_inflight_submissions")),
            "publishes": int(gauge("atlas_inflight_publishes")),
            "deferred": int(gauge("atlas_deferred_submissions")),
        },
        "router_consumer": router,
        "recipients": {
            name: {"pending": 0, "ack_pending": 0, **c} for name, c in sorted(consumers.items())
        },
        "intakes_behind": by("atlas_intake_copy_lag", "intake"),
        "seal_seconds": _histogram(samples, "atlas_seal_seconds"),
        "route_seconds": _histogram(samples, "atlas_route_seconds"),
        "log": {
            "checkpoint_size": int(gauge("atlas_log_checkpoint_size")),
            "checkpoint_age_seconds": round(gauge("atlas_log_checkpoint_age_seconds"), 3),
            "checkpoint_lag_seconds": round(gauge("atlas_log_checkpoint_lag_seconds"), 3),
            "checkpoint_lag_messages": int(gauge("atlas_log_checkpoint_lag_messages")),
        },
        "nats_connected": gauge("atlas_nats_connected") == 1,
        "event_loop_lag_seconds": round(gauge("atlas_event_loop_lag_seconds"), 6),
    }


def _histogram(samples: dict[str, list[tuple[dict[str, str], float]]], name: str) -> dict[str, Any]:
    count = sum(v for _, v in samples.get(f"{name}_count", []))
    total = sum(v for _, v in samples.get(f"{name}_sum", []))
    buckets = sorted(
        (float(labels["le"]), value)
        for labels, value in samples.get(f"{name}_bucket", [])
        if "le" in labels
    )

    def quantile(q: float) -> float | None:
        """Upper bound of the bucket holding the q-quantile (None: no data or +Inf)."""
        if not count:
            return None
        for le, cumulative in buckets:
            if cumulative >= q * count:
                return le if le != float("inf") else None
        return None

    return {
        "count": int(count),
        "mean": round(total / count, 6) if count else None,
        "p50_le": quantile(0.5),
        "p99_le": quantile(0.99),
    }


def _render(status: Status, out: Console) -> None:
    f = status.figures
    sub = f["submissions"]
    ready = "yes" if status.ready else f"NO — {status.readiness.get('reason', '?')}"
    table = Table(title=f"atlas-broker at {status.url}", show_header=False)
    table.add_column("figure")
    table.add_column("value", justify="right")

    def row(name: str, value: Any) -> None:
        table.add_row(name, str(value))

    row("healthy", "yes" if status.healthy else f"NO — {status.health.get('status', '?')}")
    row("ready", ready)
    row("NATS connected", "yes" if f["nats_connected"] else "no")
    row("event loop lag", f"{f['event_loop_lag_seconds'] * 1000:.1f} ms")
    table.add_section()
    row("submissions accepted", sub["accepted"])
    for org, n in sub["accepted_by_org"].items():
        row(f"  from {org}", n)
    row("submissions refused", sub["refused"])
    for reason, n in sub["refused_by_reason"].items():
        row(f"  {reason}", n)
    row("delayed by rate limit", sub["rate_limited"])
    for org, n in sub["rate_limited_by_org"].items():
        row(f"  {org}", n)
    row("retried (transient)", sub["retried"])
    row("packages delivered", f["deliveries"])
    row("objects withheld", f["withheld_objects"])
    for reason, n in f["withheld_by_reason"].items():
        row(f"  {reason}", n)
    table.add_section()
    rc = f["router_consumer"]
    row("routing consumers pending / ack pending", f"{rc['pending']} / {rc['ack_pending']}")
    for name, c in f["recipients"].items():
        row(f"  deliveries to {name}", f"{c['pending']} / {c['ack_pending']}")
    for name, n in f["intakes_behind"].items():
        row(f"  {name} not copied yet", n)
    infl = f["in_flight"]
    row(
        "in flight: submissions / publishes / deferred",
        f"{infl['submissions']} / {infl['publishes']} / {infl['deferred']}",
    )
    table.add_section()
    for key, label in (("seal_seconds", "seal"), ("route_seconds", "route")):
        h = f[key]
        mean = f"{h['mean'] * 1000:.2f} ms" if h["mean"] is not None else "-"
        p99 = f"≤ {h['p99_le'] * 1000:g} ms" if h["p99_le"] is not None else "-"
        row(f"{label} latency: count / mean / p99", f"{h['count']} / {mean} / {p99}")
    lg = f["log"]
    row("log checkpoint size (entries)", lg["checkpoint_size"])
    row("log checkpoint age", f"{lg['checkpoint_age_seconds']:.1f} s")
    row(
        "log not yet checkpointed",
        f"{lg['checkpoint_lag_messages']} message(s), oldest {lg['checkpoint_lag_seconds']:.1f} s",
    )
    out.print(table)


def register(
    app: typer.Typer,
    *,
    settings: Callable[[], Settings],
    out: Console,
    err: Console,
) -> None:
    """Add ``status`` to the CLI."""

    @app.command()
    def status(
        url: Annotated[
            str | None,
            typer.Option(help="Monitor URL; default: data_dir/monitor/url, else monitor.port."),
        ] = None,
        as_json: Annotated[bool, typer.Option("--json", help="Print the figures as JSON.")] = False,
    ) -> None:
        """Print a running broker's health, readiness and figures (from its HTTP monitor).

        Exit code 0: ready; 3: answering but not ready; 1: no monitor answers.
        """
        try:
            found = read_status(status_url(settings(), url))
        except BrokerError as exc:
            err.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
            raise typer.Exit(1) from exc
        if as_json:
            print(orjson.dumps(found.as_json(), option=orjson.OPT_INDENT_2).decode())
        else:
            _render(found, out)
        if not found.ready:
            raise typer.Exit(3)
