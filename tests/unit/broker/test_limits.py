"""The token bucket, the router's per-organisation limiter and the [limits]/[monitor] settings."""

from __future__ import annotations

from pathlib import Path

import pytest

from broker import ConfigError, load_settings
from broker._config import LimitSettings, OrgRate
from broker._limits import RateLimiter, SubmissionLimiter


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class TestRateLimiter:
    def test_burst_passes_at_once_then_one_token_per_interval(self) -> None:
        clock = _Clock()
        limiter = RateLimiter(2.0, 3, clock=clock)
        assert [limiter.acquire("a") for _ in range(3)] == [0.0, 0.0, 0.0]
        assert limiter.acquire("a") == pytest.approx(0.5)
        clock.now += 0.5
        assert limiter.acquire("a") == 0.0
        assert limiter.acquire("a") == pytest.approx(0.5)

    def test_refused_acquire_takes_nothing_when_over_rate(self) -> None:
        clock = _Clock()
        limiter = RateLimiter(1.0, 1, clock=clock)
        assert limiter.acquire("a") == 0.0
        for _ in range(5):
            assert limiter.acquire("a") == pytest.approx(1.0)
        clock.now += 1.0
        assert limiter.acquire("a") == 0.0

    def test_reservations_queue_one_interval_apart_when_flooded(self) -> None:
        limiter = RateLimiter(4.0, 2, clock=_Clock())
        waits = [limiter.reserve("a") for _ in range(6)]
        assert waits == pytest.approx([0.0, 0.0, 0.25, 0.5, 0.75, 1.0])

    def test_keys_do_not_share_a_bucket_when_one_floods(self) -> None:
        limiter = RateLimiter(1.0, 1, clock=_Clock())
        for _ in range(100):
            limiter.reserve("flood")
        assert limiter.acquire("quiet") == 0.0

    def test_bucket_refills_to_burst_only_when_idle(self) -> None:
        clock = _Clock()
        limiter = RateLimiter(1.0, 2, clock=clock)
        limiter.acquire("a")
        limiter.acquire("a")
        clock.now += 3600
        assert [limiter.acquire("a") for _ in range(3)] == [0.0, 0.0, pytest.approx(1.0)]

    @pytest.mark.parametrize(("rate", "burst"), [(0.0, 1), (-1.0, 1), (float("inf"), 1), (1.0, 0)])
    def test_refused_when_parameters_are_invalid(self, rate: float, burst: int) -> None:
        with pytest.raises(ValueError, match=r"rate|burst"):
            RateLimiter(rate, burst)


class TestSubmissionLimiter:
    def test_everything_passes_when_no_limit_is_configured(self) -> None:
        limiter = SubmissionLimiter(LimitSettings())
        assert not limiter.enabled
        assert all(limiter.reserve("bank-a") == 0 for _ in range(1000))

    def test_each_submission_in_hand_takes_the_next_token(self) -> None:
        clock = _Clock()
        limiter = SubmissionLimiter(LimitSettings(submissions_per_second=2.0, burst=1), clock=clock)
        assert limiter.enabled
        assert limiter.reserve("bank-a") == 0
        assert limiter.reserve("bank-a") == pytest.approx(0.5)
        clock.now += 0.5  # the router waited for it
        assert limiter.reserve("bank-a") == pytest.approx(0.5)
        assert limiter.reserve("bank-b") == 0  # a bucket per organisation

    def test_per_org_override_applies_only_to_that_org(self) -> None:
        limits = LimitSettings(
            submissions_per_second=1.0,
            burst=1,
            per_org={"vendor": OrgRate(submissions_per_second=0)},
        )
        limiter = SubmissionLimiter(limits, clock=_Clock())
        assert all(limiter.reserve("vendor") == 0 for _ in range(50))
        limiter.reserve("bank-a")
        assert limiter.reserve("bank-a") == pytest.approx(1.0)


class TestLimitAndMonitorSettings:
    def test_defaults_when_nothing_is_configured(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.delenv("ATLAS_CONFIG", raising=False)
        settings = load_settings()
        assert settings.monitor.host == "127.0.0.1" and settings.monitor.port == 9464
        assert settings.monitor.enabled
        assert settings.limits.submissions_per_second == 0
        assert settings.router.max_ack_pending == 1000

    def test_per_org_rates_load_when_given_in_the_file(self, tmp_path: Path) -> None:
        path = tmp_path / "atlas.toml"
        path.write_text(
            "[limits]\nsubmissions_per_second = 5\nburst = 10\n"
            "[limits.per_org.northbank]\nsubmissions_per_second = 50\nburst = 100\n"
            "[monitor]\nport = 0\n"
        )
        settings = load_settings(path)
        assert settings.limits.per_org["northbank"].burst == 100
        assert settings.monitor.port == 0

    def test_error_names_the_setting_when_a_rate_is_negative(self, tmp_path: Path) -> None:
        path = tmp_path / "atlas.toml"
        path.write_text("[limits.per_org.x]\nsubmissions_per_second = -1\n")
        with pytest.raises(ConfigError, match=r"limits\.per_org\.x\.submissions_per_second"):
            load_settings(path)

    def test_error_names_unknown_monitor_setting(self, tmp_path: Path) -> None:
        path = tmp_path / "atlas.toml"
        path.write_text("[monitor]\nprot = 1\n")
        with pytest.raises(ConfigError, match=r"monitor\.prot: unknown setting"):
            load_settings(path)


class TestRetryAfter:
    def test_front_is_told_when_to_retry_and_nothing_is_taken(self) -> None:
        clock = _Clock()
        limiter = SubmissionLimiter(LimitSettings(submissions_per_second=1.0, burst=2), clock=clock)
        assert [limiter.retry_after("bank-a") for _ in range(2)] == [0.0, 0.0]
        assert limiter.retry_after("bank-a") == pytest.approx(1.0)
        assert limiter.retry_after("bank-a") == pytest.approx(1.0)
        assert limiter.retry_after("bank-b") == 0.0
        clock.now += 1.0
        assert limiter.retry_after("bank-a") == 0.0
