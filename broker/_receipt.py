"""Delivery receipts: what a recipient keeps to prove its package is in the log (pure).

Once a delivery entry is in a signed checkpoint, the recipient gets a receipt::

    {"v": 1, "index": <log index>, "entry": "<the entry, exactly as logged>",
     "proof": [<base64 inclusion proof hashes>], "checkpoint": "<signed checkpoint note>"}

and checks it with :func:`verify_receipt` against the package it opened: the entry must be
the delivery of that package (``pkg`` = the JWT ``jti``, ``rcpt`` = its ``aud``,
``jwe_sha256`` = SHA-256 of the exact JWE bytes received), and its RFC 9162 inclusion proof
must lead to the root of a checkpoint signed by the broker's log key.

:func:`receipts_for` makes the receipts of every delivery in a new checkpoint from the
previous checkpoint's frontier and the new entries, which the checkpointer holds anyway.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from ._merkle import Frontier, ProofsAfter, leaf_hash, verify_inclusion
from ._note import NoteVerifier, open_checkpoint
from .errors import ProofInvalid

__all__ = ["Receipt", "receipts_for", "verify_receipt"]

RECEIPT_VERSION = 1


@dataclass(frozen=True, slots=True)
class Receipt:
    index: int
    entry: bytes
    proof: tuple[bytes, ...]
    checkpoint: str

    def encode(self) -> bytes:
        return orjson.dumps(
            {
                "v": RECEIPT_VERSION,
                "index": self.index,
                "entry": self.entry.decode(),
                "proof": [base64.b64encode(p).decode() for p in self.proof],
                "checkpoint": self.checkpoint,
            }
        )

    @classmethod
    def decode(cls, data: bytes | str) -> Receipt:
        try:
            doc = orjson.loads(data)
            if not isinstance(doc, dict) or doc.get("v") != RECEIPT_VERSION:
                raise ProofInvalid("not a v1 receipt")
            index, entry, checkpoint = doc["index"], doc["entry"], doc["checkpoint"]
            if not isinstance(index, int) or isinstance(index, bool) or index < 0:
                raise ProofInvalid("receipt index is not a non-negative integer")
            if not isinstance(entry, str) or not isinstance(checkpoint, str):
                raise ProofInvalid("receipt entry or checkpoint is not a string")
            proof = tuple(base64.b64decode(p, validate=True) for p in doc["proof"])
        except (orjson.JSONDecodeError, KeyError, TypeError, binascii.Error) as exc:
            raise ProofInvalid(f"receipt is malformed: {exc}") from exc
        return cls(index, entry.encode(), proof, checkpoint)


def verify_receipt(
    data: bytes | str | Receipt,
    log_keys: Sequence[NoteVerifier],
    *,
    jti: str,
    aud: str,
    jwe_sha256: str,
) -> dict[str, Any]:
    """Check a receipt against the opened package; return the logged entry."""
    receipt = data if isinstance(data, Receipt) else Receipt.decode(data)
    opened = open_checkpoint(receipt.checkpoint, log_keys)
    cp = opened.checkpoint
    verify_inclusion(leaf_hash(receipt.entry), receipt.index, cp.size, receipt.proof, cp.root)
    try:
        entry = orjson.loads(receipt.entry)
    except orjson.JSONDecodeError as exc:
        raise ProofInvalid("receipt entry is not JSON") from exc
    if not isinstance(entry, dict) or entry.get("type") != "delivery":
        raise ProofInvalid("receipt entry is not a delivery")
    for field, expected in (("pkg", jti), ("rcpt", aud), ("jwe_sha256", jwe_sha256)):
        if entry.get(field) != expected:
            raise ProofInvalid(f"receipt entry {field} is not the package's ({expected})")
    return entry


def receipts_for(
    checkpoint: str, previous: Frontier, entries: Sequence[bytes]
) -> Iterator[tuple[str, str, Receipt]]:
    """``(recipient, package id, receipt)`` for every delivery among the new ``entries``.

    ``checkpoint`` is the signed note of the tree ``previous`` + ``entries``.
    """
    proofs = ProofsAfter(previous, [leaf_hash(raw) for raw in entries])
    for offset, raw in enumerate(entries):
        try:
            entry = orjson.loads(raw)
        except orjson.JSONDecodeError:
            continue
        if not isinstance(entry, dict) or entry.get("type") != "delivery":
            continue
        index = previous.size + offset
        proof = proofs.inclusion(index)
        receipt = Receipt(index, raw, tuple(proof), checkpoint)
        yield str(entry.get("rcpt")), str(entry.get("pkg")), receipt
