"""The figures ``atlas-broker status`` prints, read back from the metrics the broker renders."""

from __future__ import annotations

from pathlib import Path

import pytest

from broker._config import Settings
from broker._metrics import BrokerMetrics
from broker._monitor import monitor_url_file
from broker._status import MonitorUnreachable, figures_from_metrics, status_url


class TestFigures:
    def test_counts_are_read_back_when_the_router_counted_them(self) -> None:
        metrics = BrokerMetrics()
        metrics.know_orgs(frozenset({"bank-a"}))
        metrics.accepted.labels(metrics.org_label("bank-a")).inc(3)
        metrics.accepted.labels(metrics.org_label("nobody")).inc()
        metrics.refused.labels("too-large").inc()
        metrics.rate_limited.labels("bank-a").inc(7)
        metrics.deliveries.inc(6)
        metrics.withheld.labels("red-not-named").inc(2)
        for seconds in (0.0002, 0.0003, 0.004):
            metrics.seal_seconds.observe(seconds)
        metrics.consumer_pending.labels("SUBMISSIONS", "router", "").set(4)
        metrics.consumer_ack_pending.labels("DELIVERIES", "deliver-lea-1", "lea-1").set(2)
        metrics.checkpoint_lag_messages.set(5)
        metrics.intake_copy_lag.labels("ACK-lea-1").set(62)

        figures = figures_from_metrics(metrics.render().decode())

        sub = figures["submissions"]
        assert sub["accepted"] == 4
        assert sub["accepted_by_org"] == {"bank-a": 3, "other": 1}
        assert sub["refused_by_reason"] == {"too-large": 1}
        assert sub["rate_limited_by_org"] == {"bank-a": 7}
        assert figures["deliveries"] == 6
        assert figures["withheld_by_reason"] == {"red-not-named": 2}
        assert figures["router_consumer"]["pending"] == 4
        assert figures["recipients"]["lea-1"]["ack_pending"] == 2
        assert figures["seal_seconds"]["count"] == 3
        assert figures["seal_seconds"]["p50_le"] == 0.0005
        assert figures["log"]["checkpoint_lag_messages"] == 5
        assert figures["intakes_behind"] == {"ACK-lea-1": 62}

    def test_registries_are_independent_when_two_brokers_share_a_process(self) -> None:
        one, two = BrokerMetrics(), BrokerMetrics()
        one.deliveries.inc(5)
        assert figures_from_metrics(two.render().decode())["deliveries"] == 0


class TestStatusUrl:
    def test_explicit_url_wins_when_given(self, tmp_path: Path) -> None:
        settings = Settings(data_dir=tmp_path)
        assert status_url(settings, "http://127.0.0.1:1/") == "http://127.0.0.1:1"

    def test_file_written_by_serve_is_used_when_present(self, tmp_path: Path) -> None:
        path = monitor_url_file(tmp_path)
        path.parent.mkdir()
        path.write_text("http://127.0.0.1:43210\n")
        assert status_url(Settings(data_dir=tmp_path), None) == "http://127.0.0.1:43210"

    def test_configured_port_is_used_when_no_file_exists(self, tmp_path: Path) -> None:
        settings = Settings(data_dir=tmp_path, monitor={"port": 9999})
        assert status_url(settings, None) == "http://127.0.0.1:9999"

    def test_error_names_the_file_when_the_port_is_dynamic(self, tmp_path: Path) -> None:
        settings = Settings(data_dir=tmp_path, monitor={"port": 0})
        with pytest.raises(MonitorUnreachable, match=r"monitor/url"):
            status_url(settings, None)
