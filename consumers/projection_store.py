"""The projector's state in SQL, beside the view: participant heads, events, timers, tracking.

The live projector (:mod:`consumers.live_projector`) keeps nothing that matters in memory. Per
participant the view database holds

- ``participant_heads``: the small part of the state (consents, orphan revocations, pending
  deadlines, ``as_of``) as JSON, with the participant's partition of ``lead.events`` and its
  next timer (``next_due_us``, microseconds since the epoch; indexed with the partition, so a
  CLOCK record finds the due participants without a scan);
- ``participant_events``: one row per event it holds, keyed ``(participant_id, event_id)``
  (arrival order in ``seq``); the dedupe set;
- its rows in ``shared_rows``: what each recipient sees *is* the view, read back into row
  shapes when a state is loaded (each distinct row of an event once, naming its recipients).

A state is read back whole (:meth:`ProjectionStore.load`) or by its head and the events a batch
may repeat (:meth:`ProjectionStore.load_heads`: the cost of an ordinary event's read-back does
not grow with the participant's history).

A batch writes only what changed: the heads of the participants it touched, their new, replaced
or removed events, the view rows that changed, and the tracking row of each partition it read,
in **one transaction**. The tracking update is conditional on the offset the projector sought
to, so an instance that lost a partition (a zombie after a rebalance) cannot commit over the new
owner's work: its transaction fails with :class:`TrackingConflict` and changes nothing.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass

import orjson
from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    Index,
    Integer,
    Table,
    Text,
    and_,
    bindparam,
    delete,
    insert,
    or_,
    select,
    update,
)

from consumers.driver_statement import DriverStatement, Values
from consumers.errors import ConsumerError
from consumers.store import (
    ViewStore,
    encode_row_json,
    identifier,
    metadata,
    recipients_of,
    row_writer,
    shared_rows,
    tracking,
)
from consumers.view_writer import EventRows, HeldRows
from processors.state import (
    ParticipantState,
    build_row,
    event_from_state_json,
    event_to_state_json,
    head_to_json,
    state_from_parts,
)
from processors.view import RowShape, ShapeKey, ViewChange, shape_key_of_row
from schemas.event import Event

participant_heads = Table(
    "participant_heads",
    metadata,
    Column("participant_id", identifier(), primary_key=True),
    Column("partition", Integer, nullable=False),
    Column("next_due_us", BigInteger, nullable=True),
    Column("next_seq", BigInteger, nullable=False),
    Column("head_json", Text, nullable=False),
)
Index("ix_participant_heads_timer", participant_heads.c.partition, participant_heads.c.next_due_us)

participant_events = Table(
    "participant_events",
    metadata,
    Column("participant_id", identifier(), primary_key=True),
    Column("event_id", identifier(), primary_key=True),
    Column("seq", BigInteger, nullable=False),
    Column("event_json", Text, nullable=False),
)

#: A state part's JSON is spelled as a view row's: sorted keys, no spaces, UTF-8 (the parts hold
#: only JSON-native values, :func:`processors.timefmt.value_to_json`).
_encode = encode_row_json


class TrackingConflict(ConsumerError):
    """Another projector instance moved a partition's tracking row: this one is fenced."""


@dataclass(slots=True)
class StoredParticipant:
    """A participant's state as last committed, with its next free arrival number."""

    state: ParticipantState
    next_seq: int


@dataclass(slots=True)
class ParticipantWrite:
    """What one batch changed of one participant (see :meth:`ProjectionStore.write_batch`)."""

    before: StoredParticipant | None
    after: ParticipantState
    partition: int
    next_due_us: int | None
    candidates: frozenset[str]


class ProjectionStore:
    """Reads and writes the projector's SQL state through one :class:`ViewStore`'s engine."""

    def __init__(self, view: ViewStore) -> None:
        self.view = view
        self.engine = view.engine
        self._upsert_heads = row_writer(self.engine, participant_heads, ("participant_id",))
        self._upsert_events = row_writer(self.engine, participant_events,
                                         ("participant_id", "event_id"))
        self._remove_events = DriverStatement(self.engine, _REMOVE_EVENT, ("p", "e"))
        self._insert_tracking = insert(tracking)

    # -- tracking ------------------------------------------------------------------------------

    def tracked_offsets(self, connection: Connection, topic: str,
                        partitions: Iterable[int]) -> dict[int, int]:
        """Next offset per partition of ``topic``, creating a row at 0 for any not yet tracked."""
        wanted = sorted(set(partitions))
        found = {
            int(p): int(o) for p, o in connection.execute(
                select(tracking.c.partition, tracking.c.next_offset).where(
                    tracking.c.topic == topic, tracking.c.partition.in_(wanted)))
        }
        missing = [p for p in wanted if p not in found]
        if missing:
            connection.execute(self._insert_tracking, [
                {"topic": topic, "partition": p, "next_offset": 0} for p in missing])
            found.update(dict.fromkeys(missing, 0))
        return found

    def advance_tracking(self, connection: Connection, topic: str,
                         moves: Mapping[int, tuple[int, int]]) -> None:
        """Move each partition's tracking row from ``expected`` to ``new`` (``moves[p]``).

        Raises :class:`TrackingConflict` if a row does not hold ``expected`` (another instance
        owns the partition now); the caller's transaction must then roll back.
        """
        statement = update(tracking).where(
            tracking.c.topic == topic, tracking.c.partition == bindparam("p"),
            tracking.c.next_offset == bindparam("expected"),
        ).values(next_offset=bindparam("new"))
        for partition, (expected, new) in sorted(moves.items()):
            result = connection.execute(statement, {"p": partition, "expected": expected,
                                                    "new": new})
            if result.rowcount != 1:
                raise TrackingConflict(
                    f"project: partition {partition} of {topic} is no longer at offset "
                    f"{expected}; another projector instance owns it")

    # -- states --------------------------------------------------------------------------------

    def load_heads(self, connection: Connection,
                   wanted: Mapping[str, Collection[str]]) -> dict[str, StoredParticipant]:
        """The committed heads of those of ``wanted``'s participants that have one, each
        holding of its events only those whose ids ``wanted`` lists for it, and none of its
        rows: states with ``complete`` False (:mod:`processors.state`). Costs the same whatever
        the participants' histories."""
        heads = self._heads(connection, list(wanted))
        events = self.held_events(connection, {pid: wanted[pid] for pid in heads})
        return {
            pid: StoredParticipant(
                state_from_parts(head, events.get(pid, ()), {}, complete=False), next_seq)
            for pid, (head, next_seq) in heads.items()
        }

    def held_events(self, connection: Connection,
                    wanted: Mapping[str, Collection[str]]) -> dict[str, list[Event]]:
        """Of the event ids ``wanted`` lists per participant, the events each one holds."""
        keys = [(pid, event_id) for pid, ids in wanted.items() for event_id in ids]
        found: dict[str, list[Event]] = {}
        for start in range(0, len(keys), _KEYS_PER_QUERY):
            chunk = keys[start:start + _KEYS_PER_QUERY]
            chunk += [chunk[-1]] * (_KEYS_PER_QUERY - len(chunk))  # one statement, cached
            params = {f"{part}{n}": value for n, key in enumerate(chunk)
                      for part, value in zip("pe", key, strict=True)}
            for pid, text in connection.execute(_HELD_EVENTS, params):
                found.setdefault(pid, []).append(event_from_state_json(orjson.loads(text)))
        return found

    def load(self, connection: Connection,
             participant_ids: Sequence[str]) -> dict[str, StoredParticipant]:
        """The committed states of those of ``participant_ids`` that have one, whole."""
        heads = self._heads(connection, list(participant_ids))
        if not heads:
            return {}
        known = list(heads)
        events: dict[str, list[Event]] = {pid: [] for pid in known}
        for pid, text in connection.execute(
                select(participant_events.c.participant_id, participant_events.c.event_json)
                .where(participant_events.c.participant_id.in_(known))
                .order_by(participant_events.c.participant_id, participant_events.c.seq)):
            events[pid].append(event_from_state_json(orjson.loads(text)))
        # A row names its event by the event's own id object, as in a state built live: a
        # cached state then holds each id once, not once per recipient too (decision 0006).
        same = {event.event_id: event.event_id for held in events.values() for event in held}
        rows: dict[str, dict[str, dict[str, RowShape]]] = {pid: {} for pid in known}
        shapes: dict[ShapeKey, RowShape] = {}  # one object per distinct shape, as built live
        for pid, event_id, names, text in connection.execute(
                select(shared_rows.c.participant_id, shared_rows.c.event_id,
                       shared_rows.c.recipients, shared_rows.c.row_json)
                .where(shared_rows.c.participant_id.in_(known))):
            key = shape_key_of_row(orjson.loads(text))
            shape = shapes.get(key)
            if shape is None:
                shape = shapes[key] = RowShape(*key)
            event_id = same.get(event_id, event_id)
            held = rows[pid]
            for recipient in recipients_of(names):
                held.setdefault(recipient, {})[event_id] = shape
        return {
            pid: StoredParticipant(state_from_parts(head, events[pid], rows[pid]), next_seq)
            for pid, (head, next_seq) in heads.items()
        }

    def _heads(self, connection: Connection,
               participant_ids: list[str]) -> dict[str, tuple[dict[str, object], int]]:
        """Participant id -> (head JSON, next arrival number), for those that have a head."""
        if not participant_ids:
            return {}
        return {
            pid: (orjson.loads(head_json), int(next_seq))
            for pid, head_json, next_seq in connection.execute(
                select(participant_heads.c.participant_id, participant_heads.c.head_json,
                       participant_heads.c.next_seq)
                .where(participant_heads.c.participant_id.in_(participant_ids)))
        }

    def due(self, connection: Connection, partition: int, now_us: int) -> list[str]:
        """Participants of ``partition`` whose committed next timer is at or before ``now_us``."""
        return list(connection.execute(
            select(participant_heads.c.participant_id).where(
                participant_heads.c.partition == partition,
                participant_heads.c.next_due_us <= now_us,
            )).scalars())

    def write_batch(self, connection: Connection, writes: Sequence[ParticipantWrite],
                    changes: Sequence[ViewChange]) -> dict[str, int]:
        """Write what a batch changed, inside the caller's transaction.

        For each participant: the head, and of the event ids in ``candidates`` (those the batch
        projected or derived or may have removed) the ones added, replaced or removed. Then the
        rows of every event ``changes`` touched, whole, as the participant's state now holds
        them, against what its state held before (a state's rows are the view's rows); a
        (recipient, participant) pair the state held rows of before the batch is in
        ``recipient_participants`` already, so it is not inserted again. Returns each
        participant's next arrival number.
        """
        heads: list[Values] = []
        upserts: list[Values] = []
        removals: list[Values] = []
        next_seqs: dict[str, int] = {}
        listed: set[tuple[str, str]] = set()
        touched: dict[str, dict[str, None]] = {}
        for change in changes:
            touched.setdefault(change.participant_id, {})[change.event_id] = None
        updates: list[tuple[EventRows, HeldRows | None]] = []
        for write in writes:
            state = write.after
            pid = state.participant_id
            if write.before is not None:
                listed.update((recipient, pid)
                              for recipient, shapes in write.before.state.rows.items() if shapes)
            seq = write.before.next_seq if write.before is not None else 0
            old_events = write.before.state.events if write.before is not None else {}
            for event_id in sorted(write.candidates):
                new = state.events.get(event_id)
                old = old_events.get(event_id)
                if new is None and old is not None:
                    removals.append((pid, event_id))
                elif new is not None and new is not old:
                    upserts.append((pid, event_id, seq, _encode(event_to_state_json(new))))
                    seq += 1
            next_seqs[pid] = seq
            heads.append((pid, write.partition, write.next_due_us, seq,
                          _encode(head_to_json(state))))
            updates.extend(_event_updates(write, touched.get(pid, {})))
        self._remove_events.execute(connection, removals)
        self._upsert_events.execute(connection, upserts)
        self._upsert_heads.execute(connection, heads)
        self.view.writer.write(connection, updates, listed)
        return next_seqs


def _event_updates(write: ParticipantWrite, event_ids: Iterable[str],
                   ) -> Iterator[tuple[EventRows, HeldRows | None]]:
    """Each event's rows as ``write.after`` holds them, against what ``write.before`` held (None
    for an event it did not hold: the view has no row of it, as rows are written with events)."""
    after = write.after
    before = write.before.state if write.before is not None else None
    pid = after.participant_id
    for event_id in event_ids:
        held = None
        old = before.events.get(event_id) if before is not None else None
        if before is not None and old is not None:
            held = HeldRows(frozenset(r for r, shapes in before.rows.items() if event_id in shapes),
                            old.type, old.occurred_at)
        event = after.events.get(event_id)
        if event is None:
            if old is not None:
                yield EventRows(pid, event_id, old.type, old.occurred_at,
                                old.source_partner or "", {}), held
            continue
        texts: dict[str, str] = {}
        memo: dict[RowShape, str] = {}
        for recipient, shapes in after.rows.items():
            shape = shapes.get(event_id)
            if shape is not None:
                text = memo.get(shape)
                if text is None:
                    text = memo[shape] = encode_row_json(
                        build_row(recipient, event, shape).to_json())
                texts[recipient] = text
        yield EventRows(pid, event_id, event.type, event.occurred_at,
                        event.source_partner or "", texts), held


#: Event keys looked up per statement: one key test per term of an OR, which SQLite and
#: PostgreSQL answer by a search of the primary key each (a row-value ``IN (VALUES ...)`` made
#: SQLite scan the whole table).
_KEYS_PER_QUERY = 20
_HELD_EVENTS = select(participant_events.c.participant_id, participant_events.c.event_json).where(
    or_(*(and_(participant_events.c.participant_id == bindparam(f"p{n}"),
               participant_events.c.event_id == bindparam(f"e{n}"))
          for n in range(_KEYS_PER_QUERY))))

_REMOVE_EVENT = delete(participant_events).where(and_(
    participant_events.c.participant_id == bindparam("p"),
    participant_events.c.event_id == bindparam("e"),
))
