"""The broker's Prometheus metrics, in a registry of its own (one per process or test).

Counted where the work happens (the router): submissions accepted and refused by reason,
retries, submissions delayed by a rate limit, packages delivered, objects withheld by
reason, seal and routing latency, work in flight. Sampled from JetStream when scraped
(``sample``): the routing consumers' pending and ack-pending counts (summed over the
organisations, as consumer "router"), each recipient's delivery consumer, and how far
the signed checkpoints trail the dissemination log.

Labels are bounded: reasons are the broker's own codes, organisations are those of the
directory (anything else is counted as ``other``), recipients those with a durable consumer.
"""

from __future__ import annotations

import contextlib
import re
import time
from datetime import UTC, datetime

import nats.errors
import nats.js.errors
from nats.js import JetStreamContext
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from ._bus import DELIVERIES, LOG, SUBMISSIONS, consumers_of, intake_lag
from ._checkpoint import CHECKPOINT_SUBJECT, ENTRIES_FILTER, LOG_SEQ_HEADER, TREE_SIZE_HEADER
from ._feeds import router_backlog
from ._gc import CollectorWatch

__all__ = ["SAMPLE_ERRORS", "BrokerMetrics"]

_DELIVER_FILTER = re.compile(r"^atlas\.deliver\.([a-z0-9][a-z0-9_-]{0,62})\.\*\Z")
_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
_ROUTE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class BrokerMetrics:
    """Every instrument of one broker process; ``render()`` is the /metrics body."""

    def __init__(self, router_consumer: str = "router") -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._router_consumer = router_consumer
        self._orgs: frozenset[str] = frozenset()
        self._delivery_series: set[tuple[str, str, str]] = set()
        self._lagging: set[str] = set()
        r = self.registry
        self.accepted = Counter(
            "atlas_submissions_accepted", "Submissions routed.", ["org"], registry=r
        )
        self.refused = Counter(
            "atlas_submissions_refused", "Submissions refused, by reason.", ["reason"], registry=r
        )
        self.retried = Counter(
            "atlas_submissions_retried",
            "Submissions put back after a transient failure (NATS, directory, broker key).",
            registry=r,
        )
        self.rate_limited = Counter(
            "atlas_submissions_rate_limited",
            "Submissions held back by their organisation's rate limit.",
            ["org"],
            registry=r,
        )
        self.deliveries = Counter(
            "atlas_deliveries", "Sealed packages stored for a recipient.", registry=r
        )
        self.withheld = Counter(
            "atlas_withheld_objects",
            "Objects withheld from a recipient, by reason.",
            ["reason"],
            registry=r,
        )
        self.seal_seconds = Histogram(
            "atlas_seal_seconds",
            "Time to sign and encrypt one package.",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.gc_pauses = CollectorWatch(r)
        """``atlas_gc_pause_seconds``: counted while it is entered (``serve`` does)."""
        self.route_seconds = Histogram(
            "atlas_route_seconds",
            "Time to route one submission, from fetch to ack (every package and entry stored).",
            buckets=_ROUTE_BUCKETS,
            registry=r,
        )
        self.inflight_submissions = Gauge(
            "atlas_inflight_submissions", "Submissions being routed by this process.", registry=r
        )
        self.inflight_publishes = Gauge(
            "atlas_inflight_publishes",
            "Package and view publishes awaiting JetStream's ack in this process.",
            registry=r,
        )
        self.deferred = Gauge(
            "atlas_deferred_submissions",
            "Submissions this process holds for their organisation's rate-limit token.",
            registry=r,
        )
        self.consumer_pending = Gauge(
            "atlas_consumer_pending",
            "Messages not yet delivered to a consumer (router, or a recipient's deliveries).",
            ["stream", "consumer", "recipient"],
            registry=r,
        )
        self.consumer_ack_pending = Gauge(
            "atlas_consumer_ack_pending",
            "Messages delivered to a consumer and not yet acked.",
            ["stream", "consumer", "recipient"],
            registry=r,
        )
        self.intake_copy_lag = Gauge(
            "atlas_intake_copy_lag",
            "Messages an organisation's intake stream holds that SUBMISSIONS or RECEIPTS has "
            "not copied yet (intakes behind only): lag that lasts means the copy stopped.",
            ["intake"],
            registry=r,
        )
        self.checkpoint_size = Gauge(
            "atlas_log_checkpoint_size", "Entries covered by the newest checkpoint.", registry=r
        )
        self.checkpoint_age = Gauge(
            "atlas_log_checkpoint_age_seconds",
            "Seconds since the newest checkpoint was stored.",
            registry=r,
        )
        self.checkpoint_lag_seconds = Gauge(
            "atlas_log_checkpoint_lag_seconds",
            "Age of the oldest log message not covered by a checkpoint (0: all covered).",
            registry=r,
        )
        self.checkpoint_lag_messages = Gauge(
            "atlas_log_checkpoint_lag_messages",
            "Log messages (one per submission, holding its entries) stored after the newest "
            "checkpoint's log position.",
            registry=r,
        )
        self.nats_connected = Gauge(
            "atlas_nats_connected", "1 while the NATS connection is up.", registry=r
        )
        self.loop_lag = Gauge(
            "atlas_event_loop_lag_seconds",
            "How late the event loop ran a timer it was asked to run (last measurement).",
            registry=r,
        )
        self.sample_failures = Counter(
            "atlas_monitor_sample_failures",
            "Scrapes whose JetStream figures could not be refreshed.",
            registry=r,
        )
        self.info = Gauge(
            "atlas_broker_started_seconds", "Unix time this process started.", registry=r
        )
        self.info.set(time.time())

    def know_orgs(self, orgs: frozenset[str]) -> None:
        """The organisations of the current directory: the only org label values used."""
        self._orgs = orgs

    def org_label(self, org: str) -> str:
        return org if org in self._orgs else "other"

    def render(self) -> bytes:
        return generate_latest(self.registry)

    async def sample(self, js: JetStreamContext) -> None:
        """Refresh the figures read from JetStream (the caller bounds the time)."""
        backlog = await router_backlog(js)
        labels = (SUBMISSIONS, self._router_consumer, "")
        self.consumer_pending.labels(*labels).set(backlog.pending)
        self.consumer_ack_pending.labels(*labels).set(backlog.ack_pending)
        await self._sample_deliveries(js)
        await self._sample_intakes(js)
        await self._sample_checkpoint(js)

    async def _sample_intakes(self, js: JetStreamContext) -> None:
        lag = await intake_lag(js)
        for name in self._lagging - lag.keys():
            with contextlib.suppress(KeyError):
                self.intake_copy_lag.remove(name)
        for name, count in lag.items():
            self.intake_copy_lag.labels(name).set(count)
        self._lagging = set(lag)

    async def _sample_deliveries(self, js: JetStreamContext) -> None:
        consumers = await consumers_of(js, DELIVERIES)
        figures = []
        for info in consumers:
            match = _DELIVER_FILTER.match(info.config.filter_subject or "")
            if match is None or not info.name:
                continue
            figures.append(
                (info.name, match.group(1), info.num_pending or 0, info.num_ack_pending or 0)
            )
        # Replace the recipient series at once (no await in between): consumers come and go.
        for labels in self._delivery_series:
            for gauge in (self.consumer_pending, self.consumer_ack_pending):
                with contextlib.suppress(KeyError):
                    gauge.remove(*labels)
        self._delivery_series = set()
        for name, recipient, pending, ack_pending in figures:
            self.consumer_pending.labels(DELIVERIES, name, recipient).set(pending)
            self.consumer_ack_pending.labels(DELIVERIES, name, recipient).set(ack_pending)
            self._delivery_series.add((DELIVERIES, name, recipient))

    async def _sample_checkpoint(self, js: JetStreamContext) -> None:
        now = datetime.now(UTC)
        state = (await js.stream_info(LOG)).state
        last_seq = int(state.last_seq or 0)
        try:
            checkpoint = await js.get_last_msg(LOG, CHECKPOINT_SUBJECT)
        except nats.js.errors.NotFoundError:
            size, log_seq, ckpt_seq, stored = 0, 0, 0, None
        else:
            headers = checkpoint.headers or {}
            size = int(headers.get(TREE_SIZE_HEADER, 0))
            log_seq = int(headers.get(LOG_SEQ_HEADER, 0))
            ckpt_seq = int(checkpoint.seq or 0)
            stored = checkpoint.time
        self.checkpoint_size.set(size)
        self.checkpoint_age.set(_seconds_since(stored, now) if stored is not None else 0.0)
        lag_messages = max(0, last_seq - log_seq - (1 if ckpt_seq > log_seq else 0))
        self.checkpoint_lag_messages.set(lag_messages)
        oldest = None
        if lag_messages:
            with contextlib.suppress(nats.js.errors.NotFoundError):
                first = await js.get_msg(LOG, seq=log_seq + 1, subject=ENTRIES_FILTER, next=True)
                oldest = first.time
        self.checkpoint_lag_seconds.set(_seconds_since(oldest, now) if oldest else 0.0)


def _seconds_since(moment: datetime, now: datetime) -> float:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return max(0.0, (now - moment).total_seconds())


# Transient failures of a scrape's JetStream reads; the caller counts and logs them.
SAMPLE_ERRORS = (nats.errors.Error, OSError, TimeoutError)
