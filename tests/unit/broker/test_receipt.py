"""Delivery receipts: made at checkpoint time, verified against the opened package."""

from __future__ import annotations

import orjson
import pytest

from broker._checkpoint import build_checkpoint
from broker._merkle import MerkleTree, leaf_hash
from broker._note import NoteSigner
from broker._receipt import Receipt, receipts_for, verify_receipt
from broker.errors import LogIntegrityError
from keys import PrivateKey, canonical_json
from tests.unit.broker.logfakes import ORIGIN, make_entries


@pytest.fixture
def signer() -> NoteSigner:
    return NoteSigner(ORIGIN, PrivateKey.generate("Ed25519"))


def receipts(signer: NoteSigner, old: int = 9) -> dict[str, Receipt]:
    entries = [canonical_json(e) for e in make_entries(6)]
    tree = MerkleTree.of_entries(entries)
    message = build_checkpoint(
        signer, previous=tree.frontier(old), current=tree.frontier(), ts="t", log_seq=1,
        leaves=[leaf_hash(e) for e in entries[old:]],
    )  # fmt: skip
    return {pkg: r for _, pkg, r in receipts_for(message.note, tree.frontier(old), entries[old:])}


class TestReceipts:
    def test_every_new_delivery_gets_a_receipt_when_checkpointed(self, signer: NoteSigner) -> None:
        made = receipts(signer)
        # four entries per submission: entries 9.. hold the deliveries of submissions 2..5
        assert sorted(made) == [f"p{n}-lea-{r}" for n in (2, 3, 4, 5) for r in (1, 2)]
        assert made["p2-lea-1"].index == 9

    def test_receipt_verifies_when_it_matches_the_package(self, signer: NoteSigner) -> None:
        receipt = receipts(signer)["p4-lea-1"]
        decoded = Receipt.decode(receipt.encode())
        entry = verify_receipt(
            decoded, [signer.verifier], jti="p4-lea-1", aud="lea-1", jwe_sha256="j4"
        )
        assert entry["pkg"] == "p4-lea-1" and decoded == receipt

    @pytest.mark.parametrize(
        ("jti", "aud", "jwe"),
        [("p4-lea-2", "lea-1", "j4"), ("p4-lea-1", "lea-2", "j4"), ("p4-lea-1", "lea-1", "j5")],
    )
    def test_receipt_fails_when_package_differs(
        self, signer: NoteSigner, jti: str, aud: str, jwe: str
    ) -> None:
        receipt = receipts(signer)["p4-lea-1"]
        with pytest.raises(LogIntegrityError):
            verify_receipt(receipt, [signer.verifier], jti=jti, aud=aud, jwe_sha256=jwe)

    def test_receipt_fails_when_entry_or_proof_or_key_is_wrong(self, signer: NoteSigner) -> None:
        receipt = receipts(signer)["p4-lea-1"]
        doc = orjson.loads(receipt.encode())
        bad_entry = doc | {"entry": doc["entry"].replace('"j4"', '"j4" ')}
        bad_index = doc | {"index": doc["index"] + 1}
        for data in (orjson.dumps(bad_entry), orjson.dumps(bad_index), b"{}", b"[", b'{"v":1}'):
            with pytest.raises(LogIntegrityError):
                verify_receipt(data, [signer.verifier], jti="p4-lea-1", aud="lea-1",
                               jwe_sha256="j4")  # fmt: skip
        other = NoteSigner(ORIGIN, PrivateKey.generate("Ed25519"))
        with pytest.raises(LogIntegrityError):
            verify_receipt(receipt, [other.verifier], jti="p4-lea-1", aud="lea-1", jwe_sha256="j4")
