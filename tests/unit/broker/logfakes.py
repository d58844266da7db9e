"""An in-memory dissemination log with checkpoints, for auditor and report tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

from broker._checkpoint import build_checkpoint
from broker._log import encode_chunks
from broker._logcopy import LogSource, Record, Snapshot
from broker._merkle import Frontier
from broker._note import NoteSigner

ORIGIN = "atlas-broker/log"
TS = "2026-11-02T09:{:02d}:00.000000Z"


def make_entries(submissions: int) -> list[dict[str, object]]:
    out: list[dict[str, object]] = []
    for n in range(submissions):
        org = ("bank-a", "bank-b")[n % 2]
        src = {"org": org, "submission": f"s{n}", "sha256": f"{n:064x}"}
        ts = TS.format(n % 60)
        out.append({"type": "submission", "ts": ts, "org": org, "sub": f"s{n}",
                    "result": "accepted", "src_sha256": f"{n:064x}", "objects": 3,
                    "recipients": 2})  # fmt: skip
        for rcpt, tlp in (("lea-1", "amber"), ("lea-2", "green")):
            out.append({"type": "delivery", "ts": ts, "pkg": f"p{n}-{rcpt}", "rcpt": rcpt,
                        "rcpt_kid": "k", "broker_kid": "b", "src": src, "view_sha256": "v",
                        "jwe_sha256": f"j{n}", "tlp": tlp,
                        "objects": {"delivered": 2, "withheld": 1, "derived": 0}})  # fmt: skip
        out.append({"type": "withheld", "ts": ts, "rcpt": "lea-2", "src": src, "obj": "d",
                    "obj_type": "indicator", "reason": "tlp-amber-not-named",
                    "tlp": "amber"})  # fmt: skip
    return out


class MemoryLog(LogSource):
    """A LOG stream in memory: entries chunked per submission, checkpoints in between."""

    def __init__(self, signer: NoteSigner, submissions: int = 12, every: int = 10) -> None:
        self.records_: list[Record] = []
        self.checkpoints: list[tuple[int, bytes]] = []
        seq, index = 0, 0
        tree, previous, pending = Frontier(), Frontier(), []
        entries = make_entries(submissions)
        for start in range(0, len(entries), 4):
            for chunk in encode_chunks(entries[start : start + 4]):
                seq += 1
                for raw in chunk.split(b"\n"):
                    self.records_.append(Record(index, seq, raw))
                    pending.append(tree.append_entry(raw))
                    index += 1
            if len(pending) >= every or start + 4 >= len(entries):
                seq += 1
                message = build_checkpoint(
                    signer, previous=previous, current=tree, leaves=pending, log_seq=seq - 1,
                    ts=TS.format(0),
                )  # fmt: skip
                self.checkpoints.append((seq, message.encode()))
                previous, pending = tree.copy(), []

    async def snapshot(self) -> Snapshot:
        return Snapshot(list(self.checkpoints), [], ORIGIN, len(self.records_))

    async def records(self) -> AsyncIterator[Record]:
        for record in self.records_:
            yield record
