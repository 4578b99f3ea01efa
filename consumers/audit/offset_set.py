"""A compact set of Kafka offsets: runs per 64k-offset chunk, or a bitmap when runs get many.

Used by ``leadhub audit reconcile`` to hold, per inbound partition, the offsets that
``lead.events`` and ``lead.dlq`` refer to. Memory: 4 bytes a run, at most an 8 KiB bitmap per
chunk of 65,536 offsets, plus about 0.25 KiB per chunk; contiguous offsets take almost nothing.
"""

from __future__ import annotations

import sys
from array import array
from bisect import bisect_right
from collections.abc import Iterable, Iterator

#: Offsets per chunk of an :class:`OffsetSet` (2**16: relative offsets fit in 16 bits).
CHUNK_BITS = 16
CHUNK_SIZE = 1 << CHUNK_BITS
_CHUNK_MASK = CHUNK_SIZE - 1
#: A chunk with more runs than this becomes a bitmap (4 bytes a run = the bitmap's 8 KiB).
MAX_RUNS = CHUNK_SIZE // 32


class _Runs:
    """One chunk as sorted, disjoint, non-adjacent runs ``firsts[i]..lasts[i]`` (inclusive)."""

    __slots__ = ("count", "firsts", "lasts")

    def __init__(self) -> None:
        self.firsts = array("H")
        self.lasts = array("H")
        self.count = 0

    def add(self, rel: int) -> bool:
        firsts, lasts = self.firsts, self.lasts
        n = len(lasts)
        if n == 0 or rel > lasts[-1] + 1:  # past every run: the common, in-order case
            firsts.append(rel)
            lasts.append(rel)
            self.count += 1
            return True
        if rel == lasts[-1] + 1:
            lasts[-1] = rel
            self.count += 1
            return True
        i = bisect_right(firsts, rel) - 1
        if i >= 0 and rel <= lasts[i]:
            return False
        joins_left = i >= 0 and lasts[i] + 1 == rel
        joins_right = i + 1 < n and firsts[i + 1] == rel + 1
        if joins_left and joins_right:
            lasts[i] = lasts[i + 1]
            del firsts[i + 1]
            del lasts[i + 1]
        elif joins_left:
            lasts[i] = rel
        elif joins_right:
            firsts[i + 1] = rel
        else:
            firsts.insert(i + 1, rel)
            lasts.insert(i + 1, rel)
        self.count += 1
        return True

    def discard(self, rel: int) -> bool:
        firsts, lasts = self.firsts, self.lasts
        i = bisect_right(firsts, rel) - 1
        if i < 0 or rel > lasts[i]:
            return False
        first, last = firsts[i], lasts[i]
        if first == last:
            del firsts[i]
            del lasts[i]
        elif rel == first:
            firsts[i] = rel + 1
        elif rel == last:
            lasts[i] = rel - 1
        else:
            lasts[i] = rel - 1
            firsts.insert(i + 1, rel + 1)
            lasts.insert(i + 1, last)
        self.count -= 1
        return True

    def contains(self, rel: int) -> bool:
        i = bisect_right(self.firsts, rel) - 1
        return i >= 0 and rel <= self.lasts[i]

    def runs(self) -> Iterator[tuple[int, int]]:
        return zip(self.firsts, self.lasts, strict=True)

    @property
    def too_many_runs(self) -> bool:
        return len(self.firsts) > MAX_RUNS

    def nbytes(self) -> int:
        return sys.getsizeof(self.firsts) + sys.getsizeof(self.lasts) + 64


class _Bits:
    """One chunk as a bitmap of ``CHUNK_SIZE`` bits."""

    __slots__ = ("bits", "count")

    def __init__(self, runs: _Runs) -> None:
        self.bits = bytearray(CHUNK_SIZE // 8)
        self.count = runs.count
        for first, last in runs.runs():
            self._fill(first, last)

    def _fill(self, first: int, last: int) -> None:
        bits = self.bits
        while first <= last and first & 7:
            bits[first >> 3] |= 1 << (first & 7)
            first += 1
        while first + 7 <= last:
            whole = (last + 1 - first) >> 3
            bits[first >> 3:(first >> 3) + whole] = b"\xff" * whole
            first += whole << 3
        while first <= last:
            bits[first >> 3] |= 1 << (first & 7)
            first += 1

    def add(self, rel: int) -> bool:
        mask = 1 << (rel & 7)
        byte = self.bits[rel >> 3]
        if byte & mask:
            return False
        self.bits[rel >> 3] = byte | mask
        self.count += 1
        return True

    def discard(self, rel: int) -> bool:
        mask = 1 << (rel & 7)
        byte = self.bits[rel >> 3]
        if not byte & mask:
            return False
        self.bits[rel >> 3] = byte & ~mask
        self.count -= 1
        return True

    def contains(self, rel: int) -> bool:
        return bool(self.bits[rel >> 3] & (1 << (rel & 7)))

    def runs(self) -> Iterator[tuple[int, int]]:
        first = -1
        for index, byte in enumerate(self.bits):
            if byte == 0 or byte == 0xFF:
                if byte == 0 and first >= 0:
                    yield first, (index << 3) - 1
                    first = -1
                elif byte == 0xFF and first < 0:
                    first = index << 3
                continue
            for bit in range(8):
                rel = (index << 3) | bit
                if byte & (1 << bit):
                    if first < 0:
                        first = rel
                elif first >= 0:
                    yield first, rel - 1
                    first = -1
        if first >= 0:
            yield first, CHUNK_SIZE - 1

    @property
    def too_many_runs(self) -> bool:
        return False

    def nbytes(self) -> int:
        return sys.getsizeof(self.bits) + 48


class OffsetSet:
    """A set of non-negative offsets, compact for runs (see the module doc for the bound).

    ``add`` and ``discard`` say whether they changed the set; iteration is in ascending order.
    """

    __slots__ = ("_chunks", "_count")

    def __init__(self, offsets: Iterable[int] = ()) -> None:
        self._chunks: dict[int, _Runs | _Bits] = {}
        self._count = 0
        for offset in offsets:
            self.add(offset)

    def add(self, offset: int) -> bool:
        """Add ``offset``; return False if it was already in the set."""
        if offset < 0:
            raise ValueError("offsets are non-negative")
        key = offset >> CHUNK_BITS
        chunk = self._chunks.get(key)
        if chunk is None:
            chunk = self._chunks[key] = _Runs()
        if not chunk.add(offset & _CHUNK_MASK):
            return False
        self._count += 1
        if chunk.too_many_runs:
            assert isinstance(chunk, _Runs)
            self._chunks[key] = _Bits(chunk)
        return True

    def discard(self, offset: int) -> bool:
        """Remove ``offset``; return False if it was not in the set. Empty chunks are freed."""
        key = offset >> CHUNK_BITS
        chunk = self._chunks.get(key)
        if chunk is None or offset < 0 or not chunk.discard(offset & _CHUNK_MASK):
            return False
        self._count -= 1
        if chunk.count == 0:
            del self._chunks[key]
        elif chunk.too_many_runs:
            assert isinstance(chunk, _Runs)
            self._chunks[key] = _Bits(chunk)
        return True

    def __contains__(self, offset: object) -> bool:
        if not isinstance(offset, int) or offset < 0:
            return False
        chunk = self._chunks.get(offset >> CHUNK_BITS)
        return chunk is not None and chunk.contains(offset & _CHUNK_MASK)

    def __len__(self) -> int:
        return self._count

    def __iter__(self) -> Iterator[int]:
        for first, last in self.runs():
            yield from range(first, last + 1)

    def runs(self) -> Iterator[tuple[int, int]]:
        """The maximal runs ``(first, last)`` (inclusive), ascending; chunk borders split none."""
        pending: tuple[int, int] | None = None
        for key in sorted(self._chunks):
            base = key << CHUNK_BITS
            for first, last in self._chunks[key].runs():
                if pending is not None and pending[1] + 1 == base + first:
                    pending = (pending[0], base + last)
                    continue
                if pending is not None:
                    yield pending
                pending = (base + first, base + last)
        if pending is not None:
            yield pending

    def nbytes(self) -> int:
        """Approximate bytes held (chunk payloads and their objects, not the dict's table)."""
        return sum(chunk.nbytes() for chunk in self._chunks.values())
