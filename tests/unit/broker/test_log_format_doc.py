"""docs/log-format.md cannot rot: its worked example checks out with our code, and the
stand-alone verifier it prints accepts a copy our exporter wrote and refuses a changed one."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from broker._audit_jobs import verify_log
from broker._checkpoint import build_checkpoint, log_origin
from broker._log import decode_chunk, encode_chunks
from broker._logcopy import LogCopy, LogSource, Record, Snapshot, write_copy
from broker._merkle import Frontier, MerkleTree, leaf_hash
from broker._note import Note, NoteSigner, NoteVerifier
from broker._receipt import verify_receipt
from keys import PrivateKey

DOC = Path(__file__).resolve().parents[3] / "docs" / "log-format.md"
_BLOCK = re.compile(r"<!-- log-example: ([a-z0-9-]+) -->\n```[a-z]*\n(.*?)\n```", re.DOTALL)
WITNESS_VKEY = "witness.example/w1+cc2b761e+BDTiPm0qsiZsfEZqjxlcVEif0rF3nz+XEGNySmOdgU47"


@pytest.fixture(scope="module")
def blocks() -> dict[str, str]:
    found = dict(_BLOCK.findall(DOC.read_text(encoding="utf-8")))
    assert set(found) >= {"entries", "tree", "log-vkey", "note", "cosigned-note", "receipt"}
    return found


@pytest.fixture(scope="module")
def sketch(blocks: dict[str, str]) -> dict[str, Any]:
    namespace: dict[str, Any] = {}
    exec(compile(blocks["verifier-sketch"], str(DOC), "exec"), namespace)  # noqa: S102
    return namespace


class TestWorkedExample:
    def test_leaves_and_root_are_those_of_the_entries(self, blocks: dict[str, str]) -> None:
        entries = blocks["entries"].encode().split(b"\n")
        tree = MerkleTree()
        for entry in entries:
            tree.append(leaf_hash(entry))
        printed = re.findall(r"= ([0-9a-f]{64})$", blocks["tree"], re.MULTILINE)
        leaves = [leaf_hash(e).hex() for e in entries]
        assert printed[:3] == leaves
        assert printed[4] == tree.root().hex()

    def test_notes_verify_with_the_printed_keys(self, blocks: dict[str, str]) -> None:
        log_key = NoteVerifier.from_vkey(blocks["log-vkey"])
        witness = NoteVerifier.from_vkey(WITNESS_VKEY)
        assert Note.parse(blocks["note"] + "\n").verified_by([log_key]) == {log_key.name: 0}
        cosigned = Note.parse(blocks["cosigned-note"] + "\n").verified_by([log_key, witness])
        assert cosigned == {log_key.name: 0, witness.name: 1767225610}

    def test_the_receipt_proves_the_delivery(self, blocks: dict[str, str]) -> None:
        log_key = NoteVerifier.from_vkey(blocks["log-vkey"])
        delivery = json.loads(blocks["entries"].split("\n")[2])
        entry = verify_receipt(
            blocks["receipt"],
            [log_key],
            jti=delivery["pkg"],
            aud=delivery["rcpt"],
            jwe_sha256=delivery["jwe_sha256"],
        )
        assert entry["type"] == "delivery"

    def test_the_printed_verifier_reads_the_printed_notes(
        self, blocks: dict[str, str], sketch: dict[str, Any]
    ) -> None:
        log_key = sketch["parse_vkey"](blocks["log-vkey"])
        witness = sketch["parse_vkey"](WITNESS_VKEY)
        origin, size, root, cosigned = sketch["open_note"](
            blocks["cosigned-note"] + "\n", log_key, [witness]
        )
        assert (origin, size, cosigned) == ("atlas-broker/log", 3, {witness[0]: 1767225610})
        assert root.hex() == re.findall(r"= ([0-9a-f]{64})$", blocks["tree"], re.MULTILINE)[4]


class _Memory(LogSource):
    """A log of five entry messages and two checkpoints, one cosigned, held in memory."""

    def __init__(self) -> None:
        self.signer = NoteSigner(log_origin("atlas-broker"), PrivateKey.generate("Ed25519"))
        self.witness = NoteSigner(
            "witness.example/w1", PrivateKey.generate("Ed25519"), cosigner=True
        )
        self.stream: list[tuple[int, str, bytes]] = []
        self.cosignatures: list[tuple[int, str]] = []
        tree, previous, pending = MerkleTree(), Frontier(), []
        for m in range(5):
            entries = [
                {"type": "notice", "ts": "2026-01-01T00:00:00.000000Z", "org": "bank-a",
                 "sub": f"{m:032x}", "reason": "no-recipients", "objects": i}
                for i in range(m + 1)
            ]  # fmt: skip
            [chunk] = encode_chunks(entries)
            self.stream.append((len(self.stream) + 1, "e", chunk))
            for raw in decode_chunk(chunk):
                tree.append(leaf_hash(raw))
                pending.append(leaf_hash(raw))
            if m in (1, 4):
                current = tree.frontier()
                checkpoint = build_checkpoint(
                    self.signer,
                    previous=previous,
                    current=current,
                    leaves=pending,
                    log_seq=len(self.stream),
                    ts="2026-01-01T00:00:05.000000Z",
                )
                self.stream.append((len(self.stream) + 1, "c", checkpoint.encode()))
                note = Note.parse(checkpoint.note)
                cosig = self.witness.sign(note.text.encode(), timestamp=1767225610)
                self.cosignatures.append(
                    (len(self.cosignatures) + 1, note.with_signature(cosig).serialize())
                )
                previous, pending = current.copy(), []

    async def snapshot(self) -> Snapshot:
        return Snapshot(
            checkpoints=[(q, d) for q, kind, d in self.stream if kind == "c"],
            cosignatures=self.cosignatures,
            origin=log_origin("atlas-broker"),
        )

    async def records(self) -> AsyncIterator[Record]:
        index = 0
        for seq, kind, data in self.stream:
            if kind == "e":
                for raw in decode_chunk(data):
                    yield Record(index, seq, raw)
                    index += 1


class TestPrintedVerifier:
    def test_accepts_an_exported_copy_and_refuses_a_changed_one(
        self, sketch: dict[str, Any], tmp_path: Path
    ) -> None:
        log = _Memory()
        copy = tmp_path / "copy"
        asyncio.run(write_copy(log, copy))
        log_vkey, witness_vkey = log.signer.verifier.vkey, log.witness.verifier.vkey
        ours = asyncio.run(
            verify_log(
                LogCopy(copy), log_keys=[log.signer.verifier], witness_keys=[log.witness.verifier]
            )
        )
        assert ours.ok, ours.problems

        assert sketch["verify_copy"](copy, log_vkey, [witness_vkey]) == (
            15,
            15,
            {"witness.example/w1": 2},
        )

        changed = tmp_path / "changed"
        shutil.copytree(copy, changed)
        lines = (changed / "entries.jsonl").read_bytes().split(b"\n")
        lines[4] = lines[4].replace(b'"objects":1', b'"objects":9')
        (changed / "entries.jsonl").write_bytes(b"\n".join(lines))
        with pytest.raises(ValueError, match="do not give the root"):
            sketch["verify_copy"](changed, log_vkey, [witness_vkey])

        truncated = tmp_path / "truncated"
        shutil.copytree(copy, truncated)
        kept = (copy / "entries.jsonl").read_bytes().split(b"\n")[:10]
        (truncated / "entries.jsonl").write_bytes(b"\n".join(kept) + b"\n")
        with pytest.raises(ValueError, match="covers more than the 10 entries"):
            sketch["verify_copy"](truncated, log_vkey, [witness_vkey])
