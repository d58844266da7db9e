"""``audit verify`` on a copy of the log: untouched it verifies; tampered it names the index."""

from __future__ import annotations

import asyncio
import csv
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import orjson
import pytest
from typer.testing import CliRunner

from broker._audit_jobs import Query, normalise_time, verify_log, write_entries
from broker._auditor import VerifyResult
from broker._checkpoint import CheckpointMessage, build_checkpoint
from broker._log import CHUNK
from broker._logcopy import LogCopy, write_copy
from broker._merkle import MerkleTree, leaf_hash
from broker._note import Checkpoint, Note, NoteSigner, NoteVerifier
from broker.cli import app
from broker.errors import ConfigError
from keys import PrivateKey
from tests.unit.broker.logfakes import ORIGIN, TS, MemoryLog, make_entries


@pytest.fixture
def signer() -> NoteSigner:
    return NoteSigner(ORIGIN, PrivateKey.generate("Ed25519"))


@pytest.fixture
def copy_of(tmp_path: Path, signer: NoteSigner) -> Callable[..., Path]:
    def _copy(name: str = "copy", **kwargs: int) -> Path:
        path = tmp_path / name
        asyncio.run(write_copy(MemoryLog(signer, **kwargs), path))
        return path

    return _copy


def verify(
    path: Path, signer: NoteSigner, witness_keys: Sequence[NoteVerifier] = ()
) -> VerifyResult:
    return asyncio.run(
        verify_log(LogCopy(path), log_keys=[signer.verifier], witness_keys=witness_keys)
    )


def lines(path: Path) -> list[bytes]:
    return (path / "entries.jsonl").read_bytes().split(b"\n")[:-1]


def rewrite(path: Path, new: list[bytes]) -> None:
    (path / "entries.jsonl").write_bytes(b"".join(line + b"\n" for line in new))


class TestUntouched:
    def test_copy_verifies_when_nothing_was_changed(
        self, copy_of: Callable[..., Path], signer: NoteSigner
    ) -> None:
        result = verify(copy_of(), signer)
        assert result.ok, result.problems
        assert result.entries == 48
        assert result.checkpointed_size == 48
        assert result.checkpoints == 4  # at 12, 24, 36 and 48 entries
        assert result.consistency_proofs == 3
        assert result.summary().startswith("OK: 48 entries")
        assert f"origin {ORIGIN}" in result.summary()  # which log it was

    def test_result_reports_unverified_tail_when_entries_follow_last_checkpoint(
        self, copy_of: Callable[..., Path], signer: NoteSigner
    ) -> None:
        path = copy_of()
        rewrite(path, [*lines(path), b'{"type":"late"}'])
        result = verify(path, signer)
        assert result.ok and result.unverified_tail == 1


class TestTampered:
    @pytest.mark.parametrize("index", [0, 7, 23, 47])
    def test_verify_names_index_when_one_byte_of_an_entry_changed(
        self, copy_of: Callable[..., Path], signer: NoteSigner, index: int
    ) -> None:
        path = copy_of()
        entries = lines(path)
        at = entries[index].index(b'"ts":"') + 8
        entries[index] = entries[index][:at] + b"9" + entries[index][at + 1 :]
        rewrite(path, entries)
        result = verify(path, signer)
        assert not result.ok
        assert result.first_bad_index == index
        assert f"first bad index {index}" in result.summary()

    @pytest.mark.parametrize("index", [0, 13, 40])
    def test_verify_names_index_when_an_entry_was_dropped(
        self, copy_of: Callable[..., Path], signer: NoteSigner, index: int
    ) -> None:
        path = copy_of()
        entries = lines(path)
        del entries[index]
        rewrite(path, entries)
        assert verify(path, signer).first_bad_index == index

    @pytest.mark.parametrize(("i", "j"), [(2, 3), (5, 30), (44, 47)])
    def test_verify_names_first_index_when_two_entries_were_swapped(
        self, copy_of: Callable[..., Path], signer: NoteSigner, i: int, j: int
    ) -> None:
        path = copy_of()
        entries = lines(path)
        entries[i], entries[j] = entries[j], entries[i]
        rewrite(path, entries)
        assert verify(path, signer).first_bad_index == i

    @pytest.mark.parametrize("keep", [0, 11, 46])
    def test_verify_names_index_when_log_was_truncated(
        self, copy_of: Callable[..., Path], signer: NoteSigner, keep: int
    ) -> None:
        path = copy_of()
        rewrite(path, lines(path)[:keep])
        result = verify(path, signer)
        assert result.first_bad_index == keep
        assert "truncated" in (result.first_problem() or result).message  # type: ignore[union-attr]

    def test_verify_reports_fork_when_two_checkpoints_share_a_size(
        self, copy_of: Callable[..., Path], signer: NoteSigner
    ) -> None:
        path = copy_of()
        entries = lines(path)
        # the operator rewrites entry 30 and signs the rewritten history at the same size
        forged = [*entries[:30], b'{"type":"delivery","rcpt":"nobody"}', *entries[31:]]
        tree = MerkleTree.of_entries(forged)
        message = build_checkpoint(
            signer, previous=tree.frontier(24), current=tree.frontier(48),
            leaves=[leaf_hash(e) for e in forged[24:48]], log_seq=999, ts=TS.format(1),
        )  # fmt: skip
        with (path / "checkpoints.jsonl").open("ab") as fh:
            fh.write(orjson.dumps({"seq": 1000, "data": message.encode().decode()}) + b"\n")
        result = verify(path, signer)
        first = result.first_problem()
        assert first is not None and "fork" in first.message
        assert first.index == 30
        assert "rewritten" in result.summary()

    def test_verify_fails_when_a_checkpoint_root_was_altered(
        self, copy_of: Callable[..., Path], signer: NoteSigner
    ) -> None:
        path = copy_of()
        rows = (path / "checkpoints.jsonl").read_bytes().split(b"\n")[:-1]
        doc = orjson.loads(rows[1])
        wrapper = orjson.loads(doc["data"])
        note = Note.parse(wrapper["note"])
        cp = Checkpoint.parse(note.text)
        wrapper["note"] = Note(
            Checkpoint(cp.origin, cp.size, bytes(32)).text(), note.signatures
        ).serialize()
        rows[1] = orjson.dumps({"seq": doc["seq"], "data": orjson.dumps(wrapper).decode()})
        (path / "checkpoints.jsonl").write_bytes(b"".join(r + b"\n" for r in rows))
        result = verify(path, signer)
        assert not result.ok
        assert any("does not verify" in p.message for p in result.problems)

    def test_verify_fails_when_checkpoints_are_signed_by_an_unknown_key(
        self, copy_of: Callable[..., Path]
    ) -> None:
        other = NoteSigner(ORIGIN, PrivateKey.generate("Ed25519"))
        result = verify(copy_of(), other)
        assert not result.ok
        assert all("no signature from a known log key" in p.message for p in result.problems)

    def test_verify_fails_when_an_entry_is_not_json(
        self, copy_of: Callable[..., Path], signer: NoteSigner
    ) -> None:
        path = copy_of()
        entries = lines(path)
        entries.append(b"{broken")
        rewrite(path, entries)
        result = verify(path, signer)
        assert result.first_bad_index == 48
        assert "not JSON" in result.summary()

    def test_verify_reports_split_view_when_a_witness_cosigned_another_root(
        self, copy_of: Callable[..., Path], signer: NoteSigner
    ) -> None:
        path = copy_of()
        witness = NoteSigner("w.test/1", PrivateKey.generate("Ed25519"), cosigner=True)
        note = Checkpoint(ORIGIN, 20, bytes(32)).sign(signer)
        cosigned = note.with_signature(witness.sign(note.text.encode(), timestamp=1))
        (path / "cosignatures.jsonl").write_bytes(
            orjson.dumps({"seq": 1, "witness": "w.test/1", "note": cosigned.serialize()}) + b"\n"
        )
        result = verify(path, signer, witness_keys=[witness.verifier])
        assert result.first_bad_index == 19
        assert "split view" in result.summary()

    def test_verify_reports_truncation_when_a_witness_saw_more_entries(
        self, copy_of: Callable[..., Path], signer: NoteSigner
    ) -> None:
        """The tail and its checkpoint removed, the witness's cosignature of that checkpoint
        kept: the copy used to verify, counting the cosignature as support."""
        path = copy_of()
        witness = NoteSigner("w.test/1", PrivateKey.generate("Ed25519"), cosigner=True)
        rows = (path / "checkpoints.jsonl").read_bytes().split(b"\n")[:-1]
        last = Note.parse(orjson.loads(orjson.loads(rows[-1])["data"])["note"])
        assert Checkpoint.parse(last.text).size == 48
        cosigned = last.with_signature(witness.sign(last.text.encode(), timestamp=1))
        (path / "cosignatures.jsonl").write_bytes(
            orjson.dumps({"seq": 1, "witness": "w.test/1", "note": cosigned.serialize()}) + b"\n"
        )
        assert verify(path, signer, witness_keys=[witness.verifier]).ok  # untouched: fine
        rewrite(path, lines(path)[:24])
        kept = [r for r in rows if orjson.loads(orjson.loads(r)["data"])["size"] <= 24]
        (path / "checkpoints.jsonl").write_bytes(b"".join(r + b"\n" for r in kept))
        alone = verify(path, signer)  # without the witness's key: the log's own signature
        assert "the log key signed a checkpoint of 48 entries" in alone.summary()
        result = verify(path, signer, witness_keys=[witness.verifier])
        assert not result.ok
        first = result.first_problem()
        assert first is not None and first.index == 24
        assert "saw a checkpoint of 48 entries, but the log ends after 24" in first.message


class TestQueryAndExport:
    def test_query_matches_when_filters_combine(self) -> None:
        entry = make_entries(1)[1]
        assert Query(recipient="lea-1", tlp="AMBER", action="delivery").matches(entry)
        assert Query(org="bank-a", since=normalise_time("2026-11-02T09:00:00Z")).matches(entry)
        assert not Query(until=normalise_time("2026-11-02")).matches(entry)
        assert not Query(originator="bank-b").matches(entry)
        with pytest.raises(ConfigError):
            normalise_time("yesterday")

    def test_csv_export_holds_matching_rows_when_filtered(
        self, copy_of: Callable[..., Path], tmp_path: Path
    ) -> None:
        out = tmp_path / "out.csv"
        with out.open("w", newline="") as fh:
            count = asyncio.run(
                write_entries(LogCopy(copy_of()), fh, fmt="csv", query=Query(recipient="lea-2"))
            )
        with out.open(newline="") as fh:
            rows = list(csv.DictReader(fh))
        assert count == len(rows) == 24
        assert {r["recipient"] for r in rows} == {"lea-2"}
        assert rows[0]["seq"] != "0"

    def test_csv_export_keeps_formulas_from_running_in_a_spreadsheet(
        self, copy_of: Callable[..., Path], tmp_path: Path
    ) -> None:
        path = copy_of()
        entries = lines(path)
        entry = orjson.loads(entries[0])
        entry["reason"] = '=HYPERLINK("https://evil.example","open")'
        rewrite(path, [orjson.dumps(entry), *entries[1:]])
        out = tmp_path / "out.csv"
        with out.open("w", newline="") as fh:
            asyncio.run(write_entries(LogCopy(path), fh, fmt="csv"))
        with out.open(newline="") as fh:
            first = next(csv.DictReader(fh))
        assert first["reason"] == "'" + entry["reason"]
        assert first["ts"] == entry["ts"]  # ordinary cells unchanged

    def test_export_refuses_when_folder_exists(self, copy_of: Callable[..., Path]) -> None:
        path = copy_of()
        with pytest.raises(ConfigError):
            asyncio.run(write_copy(LogCopy(path), path))


class TestCommandLine:
    def test_cli_exits_zero_when_copy_verifies(
        self, copy_of: Callable[..., Path], signer: NoteSigner
    ) -> None:
        result = CliRunner().invoke(
            app, ["audit", "verify", "--from", str(copy_of()), "--log-key", signer.verifier.vkey]
        )
        assert result.exit_code == 0, result.output
        assert "OK: 48 entries" in result.output

    def test_cli_exits_one_and_names_index_when_copy_was_tampered(
        self, copy_of: Callable[..., Path], signer: NoteSigner
    ) -> None:
        path = copy_of()
        entries = lines(path)
        del entries[17]
        rewrite(path, entries)
        result = CliRunner().invoke(
            app, ["audit", "verify", "--from", str(path), "--log-key", signer.verifier.vkey]
        )
        assert result.exit_code == 1
        assert "first bad index 17" in result.output

    @pytest.mark.parametrize("removed", ["entries", "checkpoints", "cosignatures"])
    def test_cli_fails_a_copy_whose_files_hold_less_than_its_manifest(
        self, copy_of: Callable[..., Path], signer: NoteSigner, removed: str
    ) -> None:
        """A copy reduced to its manifest verified "OK: 0 entries"."""
        path = copy_of()
        (path / "cosignatures.jsonl").write_bytes(b'{"seq": 1, "note": "n"}\n')
        manifest = orjson.loads((path / "manifest.json").read_bytes())
        manifest["cosignatures"] = 1
        (path / "manifest.json").write_bytes(orjson.dumps(manifest))
        (path / f"{removed}.jsonl").unlink()
        argv = ["audit", "verify", "--from", str(path), "--log-key", signer.verifier.vkey]
        result = CliRunner().invoke(app, argv)
        assert result.exit_code == 1, result.output
        assert f"the copy's manifest lists {manifest[removed]} {removed}" in result.output

    def test_cli_says_how_far_a_named_witness_has_seen_the_log(
        self, copy_of: Callable[..., Path], signer: NoteSigner
    ) -> None:
        path = copy_of()
        witness = NoteSigner("w.test/1", PrivateKey.generate("Ed25519"), cosigner=True)
        rows = (path / "checkpoints.jsonl").read_bytes().split(b"\n")[:-1]
        notes = [Note.parse(orjson.loads(orjson.loads(r)["data"])["note"]) for r in rows]
        at24 = next(n for n in notes if Checkpoint.parse(n.text).size == 24)
        cosigned = at24.with_signature(witness.sign(at24.text.encode(), timestamp=1))
        (path / "cosignatures.jsonl").write_bytes(
            orjson.dumps({"seq": 1, "note": cosigned.serialize()}) + b"\n"
        )
        manifest = orjson.loads((path / "manifest.json").read_bytes())
        manifest["cosignatures"] = 1
        (path / "manifest.json").write_bytes(orjson.dumps(manifest))
        argv = ["audit", "verify", "--from", str(path), "--log-key", signer.verifier.vkey]
        result = CliRunner().invoke(app, [*argv, "--witness-key", witness.verifier.vkey])
        assert result.exit_code == 0, result.output
        assert "witness w.test/1 cosigned up to size 24: entries 24..47" in result.output

    @pytest.mark.parametrize("manifest", [b"[1, 2]", b'"atlas"', b"{broken"])
    def test_cli_refuses_a_manifest_that_is_not_one_in_one_line(
        self, copy_of: Callable[..., Path], signer: NoteSigner, manifest: bytes
    ) -> None:
        path = copy_of()
        (path / "manifest.json").write_bytes(manifest)
        argv = ["audit", "verify", "--from", str(path), "--log-key", signer.verifier.vkey]
        result = CliRunner().invoke(app, argv)
        assert result.exit_code == 1 and isinstance(result.exception, SystemExit)
        assert "is not an Atlas log copy" in result.output

    def test_cli_exits_two_when_no_signed_checkpoint_covers_anything(
        self, copy_of: Callable[..., Path], signer: NoteSigner
    ) -> None:
        path = copy_of()
        (path / "checkpoints.jsonl").write_bytes(b"")
        manifest = orjson.loads((path / "manifest.json").read_bytes())
        manifest["checkpoints"] = 0  # as if exported before the first checkpoint
        (path / "manifest.json").write_bytes(orjson.dumps(manifest))
        argv = ["audit", "verify", "--from", str(path), "--log-key", signer.verifier.vkey]
        result = CliRunner().invoke(app, argv)
        assert result.exit_code == 2, result.output
        assert "nothing is verified" in result.output
        assert "✔" not in result.output

    @pytest.mark.parametrize("where", ["cosignature", "checkpoint"])
    def test_cli_prints_what_the_log_says_as_text_never_as_markup(
        self, copy_of: Callable[..., Path], signer: NoteSigner, where: str
    ) -> None:
        """A cosignature line "— [/x] !!!" crashed verify with a MarkupError; a checkpoint
        whose origin was "[conceal]" had the origin hidden from the auditor."""
        path = copy_of()
        if where == "cosignature":
            shown = "[/x]"
            note = f"{ORIGIN}\n48\n{'A' * 43}=\n\n— [/x] !!!\n"
            row = orjson.dumps({"seq": 1, "note": note})
            (path / "cosignatures.jsonl").write_bytes(row + b"\n")
        else:
            shown = "[conceal]"
            rows = (path / "checkpoints.jsonl").read_bytes().split(b"\n")[:-1]
            doc = orjson.loads(rows[0])
            wrapper = orjson.loads(doc["data"])
            wrapper["note"] = wrapper["note"].replace(ORIGIN, shown, 1)
            forged = orjson.dumps({"seq": 1, "data": orjson.dumps(wrapper).decode()})
            (path / "checkpoints.jsonl").write_bytes(b"".join(r + b"\n" for r in [forged, *rows]))
        argv = ["audit", "verify", "--from", str(path), "--log-key", signer.verifier.vkey]
        result = CliRunner().invoke(app, argv)
        assert result.exit_code == 1, result.output
        assert isinstance(result.exception, SystemExit)  # a verdict, not a traceback
        assert shown in result.output

    def test_cli_query_table_shows_entries_holding_markup_as_text(
        self, copy_of: Callable[..., Path]
    ) -> None:
        path = copy_of()
        entries = lines(path)
        entry = orjson.loads(entries[0])
        entry["reason"] = "[/x] [conceal]hidden[/conceal]"
        rewrite(path, [orjson.dumps(entry), *entries[1:]])
        result = CliRunner().invoke(app, ["audit", "query", "--from", str(path)])
        assert result.exit_code == 0, result.output  # was a MarkupError
        assert "[/x]" in result.output

    def test_cli_query_prints_json_lines_when_asked(self, copy_of: Callable[..., Path]) -> None:
        result = CliRunner().invoke(
            app, ["audit", "query", "--from", str(copy_of()), "--action", "withheld", "--json"]
        )
        assert result.exit_code == 0, result.output
        rows = [orjson.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
        assert len(rows) == 12 and {r["reason"] for r in rows} == {"tlp-amber-not-named"}

    def test_cli_vkey_prints_verifier_when_given_a_jwk_set(
        self, tmp_path: Path, signer: NoteSigner
    ) -> None:
        key = PrivateKey.generate("Ed25519")
        jwks = tmp_path / "broker.jwks.json"
        jwks.write_bytes(orjson.dumps({"keys": [key.public.to_jwk()]}))
        result = CliRunner().invoke(
            app, ["audit", "vkey", "--broker-jwks", str(jwks), "--origin", ORIGIN]
        )
        assert result.exit_code == 0, result.output
        assert NoteVerifier.from_vkey(result.stdout.strip()) == NoteVerifier.from_public_key(
            ORIGIN, key.public
        )

    def test_cli_vkey_refuses_a_jwk_set_without_an_ed25519_key(self, tmp_path: Path) -> None:
        jwks = tmp_path / "broker.jwks.json"
        jwks.write_bytes(orjson.dumps({"keys": [PrivateKey.generate("ES256").public.to_jwk()]}))
        result = CliRunner().invoke(
            app, ["audit", "vkey", "--broker-jwks", str(jwks), "--origin", ORIGIN]
        )
        assert result.exit_code != 0
        assert "no Ed25519 key in the set" in result.output
        assert f"{ORIGIN}+" not in result.output  # no verifier key printed

    def test_cli_witness_with_a_jwk_set_asks_for_the_origin(self, tmp_path: Path) -> None:
        jwks = tmp_path / "broker.jwks.json"
        jwks.write_bytes(orjson.dumps({"keys": [PrivateKey.generate("Ed25519").public.to_jwk()]}))
        result = CliRunner().invoke(
            app,
            ["witness", "--key", str(tmp_path / "w.pem"), "--name", "w.test/1",
             "--state", str(tmp_path / "state.json"), "--broker-jwks", str(jwks)],
        )  # fmt: skip
        assert result.exit_code != 0
        assert "--broker-jwks needs --origin" in result.output


def test_chunks_fit_when_submission_logs_many_entries() -> None:
    assert CHUNK == 256
    message = CheckpointMessage.decode(
        MemoryLog(NoteSigner(ORIGIN, PrivateKey.generate("Ed25519"))).checkpoints[0][1]
    )
    assert message.size >= 10


def test_export_to_a_pipe_closed_early_ends_quietly(
    copy_of: Callable[..., Path], tmp_path: Path
) -> None:
    copy = copy_of(submissions=3000)  # 12,000 entries: far more than a pipe holds
    export = subprocess.Popen(
        [sys.executable, "-m", "broker", "audit", "export", "--from", str(copy), "--out", "-"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert export.stdout is not None and export.stderr is not None
    first = export.stdout.readline()
    export.stdout.close()  # what `| head -1` does
    _, stderr = export.communicate(timeout=60)
    assert orjson.loads(first)["index"] == 0
    assert export.returncode == 0, stderr.decode()
    assert b"Traceback" not in stderr and b"exception" not in stderr.lower()


def test_export_refuses_an_unknown_format_before_writing_anything(
    copy_of: Callable[..., Path], tmp_path: Path
) -> None:
    target = tmp_path / "out.xml"
    args = ["audit", "export", "--from", str(copy_of()), "--out", str(target), "--format", "xml"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2 and "use csv, jsonl, raw or log" in result.output
    assert not target.exists()
