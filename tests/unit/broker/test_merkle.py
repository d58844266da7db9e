"""RFC 9162 tree: pinned vectors, a naive recursive reference, proofs and their verification."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from broker import _merkle as merkle
from broker._merkle import (
    EMPTY_ROOT,
    Frontier,
    MerkleTree,
    ProofsAfter,
    consistency_proof_from_frontier,
    inclusion_proof_from_frontier,
    leaf_hash,
    root_of,
    verify_consistency,
    verify_inclusion,
)
from broker.errors import ProofInvalid

# The certificate-transparency test corpus (RFC 6962 reference implementation,
# merkle_tree_test.cc) and its roots for the first 0..8 leaves.
CT_LEAVES = [
    bytes.fromhex(h)
    for h in [
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    ]
]
CT_ROOTS = [
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]
CT_INCLUSION = {  # (index, size) -> path
    (0, 8): [
        "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
        "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
        "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
    ],
    (5, 8): [
        "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    ],
}
CT_CONSISTENCY = {  # (old, new) -> proof
    (1, 8): [
        "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
        "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
        "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
    ],
    (6, 8): [
        "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
        "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    ],
    (2, 5): [
        "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
        "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
    ],
}


def h(hexstr: str) -> bytes:
    return bytes.fromhex(hexstr)


def naive_mth(entries: list[bytes]) -> bytes:
    """RFC 9162 §2.1.1, written out recursively and independently of the module."""
    n = len(entries)
    if n == 0:
        return hashlib.sha256(b"").digest()
    if n == 1:
        return hashlib.sha256(b"\x00" + entries[0]).digest()
    k = 1
    while k * 2 < n:
        k *= 2
    return hashlib.sha256(b"\x01" + naive_mth(entries[:k]) + naive_mth(entries[k:])).digest()


def entries_of(n: int) -> list[bytes]:
    return [f'{{"i":{i}}}'.encode() for i in range(n)]


class TestRoots:
    def test_empty_root_is_sha256_of_nothing_when_tree_is_empty(self) -> None:
        assert EMPTY_ROOT == h("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
        assert Frontier().root() == EMPTY_ROOT
        assert MerkleTree().root() == EMPTY_ROOT
        assert root_of([]) == EMPTY_ROOT

    @pytest.mark.parametrize("size", range(9))
    def test_root_matches_ct_vector_when_built_from_ct_leaves(self, size: int) -> None:
        frontier = Frontier()
        tree = MerkleTree()
        for leaf in CT_LEAVES[:size]:
            frontier.append_entry(leaf)
            tree.append(leaf_hash(leaf))
        assert frontier.root().hex() == CT_ROOTS[size]
        assert tree.root().hex() == CT_ROOTS[size]
        assert naive_mth(CT_LEAVES[:size]).hex() == CT_ROOTS[size]

    def test_every_shape_agrees_with_naive_recursion_when_size_varies(self) -> None:
        entries = entries_of(70)
        tree = MerkleTree.of_entries(entries)
        frontier = Frontier()
        for n, entry in enumerate(entries, start=1):
            frontier.append_entry(entry)
            expected = naive_mth(entries[:n])
            assert frontier.root() == expected
            assert tree.root(n) == expected
            assert root_of([leaf_hash(e) for e in entries[:n]]) == expected

    def test_frontier_resumes_when_restored_from_its_stored_nodes(self) -> None:
        entries = entries_of(37)
        frontier = Frontier()
        for entry in entries[:21]:
            frontier.append_entry(entry)
        restored = Frontier(frontier.size, frontier.nodes)
        for entry in entries[21:]:
            restored.append_entry(entry)
        assert restored.root() == naive_mth(entries)
        assert len(restored.nodes) == bin(37).count("1")

    def test_tree_frontier_equals_appended_frontier_when_taken_at_any_size(self) -> None:
        entries = entries_of(45)
        tree = MerkleTree.of_entries(entries)
        for n in (0, 1, 13, 32, 45):
            frontier = Frontier()
            for entry in entries[:n]:
                frontier.append_entry(entry)
            assert tree.frontier(n).nodes == frontier.nodes

    @pytest.mark.parametrize(("size", "count"), [(3, 1), (-1, 0), (4, 2)])
    def test_frontier_refuses_when_node_count_does_not_fit_size(
        self, size: int, count: int
    ) -> None:
        with pytest.raises(ProofInvalid):
            Frontier(size, [EMPTY_ROOT] * count)

    def test_frontier_refuses_when_a_node_is_not_a_hash(self) -> None:
        with pytest.raises(ProofInvalid):
            Frontier(1, [b"short"])


class TestInclusion:
    @pytest.mark.parametrize(("index", "size"), sorted(CT_INCLUSION))
    def test_proof_matches_ct_vector_when_generated(self, index: int, size: int) -> None:
        tree = MerkleTree.of_entries(CT_LEAVES[:size])
        proof = tree.inclusion_proof(index, size)
        assert [p.hex() for p in proof] == CT_INCLUSION[(index, size)]
        verify_inclusion(leaf_hash(CT_LEAVES[index]), index, size, proof, h(CT_ROOTS[size]))

    def test_every_proof_verifies_when_generated_for_every_index_and_size(self) -> None:
        entries = entries_of(33)
        tree = MerkleTree.of_entries(entries)
        for size in range(1, 34):
            root = naive_mth(entries[:size])
            for index in range(size):
                proof = tree.inclusion_proof(index, size)
                verify_inclusion(leaf_hash(entries[index]), index, size, proof, root)

    def test_frontier_proof_equals_tree_proof_when_leaf_is_new(self) -> None:
        entries = entries_of(37)
        tree = MerkleTree.of_entries(entries)
        for old in range(37):
            for new in (old + 1, min(old + 9, 37), 37):
                leaves = [leaf_hash(e) for e in entries[old:new]]
                for index in range(old, new):
                    assert inclusion_proof_from_frontier(tree.frontier(old), leaves, index) == (
                        tree.inclusion_proof(index, new)
                    )
        with pytest.raises(ProofInvalid):
            inclusion_proof_from_frontier(tree.frontier(5), [], 4)

    def test_shared_proofs_equal_tree_proofs_when_asked_in_any_order(self) -> None:
        entries = entries_of(77)
        tree = MerkleTree.of_entries(entries)
        for old in (0, 1, 13, 32, 50):
            proofs = ProofsAfter(tree.frontier(old), [leaf_hash(e) for e in entries[old:]])
            # Later leaves first, then the rest: a kept node must serve every proof.
            for index in [*range(76, old - 1, -2), *range(old + 1, 77, 2)]:
                assert proofs.inclusion(index) == tree.inclusion_proof(index, 77)
            assert proofs.consistency() == tree.consistency_proof(old, 77)
            with pytest.raises(ProofInvalid):
                proofs.inclusion(old - 1 if old else 77)

    def test_all_proofs_of_a_checkpoint_cost_one_hash_per_node(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        # 1,000 new leaves after a tree of 1,234: a receipt for every new leaf. Computing
        # each proof from the new leaves alone costs about 1,000 hashes per proof.
        entries = entries_of(2234)
        tree = MerkleTree.of_entries(entries)
        expected = [tree.inclusion_proof(index, 2234) for index in range(1234, 2234)]
        hashes = 0
        real = merkle.node_hash

        def counting(left: bytes, right: bytes) -> bytes:
            nonlocal hashes
            hashes += 1
            return real(left, right)

        monkeypatch.setattr(merkle, "node_hash", counting)
        proofs = ProofsAfter(tree.frontier(1234), [leaf_hash(e) for e in entries[1234:]])
        assert [proofs.inclusion(index) for index in range(1234, 2234)] == expected
        assert hashes < 2 * 1000

        # The control: without shared nodes, 100 proofs alone cost far more.
        hashes = 0
        for index in range(1234, 1334):
            frontier = tree.frontier(1234)
            ProofsAfter(frontier, [leaf_hash(e) for e in entries[1234:]]).inclusion(index)
        assert hashes > 100 * 500

    def test_verification_fails_when_anything_is_altered(self) -> None:
        entries = entries_of(11)
        tree = MerkleTree.of_entries(entries)
        proof = tree.inclusion_proof(4)
        leaf, root = leaf_hash(entries[4]), tree.root()
        bad_node = [proof[0][:-1] + bytes([proof[0][-1] ^ 1]), *proof[1:]]
        cases = [
            (leaf_hash(b"other"), 4, 11, proof, root),
            (leaf, 5, 11, proof, root),
            (leaf, 4, 5, proof, root),
            (leaf, 4, 64, proof, root),
            (leaf, 4, 11, bad_node, root),
            (leaf, 4, 11, proof[:-1], root),
            (leaf, 4, 11, [*proof, root], root),
            (leaf, 4, 11, proof, tree.root(10)),
            (leaf, 11, 11, proof, root),
            (leaf, 4, 11, [b"short", *proof[1:]], root),
            (b"short", 4, 11, proof, root),
        ]
        for args in cases:
            with pytest.raises(ProofInvalid):
                verify_inclusion(*args)

    def test_generation_refuses_when_index_or_size_is_outside_the_tree(self) -> None:
        tree = MerkleTree.of_entries(entries_of(4))
        for index, size in [(4, 4), (-1, 4), (0, 5), (0, 0)]:
            with pytest.raises(ProofInvalid):
                tree.inclusion_proof(index, size)
        with pytest.raises(ProofInvalid):
            tree.leaf(4)


class TestConsistency:
    @pytest.mark.parametrize(("old", "new"), sorted(CT_CONSISTENCY))
    def test_proof_matches_ct_vector_when_generated(self, old: int, new: int) -> None:
        tree = MerkleTree.of_entries(CT_LEAVES[:new])
        proof = tree.consistency_proof(old, new)
        assert [p.hex() for p in proof] == CT_CONSISTENCY[(old, new)]
        verify_consistency(old, new, h(CT_ROOTS[old]), h(CT_ROOTS[new]), proof)

    def test_every_proof_verifies_when_generated_for_every_pair_of_sizes(self) -> None:
        entries = entries_of(24)
        tree = MerkleTree.of_entries(entries)
        roots = [naive_mth(entries[:n]) for n in range(25)]
        for new in range(25):
            for old in range(new + 1):
                proof = tree.consistency_proof(old, new)
                verify_consistency(old, new, roots[old], roots[new], proof)

    def test_frontier_proof_equals_tree_proof_when_built_from_old_frontier(self) -> None:
        entries = entries_of(40)
        tree = MerkleTree.of_entries(entries)
        for old in range(0, 40, 3):
            for new in (old, old + 1, 40):
                frontier = tree.frontier(old)
                leaves = [leaf_hash(e) for e in entries[old:new]]
                assert consistency_proof_from_frontier(frontier, leaves) == (
                    tree.consistency_proof(old, new)
                )

    def test_verification_fails_when_history_was_rewritten(self) -> None:
        entries = entries_of(12)
        forked = [*entries[:5], b'{"i":"forged"}', *entries[6:]]
        honest, fork = MerkleTree.of_entries(entries), MerkleTree.of_entries(forked)
        proof = fork.consistency_proof(7, 12)
        with pytest.raises(ProofInvalid):
            verify_consistency(7, 12, honest.root(7), fork.root(12), proof)

    def test_verification_fails_when_anything_is_altered(self) -> None:
        tree = MerkleTree.of_entries(entries_of(13))
        proof = tree.consistency_proof(5, 13)
        r5, r13 = tree.root(5), tree.root(13)
        flipped = [proof[0][:-1] + bytes([proof[0][-1] ^ 1]), *proof[1:]]
        cases = [
            (5, 13, r13, r13, proof),
            (5, 13, r5, r5, proof),
            (6, 13, r5, r13, proof),
            (5, 7, r5, r13, proof),
            (5, 64, r5, r13, proof),
            (5, 13, r5, r13, flipped),
            (5, 13, r5, r13, proof[:-1]),
            (5, 13, r5, r13, [*proof, r5]),
            (5, 13, r5, r13, []),
            (13, 5, r13, r5, proof),
            (5, 5, r5, r13, []),
            (5, 5, r5, r5, proof),
            (0, 5, EMPTY_ROOT, r5, proof),
            (5, 13, b"short", r13, proof),
            (5, 13, r5, r13, [b"short"]),
        ]
        for args in cases:
            with pytest.raises(ProofInvalid):
                verify_consistency(*args)

    def test_trivial_proofs_verify_when_sizes_are_equal_or_old_is_empty(self) -> None:
        tree = MerkleTree.of_entries(entries_of(6))
        assert tree.consistency_proof(6, 6) == []
        assert tree.consistency_proof(0, 6) == []
        verify_consistency(6, 6, tree.root(), tree.root(), [])
        verify_consistency(0, 6, EMPTY_ROOT, tree.root(), [])

    def test_generation_refuses_when_sizes_are_out_of_order(self) -> None:
        tree = MerkleTree.of_entries(entries_of(6))
        for old, new in [(4, 3), (-1, 3), (2, 7)]:
            with pytest.raises(ProofInvalid):
                tree.consistency_proof(old, new)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.binary(max_size=8), min_size=1, max_size=40),
    st.data(),
)
def test_proofs_verify_when_tree_is_arbitrary(entries: list[bytes], data: st.DataObject) -> None:
    tree = MerkleTree.of_entries(entries)
    new = data.draw(st.integers(1, len(entries)))
    old = data.draw(st.integers(0, new))
    index = data.draw(st.integers(0, new - 1))
    assert tree.root(new) == naive_mth(entries[:new])
    verify_consistency(
        old,
        new,
        naive_mth(entries[:old]),
        naive_mth(entries[:new]),
        tree.consistency_proof(old, new),
    )
    verify_inclusion(
        leaf_hash(entries[index]), index, new, tree.inclusion_proof(index, new), tree.root(new)
    )
