"""RFC 6962 (Certificate Transparency) Merkle hash trees: roots, proofs, verification. Pure.

Hashes are SHA-256 with domain separation: a leaf is ``SHA-256(0x00 || leaf)``, an interior node
``SHA-256(0x01 || left || right)``; the tree over ``n`` leaves splits at the largest power of two
below ``n`` (RFC 6962 §2.1). The empty tree's root is ``SHA-256("")``.

- :class:`CompactTree` appends leaf hashes with O(log n) memory (the checkpointer's state) and
  can start from a prefix's *frontier* (the roots of the perfect subtrees covering it).
- :class:`LeafHashes` holds every leaf hash of a log and generates inclusion and consistency
  proofs (the exporter). Where its levels live is the caller's choice (:class:`HashLevel`):
  lists in memory by default, files for a log too long to hold (``consumers.audit.hash_files``).
- :func:`verify_inclusion` and :func:`verify_consistency` follow RFC 9162 §2.1.3.2 / §2.1.4.2.

Tested against the published Certificate Transparency vectors (transparency-dev/merkle).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence
from typing import Protocol

HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()


def leaf_hash(leaf: bytes) -> bytes:
    """``SHA-256(0x00 || leaf)``."""
    return hashlib.sha256(b"\x00" + leaf).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """``SHA-256(0x01 || left || right)``."""
    return hashlib.sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two strictly below ``n`` (``n >= 2``)."""
    return 1 << ((n - 1).bit_length() - 1)


class CompactTree:
    """An append-only tree that keeps only its frontier: O(log n) hashes.

    ``frontier`` lists the roots of the perfect subtrees that cover leaves ``[0, size)``, the
    largest (leftmost) first — exactly one per set bit of ``size``.
    """

    __slots__ = ("_stack", "size")

    def __init__(self, size: int = 0, frontier: Sequence[bytes] = ()) -> None:
        if size < 0 or len(frontier) != bin(size).count("1"):
            raise ValueError("a frontier has one hash per set bit of the tree size")
        if any(len(h) != HASH_SIZE for h in frontier):
            raise ValueError("frontier hashes are 32 bytes")
        self.size = size
        self._stack = list(frontier)

    def append(self, hash_of_leaf: bytes) -> None:
        """Append one leaf hash (already ``leaf_hash``-ed)."""
        stack = self._stack
        stack.append(hash_of_leaf)
        n = self.size
        self.size = n + 1
        while n & 1:
            right = stack.pop()
            stack[-1] = node_hash(stack[-1], right)
            n >>= 1

    def extend(self, hashes: Iterable[bytes]) -> None:
        """Append several leaf hashes in order."""
        for h in hashes:
            self.append(h)

    @property
    def frontier(self) -> list[bytes]:
        """The perfect-subtree roots covering the tree, largest first (a copy)."""
        return list(self._stack)

    def root(self) -> bytes:
        """The RFC 6962 tree head of the leaves appended so far."""
        if not self._stack:
            return EMPTY_ROOT
        result = self._stack[-1]
        for h in reversed(self._stack[:-1]):
            result = node_hash(h, result)
        return result


def root_of(hashes: Sequence[bytes]) -> bytes:
    """The RFC 6962 root over ``hashes`` (leaf hashes, in order)."""
    tree = CompactTree()
    tree.extend(hashes)
    return tree.root()


class HashLevel(Protocol):
    """An append-only sequence of 32-byte hashes (negative indexes count from the end)."""

    def append(self, value: bytes, /) -> None: ...

    def __getitem__(self, index: int, /) -> bytes: ...

    def __len__(self) -> int: ...


class LeafHashes:
    """Every leaf hash of a log, with cached perfect subtrees for proof generation.

    Holds about 2 x 32 bytes per leaf, in the levels ``new_level`` makes: Python lists by
    default (plus object overhead), or anything else that is a :class:`HashLevel`.
    """

    def __init__(self, hashes: Iterable[bytes] = (),
                 new_level: Callable[[], HashLevel] = list) -> None:
        self._new_level = new_level
        self._levels: list[HashLevel] = [new_level()]
        for h in hashes:
            self.append(h)

    def __len__(self) -> int:
        return len(self._levels[0])

    def __getitem__(self, index: int) -> bytes:
        return self._levels[0][index]

    def append(self, hash_of_leaf: bytes) -> None:
        """Append one leaf hash; completed perfect subtrees are cached as they close."""
        self._levels[0].append(hash_of_leaf)
        level = 0
        while len(self._levels[level]) % 2 == 0:
            below = self._levels[level]
            if level + 1 == len(self._levels):
                self._levels.append(self._new_level())
            self._levels[level + 1].append(node_hash(below[-2], below[-1]))
            level += 1

    def subtree_root(self, start: int, end: int) -> bytes:
        """The RFC 6962 root of leaves ``[start, end)`` (``0 <= start < end <= len``)."""
        n = end - start
        if n == 1:
            return self._levels[0][start]
        if n & (n - 1) == 0 and start % n == 0:
            return self._levels[n.bit_length() - 1][start // n]
        k = _split(n)
        return node_hash(self.subtree_root(start, start + k), self.subtree_root(start + k, end))

    def root(self, size: int | None = None) -> bytes:
        """The tree head over the first ``size`` leaves (default: all)."""
        size = len(self) if size is None else size
        self._check_size(size)
        return EMPTY_ROOT if size == 0 else self.subtree_root(0, size)

    def frontier(self, size: int) -> list[bytes]:
        """The perfect-subtree roots covering ``[0, size)``, largest first."""
        self._check_size(size)
        result: list[bytes] = []
        start = 0
        for bit in range(size.bit_length() - 1, -1, -1):
            width = 1 << bit
            if size & width:
                result.append(self.subtree_root(start, start + width))
                start += width
        return result

    def inclusion_proof(self, index: int, size: int) -> list[bytes]:
        """The audit path of leaf ``index`` in the tree of the first ``size`` leaves (§2.1.1)."""
        self._check_size(size)
        if not 0 <= index < size:
            raise ValueError("leaf index outside the tree")
        proof: list[bytes] = []
        lo, hi, m = 0, size, index
        while hi - lo > 1:
            k = _split(hi - lo)
            if m < k:
                proof.append(self.subtree_root(lo + k, hi))
                hi = lo + k
            else:
                proof.append(self.subtree_root(lo, lo + k))
                lo, m = lo + k, m - k
        proof.reverse()
        return proof

    def consistency_proof(self, old_size: int, new_size: int) -> list[bytes]:
        """The RFC 6962 §2.1.2 proof that the first ``old_size`` leaves prefix ``new_size``."""
        self._check_size(new_size)
        if not 0 <= old_size <= new_size:
            raise ValueError("old size must be between 0 and the new size")
        if old_size in (0, new_size):
            return []
        proof: list[bytes] = []
        lo, hi, m, complete = 0, new_size, old_size, True
        while m != hi - lo:
            k = _split(hi - lo)
            if m <= k:
                proof.append(self.subtree_root(lo + k, hi))
                hi = lo + k
            else:
                proof.append(self.subtree_root(lo, lo + k))
                lo, m, complete = lo + k, m - k, False
        if not complete:
            proof.append(self.subtree_root(lo, hi))
        proof.reverse()
        return proof

    def _check_size(self, size: int) -> None:
        if not 0 <= size <= len(self):
            raise ValueError("tree size beyond the leaves held")


def root_from_inclusion(index: int, size: int, hash_of_leaf: bytes,
                        proof: Sequence[bytes]) -> bytes | None:
    """The root implied by an inclusion proof, or None if the proof is malformed (§2.1.3.2)."""
    if not 0 <= index < size or len(hash_of_leaf) != HASH_SIZE:
        return None
    fn, sn, result = index, size - 1, hash_of_leaf
    for p in proof:
        if sn == 0 or len(p) != HASH_SIZE:
            return None
        if fn & 1 or fn == sn:
            result = node_hash(p, result)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            result = node_hash(result, p)
        fn >>= 1
        sn >>= 1
    return result if sn == 0 else None


def verify_inclusion(index: int, size: int, hash_of_leaf: bytes, proof: Sequence[bytes],
                     root: bytes) -> bool:
    """True iff ``proof`` puts leaf ``index`` (``hash_of_leaf``) in the tree ``(size, root)``."""
    return root_from_inclusion(index, size, hash_of_leaf, proof) == root


def verify_consistency(old_size: int, new_size: int, proof: Sequence[bytes], old_root: bytes,
                       new_root: bytes) -> bool:
    """True iff ``proof`` shows tree ``(old_size, old_root)`` is a prefix of ``(new_size, ...)``.

    RFC 9162 §2.1.4.2. Size 0 is consistent with anything given an empty proof; equal sizes need
    equal roots and an empty proof.
    """
    if not 0 <= old_size <= new_size:
        return False
    if old_size == new_size:
        return not proof and old_root == new_root
    if old_size == 0:
        return not proof
    if not proof or any(len(p) != HASH_SIZE for p in proof):
        return False
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
            return False
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    return fr == old_root and sr == new_root and sn == 0
