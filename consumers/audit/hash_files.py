"""Merkle tree levels kept in temporary files, so that proofs over a long log need no RAM for it.

:class:`HashFiles` makes :class:`~consumers.audit.merkle.HashLevel` columns, each an unnamed
temporary file of 32-byte hashes with a small in-memory tail; reads of flushed hashes are one
``pread`` each (the page cache serves them). Memory is bounded by the tails, whatever the length
of the log; disk use is about 64 bytes per leaf, freed when the :class:`HashFiles` closes.
"""

from __future__ import annotations

import os
import tempfile
from contextlib import ExitStack
from pathlib import Path
from types import TracebackType
from typing import IO

from consumers.audit.merkle import HASH_SIZE

#: Hashes a column keeps in memory before it writes them out (128 KiB).
TAIL_HASHES = 4096


class HashColumn:
    """An append-only sequence of 32-byte hashes in an unnamed temporary file."""

    def __init__(self, file: IO[bytes], tail_hashes: int = TAIL_HASHES) -> None:
        self._fd = file.fileno()  # the file stays open as long as its HashFiles
        self._tail_hashes = tail_hashes
        self._written = 0
        self._tail: list[bytes] = []

    def __len__(self) -> int:
        return self._written + len(self._tail)

    def append(self, value: bytes, /) -> None:
        """Append one hash (exactly :data:`HASH_SIZE` bytes)."""
        if len(value) != HASH_SIZE:
            raise ValueError(f"a hash is {HASH_SIZE} bytes")
        self._tail.append(value)
        if len(self._tail) >= self._tail_hashes:
            os.pwrite(self._fd, b"".join(self._tail), self._written * HASH_SIZE)
            self._written += len(self._tail)
            self._tail.clear()

    def __getitem__(self, index: int, /) -> bytes:
        size = len(self)
        if index < 0:
            index += size
        if not 0 <= index < size:
            raise IndexError("hash index out of range")
        if index >= self._written:
            return self._tail[index - self._written]
        return os.pread(self._fd, HASH_SIZE, index * HASH_SIZE)


class HashFiles:
    """Makes :class:`HashColumn` s in ``directory`` (default: the system's temp dir); a context
    manager that deletes them all on exit."""

    def __init__(self, directory: Path | None = None) -> None:
        self._directory = directory
        self._files = ExitStack()

    def column(self, tail_hashes: int = TAIL_HASHES) -> HashColumn:
        """A new, empty column (pass the bound method as ``LeafHashes(new_level=...)``)."""
        file = self._files.enter_context(
            tempfile.TemporaryFile(prefix="leadhub-merkle-", dir=self._directory))  # noqa: SIM115 (the ExitStack closes it)
        return HashColumn(file, tail_hashes)

    def close(self) -> None:
        """Delete every column's file."""
        self._files.close()

    def __enter__(self) -> HashFiles:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.close()
