"""C2SP signed notes, checkpoints, cosignatures and the checkpoint message wrapper."""

from __future__ import annotations

import base64
import hashlib

import orjson
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from broker._checkpoint import CheckpointMessage, build_checkpoint, log_origin
from broker._merkle import Frontier, MerkleTree, leaf_hash
from broker._note import (
    COSIGNATURE_V1,
    ED25519,
    Checkpoint,
    Note,
    NoteSigner,
    NoteVerifier,
    open_checkpoint,
)
from broker.errors import CheckpointInvalid, LogIntegrityError, ProofInvalid
from keys import PrivateKey

# golang.org/x/mod/sumdb/note note_test.go: the PeterNeumann key, text and signature.
GO_SEED = base64.b64decode("AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz")[1:]
GO_VKEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
GO_TEXT = (
    "If you think cryptography is the answer to your problem,\n"
    "then you don't know what your problem is.\n"
)
GO_SIG = (
    "— PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngot"
    "pRZb6KE6RyyBwJnAM=\n"
)
ORIGIN = "atlas.test/log"


def go_key() -> PrivateKey:
    return PrivateKey.from_cryptography(Ed25519PrivateKey.from_private_bytes(GO_SEED))


@pytest.fixture
def log_signer() -> NoteSigner:
    return NoteSigner(ORIGIN, PrivateKey.generate("Ed25519"))


@pytest.fixture
def witness_signer() -> NoteSigner:
    return NoteSigner("witness.test/w1", PrivateKey.generate("Ed25519"), cosigner=True)


def signed_checkpoint(signer: NoteSigner, size: int = 3) -> tuple[str, bytes]:
    tree = MerkleTree.of_entries([b"a", b"b", b"c", b"d"][:size])
    return Checkpoint(ORIGIN, size, tree.root()).sign(signer).serialize(), tree.root()


class TestSignedNote:
    def test_signature_matches_go_vector_when_signing_with_reference_key(self) -> None:
        signer = NoteSigner("PeterNeumann", go_key())
        assert signer.verifier.vkey == GO_VKEY
        note = Note(GO_TEXT, (signer.sign(GO_TEXT.encode()),))
        assert note.serialize() == GO_TEXT + "\n" + GO_SIG

    def test_reference_note_verifies_when_parsed_with_reference_vkey(self) -> None:
        note = Note.parse(GO_TEXT + "\n" + GO_SIG)
        assert note.text == GO_TEXT
        assert note.verified_by([NoteVerifier.from_vkey(GO_VKEY)]) == {"PeterNeumann": 0}

    def test_key_id_is_first_four_bytes_of_sha256_when_computed(self) -> None:
        verifier = NoteVerifier.from_vkey(GO_VKEY)
        digest = hashlib.sha256(b"PeterNeumann\n\x01" + verifier.public).digest()
        assert verifier.key_id == int.from_bytes(digest[:4], "big") == 0xC74F20A3

    def test_whole_note_is_rejected_when_a_known_signature_is_bad(self) -> None:
        tampered = (GO_TEXT + "\n" + GO_SIG).replace("cryptography", "cryptographY")
        with pytest.raises(CheckpointInvalid):
            Note.parse(tampered).verified_by([NoteVerifier.from_vkey(GO_VKEY)])

    def test_unknown_signatures_are_ignored_when_verifying(self, log_signer: NoteSigner) -> None:
        note = Note.parse(GO_TEXT + "\n" + GO_SIG)
        assert note.verified_by([log_signer.verifier]) == {}

    @pytest.mark.parametrize(
        "text",
        [
            b"\xff\xfe\n\n\xe2\x80\x94 a AAAAAAA=\n",
            GO_TEXT + "\n" + GO_SIG.rstrip("\n"),
            GO_TEXT + GO_SIG,
            GO_TEXT + "\n",
            GO_TEXT + "\n" + GO_SIG.replace("—", "-"),
            GO_TEXT + "\n" + GO_SIG.replace("PeterNeumann ", "Peter+Neumann "),
            GO_TEXT + "\n" + GO_SIG.replace("PeterNeumann ", "Peter Neumann "),
            GO_TEXT + "\n" + GO_SIG.replace("x08go", "x08g!"),
            GO_TEXT + "\n" + GO_SIG.replace("AM=", "AM"),
            GO_TEXT + "\n— PeterNeumann AAAA\n",
            GO_TEXT.replace("\n", "\r\n", 1) + "\n" + GO_SIG,
            GO_TEXT + "\n" + GO_SIG * 101,
            "x" * 70_000 + "\n\n" + GO_SIG,
        ],
    )
    def test_parse_raises_checkpoint_invalid_when_note_is_malformed(
        self, text: str | bytes
    ) -> None:
        with pytest.raises(CheckpointInvalid):
            Note.parse(text)

    @pytest.mark.parametrize(
        "vkey",
        [
            "PeterNeumann+c74f20a3",
            "PeterNeumann+c74f20a4+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
            "PeterNeumann+C74F20A3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
            "PeterNeumann+c74f20a3+Apc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
            "PeterNeumann+c74f20a3+BRpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
            "PeterNeumann+c74f20a3+",
            "+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
        ],
    )
    def test_vkey_is_refused_when_mangled(self, vkey: str) -> None:
        with pytest.raises(CheckpointInvalid):
            NoteVerifier.from_vkey(vkey)

    def test_signer_refuses_when_key_is_not_ed25519(self) -> None:
        with pytest.raises(CheckpointInvalid):
            NoteSigner("x", PrivateKey.generate("ES256"))
        with pytest.raises(CheckpointInvalid):
            NoteVerifier.from_public_key("x", PrivateKey.generate("X25519").public)


class TestCheckpoint:
    def test_text_is_c2sp_body_when_formatted(self) -> None:
        root = hashlib.sha256(b"").digest()
        assert Checkpoint("example.com/log", 0, root).text() == (
            "example.com/log\n0\n47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=\n"
        )

    def test_round_trip_keeps_fields_when_parsed(self) -> None:
        cp = Checkpoint(ORIGIN, 20852163, bytes(range(32)), ("ext line",))
        assert Checkpoint.parse(cp.text()) == cp

    @pytest.mark.parametrize(
        "text",
        [
            "o\n1\n",
            "o\n01\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n",
            "o\n-1\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n",
            "o\n18446744073709551616\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n",
            "o\n1\nAAAA\n",
            "o\n1\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
            "\n1\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n",
            "o\n1\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n\n",
            "o\n1\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA-=\n",
        ],
    )
    def test_parse_raises_checkpoint_invalid_when_body_is_malformed(self, text: str) -> None:
        with pytest.raises(CheckpointInvalid):
            Checkpoint.parse(text)

    def test_open_returns_checkpoint_when_signed_by_log_key(self, log_signer: NoteSigner) -> None:
        note, root = signed_checkpoint(log_signer)
        opened = open_checkpoint(note, [log_signer.verifier], origin=ORIGIN)
        assert (opened.checkpoint.size, opened.checkpoint.root) == (3, root)
        assert opened.signed_by == (ORIGIN,)

    def test_open_refuses_when_no_known_log_key_signed(self, log_signer: NoteSigner) -> None:
        note, _ = signed_checkpoint(log_signer)
        other = NoteSigner(ORIGIN, PrivateKey.generate("Ed25519"))
        with pytest.raises(CheckpointInvalid, match="no signature"):
            open_checkpoint(note, [other.verifier])
        with pytest.raises(CheckpointInvalid, match="origin"):
            open_checkpoint(note, [log_signer.verifier], origin="elsewhere/log")

    def test_open_refuses_when_root_was_changed_after_signing(self, log_signer: NoteSigner) -> None:
        note, root = signed_checkpoint(log_signer)
        forged = note.replace(base64.b64encode(root).decode(), base64.b64encode(bytes(32)).decode())
        with pytest.raises(CheckpointInvalid):
            open_checkpoint(forged, [log_signer.verifier])


class TestCosignature:
    def test_cosignature_follows_tlog_cosignature_v1_when_signed(
        self, log_signer: NoteSigner, witness_signer: NoteSigner
    ) -> None:
        note_text, _ = signed_checkpoint(log_signer)
        note = Note.parse(note_text)
        sig = witness_signer.sign(note.text.encode(), timestamp=1679315147)
        assert witness_signer.verifier.sig_type == COSIGNATURE_V1
        assert sig.signature[:8] == (1679315147).to_bytes(8, "big")
        message = b"cosignature/v1\ntime 1679315147\n" + note.text.encode()
        public = witness_signer.verifier.public
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

        Ed25519PublicKey.from_public_bytes(public).verify(sig.signature[8:], message)
        digest = hashlib.sha256(b"witness.test/w1\n\x04" + public).digest()
        assert witness_signer.verifier.key_id == int.from_bytes(digest[:4], "big")

    def test_open_reports_cosigners_when_witness_cosigned(
        self, log_signer: NoteSigner, witness_signer: NoteSigner
    ) -> None:
        note = Note.parse(signed_checkpoint(log_signer)[0])
        cosigned = note.with_signature(witness_signer.sign(note.text.encode(), timestamp=7))
        opened = open_checkpoint(
            cosigned.serialize(), [log_signer.verifier], [witness_signer.verifier]
        )
        assert opened.cosigned_by == {"witness.test/w1": 7}
        # the witness key cannot stand in for the log key, nor the other way round
        with pytest.raises(CheckpointInvalid):
            open_checkpoint(cosigned.serialize(), [witness_signer.verifier])

    def test_open_refuses_when_cosignature_is_bad(
        self, log_signer: NoteSigner, witness_signer: NoteSigner
    ) -> None:
        note = Note.parse(signed_checkpoint(log_signer)[0])
        sig = witness_signer.sign(note.text.encode(), timestamp=7)
        bad = type(sig)(sig.name, sig.key_id, (8).to_bytes(8, "big") + sig.signature[8:])
        with pytest.raises(CheckpointInvalid):
            open_checkpoint(
                note.with_signature(bad).serialize(),
                [log_signer.verifier],
                [witness_signer.verifier],
            )

    def test_vkey_round_trips_when_witness_key_is_printed(self, witness_signer: NoteSigner) -> None:
        assert NoteVerifier.from_vkey(witness_signer.verifier.vkey) == witness_signer.verifier
        assert NoteVerifier.from_vkey(GO_VKEY).sig_type == ED25519


class TestCheckpointMessage:
    def make(self, signer: NoteSigner, old: int = 5, new: int = 12) -> CheckpointMessage:
        entries = [f"e{i}".encode() for i in range(new)]
        tree = MerkleTree.of_entries(entries)
        return build_checkpoint(
            signer,
            previous=tree.frontier(old),
            current=tree.frontier(new),
            leaves=[leaf_hash(e) for e in entries[old:new]],
            log_seq=42,
            ts="2026-11-02T09:30:00.000000Z",
        )

    def test_round_trip_verifies_when_encoded_and_decoded(self, log_signer: NoteSigner) -> None:
        message = self.make(log_signer)
        decoded = CheckpointMessage.decode(message.encode(), seq=9)
        assert decoded.seq == 9 and decoded.log_seq == 42
        verified = decoded.verify([log_signer.verifier], origin=ORIGIN)
        assert verified.size == 12
        assert len(decoded.leaf_hashes()) == 7

    def test_consistency_verifies_when_following_previous_checkpoint(
        self, log_signer: NoteSigner
    ) -> None:
        first = self.make(log_signer, 0, 5).verify([log_signer.verifier])
        second = self.make(log_signer, 5, 12).verify([log_signer.verifier])
        second.check_follows(first)
        with pytest.raises(ProofInvalid):
            first.check_follows(second)

    @pytest.mark.parametrize(
        "change",
        [
            {"v": 2},
            {"size": 13},
            {"size": -1},
            {"size": True},
            {"prev_size": 13},
            {"leaves": "AAAA"},
            {"leaves": "!!"},
            {"frontier": ["AAAA"]},
            {"frontier": "x"},
            {"consistency": [1]},
            {"note": None},
        ],
    )
    def test_decode_or_verify_raises_our_error_when_wrapper_is_damaged(
        self, log_signer: NoteSigner, change: dict[str, object]
    ) -> None:
        doc = orjson.loads(self.make(log_signer).encode()) | change
        with pytest.raises(LogIntegrityError):
            CheckpointMessage.decode(orjson.dumps(doc)).verify([log_signer.verifier])

    def test_verify_refuses_when_frontier_does_not_give_signed_root(
        self, log_signer: NoteSigner
    ) -> None:
        doc = orjson.loads(self.make(log_signer).encode())
        doc["frontier"] = doc["frontier"][::-1]
        with pytest.raises(CheckpointInvalid, match="frontier"):
            CheckpointMessage.decode(orjson.dumps(doc)).verify([log_signer.verifier])

    @pytest.mark.parametrize("data", [b"not json", b"[]", b'{"v":1}'])
    def test_decode_raises_checkpoint_invalid_when_not_a_wrapper(self, data: bytes) -> None:
        with pytest.raises(CheckpointInvalid):
            CheckpointMessage.decode(data)

    def test_build_refuses_when_leaves_do_not_join_the_frontiers(
        self, log_signer: NoteSigner
    ) -> None:
        with pytest.raises(ProofInvalid):
            build_checkpoint(
                log_signer,
                previous=Frontier(),
                current=Frontier(),
                leaves=[bytes(32)],
                log_seq=0,
                ts="t",
            )

    def test_origin_names_the_broker_when_derived(self) -> None:
        assert log_origin("atlas-broker") == "atlas-broker/log"
