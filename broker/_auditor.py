"""``audit verify``: prove the dissemination log against its signed checkpoints (pure).

Feed every entry in log order to :class:`LogVerifier`, then :meth:`LogVerifier.finish`.
It needs only the entries, the checkpoint messages and public keys:

- every checkpoint's note signature (log key) and cosignatures (known witnesses);
- two signed checkpoints of the same size with different roots: a fork, the portable proof
  of a rewritten history;
- every checkpoint's root against the root of the entries themselves at that size (every
  entry hash); where they differ, the checkpoint's leaf hashes (authenticated by its signed
  root) name the first altered, dropped or moved entry exactly;
- the consistency proof of each checkpoint from the one before it;
- entries the checkpoints cover that are missing (truncation);
- each witness cosignature matches the log's checkpoint of that size;
- optionally, each package in DELIVERIES has its delivery entry (see ``check_delivery``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from ._checkpoint import CheckpointMessage, VerifiedCheckpoint
from ._merkle import MerkleTree, leaf_hash
from ._note import NoteVerifier, open_checkpoint
from .errors import LogIntegrityError

__all__ = ["LogVerifier", "Problem", "VerifyResult"]


@dataclass(frozen=True, slots=True)
class Problem:
    index: int | None
    """The first log index this problem makes untrustworthy (None: not about one entry)."""
    message: str


@dataclass
class VerifyResult:
    entries: int = 0
    checkpoints: int = 0
    checkpointed_size: int = 0
    consistency_proofs: int = 0
    cosignatures: dict[str, int] = field(default_factory=dict)
    origin: str | None = None
    """The log's name its checkpoints carry (signed with them): which log was verified."""
    witnessed_size: dict[str, int] = field(default_factory=dict)
    """Per witness, the largest checkpoint size it cosigned (entries past it are signed by
    the log alone)."""
    deliveries_checked: int = 0
    deliveries_pending: int = 0
    deliveries_unreadable: str | None = None
    """Why DELIVERIES could not be compared with the log (this NATS user may not read it:
    an auditor under the generated configuration); None when it was, or was not asked."""
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def unverified_tail(self) -> int:
        """Entries after the last checkpoint: not yet covered by a signature."""
        return max(0, self.entries - self.checkpointed_size)

    @property
    def first_bad_index(self) -> int | None:
        indexes = [p.index for p in self.problems if p.index is not None]
        return min(indexes) if indexes else None

    def first_problem(self) -> Problem | None:
        if not self.problems:
            return None
        return min(self.problems, key=lambda p: (p.index is None, p.index or 0))

    def summary(self) -> str:
        if self.ok:
            return (
                f"OK: {self.entries} entries, {self.checkpoints} signed checkpoints up to size "
                f"{self.checkpointed_size}, {self.consistency_proofs} consistency proofs, "
                f"{sum(self.cosignatures.values())} cosignatures"
                + "".join(f", {n} by {w}" for w, n in sorted(self.cosignatures.items()))
                + (f", origin {self.origin}" if self.origin else "")
                + (
                    f"; {self.unverified_tail} entries after the last checkpoint are NOT "
                    "verified (no signature covers them)"
                    if self.unverified_tail
                    else ""
                )
            )
        first = self.first_problem() or Problem(None, "unknown")
        where = f"first bad index {first.index}" if first.index is not None else "log"
        return f"FAILED ({where}): {first.message}"


class LogVerifier:
    def __init__(
        self,
        checkpoints: Sequence[tuple[int, bytes | str]],
        *,
        log_keys: Sequence[NoteVerifier],
        witness_keys: Sequence[NoteVerifier] = (),
        cosigned_notes: Sequence[tuple[int, str]] = (),
        origin: str | None = None,
        track_deliveries: bool = False,
    ) -> None:
        self._tree = MerkleTree()
        self._result = VerifyResult()
        self._problems = self._result.problems
        self._witness_keys = witness_keys
        self._log_keys = log_keys
        self._origin = origin
        self._cosigned = cosigned_notes
        self._deliveries: dict[str, tuple[int, dict[str, Any]]] | None = (
            {} if track_deliveries else None
        )
        self._verified: list[VerifiedCheckpoint] = []
        for seq, data in checkpoints:
            try:
                message = CheckpointMessage.decode(data, seq=seq)
                self._verified.append(message.verify(log_keys, witness_keys, origin=origin))
            except LogIntegrityError as exc:
                self._problems.append(Problem(None, f"checkpoint seq {seq}: {exc}"))
        self._verified.sort(key=lambda v: (v.size, v.message.seq))

    @property
    def result(self) -> VerifyResult:
        return self._result

    @property
    def signed_size(self) -> int:
        """Entries covered by the largest checkpoint whose signature verified.

        Whether those entries match it is only known at :meth:`finish`; a mismatch there is
        a problem of its own.
        """
        return max((cp.size for cp in self._verified), default=0)

    def feed(self, raw: bytes) -> None:
        """The next entry, exactly as logged."""
        index = self._tree.size
        self._tree.append(leaf_hash(raw))
        try:
            entry = orjson.loads(raw)
        except orjson.JSONDecodeError:
            self._problems.append(Problem(index, f"entry {index} is not JSON"))
            return
        if not isinstance(entry, dict):
            self._problems.append(Problem(index, f"entry {index} is not a JSON object"))
            return
        if self._deliveries is not None and entry.get("type") == "delivery":
            self._deliveries[str(entry.get("pkg"))] = (index, entry)

    def finish(self) -> VerifyResult:
        result = self._result
        result.entries = self._tree.size
        result.origin = self._origin
        self._check_checkpoints()
        self._check_cosignatures()
        for witness in self._witness_keys:
            # A witness the auditor names is one they rely on: its silence is a finding.
            if not result.cosignatures.get(witness.name):
                self._problems.append(
                    Problem(
                        None,
                        f"witness {witness.name} (key {witness.key_id:08x}) cosigned no "
                        "checkpoint of this log",
                    )
                )
        return result

    # -- checkpoints --------------------------------------------------------------------

    def _check_checkpoints(self) -> None:
        tree, result = self._tree, self._result
        good_roots: dict[int, bytes] = {0: tree.root(0)}
        by_size: dict[int, list[VerifiedCheckpoint]] = {}
        for cp in self._verified:
            by_size.setdefault(cp.size, []).append(cp)
        previous: VerifiedCheckpoint | None = None
        explained: int | None = None  # a mismatch located at this index explains later ones
        for size in sorted(by_size):
            group = by_size[size]
            for cp in group:
                for witness in cp.opened.cosigned_by:
                    result.cosignatures[witness] = result.cosignatures.get(witness, 0) + 1
            actual = tree.root(size) if size <= tree.size else None
            matching = [cp for cp in group if cp.root == actual]
            if len({cp.root for cp in group}) > 1:
                self._fork(size, group, actual)
            if matching:
                good_roots[size] = matching[0].root
            elif explained is None or explained >= size or size > tree.size:
                for cp in group:
                    explained = min(self._against_entries(cp, good_roots), explained or size)
            cp = (matching or group)[0]
            if previous is not None and cp.message.prev_size == previous.size:
                try:
                    cp.check_follows(previous)
                    result.consistency_proofs += 1
                except LogIntegrityError as exc:
                    self._problems.append(
                        Problem(
                            min(previous.size, tree.size),
                            f"checkpoint seq {cp.message.seq} (size {size}) is not consistent "
                            f"with checkpoint seq {previous.message.seq} (size "
                            f"{previous.size}): {exc}",
                        )
                    )
            previous = cp
        result.checkpoints = len(self._verified)
        result.checkpointed_size = max(by_size, default=0)

    def _against_entries(self, cp: VerifiedCheckpoint, good_roots: dict[int, bytes]) -> int:
        """``cp`` does not match the entries: say where they went wrong; return that index."""
        tree, seq, size = self._tree, cp.message.seq, cp.size
        bad = self._locate(cp, good_roots)
        if bad is not None and bad < tree.size:
            self._problems.append(Problem(bad, self._altered(bad, seq)))
        if size > tree.size:
            self._problems.append(
                Problem(
                    tree.size,
                    f"the log ends after {tree.size} entries but checkpoint seq {seq} covers "
                    f"{size}: entries {tree.size}..{size - 1} are missing (truncated)",
                )
            )
            return min(tree.size, size if bad is None else bad)
        if bad is not None:
            return bad
        start = max((s for s in good_roots if s < size), default=0)
        self._problems.append(
            Problem(
                start,
                f"entries {start}..{size - 1} do not give the root signed in checkpoint "
                f"seq {seq}: one of them was altered, dropped or moved",
            )
        )
        return start

    @staticmethod
    def _altered(index: int, seq: int) -> str:
        return (
            f"entry {index} does not match the leaf hash signed in checkpoint seq {seq}: "
            "altered, dropped, inserted or moved"
        )

    def _locate(self, cp: VerifiedCheckpoint, good_roots: dict[int, bytes]) -> int | None:
        """First index whose hash differs from the checkpoint's authenticated leaf hashes.

        The checkpoint's leaf hashes count only if, appended to the log's own frontier at
        ``prev_size`` (itself vouched for by ``good_roots``), they give the signed root.
        """
        tree, start = self._tree, cp.message.prev_size
        if start > tree.size or good_roots.get(start) != tree.root(start):
            return None
        probe = tree.frontier(start)
        leaves = cp.message.leaf_hashes()
        for leaf in leaves:
            probe.append(leaf)
        if probe.root() != cp.root:
            return None  # the wrapper's leaf hashes are not the signed ones
        for offset, expected in enumerate(leaves):
            index = start + offset
            if index >= tree.size or tree.leaf(index) != expected:
                return index
        return None

    def _fork(self, size: int, group: list[VerifiedCheckpoint], actual: bytes | None) -> None:
        tree = self._tree
        located = []
        for cp in group:
            if cp.root == actual:
                continue
            prev = cp.message.prev_size
            trusted = {prev: tree.root(prev)} if prev <= tree.size else {}
            index = self._locate(cp, trusted)
            if index is not None:
                located.append(index)
        seqs = ", ".join(str(cp.message.seq) for cp in group)
        matches = [str(cp.message.seq) for cp in group if cp.root == actual]
        self._problems.append(
            Problem(
                min(located, default=size - 1),
                f"fork: checkpoints seq {seqs} are all signed for tree size {size} with "
                "different roots — proof that the history was rewritten"
                + (f" (the log matches seq {', '.join(matches)})" if matches else ""),
            )
        )

    # -- cosignatures and deliveries --------------------------------------------------

    def _check_cosignatures(self) -> None:
        tree = self._tree
        for seq, note in self._cosigned:
            try:
                opened = open_checkpoint(
                    note, self._log_keys, self._witness_keys, origin=self._origin
                )
            except LogIntegrityError as exc:
                self._problems.append(Problem(None, f"cosignature seq {seq}: {exc}"))
                continue
            size, root = opened.checkpoint.size, opened.checkpoint.root
            if size > tree.size:
                # Signed by the log's key (and seen by witnesses), so the log once held that
                # many entries: it has been cut short, or rolled back to rewrite what was cut.
                who = (
                    f"witnesses {', '.join(opened.cosigned_by)} saw"
                    if opened.cosigned_by
                    else "the log key signed"
                )
                self._problems.append(
                    Problem(
                        tree.size,
                        f"cosignature seq {seq}: {who} a checkpoint of {size} entries, but "
                        f"the log ends after {tree.size} (truncated, or rolled back)",
                    )
                )
                continue
            if tree.root(size) != root:
                self._problems.append(
                    Problem(
                        max(0, size - 1),
                        f"cosignature seq {seq}: witnesses {', '.join(opened.cosigned_by)} "
                        f"saw a root for size {size} that this log does not have (split view)",
                    )
                )
                continue
            for witness in opened.cosigned_by:
                self._result.cosignatures[witness] = self._result.cosignatures.get(witness, 0) + 1
                seen = self._result.witnessed_size.get(witness, 0)
                self._result.witnessed_size[witness] = max(seen, size)

    def check_delivery(self, pkg: str, rcpt: str, jwe_sha256: str, where: str) -> None:
        """A package stored in DELIVERIES must have its delivery entry, with its hash."""
        if self._deliveries is None:
            raise LogIntegrityError("the verifier was not asked to track deliveries")
        self._result.deliveries_checked += 1
        found = self._deliveries.get(pkg)
        if found is None:
            self._problems.append(Problem(None, f"{where}: package {pkg} has no log entry"))
            return
        index, entry = found
        if entry.get("rcpt") != rcpt or entry.get("jwe_sha256") != jwe_sha256:
            self._problems.append(
                Problem(index, f"entry {index} does not describe the package stored at {where}")
            )

    def has_delivery(self, pkg: str) -> bool:
        return self._deliveries is not None and pkg in self._deliveries
