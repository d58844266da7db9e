"""RFC 9162 Merkle tree hashing, proofs and their verification (pure: no I/O).

Leaf hash ``SHA-256(0x00 || entry)``, interior node ``SHA-256(0x01 || left || right)``,
the empty tree's root ``SHA-256("")``. Three shapes of the same tree:

- :class:`Frontier` (a "compact range"): only the roots of the perfect subtrees that make
  up a tree of ``size`` leaves, one per set bit of ``size`` — O(log n) hashes. It appends
  and gives the root; the checkpointer keeps one and stores it beside every checkpoint so
  that it resumes from there after a restart.
- :class:`MerkleTree`: every leaf hash plus the cache of completed interior nodes, in flat
  ``bytearray`` levels (64 bytes a leaf). It gives roots of any earlier size, inclusion
  proofs (RFC 9162 §2.1.3.1) and consistency proofs (§2.1.4.1).
- :func:`consistency_proof_from_frontier`: a consistency proof from an old tree to a new one
  built from the old frontier and the new leaves only — the checkpointer's case.

Verification follows RFC 9162 §2.1.3.2 and §2.1.4.2 step by step and raises
:class:`~broker.errors.ProofInvalid` (never ``ValueError``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence
from typing import Final

from .errors import ProofInvalid

__all__ = [
    "EMPTY_ROOT",
    "HASH_SIZE",
    "Frontier",
    "MerkleTree",
    "ProofsAfter",
    "consistency_proof",
    "consistency_proof_from_frontier",
    "inclusion_proof",
    "inclusion_proof_from_frontier",
    "leaf_hash",
    "node_hash",
    "root_of",
    "verify_consistency",
    "verify_inclusion",
]

HASH_SIZE: Final = 32
EMPTY_ROOT: Final = hashlib.sha256(b"").digest()
_sha256 = hashlib.sha256

Mth = Callable[[int, int], bytes]
"""``mth(a, b)``: the root of the subtree over leaves ``[a, b)``."""


def leaf_hash(entry: bytes) -> bytes:
    return _sha256(b"\x00" + entry).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return _sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two strictly smaller than ``n`` (``n >= 2``)."""
    return 1 << ((n - 1).bit_length() - 1)


def root_of(leaves: Sequence[bytes]) -> bytes:
    """MTH over a list of leaf hashes (bottom-up; equal to the recursive definition)."""
    if not leaves:
        return EMPTY_ROOT
    level = list(leaves)
    while len(level) > 1:
        nxt = [node_hash(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            nxt.append(level[-1])
        level = nxt
    return level[0]


class Frontier:
    """The perfect-subtree roots of a tree of ``size`` leaves, largest (leftmost) first."""

    __slots__ = ("_nodes", "_size")

    def __init__(self, size: int = 0, nodes: Iterable[bytes] = ()) -> None:
        listed = list(nodes)
        if size < 0 or len(listed) != size.bit_count():
            raise ProofInvalid(
                f"a frontier of size {size} has {size.bit_count() if size >= 0 else '?'} "
                f"nodes, not {len(listed)}"
            )
        if any(len(n) != HASH_SIZE for n in listed):
            raise ProofInvalid("a frontier node is not a 32-byte hash")
        self._size = size
        self._nodes = listed

    @property
    def size(self) -> int:
        return self._size

    @property
    def nodes(self) -> tuple[bytes, ...]:
        return tuple(self._nodes)

    def copy(self) -> Frontier:
        twin = Frontier()
        twin._size, twin._nodes = self._size, list(self._nodes)
        return twin

    def append(self, leaf: bytes) -> None:
        """Append one leaf hash; merges the completed subtrees (amortised one hash)."""
        nodes = self._nodes
        size = self._size
        while size & 1:
            leaf = _sha256(b"\x01" + nodes.pop() + leaf).digest()
            size >>= 1
        nodes.append(leaf)
        self._size += 1

    def append_entry(self, entry: bytes) -> bytes:
        leaf = _sha256(b"\x00" + entry).digest()
        self.append(leaf)
        return leaf

    def root(self) -> bytes:
        nodes = self._nodes
        if not nodes:
            return EMPTY_ROOT
        root = nodes[-1]
        for node in reversed(nodes[:-1]):
            root = _sha256(b"\x01" + node + root).digest()
        return root

    def ranges(self) -> list[tuple[int, int]]:
        """The leaf range ``[a, b)`` each node covers, in node order."""
        out: list[tuple[int, int]] = []
        start = 0
        for bit in range(self._size.bit_length() - 1, -1, -1):
            if self._size >> bit & 1:
                out.append((start, start + (1 << bit)))
                start += 1 << bit
        return out


class MerkleTree:
    """Every leaf hash and every completed interior node; roots and proofs of any size."""

    __slots__ = ("_levels", "_size")

    def __init__(self) -> None:
        self._levels: list[bytearray] = [bytearray()]
        self._size = 0

    @classmethod
    def of_entries(cls, entries: Iterable[bytes]) -> MerkleTree:
        tree = cls()
        for entry in entries:
            tree.append(leaf_hash(entry))
        return tree

    @property
    def size(self) -> int:
        return self._size

    def append(self, leaf: bytes) -> None:
        levels = self._levels
        levels[0] += leaf
        self._size += 1
        index, height, node = self._size - 1, 0, leaf
        while index & 1:
            level = levels[height]
            start = (index - 1) * HASH_SIZE
            node = _sha256(b"\x01" + level[start : start + HASH_SIZE] + node).digest()
            height += 1
            index >>= 1
            if height == len(levels):
                levels.append(bytearray())
            levels[height] += node

    def leaf(self, index: int) -> bytes:
        if not 0 <= index < self._size:
            raise ProofInvalid(f"leaf index {index} is outside a tree of size {self._size}")
        return bytes(self._levels[0][index * HASH_SIZE : (index + 1) * HASH_SIZE])

    def mth(self, a: int, b: int) -> bytes:
        """Root of the subtree over leaves ``[a, b)`` (``0 <= a < b <= size``)."""
        n = b - a
        if n & (n - 1) == 0 and a % n == 0:
            height = n.bit_length() - 1
            start = (a >> height) * HASH_SIZE
            return bytes(self._levels[height][start : start + HASH_SIZE])
        k = _split(n)
        return node_hash(self.mth(a, a + k), self.mth(a + k, b))

    def root(self, size: int | None = None) -> bytes:
        size = self._size if size is None else size
        if not 0 <= size <= self._size:
            raise ProofInvalid(f"no root of size {size} in a tree of size {self._size}")
        return EMPTY_ROOT if size == 0 else self.mth(0, size)

    def frontier(self, size: int | None = None) -> Frontier:
        size = self._size if size is None else size
        if not 0 <= size <= self._size:
            raise ProofInvalid(f"no frontier of size {size} in a tree of size {self._size}")
        shape = Frontier(size, [EMPTY_ROOT] * size.bit_count())
        return Frontier(size, [self.mth(a, b) for a, b in shape.ranges()])

    def inclusion_proof(self, index: int, size: int | None = None) -> list[bytes]:
        size = self._size if size is None else size
        if not 0 <= size <= self._size:
            raise ProofInvalid(f"no tree of size {size} (the tree has {self._size})")
        return inclusion_proof(index, size, self.mth)

    def consistency_proof(self, old_size: int, new_size: int | None = None) -> list[bytes]:
        new_size = self._size if new_size is None else new_size
        if not 0 <= new_size <= self._size:
            raise ProofInvalid(f"no tree of size {new_size} (the tree has {self._size})")
        return consistency_proof(old_size, new_size, self.mth)


def inclusion_proof(index: int, size: int, mth: Mth) -> list[bytes]:
    """RFC 9162 §2.1.3.1 ``PATH(index, D[0:size])``, innermost sibling first."""
    if not 0 <= index < size:
        raise ProofInvalid(f"leaf index {index} is outside a tree of size {size}")
    path: list[bytes] = []
    a, b = 0, size
    while b - a > 1:
        k = _split(b - a)
        if index < a + k:
            path.append(mth(a + k, b))
            b = a + k
        else:
            path.append(mth(a, a + k))
            a += k
    path.reverse()
    return path


def consistency_proof(old_size: int, new_size: int, mth: Mth) -> list[bytes]:
    """RFC 9162 §2.1.4.1 ``PROOF(old_size, D[0:new_size])``; empty when either is trivial."""
    if not 0 <= old_size <= new_size:
        raise ProofInvalid(f"no consistency proof from size {old_size} to size {new_size}")
    if old_size in (0, new_size):
        return []
    proof: list[bytes] = []
    a, b, m, complete = 0, new_size, old_size, True
    while True:
        if m == b - a:
            if not complete:
                proof.append(mth(a, b))
            break
        k = _split(b - a)
        if m <= k:
            proof.append(mth(a + k, b))
            b = a + k
        else:
            proof.append(mth(a, a + k))
            a += k
            m -= k
            complete = False
    proof.reverse()
    return proof


def _frontier_mth(old: Frontier, new_leaves: Sequence[bytes]) -> Mth:
    """``mth`` over the old tree's frontier nodes followed by ``new_leaves``.

    A subtree is hashed from its two halves (as MTH splits it) until each part is a new
    leaf or an old frontier node, and every hash is kept: the proofs of many new leaves
    share their upper nodes, so all of them together cost at most one hash per node over
    the new leaves (under ``2 * len(new_leaves)``), not a pass over the new leaves each.
    """
    start = old.size
    end = old.size + len(new_leaves)
    known: dict[tuple[int, int], bytes] = dict(zip(old.ranges(), old.nodes, strict=True))

    def mth(a: int, b: int) -> bytes:
        node = known.get((a, b))
        if node is not None:
            return node
        if not 0 <= a < b <= end:
            raise ProofInvalid(f"subtree [{a}, {b}) is outside the tree")
        if b - a == 1 and a >= start:
            return new_leaves[a - start]
        if b - a == 1 or (b <= start and (b - a) & (b - a - 1) == 0):
            raise ProofInvalid(f"subtree [{a}, {b}) is inside a frontier node")
        k = _split(b - a)
        node = known[(a, b)] = node_hash(mth(a, a + k), mth(a + k, b))
        return node

    return mth


class ProofsAfter:
    """Proofs in the tree of ``old`` followed by ``new_leaves``, for the new leaves, sharing
    the subtree hashes between proofs: what a checkpoint's receipts need."""

    def __init__(self, old: Frontier, new_leaves: Sequence[bytes]) -> None:
        self._old_size = old.size
        self.size = old.size + len(new_leaves)
        self._mth = _frontier_mth(old, new_leaves)

    def inclusion(self, index: int) -> list[bytes]:
        """``PATH(index, new)`` for a new leaf (``index >= old.size``)."""
        if index < self._old_size:
            raise ProofInvalid(
                f"leaf {index} is in the old tree (size {self._old_size}), not a new one"
            )
        return inclusion_proof(index, self.size, self._mth)

    def consistency(self) -> list[bytes]:
        """``PROOF(old.size, new)``."""
        return consistency_proof(self._old_size, self.size, self._mth)


def consistency_proof_from_frontier(old: Frontier, new_leaves: Sequence[bytes]) -> list[bytes]:
    """``PROOF(old.size, new)`` where ``new`` is the old tree plus ``new_leaves``.

    Every node of such a proof is a frontier node of the old tree or lies wholly among the
    new leaves, so nothing else is needed: the checkpointer's case.
    """
    return ProofsAfter(old, new_leaves).consistency()


def inclusion_proof_from_frontier(
    old: Frontier, new_leaves: Sequence[bytes], index: int
) -> list[bytes]:
    """``PATH(index, new)`` for one new leaf; :class:`ProofsAfter` for many."""
    return ProofsAfter(old, new_leaves).inclusion(index)


def _check_hash(value: bytes, what: str) -> None:
    if len(value) != HASH_SIZE:
        raise ProofInvalid(f"{what} is {len(value)} bytes, not {HASH_SIZE}")


def verify_inclusion(
    leaf: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes
) -> None:
    """RFC 9162 §2.1.3.2; raises :class:`ProofInvalid` unless ``leaf`` is at ``index``."""
    _check_hash(leaf, "leaf hash")
    _check_hash(root, "root hash")
    if not 0 <= index < size:
        raise ProofInvalid(f"leaf index {index} is outside a tree of size {size}")
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        _check_hash(p, "inclusion proof node")
        if sn == 0:
            raise ProofInvalid("inclusion proof is longer than the tree is deep")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofInvalid("inclusion proof is shorter than the tree is deep")
    if r != root:
        raise ProofInvalid(f"inclusion proof of leaf {index} does not lead to the root")


def verify_consistency(
    old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]
) -> None:
    """RFC 9162 §2.1.4.2; raises :class:`ProofInvalid` unless new extends old."""
    _check_hash(old_root, "old root hash")
    _check_hash(new_root, "new root hash")
    for p in proof:
        _check_hash(p, "consistency proof node")
    if not 0 <= old_size <= new_size:
        raise ProofInvalid(f"tree size went from {old_size} down to {new_size}")
    if old_size == new_size:
        if proof:
            raise ProofInvalid("a consistency proof between equal sizes must be empty")
        if old_root != new_root:
            raise ProofInvalid(f"two different roots for the same tree size {old_size}")
        return
    if old_size == 0:
        if proof:
            raise ProofInvalid("a consistency proof from the empty tree must be empty")
        return
    if not proof:
        raise ProofInvalid("consistency proof is empty")
    path = list(proof)
    if old_size & (old_size - 1) == 0:
        path.insert(0, old_root)
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            raise ProofInvalid("consistency proof is longer than needed")
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofInvalid("consistency proof is shorter than needed")
    if fr != old_root:
        raise ProofInvalid(f"consistency proof does not lead to the root of size {old_size}")
    if sr != new_root:
        raise ProofInvalid(f"consistency proof does not lead to the root of size {new_size}")
