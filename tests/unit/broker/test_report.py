"""``audit report --html``: a self-contained page, rendered in headless Chromium."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
from pathlib import Path

import orjson
import pytest
from typer.testing import CliRunner

from broker._audit_jobs import collect_report
from broker._auditor import Problem, VerifyResult
from broker._logcopy import LogCopy, write_copy
from broker._note import NoteSigner
from broker._report import ReportStats, render_html
from broker.cli import app
from keys import PrivateKey
from tests.unit.broker.logfakes import ORIGIN, MemoryLog, make_entries

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def stats_of(submissions: int = 3) -> ReportStats:
    stats = ReportStats()
    for entry in make_entries(submissions):
        stats.add(entry)
    return stats


class TestRender:
    def test_page_shows_flows_and_verdict_when_log_verified(self) -> None:
        result = VerifyResult(entries=12, checkpointed_size=12)
        page = render_html(stats_of(), result, source="copy", generated="now")
        assert 'id="verification" class="banner ok"' in page
        assert "Log verified" in page
        assert re.search(r"<td>bank-a</td><td>lea-1</td>.*?TLP:AMBER", page)
        assert "tlp-amber-not-named" in page

    def test_page_names_first_bad_index_when_verification_failed(self) -> None:
        result = VerifyResult(entries=12, problems=[Problem(9, "b"), Problem(4, "a")])
        page = render_html(stats_of(), result, source="copy", generated="now")
        assert "Verification FAILED at index 4" in page
        assert 'class="banner fail"' in page

    def test_page_says_not_verified_when_no_checkpoint_covers_the_entries(self) -> None:
        page = render_html(stats_of(), VerifyResult(entries=12), source="copy", generated="now")
        assert "Not verified" in page and "Log verified" not in page

    def test_page_says_not_verified_when_no_key_was_given(self) -> None:
        page = render_html(stats_of(), None, source="copy", generated="now")
        assert "Not verified" in page

    def test_page_is_self_contained_and_escaped_when_values_are_hostile(self) -> None:
        stats = ReportStats()
        stats.add({"type": "delivery", "ts": "2026-11-02T09:00:00.000000Z", "tlp": "red",
                   "rcpt": "<script>alert(1)</script>", "src": {"org": "a&b"}})  # fmt: skip
        page = render_html(stats, None, source='"><img src=x>', generated="now")
        assert "<script" not in page and "<img" not in page
        assert "&lt;script&gt;" in page and "a&amp;b" in page
        assert not re.search(r"<[^>]*\s(src|href)=|https?://|@import|url\(", page)

    def test_timeline_groups_by_day_when_log_spans_months(self) -> None:
        stats = ReportStats()
        for day in range(1, 29):
            for month in ("01", "02"):
                stats.add({"type": "submission", "ts": f"2026-{month}-{day:02d}T10:00:00Z"})
        page = render_html(stats, None, source="copy", generated="now")
        assert "per day" in page


@pytest.fixture
def chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.fail("headless Chromium is needed: apt-get install -y chromium")
    return path


def render(chromium: str, page: Path, tmp: Path) -> tuple[str, Path]:
    shot = tmp / f"{page.stem}.png"
    base = [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={tmp / 'profile'}"]
    subprocess.run(
        [*base, f"--screenshot={shot}", "--window-size=1280,2000", page.as_uri()],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    dom = subprocess.run(
        [*base, "--enable-logging=stderr", "--v=0", "--dump-dom", page.as_uri()],
        check=True, capture_output=True, timeout=60, text=True,
    )  # fmt: skip
    assert "CONSOLE" not in dom.stderr and "Refused to" not in dom.stderr, dom.stderr
    if os.environ.get("ATLAS_TEST_ARTIFACTS"):
        target = Path(os.environ["ATLAS_TEST_ARTIFACTS"])
        target.mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, target / shot.name)
    return dom.stdout, shot


def test_report_renders_flows_and_status_when_opened_in_chromium(
    chromium: str, tmp_path: Path
) -> None:
    signer = NoteSigner(ORIGIN, PrivateKey.generate("Ed25519"))
    copy = tmp_path / "copy"
    asyncio.run(write_copy(MemoryLog(signer, submissions=20), copy))
    page = tmp_path / "report.html"
    args = ["audit", "report", "--html", str(page), "--from", str(copy)]
    result = CliRunner().invoke(app, [*args, "--log-key", signer.verifier.vkey])
    assert result.exit_code == 0, result.output

    dom, shot = render(chromium, page, tmp_path)
    assert 'id="verification" class="banner ok"' in dom
    assert "Log verified" in dom
    assert re.search(r"<td>bank-b</td><td>lea-2</td>.*?TLP:GREEN", dom)
    assert 'id="flow-chart"' in dom and 'id="timeline"' in dom
    assert shot.stat().st_size > 10_000

    lines = (copy / "entries.jsonl").read_bytes().split(b"\n")
    del lines[33]
    (copy / "entries.jsonl").write_bytes(b"\n".join(lines))
    failed = tmp_path / "failed.html"
    args = ["audit", "report", "--html", str(failed), "--from", str(copy)]
    result = CliRunner().invoke(app, [*args, "--log-key", signer.verifier.vkey])
    assert result.exit_code == 1
    dom, shot = render(chromium, failed, tmp_path)
    assert "Verification FAILED at index 33" in dom
    assert shot.stat().st_size > 10_000


def test_collect_report_counts_entries_when_no_key_is_given() -> None:
    signer = NoteSigner(ORIGIN, PrivateKey.generate("Ed25519"))
    stats, result = asyncio.run(collect_report(MemoryLog(signer, submissions=5), log_keys=[]))
    assert result is None
    assert stats.entries == 20 and sum(stats.flows.values()) == 10


def test_report_counts_lines_appended_to_a_copy_apart_and_says_they_are_not_verified(
    tmp_path: Path,
) -> None:
    signer = NoteSigner(ORIGIN, PrivateKey.generate("Ed25519"))
    copy = tmp_path / "copy"
    asyncio.run(write_copy(MemoryLog(signer, submissions=5), copy))
    forged = {"type": "delivery", "ts": "2026-11-02T09:00:00.000000Z", "rcpt": "lea-9",
              "tlp": "red", "src": {"org": "bank-a"}, "objects": {"delivered": 7}}  # fmt: skip
    with (copy / "entries.jsonl").open("ab") as fh:
        fh.write(orjson.dumps(forged) + b"\n")

    stats, result = asyncio.run(collect_report(LogCopy(copy), log_keys=[signer.verifier]))
    assert result is not None and result.ok and result.unverified_tail == 1
    assert stats.entries == 20 and ("bank-a", "lea-9", "red") not in stats.flows
    assert stats.unsigned is not None and stats.unsigned.entries == 1
    assert stats.unsigned.flows[("bank-a", "lea-9", "red")] == 1

    page = render_html(stats, result, source="copy", generated="now")
    assert "Log verified up to entry 19" in page
    assert 'id="unsigned"' in page and "1 entries are not verified" in page
    assert "lea-9" not in page

    args = ["audit", "verify", "--from", str(copy), "--log-key", signer.verifier.vkey]
    assert CliRunner().invoke(app, args).exit_code == 0
    strict = CliRunner().invoke(app, [*args, "--require-signed"])
    assert strict.exit_code == 2
    assert "entries 20..20 are not covered by a signed checkpoint" in strict.output
