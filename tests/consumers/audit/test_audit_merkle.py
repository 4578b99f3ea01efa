"""The Merkle code against RFC 6962's published test vectors (Certificate Transparency).

Vectors pinned from transparency-dev/merkle ``proof/verify_test.go`` (the classic
certificate-transparency ``merkle_test`` data): the tree heads over the 8 standard inputs,
inclusion proofs and consistency proofs, plus corrupted-proof probes.
"""

from __future__ import annotations

import hashlib
import tracemalloc

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consumers.audit.hash_files import HashFiles
from consumers.audit.merkle import (
    EMPTY_ROOT,
    CompactTree,
    LeafHashes,
    leaf_hash,
    root_of,
    verify_consistency,
    verify_inclusion,
)

INPUTS = [bytes.fromhex(h) for h in (
    "", "00", "10", "2021", "3031", "40414243", "5051525354555657",
    "606162636465666768696a6b6c6d6e6f",
)]

ROOTS = [bytes.fromhex(h) for h in (
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
)]


def _h(*hexes: str) -> list[bytes]:
    return [bytes.fromhex(x) for x in hexes]


# (leaf index, tree size, proof) — the vectors use 1-based leaf numbers; converted here.
INCLUSION = [
    (0, 8, _h("96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
              "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
              "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4")),
    (5, 8, _h("bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
              "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
              "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7")),
    (2, 3, _h("fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125")),
    (1, 5, _h("6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
              "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
              "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b")),
]

CONSISTENCY = [
    (1, 1, []),
    (1, 8, _h("96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
              "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
              "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4")),
    (6, 8, _h("0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
              "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
              "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7")),
    (2, 5, _h("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
              "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b")),
    (6, 7, _h("0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
              "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
              "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7")),
]

LEAVES = LeafHashes(leaf_hash(data) for data in INPUTS)
SOME_HASH = bytes.fromhex("abacaba000000000000000000000000000000000000000000060061e00123456")


def test_empty_tree_root_is_sha256_of_nothing() -> None:
    assert hashlib.sha256(b"").digest() == EMPTY_ROOT
    assert root_of([]) == EMPTY_ROOT == LeafHashes().root()


@pytest.mark.parametrize("size", range(1, 9))
def test_tree_heads_match_the_vectors(size: int) -> None:
    hashes = [leaf_hash(d) for d in INPUTS[:size]]
    assert root_of(hashes) == ROOTS[size - 1]
    assert LEAVES.root(size) == ROOTS[size - 1]
    tree = CompactTree()
    tree.extend(hashes)
    assert tree.root() == ROOTS[size - 1]
    # a tree resumed from a prefix's frontier reaches the same head
    for cut in range(size + 1):
        resumed = CompactTree(cut, LEAVES.frontier(cut))
        resumed.extend(hashes[cut:])
        assert resumed.root() == ROOTS[size - 1]


@pytest.mark.parametrize(("index", "size", "proof"), INCLUSION)
def test_inclusion_proofs_match_and_verify(index: int, size: int, proof: list[bytes]) -> None:
    assert LEAVES.inclusion_proof(index, size) == proof
    assert verify_inclusion(index, size, LEAVES[index], proof, ROOTS[size - 1])


@pytest.mark.parametrize(("index", "size", "proof"), INCLUSION)
def test_corrupted_inclusion_proofs_fail(index: int, size: int, proof: list[bytes]) -> None:
    root, leaf = ROOTS[size - 1], LEAVES[index]
    probes = [
        (index - 1, size, leaf, proof, root), (index + 1, size, leaf, proof, root),
        (index ^ 2, size, leaf, proof, root), (index, size * 2, leaf, proof, root),
        (index, size // 2, leaf, proof, root), (index, size, b"WrongLeaf", proof, root),
        (index, size, leaf, proof, EMPTY_ROOT), (index, size, leaf, proof, SOME_HASH),
        (index, size, leaf, [*proof, b""], root), (index, size, leaf, [*proof, root], root),
        (index, size, leaf, [b"", *proof], root), (index, size, leaf, [root, *proof], root),
        (index, size, leaf, proof[:-1], root),
    ]
    for i in range(len(proof)):
        flipped = list(proof)
        flipped[i] = bytes([flipped[i][0] ^ 8]) + flipped[i][1:]
        probes.append((index, size, leaf, flipped, root))
    for probe in probes:
        assert not verify_inclusion(*probe), probe[:2]


@pytest.mark.parametrize(("old", "new", "proof"), CONSISTENCY)
def test_consistency_proofs_match_and_verify(old: int, new: int, proof: list[bytes]) -> None:
    assert LEAVES.consistency_proof(old, new) == proof
    assert verify_consistency(old, new, proof, ROOTS[old - 1], ROOTS[new - 1])


@pytest.mark.parametrize(("old", "new", "proof"), [c for c in CONSISTENCY if c[2]])
def test_corrupted_consistency_proofs_fail(old: int, new: int, proof: list[bytes]) -> None:
    r1, r2 = ROOTS[old - 1], ROOTS[new - 1]
    probes = [
        (old - 1, new, proof, r1, r2), (old + 1, new, proof, r1, r2),
        (old ^ 2, new, proof, r1, r2), (old, new * 2, proof, r1, r2),
        (old, new // 2, proof, r1, r2), (old, new, proof, b"WrongRoot", r2),
        (old, new, proof, r1, b"WrongRoot"), (old, new, proof, r2, r1),
        (old, new, [], r1, r2), (old, new, [*proof, b""], r1, r2),
        (old, new, [*proof, r1], r1, r2), (old, new, [*proof, r2], r1, r2),
        (old, new, [b"", *proof], r1, r2), (old, new, [r1, *proof], r1, r2),
        (old, new, [r2, *proof], r1, r2), (old, new, [proof[0], *proof], r1, r2),
        (old, new, proof[:-1], r1, r2),
    ]
    for i in range(len(proof)):
        flipped = list(proof)
        flipped[i] = bytes([flipped[i][0] ^ 16]) + flipped[i][1:]
        probes.append((old, new, flipped, r1, r2))
    for probe in probes:
        assert not verify_consistency(*probe), probe[:2]


def test_trivial_consistency_cases() -> None:
    assert verify_consistency(0, 0, [], EMPTY_ROOT, EMPTY_ROOT)
    assert verify_consistency(0, 5, [], EMPTY_ROOT, ROOTS[4])
    assert not verify_consistency(0, 1, [EMPTY_ROOT], EMPTY_ROOT, EMPTY_ROOT)
    assert not verify_consistency(2, 1, [], ROOTS[1], ROOTS[0])
    assert not verify_consistency(1, 2, [], ROOTS[0], ROOTS[1])


@settings(max_examples=40, deadline=None)
@given(st.integers(min_value=1, max_value=70), st.data())
def test_generated_proofs_verify_for_every_size(size: int, data: st.DataObject) -> None:
    leaves = LeafHashes(leaf_hash(i.to_bytes(4, "big")) for i in range(size))
    index = data.draw(st.integers(min_value=0, max_value=size - 1))
    old = data.draw(st.integers(min_value=0, max_value=size))
    root = leaves.root()
    assert verify_inclusion(index, size, leaves[index], leaves.inclusion_proof(index, size), root)
    assert verify_consistency(old, size, leaves.consistency_proof(old, size),
                              leaves.root(old), root)


@settings(max_examples=25, deadline=None)
@given(st.integers(min_value=1, max_value=300), st.data())
def test_file_levels_give_the_same_roots_and_proofs_as_lists(size: int,
                                                            data: st.DataObject) -> None:
    hashes = [leaf_hash(i.to_bytes(4, "big")) for i in range(size)]
    in_memory = LeafHashes(hashes)
    with HashFiles() as files:
        # A tail of 7 hashes: most reads come from the file, some from the tail.
        on_disk = LeafHashes(hashes, new_level=lambda: files.column(tail_hashes=7))
        index = data.draw(st.integers(min_value=0, max_value=size - 1))
        old = data.draw(st.integers(min_value=0, max_value=size))
        assert on_disk.root() == in_memory.root()
        assert on_disk.frontier(old) == in_memory.frontier(old)
        assert on_disk.inclusion_proof(index, size) == in_memory.inclusion_proof(index, size)
        assert (on_disk.consistency_proof(old, size)
                == in_memory.consistency_proof(old, size))
        assert [on_disk[i] for i in (0, -1, size // 2)] == [hashes[0], hashes[-1],
                                                            hashes[size // 2]]


def test_file_levels_hold_a_long_log_in_bounded_memory() -> None:
    count = 200_000  # as lists: ~2 x 200k hashes, over 20 MB with object overhead
    tracemalloc.start()
    try:
        with HashFiles() as files:
            leaves = LeafHashes(new_level=files.column)
            for i in range(count):
                leaves.append(leaf_hash(i.to_bytes(4, "big")))
            proof = leaves.inclusion_proof(count // 3, count)
            root = leaves.root()
            _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert verify_inclusion(count // 3, count, leaf_hash((count // 3).to_bytes(4, "big")),
                            proof, root)
    assert peak < 3_000_000, f"peak {peak:,} bytes"
