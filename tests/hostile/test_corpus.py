"""The hostile input corpus against one real broker: every case answered, nothing lost.

One nats-server, one router and one TAXII front serve the whole module (see
``broker.run_corpus``): submissions that must survive go in first, then every case of
``cases.all_cases()``, then a normal submission on each path. Each case is then judged on
its own (``test_case_is_answered[<case id>]``), and the module checks that the broker still
served, that nothing accepted before was lost, and that ``audit verify`` passes.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections import Counter
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from broker._submission import make_submission
from broker.errors import SubmissionError
from policy._markings import CANONICAL_TLP_DEFINITIONS
from tests.hostile.broker import PARTNERS, TAXII_MT, Run, run_corpus
from tests.hostile.cases import MAX_BUNDLE_BYTES, Case, all_cases

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]

CASES = all_cases()
CATEGORIES = (
    "malformed JSON",
    "wrong types",
    "deep nesting",
    "huge strings",
    "100,000-object bundles",
    "duplicate ids",
    "invalid markings",
    "forged signatures",
    "replayed signatures",
    "someone else's behalf",
    "oversize messages",
)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    tasks: list[asyncio.Task[Any]] = []

    def background(work: Awaitable[Any]) -> None:
        tasks.append(asyncio.ensure_future(work))

    async def stop() -> None:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    tmp = tmp_path_factory.mktemp("hostile")
    return await run_corpus(CASES, tmp, background=background, stop=stop)


def _param(case: Case) -> Any:
    marks = [pytest.mark.xfail(strict=True, reason=case.xfail)] if case.xfail else []
    return pytest.param(case, id=case.id, marks=marks)


def _withheld_everywhere(run: Run, case: Case, sha: str) -> None:
    entries = run.entries_for(sha)
    accepted = [e for e in entries if e["type"] == "submission"]
    assert [e["result"] for e in accepted] == ["accepted"], accepted
    for obj_id, modified in case.hostile:
        digest = run.digest(obj_id, modified)
        got = {(e["rcpt"], e["reason"]) for e in entries if e.get("obj") == digest}
        assert got == {(p, case.expect.reason) for p in PARTNERS}, (obj_id, got)
        for partner in PARTNERS:
            assert obj_id not in {o["id"] for o in run.received[partner]}, partner
    # The clean object of the same bundle went through: the submission was routed.
    delivered = {e["rcpt"] for e in entries if e["type"] == "delivery"}
    assert delivered == set(PARTNERS), entries


def _neutralised(run: Run, case: Case, sha: str) -> None:
    entries = run.entries_for(sha)
    assert [e["result"] for e in entries if e["type"] == "submission"] == ["accepted"]
    (forged_id, _), *_ = case.hostile
    for partner in PARTNERS:
        copies = [o for o in run.received[partner] if o["id"] == forged_id]
        assert copies, partner
        assert all(o == dict(CANONICAL_TLP_DEFINITIONS[forged_id]) for o in copies), copies


def _check_client(run: Run, case: Case) -> None:
    """Our own publisher refuses the bundle before signing, naming the problem."""
    assert case.client is not None
    raw, message = case.client
    with pytest.raises(SubmissionError) as caught:
        make_submission(
            raw,
            org="bank-a",
            key=run.keys.orgs["bank-a"],
            to=(),
            feed=None,
            now=run.now,
            max_bytes=MAX_BUNDLE_BYTES,
            max_objects=10_000,
        )
    assert re.search(message, str(caught.value)), str(caught.value)[:500]


@pytest.mark.parametrize("case", [_param(c) for c in CASES])
async def test_case_is_answered(run: Run, case: Case) -> None:
    answer = run.answers[case.id]
    expect = case.expect
    if case.client is not None:
        _check_client(run, case)
    if case.path == "nats" and expect.kind == "client":
        assert isinstance(answer.error, expect.error), repr(answer.error)
        assert re.search(expect.message, str(answer.error)), str(answer.error)
        assert answer.seq is None and not run.entries_for(answer.sha256)
        return
    if case.path == "nats":
        assert answer.error is None, repr(answer.error)
        assert answer.seq is not None
        if expect.kind == "refused":
            entries = run.entries_for(answer.sha256)
            if case.category == "replayed signatures":
                # The original's own entries are there too: it was accepted once, before.
                entries = [e for e in entries if e.get("result") == "refused"]
            if answer.sha256 in run.unlogged:
                # No valid signature vouched for it: counted into the next refusal entry's
                # `suppressed` of its organisation instead of an entry of its own.
                assert not entries and run.unlogged[answer.sha256] == expect.reason, entries
            else:
                assert [(e["type"], e["result"], e["reason"]) for e in entries] == [
                    ("submission", "refused", expect.reason)
                ], entries
            detail = run.details.get(answer.stream_seq or 0, "")
            assert re.search(expect.message, detail), detail[:500]
        elif expect.kind == "withheld":
            _withheld_everywhere(run, case, answer.sha256)
        else:
            assert expect.kind == "neutralised"
            _neutralised(run, case, answer.sha256)
        return
    if expect.kind == "http":
        assert answer.status == expect.status, (answer.status, answer.body)
        assert answer.content_type == TAXII_MT
        description = answer.body.get("description", "")
        assert re.search(expect.message, description), description[:500]
        return
    assert answer.status == 202, (answer.status, answer.body)
    record = answer.record
    assert record is not None and record["status"] == "complete", record
    if expect.kind == "taxii-refused":
        assert record["failure_count"] == record["total_count"] > 0, record
        assert all(
            f"refused by the broker: {expect.reason}" in f["message"] for f in record["failures"]
        ), record
        entries = run.entries_for(answer.record_sha)
        assert [(e["type"], e["result"], e["reason"]) for e in entries] == [
            ("submission", "refused", expect.reason)
        ], entries
    elif expect.kind == "taxii-withheld":
        assert record["success_count"] == record["total_count"], record
        _withheld_everywhere(run, case, answer.record_sha)
    else:
        assert expect.kind == "taxii-neutralised"
        _neutralised(run, case, answer.record_sha)


async def test_corpus_covers_every_category_on_both_paths() -> None:
    assert len(CASES) >= 200
    by_category = Counter(c.category for c in CASES)
    assert set(by_category) == set(CATEGORIES), by_category
    paths = Counter(c.path for c in CASES)
    assert paths["nats"] >= 100 and paths["taxii"] >= 50, paths


async def test_broker_still_serves_after_the_corpus(run: Run) -> None:
    for name, submitted in run.after.items():
        entries = run.entries_for(submitted["sha"])
        assert [e["result"] for e in entries if e["type"] == "submission"] == ["accepted"], name
        for partner in PARTNERS:
            assert set(submitted["ids"]) <= {o["id"] for o in run.received[partner]}, partner


async def test_nothing_accepted_before_the_corpus_is_lost(run: Run) -> None:
    for name, submitted in run.before.items():
        entries = run.entries_for(submitted["sha"])
        results = [e["result"] for e in entries if e["type"] == "submission"]
        # Accepted once; a replay of it in the corpus is refused on its own.
        assert results.count("accepted") == 1 and set(results) <= {"accepted", "refused"}, name
        deliveries = {e["rcpt"] for e in entries if e["type"] == "delivery"}
        assert deliveries == set(PARTNERS), (name, entries)
        for partner in PARTNERS:
            assert set(submitted["ids"]) <= {o["id"] for o in run.received[partner]}, partner


async def test_every_stored_submission_has_exactly_one_answer_in_the_log(run: Run) -> None:
    answered = [e for e in run.log if e["type"] == "submission"]
    # An unsigned refusal left out of the log is counted in a later entry's `suppressed`
    # (or by the router, until its organisation's next unsigned refusal is logged).
    assert len(answered) + len(run.unlogged) == run.stored_submissions
    assert sum(e.get("suppressed", 0) for e in answered) <= len(run.unlogged)
    assert all(e.get("result") == "refused" for e in answered if "suppressed" in e)
    accepted = Counter(e["src_sha256"] for e in answered if e["result"] == "accepted")
    assert max(accepted.values()) == 1


async def test_audit_verify_passes_after_the_corpus(run: Run) -> None:
    assert run.verify.ok, run.verify.summary()
    assert run.verify.entries == len(run.log)
    assert run.verify.deliveries_checked > 0


async def test_every_stored_case_file_is_in_the_corpus() -> None:
    stored = [
        c for c in CASES if c.id.startswith("nats/malformed-json/") and "not-a-jws" not in c.id
    ]
    assert len(stored) == len(list((Path(__file__).parent / "corpus" / "malformed-json").iterdir()))
