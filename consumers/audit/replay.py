"""Replay ``lead.events`` through the same projection step as the live projector.

:class:`Replayer` runs :class:`processors.projection_step.ProjectionStep`, the one step the live
projector (:mod:`consumers.live_projector`) runs too, over states held in memory
(:class:`MemoryStates`: a dictionary and a due-time heap per partition). A value that is not a
canonical record is skipped and counted (live: dead-lettered). Where the live projector's batch
boundaries fell, which the log does not record, changes nothing: a CLOCK ticks the participants
due by their latest state, in a batch or not.

:class:`LogReplay` is the adapter: it streams one topic's records (never holding the log) up to
end offsets fixed by the caller, optionally stopping each partition at the first record received
after ``until``. Memory: one state per participant plus a bounded write buffer.
"""

from __future__ import annotations

import heapq
import json
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol, TextIO

from sqlalchemy import Connection, select
from sqlalchemy import event as sa_event
from sqlalchemy.exc import SQLAlchemyError

from consumers.audit.digest import Row
from consumers.audit.errors import ReplayError, SetupError
from consumers.audit.kafka_log import TopicReader
from consumers.errors import ViewStoreError
from consumers.store import ViewStore, view_rows
from processors.projection_step import ProjectionStep
from processors.projector import Projector
from processors.state import ParticipantState
from processors.view import ViewChange
from schemas.canonical import CanonicalRecord, decode_canonical
from schemas.catalog import Catalog
from schemas.codec import decode
from schemas.errors import HubError

#: Decoded CLOCK records kept for reuse (a few MiB at most).
_CLOCK_CACHE = 16384

#: Called with (partition, received_at, changes) for every record that changed something.
ChangeSink = Callable[[int, datetime, list[ViewChange]], None]


class MemoryStates:
    """Participant states in dictionaries, with a due-time heap per partition (the replay's
    :class:`~processors.projection_step.StateSource`)."""

    def __init__(self) -> None:
        self.states: dict[str, ParticipantState] = {}
        self._partition_of: dict[str, int] = {}
        self._next_due: dict[str, int | None] = {}
        self._due_heaps: dict[int, list[tuple[int, str]]] = {}

    def state(self, participant_id: str) -> ParticipantState | None:
        return self.states.get(participant_id)

    def complete(self, participant_id: str) -> ParticipantState:
        return self.states[participant_id]  # built here from the log: always whole

    def due(self, partition: int, now_us: int) -> list[str]:
        heap = self._due_heaps.get(partition)
        due: list[str] = []
        while heap and heap[0][0] <= now_us:
            moment, pid = heapq.heappop(heap)
            if (self._next_due.get(pid) == moment and self._partition_of.get(pid) == partition
                    and pid not in due):
                due.append(pid)
        return due

    def store(self, participant_id: str, partition: int, state: ParticipantState,
              next_due_us: int | None) -> None:
        self.states[participant_id] = state
        self._partition_of[participant_id] = partition
        if next_due_us != self._next_due.get(participant_id):
            self._next_due[participant_id] = next_due_us
            if next_due_us is not None:
                heapq.heappush(self._due_heaps.setdefault(partition, []),
                               (next_due_us, participant_id))


class Replayer:
    """The live projector's per-record step (:class:`ProjectionStep`) over in-memory states.

    ``participant`` restricts the replay to one participant (exact: participants' states are
    independent); other participants' events are not decoded.
    """

    def __init__(self, projector: Projector, catalog: Catalog,
                 participant: str | None = None) -> None:
        self.step = ProjectionStep(projector, catalog)
        self.participant = participant
        self._participant_key = participant.encode() if participant is not None else None
        self.memory = MemoryStates()
        self.states = self.memory.states
        self.skipped = 0

    def apply(self, partition: int, offset: int, key: bytes | None,
              record: CanonicalRecord) -> list[ViewChange]:
        """Apply one decoded ``lead.events`` record read at (partition, offset).

        Raises :class:`ReplayError` if an EVENT's body does not decode (the live projector
        dead-letters such a record and moves on; it cannot be in a log it accepted).
        """
        if record.kind == "EVENT" and (self._participant_key is not None and key is not None
                                       and key != self._participant_key):
            return []
        event = None
        if record.kind == "EVENT":
            try:
                event = decode(record.event, self.step.catalog, strict=False)
            except HubError as exc:
                raise ReplayError(
                    f"partition {partition} offset {offset}: the event does not decode "
                    f"({getattr(exc, 'reason', type(exc).__name__)})") from exc
            if self.participant is not None and event.participant_id != self.participant:
                return []
        return self.step.apply(self.memory, partition, record, event).changes


class Meter(Protocol):
    """Counts replayed records (a :class:`Progress` line, or a worker's shared counter)."""

    def advance(self, count: int = 1) -> None:
        """Count ``count`` more records."""


class Progress:
    """Progress lines on a stream (stderr) at most every ``every_s`` seconds.

    ``others`` (optional) returns records counted elsewhere (worker processes); they are added
    to this meter's own count in every line.
    """

    def __init__(self, what: str, total: int, stream: TextIO | None = None,
                 every_s: float = 2.0, others: Callable[[], int] | None = None) -> None:
        self.what, self.total, self.every_s = what, total, every_s
        self.stream = stream if stream is not None else sys.stderr
        self.started = self.last = time.monotonic()
        self.done = 0
        self.others = others

    def advance(self, count: int = 1) -> None:
        """Count ``count`` more records; print a line when it is time."""
        self.done += count
        now = time.monotonic()
        if now - self.last >= self.every_s:
            self.last = now
            self.line()

    def line(self) -> None:
        """Print the progress line now."""
        elapsed = max(time.monotonic() - self.started, 1e-9)
        done = self.done + (self.others() if self.others is not None else 0)
        share = f" ({100 * done / self.total:.0f}%)" if self.total else ""
        print(f"{self.what}: {done:,}/{self.total:,} records{share}, "
              f"{done / elapsed:,.0f}/s", file=self.stream, flush=True)


class LogReplay:
    """Streams ``lead.events`` into a :class:`Replayer`, resumable from where it stopped.

    ``until``: each partition stops at its first record received after that instant (the log
    as it stood then; no final tick is applied, exactly as the live view showed it).
    ``sink`` None: the changes are dropped (the caller reads the final rows from the states).
    ``meter``: counts the records instead of a :class:`Progress` line of its own.
    ``records``: the records replayed so far (a partition's first record past ``until`` is
    read to find the stop, and not counted).
    """

    def __init__(self, reader: TopicReader, replayer: Replayer, sink: ChangeSink | None, *,
                 until: datetime | None = None, progress: bool = False,
                 meter: Meter | None = None) -> None:
        self.reader = reader
        self.replayer = replayer
        self.sink = sink
        self.until = until
        self.progress = progress
        self.meter = meter
        self.positions: dict[int, int] = {}
        self.records = 0
        self._stopped: set[int] = set()

    def run_to(self, end: Mapping[int, int]) -> None:
        """Replay every record from the current positions up to ``end`` (exclusive)."""
        targets = {p: e for p, e in end.items() if p not in self._stopped}
        total = sum(max(0, e - self.positions.get(p, 0)) for p, e in targets.items())
        progress = Progress("replay", total) if self.progress else None
        meter: Meter | None = self.meter if self.meter is not None else progress
        replayer, sink, until = self.replayer, self.sink, self.until
        positions = self.positions
        apply = replayer.apply
        # a tick's bytes repeat on every partition, which arrive in batches of thousands
        clocks: dict[bytes, CanonicalRecord] = {}
        records = 0
        try:
            for partition, offset, key, value in self.reader.read_raw(targets, positions):
                positions[partition] = offset + 1
                if meter is not None:
                    meter.advance()
                record = clocks.get(value)
                if record is None:
                    try:
                        record = decode_canonical(value)
                    except HubError:
                        records += 1
                        replayer.skipped += 1
                        continue
                    if record.kind == "CLOCK":
                        if len(clocks) >= _CLOCK_CACHE:
                            clocks.clear()
                        clocks[value] = record
                if until is not None and record.received_at > until:
                    self._stopped.add(partition)
                    self.reader.finish(partition)
                    continue  # read to find the stop, not replayed: not counted
                records += 1
                changes = apply(partition, offset, key, record)
                if changes and sink is not None:
                    sink(partition, record.received_at, changes)
        finally:
            self.records += records
        if progress is not None and total:
            progress.line()


class ViewWriter:
    """Buffers the replay's final rows and writes them to a fresh :class:`ViewStore` in batches.

    Rows are written as the live projector writes them (:meth:`ViewStore.write_view_changes`):
    the same ``row_json`` spelling, a row upserted or retracted by its key. Memory holds one
    batch of changes, never the view.
    """

    def __init__(self, store: ViewStore, batch: int = 50000) -> None:
        self.store = store
        self.batch = batch
        self._pending: dict[tuple[str, str, str], ViewChange] = {}

    def __call__(self, partition: int, received_at: datetime, changes: list[ViewChange]) -> None:
        pending = self._pending
        for change in changes:
            pending[(change.participant_id, change.event_id, change.recipient)] = change
        if len(pending) >= self.batch:
            self.flush()

    def flush(self) -> None:
        """Write the buffered rows (one transaction). Raises ViewStoreError on failure."""
        if not self._pending:
            return
        changes = list(self._pending.values())
        try:
            with self.store.engine.begin() as connection:
                self.store.write_view_changes(connection, changes)
        except SQLAlchemyError as exc:
            raise ViewStoreError(f"writing {len(changes)} replayed rows failed") from exc
        self._pending = {}


def open_fresh_store(target: str) -> ViewStore:
    """Open a new, empty view database: a SQLAlchemy URL or a path to a new SQLite file.

    Raises SetupError if the file exists or the database already holds rows (the replay
    must not mix with anything). A SQLite file is written without fsync (it can be rebuilt).
    """
    if "://" not in target:
        path = Path(target)
        if path.exists():
            raise SetupError(f"{target} exists: the replay writes a fresh view, pick a new file")
        url = f"sqlite:///{path}"
    else:
        url = target
    store = ViewStore(url)
    if store.engine.dialect.name == "sqlite":
        @sa_event.listens_for(store.engine, "connect")
        def _fast(dbapi_connection: Any, record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA synchronous=OFF")
            cursor.execute("PRAGMA journal_mode=MEMORY")
            cursor.close()
    store.create_schema()
    with store.engine.connect() as connection:
        if connection.execute(select(view_rows.c.event_id).limit(1)).first() is not None:
            raise SetupError("the replay's target database already holds view rows")
    return store


def ordered_rows(store: ViewStore, connection: Connection | None = None) -> Iterator[Row]:
    """Every (recipient, row) of ``store`` in digest order: code point order on any database.

    Read on ``connection`` (inside the caller's snapshot) if given.
    """
    recipient, event_id = view_rows.c.recipient, view_rows.c.event_id
    order: tuple[Any, ...] = (recipient, event_id)
    if store.engine.dialect.name == "postgresql":
        order = (recipient.collate("C"), event_id.collate("C"))
    query = select(recipient, view_rows.c.row_json).order_by(*order)
    if connection is not None:
        for who, text in connection.execution_options(yield_per=2000).execute(query):
            yield who, json.loads(text)
        return
    with store.engine.connect() as own:
        for who, text in own.execution_options(yield_per=2000).execute(query):
            yield who, json.loads(text)
