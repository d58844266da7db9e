"""C2SP signed notes, tlog checkpoints and Ed25519 cosignatures (pure: no I/O).

- signed-note (c2sp.org/signed-note@v1): UTF-8 text ending in a newline, a blank line,
  then signature lines ``— <key name> <base64(key ID || signature)>``; the key ID is
  ``SHA-256(name || 0x0A || type || public key)[:4]``. Type ``0x01``: Ed25519 over the text.
- tlog-checkpoint (c2sp.org/tlog-checkpoint@v1): the text is ``<origin>\\n<size>\\n<base64
  root>\\n`` and optional extension lines.
- tlog-cosignature (c2sp.org/tlog-cosignature, Ed25519 v1): type ``0x04``; the signature is
  ``u64 timestamp || Ed25519("cosignature/v1\\ntime <timestamp>\\n" || text)``.

Verifier keys use the note "vkey" form ``<name>+<hex key ID>+<base64(type || public key)>``.
Parsing is strict and raises :class:`~broker.errors.CheckpointInvalid` only.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ed25519

from keys import PrivateKey, PublicKey

from ._merkle import HASH_SIZE
from .errors import CheckpointInvalid

__all__ = [
    "COSIGNATURE_V1",
    "ED25519",
    "Checkpoint",
    "Note",
    "NoteSignature",
    "NoteSigner",
    "NoteVerifier",
    "OpenedCheckpoint",
    "open_checkpoint",
]

ED25519: Final = 0x01
COSIGNATURE_V1: Final = 0x04
MAX_SIGNATURES: Final = 100
MAX_NOTE_BYTES: Final = 64 * 1024
_DASH: Final = "\u2014 "
_SIZE = re.compile(r"0|[1-9][0-9]{0,19}")
_HEX8 = re.compile(r"[0-9a-f]{8}")


def _b64decode(text: str, what: str) -> bytes:
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError) as exc:
        raise CheckpointInvalid(f"{what} is not standard base64") from exc
    if base64.b64encode(raw).decode("ascii") != text:
        raise CheckpointInvalid(f"{what} is not canonical base64")
    return raw


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def _check_name(name: str) -> None:
    if not name or "+" in name or any(c.isspace() or ord(c) < 0x20 for c in name):
        raise CheckpointInvalid(f"note key name {name!r} is empty or has a space, '+' or control")


def key_id(name: str, sig_type: int, public: bytes) -> int:
    digest = hashlib.sha256(name.encode() + b"\n" + bytes([sig_type]) + public).digest()
    return int.from_bytes(digest[:4], "big")


def _cosigned_message(text: bytes, timestamp: int) -> bytes:
    return b"cosignature/v1\ntime " + str(timestamp).encode() + b"\n" + text


@dataclass(frozen=True, slots=True)
class NoteSignature:
    name: str
    key_id: int
    signature: bytes
    """The bytes after the key ID (for a cosignature: timestamp and Ed25519 signature)."""

    def line(self) -> str:
        return f"{_DASH}{self.name} {_b64(self.key_id.to_bytes(4, 'big') + self.signature)}\n"


@dataclass(frozen=True, slots=True)
class NoteVerifier:
    name: str
    key_id: int
    sig_type: int
    public: bytes

    @classmethod
    def from_public_bytes(cls, name: str, public: bytes, sig_type: int = ED25519) -> NoteVerifier:
        _check_name(name)
        if sig_type not in (ED25519, COSIGNATURE_V1):
            raise CheckpointInvalid(f"note signature type 0x{sig_type:02x} is not supported")
        if len(public) != 32:
            raise CheckpointInvalid(f"Ed25519 public key of {name} is {len(public)} bytes")
        try:
            ed25519.Ed25519PublicKey.from_public_bytes(public)
        except ValueError as exc:  # pragma: no cover - 32 bytes always load
            raise CheckpointInvalid(f"Ed25519 public key of {name} is invalid") from exc
        return cls(name, key_id(name, sig_type, public), sig_type, public)

    @classmethod
    def from_public_key(cls, name: str, key: PublicKey, *, cosigner: bool = False) -> NoteVerifier:
        if key.kind != "Ed25519":
            raise CheckpointInvalid(f"{key.kind} key {key.thumbprint} cannot verify notes")
        x = key.to_jwk()["x"]
        public = base64.urlsafe_b64decode(x + "=" * (-len(x) % 4))
        return cls.from_public_bytes(name, public, COSIGNATURE_V1 if cosigner else ED25519)

    @classmethod
    def from_vkey(cls, vkey: str) -> NoteVerifier:
        """Parse ``<name>+<hex key ID>+<base64(type || key)>`` and check the key ID."""
        parts = vkey.strip().split("+", 2)
        if len(parts) != 3 or not _HEX8.fullmatch(parts[1]):
            raise CheckpointInvalid(f"verifier key {vkey!r} is not name+keyid+key")
        raw = _b64decode(parts[2], "verifier key material")
        if not raw:
            raise CheckpointInvalid("verifier key material is empty")
        verifier = cls.from_public_bytes(parts[0], raw[1:], raw[0])
        if verifier.key_id != int(parts[1], 16):
            raise CheckpointInvalid(f"verifier key {parts[0]}: key ID does not match the key")
        return verifier

    @property
    def vkey(self) -> str:
        return f"{self.name}+{self.key_id:08x}+{_b64(bytes([self.sig_type]) + self.public)}"

    def verify(self, text: bytes, sig: NoteSignature) -> int | None:
        """True signature -> its timestamp (0 for plain Ed25519); a bad one -> None."""
        public = ed25519.Ed25519PublicKey.from_public_bytes(self.public)
        timestamp, message, signature = 0, text, sig.signature
        if self.sig_type == COSIGNATURE_V1:
            if len(signature) != 72:
                return None
            timestamp = int.from_bytes(signature[:8], "big")
            if timestamp >= 2**63:
                return None
            message, signature = _cosigned_message(text, timestamp), signature[8:]
        try:
            public.verify(signature, message)
        except InvalidSignature:
            return None
        return timestamp


class NoteSigner:
    """A note key: Ed25519 (type 0x01) for the log, cosignature v1 (0x04) for a witness."""

    __slots__ = ("_key", "verifier")

    def __init__(self, name: str, key: PrivateKey, *, cosigner: bool = False) -> None:
        if key.kind != "Ed25519":
            raise CheckpointInvalid(f"{key.kind} key {key.thumbprint} cannot sign notes")
        public = _b64url(key.public.to_jwk()["x"])
        self._key = key
        self.verifier = NoteVerifier.from_public_bytes(
            name, public, COSIGNATURE_V1 if cosigner else ED25519
        )

    @property
    def name(self) -> str:
        return self.verifier.name

    def sign(self, text: bytes, *, timestamp: int = 0) -> NoteSignature:
        if self.verifier.sig_type == COSIGNATURE_V1:
            body = timestamp.to_bytes(8, "big") + self._key.sign_raw(
                _cosigned_message(text, timestamp)
            )
        else:
            body = self._key.sign_raw(text)
        return NoteSignature(self.verifier.name, self.verifier.key_id, body)


@dataclass(frozen=True, slots=True)
class Note:
    text: str
    signatures: tuple[NoteSignature, ...]

    @classmethod
    def parse(cls, data: str | bytes) -> Note:
        if isinstance(data, bytes):
            try:
                data = data.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise CheckpointInvalid("signed note is not UTF-8") from exc
        if len(data.encode()) > MAX_NOTE_BYTES:
            raise CheckpointInvalid(f"signed note is larger than {MAX_NOTE_BYTES} bytes")
        if any(ord(c) < 0x20 and c != "\n" for c in data):
            raise CheckpointInvalid("signed note contains a control character")
        if not data.endswith("\n"):
            raise CheckpointInvalid("signed note does not end with a newline")
        split = data.rfind("\n\n")
        if split < 0:
            raise CheckpointInvalid("signed note has no blank line before its signatures")
        text, lines = data[: split + 1], data[split + 2 :].split("\n")[:-1]
        if not lines:
            raise CheckpointInvalid("signed note has no signature")
        if len(lines) > MAX_SIGNATURES:
            raise CheckpointInvalid(f"signed note has more than {MAX_SIGNATURES} signatures")
        signatures = []
        for line in lines:
            if not line.startswith(_DASH):
                raise CheckpointInvalid("note signature line does not start with an em dash")
            fields = line[len(_DASH) :].split(" ")
            if len(fields) != 2:
                raise CheckpointInvalid("note signature line is not '— name signature'")
            _check_name(fields[0])
            raw = _b64decode(fields[1], f"signature of {fields[0]}")
            if len(raw) < 5:
                raise CheckpointInvalid(f"signature of {fields[0]} is too short")
            signatures.append(NoteSignature(fields[0], int.from_bytes(raw[:4], "big"), raw[4:]))
        return cls(text, tuple(signatures))

    def serialize(self) -> str:
        return self.text + "\n" + "".join(sig.line() for sig in self.signatures)

    def verified_by(self, verifiers: Iterable[NoteVerifier]) -> dict[str, int]:
        """Name -> timestamp of every known key that signed; a known bad signature raises."""
        known = {(v.name, v.key_id): v for v in verifiers}
        text = self.text.encode()
        out: dict[str, int] = {}
        for sig in self.signatures:
            verifier = known.get((sig.name, sig.key_id))
            if verifier is None:
                continue  # unknown keys are ignored, as the spec requires
            timestamp = verifier.verify(text, sig)
            if timestamp is None:
                raise CheckpointInvalid(f"signature of {sig.name} does not verify")
            out[sig.name] = timestamp
        return out

    def with_signature(self, sig: NoteSignature) -> Note:
        kept = tuple(s for s in self.signatures if (s.name, s.key_id) != (sig.name, sig.key_id))
        return Note(self.text, (*kept, sig))


@dataclass(frozen=True, slots=True)
class Checkpoint:
    origin: str
    size: int
    root: bytes
    extensions: tuple[str, ...] = ()

    def text(self) -> str:
        lines = [self.origin, str(self.size), _b64(self.root), *self.extensions]
        return "\n".join(lines) + "\n"

    @classmethod
    def parse(cls, text: str) -> Checkpoint:
        if not text.endswith("\n"):
            raise CheckpointInvalid("checkpoint text does not end with a newline")
        lines = text[:-1].split("\n")
        if len(lines) < 3 or any(not line for line in lines):
            raise CheckpointInvalid("checkpoint text needs origin, size and root, none empty")
        origin, size, root = lines[:3]
        if not _SIZE.fullmatch(size) or int(size) >= 2**64:
            raise CheckpointInvalid(f"checkpoint tree size {size!r} is not a decimal uint64")
        raw = _b64decode(root, "checkpoint root hash")
        if len(raw) != HASH_SIZE:
            raise CheckpointInvalid(f"checkpoint root hash is {len(raw)} bytes, not 32")
        return cls(origin, int(size), raw, tuple(lines[3:]))

    def sign(self, signer: NoteSigner) -> Note:
        text = self.text()
        return Note(text, (signer.sign(text.encode()),))


@dataclass(frozen=True, slots=True)
class OpenedCheckpoint:
    checkpoint: Checkpoint
    note: Note
    signed_by: tuple[str, ...]
    cosigned_by: dict[str, int]
    """Witness name -> cosignature timestamp, for every known witness that cosigned."""


def open_checkpoint(
    data: str | bytes,
    log_keys: Sequence[NoteVerifier],
    witness_keys: Sequence[NoteVerifier] = (),
    *,
    origin: str | None = None,
) -> OpenedCheckpoint:
    """Parse a signed checkpoint; it must carry a good signature from one of ``log_keys``.

    A bad signature from any known log or witness key rejects the whole note.
    """
    note = Note.parse(data)
    checkpoint = Checkpoint.parse(note.text)
    if origin is not None and checkpoint.origin != origin:
        raise CheckpointInvalid(f"checkpoint origin {checkpoint.origin!r} is not {origin!r}")
    logs = [v for v in log_keys if v.sig_type == ED25519]
    witnesses = [v for v in witness_keys if v.sig_type == COSIGNATURE_V1]
    signed = note.verified_by(logs)
    if not signed:
        raise CheckpointInvalid(
            f"checkpoint {checkpoint.origin} at size {checkpoint.size} has no signature "
            "from a known log key"
        )
    return OpenedCheckpoint(checkpoint, note, tuple(sorted(signed)), note.verified_by(witnesses))


def _b64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
