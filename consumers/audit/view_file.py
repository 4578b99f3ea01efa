"""A replayed view written straight into a new SQLite file: bulk, unjournaled, indexed last.

The replay's output is a throwaway view that can always be rebuilt, so it is written the fastest
way SQLite allows: no rollback journal, no fsync, one transaction, rows inserted with
``executemany`` from plain tuples, the secondary indexes built once after the load. The file is
built under a temporary name next to the target and renamed into place only once it is
complete, so a failed or interrupted replay never leaves a file that looks like a finished view.

The schema is :mod:`consumers.store`'s (the same DDL, the same ``view_meta`` row), so
:class:`consumers.store.ViewStore` reads the file like any other view. Each row holds what the
change-by-change replay (:class:`consumers.audit.replay.ViewWriter`) and the live projector
store for it: ``row_json`` in :data:`consumers.store.encode_row_json`'s spelling, ``occurred_at`` in
SQLAlchemy's SQLite format.

Rows come from participant states (:func:`state_rows`), not from the change stream: the final
view of a replay is the rows its states hold (the projector's change stream rebuilds exactly
those, which its tests check), so each row is serialised and written once, whatever the number
of changes that led to it.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.schema import CreateIndex, CreateTable

from consumers.audit.digest import ViewDigest, digest_row_texts
from consumers.audit.errors import ReplayError, SetupError
from consumers.store import (
    LIST_INDEXED_ROWS,
    LIST_PARTICIPANTS,
    PROJECTION_VERSION,
    encode_row_json,
    metadata,
    recipients_of,
    recipients_text,
    view_meta,
    view_rows_ddl,
)
from processors.state import ParticipantState, build_row
from processors.view import RowShape
from schemas.event import Event

#: One ``shared_rows`` row: participant_id, event_id, variant, recipients, type, occurred_at
#: (SQLite text), source_partner, row_json.
RowValues = tuple[str, str, int, str, str, str, str, str]

_INSERT = "INSERT INTO shared_rows VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
_ADD_RECIPIENT = "INSERT OR IGNORE INTO view_recipients VALUES (?)"


def state_rows(states: Iterable[ParticipantState]) -> Iterator[RowValues]:
    """Yield the ``shared_rows`` values of every row the states hold (see the module docstring):
    per event, one row per distinct shape, naming the recipients given it.

    In the table's key order, ``(participant_id, event_id, variant)`` (decision 0005): SQLite
    then appends to the table's B-tree instead of inserting all over it.
    """
    for state in sorted(states, key=lambda held: held.participant_id):
        participant_id = state.participant_id
        events = state.events
        by_event: dict[str, dict[RowShape, list[str]]] = {}
        for recipient, shapes in state.rows.items():
            for event_id, shape in shapes.items():
                by_event.setdefault(event_id, {}).setdefault(shape, []).append(recipient)
        for event_id in sorted(by_event):
            event = events[event_id]
            common = (event.type, _sqlite_datetime(event), event.source_partner or "")
            variants = sorted(((recipients_text(names), shape)
                               for shape, names in by_event[event_id].items()),
                              key=lambda variant: variant[0])  # no two name one recipient
            for number, (names, shape) in enumerate(variants):
                text = encode_row_json(build_row(recipients_of(names)[0], event,
                                                 shape).to_json())
                yield (participant_id, event_id, number, names, *common, text)


def _sqlite_datetime(event: Event) -> str:
    """``occurred_at`` as SQLAlchemy's SQLite ``DateTime`` stores it (microseconds always)."""
    at = event.occurred_at
    return (f"{at.year:04d}-{at.month:02d}-{at.day:02d} "
            f"{at.hour:02d}:{at.minute:02d}:{at.second:02d}.{at.microsecond:06d}")


def _ddl() -> tuple[list[str], list[str]]:
    """(CREATE TABLE statements, CREATE INDEX statements) of the view schema, for SQLite."""
    dialect = sqlite_dialect.dialect()
    tables = [str(CreateTable(table).compile(dialect=dialect)) for table in metadata.sorted_tables]
    tables.append(view_rows_ddl("sqlite"))
    indexes = [str(CreateIndex(index).compile(dialect=dialect))
               for table in metadata.sorted_tables
               for index in sorted(table.indexes, key=lambda i: str(i.name))]
    return tables, indexes


def temporary_path(target: Path, what: str = "partial") -> Path:
    """A new, empty, uniquely named file next to ``target`` (``.NAME.WHAT-XXXX.partial``)."""
    handle, temp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.{what}-",
                                    suffix=".partial")
    os.close(handle)
    return Path(temp)


class ViewFileWriter:
    """Builds one SQLite view file at ``path`` (a temporary name, empty or not yet there).

    Used in two ways: as the replay's output (:meth:`complete` adds the indexes and renames the
    file to its target), and as a worker's share of the rows (:meth:`close`, then the output
    takes them over with :meth:`append_file`). Raises :class:`ReplayError` when SQLite fails.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.rows = 0
        try:
            self._db: sqlite3.Connection | None = sqlite3.connect(self.path,
                                                                  isolation_level=None)
            for pragma in ("journal_mode=OFF", "synchronous=OFF", "locking_mode=EXCLUSIVE",
                           "cache_size=-16384"):
                self._db.execute(f"PRAGMA {pragma}")
            self._db.execute("BEGIN")
            tables, _ = _ddl()
            for statement in tables:
                self._db.execute(statement)
        except sqlite3.Error as exc:
            self.discard()
            raise ReplayError(f"cannot create the view file {self.path}: {exc}") from exc

    @property
    def _connection(self) -> sqlite3.Connection:
        if self._db is None:
            raise ReplayError(f"the view file {self.path} is already closed")
        return self._db

    def insert(self, rows: Iterable[RowValues]) -> int:
        """Insert shared ``rows`` (no key may repeat); return how many recipients' rows of the
        view they make (each names one or more recipients)."""
        connection = self._connection
        recipients: set[str] = set()
        count = 0

        def counted() -> Iterator[RowValues]:
            nonlocal count
            for row in rows:
                names = recipients_of(row[3])
                recipients.update(names)
                count += len(names)
                yield row

        try:
            connection.executemany(_INSERT, counted())  # streams the iterable
            connection.executemany(_ADD_RECIPIENT, [(r,) for r in sorted(recipients)])
        except sqlite3.Error as exc:
            raise ReplayError(f"writing replayed rows to {self.path} failed: {exc}") from exc
        self.rows += count
        return count

    def insert_states(self, states: Iterable[ParticipantState]) -> int:
        """Insert the rows of every state (see :func:`state_rows`); return how many recipients'
        rows of the view they make."""
        return self.insert(state_rows(states))

    def append_file(self, other: Path) -> int:
        """Copy every row of another (closed) view file into this one; return how many."""
        connection = self._connection
        try:  # ATTACH and DETACH cannot run inside a transaction
            connection.execute("COMMIT")
            connection.execute("ATTACH DATABASE ? AS share", (str(other),))
            try:
                connection.execute("BEGIN")
                connection.execute("INSERT INTO main.shared_rows SELECT * FROM "
                                   "share.shared_rows")
                connection.execute("INSERT OR IGNORE INTO main.view_recipients SELECT * FROM "
                                   "share.view_recipients")
                count = int(connection.execute(
                    "SELECT count(*) FROM share.view_rows").fetchone()[0])
                connection.execute("COMMIT")
            finally:
                connection.execute("DETACH DATABASE share")
                connection.execute("BEGIN")
        except sqlite3.Error as exc:
            raise ReplayError(f"merging {other.name} into {self.path} failed: {exc}") from exc
        self.rows += count
        return count

    def close(self) -> None:
        """Commit and close the file as it is (a worker's share: no indexes, no view_meta)."""
        if self._db is not None:
            connection, self._db = self._db, None
            try:
                connection.execute("COMMIT")
            except sqlite3.Error as exc:
                raise ReplayError(f"cannot finish {self.path}: {exc}") from exc
            finally:
                connection.close()

    def complete(self, target: Path) -> None:
        """List each recipient's participants (``recipient_participants``), build the indexes,
        record the projection version, commit and rename to ``target``.

        Raises :class:`SetupError` if ``target`` exists (also if it appeared meanwhile): the
        replay never overwrites a file. On any failure the temporary file is removed.
        """
        try:
            connection = self._connection
            connection.execute(LIST_PARTICIPANTS)
            connection.execute(LIST_INDEXED_ROWS)
            _, indexes = _ddl()
            for statement in indexes:
                connection.execute(statement)
            connection.execute(
                f"INSERT INTO {view_meta.name} (key, value) VALUES (?, ?)",
                ("projection_version", PROJECTION_VERSION))
            self.close()
            _move_no_clobber(self.path, target)
        except FileExistsError as exc:
            self.discard()
            raise SetupError(f"{target} exists: the replay writes a fresh view, pick a new "
                             "file") from exc
        except (sqlite3.Error, OSError) as exc:
            self.discard()
            raise ReplayError(f"cannot complete the view file {target}: {exc}") from exc
        self.path = target

    def discard(self) -> None:
        """Close without committing and delete the temporary file (safe to call twice)."""
        if self._db is not None:
            with contextlib.suppress(sqlite3.Error):
                self._db.close()
            self._db = None
        self.path.unlink(missing_ok=True)


def _move_no_clobber(source: Path, target: Path) -> None:
    """Rename ``source`` to ``target``; FileExistsError if ``target`` exists.

    A hard link then an unlink (atomic: never replaces a file); where the file system has no
    hard links, a rename checked just before.
    """
    try:
        os.link(source, target)
    except FileExistsError:
        raise
    except OSError:
        if target.exists():
            raise FileExistsError(str(target)) from None
        os.replace(source, target)
        return
    source.unlink()


def digest_view_file(path: Path) -> ViewDigest:
    """The digest of a SQLite view file (as :func:`consumers.audit.digest.digest_rows` gives it).

    Reads the stored JSON texts in key order (the primary key's index: byte order, which for
    UTF-8 is code point order) and hashes them mostly unparsed (:func:`digest_row_texts`).
    Raises :class:`ReplayError` if the file cannot be read.
    """
    try:
        connection = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        raise ReplayError(f"cannot open the view file {path}: {exc}") from exc
    try:
        return digest_row_texts(connection.execute(
            "SELECT recipient, event_id, row_json FROM view_rows ORDER BY recipient, event_id"))
    except sqlite3.Error as exc:
        raise ReplayError(f"cannot read the view file {path}: {exc}") from exc
    finally:
        connection.close()


__all__ = ["RowValues", "ViewFileWriter", "digest_view_file", "state_rows", "temporary_path"]
