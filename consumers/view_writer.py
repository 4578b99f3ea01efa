"""Writing the view: each event's distinct rows once, naming their recipients (decision 0013).

Every view writer ends here. What it is given per event is *every* recipient's row after the
change (:class:`EventRows`) and, if the view held the event before, who had a row and of what
type and instant (:class:`HeldRows`); it then

- upserts the event's distinct rows as variants ``0..n-1`` of ``shared_rows`` and, for an event
  the view held, deletes its variants from ``n`` on (whatever the view held: a stale variant
  would show a row to a recipient who lost it);
- keeps ``indexed_rows`` (the :data:`~consumers.store.INDEXED_TYPES`' entries per recipient),
  ``view_recipients`` and ``recipient_participants`` in step.

The live projector knows both sides from the participants' states, which hold exactly the
view's rows (:meth:`consumers.projection_store.ProjectionStore.write_batch`). A writer given
only changes (the audit replays, a seeded view) reads the events' shared rows first
(:meth:`SharedRowsWriter.write_changes`).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import Connection, Engine, and_, bindparam, delete, exists, or_, select

from consumers.driver_statement import DriverStatement, Values
from consumers.store import (
    INDEXED_TYPES,
    RowChange,
    encode_row_json,
    indexed_rows,
    recipient_participants,
    recipients_of,
    recipients_text,
    row_writer,
    shared_rows,
    view_recipients,
    view_rows,
)
from processors.view import ViewChange, ViewRow

_INDEXED = frozenset(INDEXED_TYPES)


class EventRows(NamedTuple):
    """Every recipient's row of one event: ``texts`` maps recipient to the row's JSON
    (:func:`~consumers.store.encode_row_json`); empty when nobody sees the event any more."""

    participant_id: str
    event_id: str
    type: str
    occurred_at: datetime
    source_partner: str
    texts: Mapping[str, str]


class HeldRows(NamedTuple):
    """What the view held of an event before: who had a row, and the rows' type and instant."""

    recipients: frozenset[str]
    type: str
    occurred_at: datetime


def variants_of(texts: Mapping[str, str]) -> list[tuple[str, str]]:
    """An event's distinct rows (recipient to JSON in ``texts``) as (recipients, JSON), in
    variant order: the order of their recipients' text
    (:func:`~consumers.store.recipients_text`)."""
    groups: dict[str, list[str]] = {}
    for recipient, text in texts.items():
        groups.setdefault(text, []).append(recipient)
    return sorted((recipients_text(names), text) for text, names in groups.items())


class SharedRowsWriter:
    """The view's writes (shared rows, their index, recipients, pairs), compiled once."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._upsert_rows = row_writer(engine, shared_rows,
                                       ("participant_id", "event_id", "variant"))
        self._trim = DriverStatement(engine, _TRIM, ("p", "e", "n"))
        self._add_entries = row_writer(engine, indexed_rows)
        self._drop_entries = DriverStatement(engine, _DROP_ENTRY, ("r", "t", "o", "e", "p"))
        self._add_recipients = row_writer(engine, view_recipients)
        self._add_pairs = row_writer(engine, recipient_participants)
        self._drop_pairs = DriverStatement(engine, DROP_EMPTY_PAIR, ("r", "p"))

    def write(self, connection: Connection,
              updates: Sequence[tuple[EventRows, HeldRows | None]],
              listed: Collection[tuple[str, str]] = frozenset()) -> None:
        """Write each event's rows (each event once) inside the caller's transaction.

        ``listed``: (recipient, participant) pairs the caller knows are in
        ``recipient_participants`` already; they are not inserted again (decision 0009). A pair
        wrongly named there would stay unlisted, and its participant out of the caseload.
        """
        trims: list[Values] = []
        rows: list[Values] = []
        entries_out: list[Values] = []
        entries_in: list[Values] = []
        pairs_in: set[tuple[str, str]] = set()
        pairs_out: set[tuple[str, str]] = set()
        recipients: set[str] = set()
        for event, held in updates:
            pid, event_id, texts = event.participant_id, event.event_id, event.texts
            variants = variants_of(texts)
            for number, (names, text) in enumerate(variants):
                rows.append((pid, event_id, number, names, event.type, event.occurred_at,
                             event.source_partner, text))
            entries = set()
            if event.type in _INDEXED:
                entries = {(r, event.type, event.occurred_at, event_id, pid) for r in texts}
            if held is None:
                entries_in.extend(entries)
            else:
                trims.append((pid, event_id, len(variants)))
                before = set()
                if held.type in _INDEXED:
                    before = {(r, held.type, held.occurred_at, event_id, pid)
                              for r in held.recipients}
                entries_out.extend(before - entries)
                entries_in.extend(entries - before)
                pairs_out.update((r, pid) for r in held.recipients if r not in texts)
            pairs_in.update((r, pid) for r in texts)
            recipients.update(texts)
        self._trim.execute(connection, trims)
        self._upsert_rows.execute(connection, rows)
        self._drop_entries.execute(connection, entries_out)
        self._add_entries.execute(connection, entries_in)
        self._add_recipients.execute(connection, [(r,) for r in sorted(recipients)])
        self._add_pairs.execute(connection, sorted(pairs_in.difference(listed)))
        self._drop_pairs.execute(connection, sorted(pairs_out))

    def write_changes(self, connection: Connection, changes: Sequence[ViewChange],
                      listed: Collection[tuple[str, str]] = frozenset()) -> None:
        """Apply the projector's ``changes`` (the last change of a (recipient, event) wins),
        reading the shared rows of the events they touch first."""
        final: dict[tuple[str, str], dict[str, ViewRow | None]] = {}
        for change in changes:
            final.setdefault((change.participant_id, change.event_id), {})[
                change.recipient] = change.row
        memo: dict[tuple[Any, ...], tuple[Mapping[str, Any], str]] = {}
        given: dict[tuple[str, str], dict[str, tuple[str, datetime, str, str] | None]] = {}
        for key, rows in final.items():
            given[key] = {recipient: None if row is None else (
                row.type, row.occurred_at, row.source_partner, _text(row, memo))
                for recipient, row in rows.items()}
        self._merge(connection, given, listed)

    def write_json_changes(self, connection: Connection, changes: Sequence[RowChange]) -> None:
        """Apply ``changes`` of JSON rows (a seeded view); a retraction names no participant,
        so its rows are found by recipient and event id."""
        final: dict[tuple[str, str], Mapping[str, Any] | None] = {}
        for change in changes:
            final[(change.recipient, change.event_id)] = change.row
        given: dict[tuple[str, str], dict[str, tuple[str, datetime, str, str] | None]] = {}
        for (recipient, event_id), row in final.items():
            if row is None:
                for pid in connection.execute(_PARTICIPANTS_OF, {"r": recipient,
                                                                 "e": event_id}).scalars():
                    given.setdefault((pid, event_id), {})[recipient] = None
                continue
            occurred_at = datetime.fromisoformat(str(row["occurred_at"]).replace("Z", "+00:00"))
            given.setdefault((str(row["participant_id"]), event_id), {})[recipient] = (
                str(row["type"]), occurred_at, str(row["source_partner"]), encode_row_json(row))
        self._merge(connection, given)

    def _merge(self, connection: Connection,
               given: Mapping[tuple[str, str], Mapping[str, tuple[str, datetime, str, str] | None]],
               listed: Collection[tuple[str, str]] = frozenset()) -> None:
        """Write each event's rows: what the view holds of it with ``given``'s rows (recipient
        to (type, occurred_at, source, JSON), or None to retract) put over them."""
        held = self.held(connection, list(given))
        updates: list[tuple[EventRows, HeldRows | None]] = []
        for (pid, event_id), rows in given.items():
            before = held.get((pid, event_id))
            texts: dict[str, str] = {}
            common: tuple[str, datetime, str] | None = None
            if before is not None:
                texts = dict(before[1])
                common = (before[0].type, before[0].occurred_at, before[2])
            for recipient, row in rows.items():
                if row is None:
                    texts.pop(recipient, None)
                else:
                    common = row[:3]
                    texts[recipient] = row[3]
            if common is None:
                continue  # retractions of rows the view does not hold
            updates.append((EventRows(pid, event_id, *common, texts),
                            None if before is None else before[0]))
        self.write(connection, updates, listed)

    def held(self, connection: Connection, keys: Sequence[tuple[str, str]],
             ) -> dict[tuple[str, str], tuple[HeldRows, dict[str, str], str]]:
        """What the view holds of each (participant, event) of ``keys`` that it has rows of:
        (who and what, recipient to JSON, source partner)."""
        found: dict[tuple[str, str], tuple[HeldRows, dict[str, str], str]] = {}
        for start in range(0, len(keys), _KEYS_PER_QUERY):
            chunk = list(keys[start:start + _KEYS_PER_QUERY])
            chunk += [chunk[-1]] * (_KEYS_PER_QUERY - len(chunk))  # one statement, cached
            params = {f"{part}{n}": value for n, key in enumerate(chunk)
                      for part, value in zip("pe", key, strict=True)}
            for pid, event_id, names, type_, occurred_at, source, text in connection.execute(
                    _SHARED_ROWS_OF, params):
                key = (pid, event_id)
                entry = found.get(key)
                if entry is None:
                    entry = found[key] = (HeldRows(frozenset(), type_, occurred_at), {}, source)
                for recipient in recipients_of(names):
                    entry[1][recipient] = text
        return {key: (held._replace(recipients=frozenset(texts)), texts, source)
                for key, (held, texts, source) in found.items()}


def _text(row: ViewRow, memo: dict[tuple[Any, ...], tuple[Mapping[str, Any], str]]) -> str:
    """The row's JSON. A row's JSON names no recipient, and most recipients of an event see the
    same row: with ``memo`` (one per batch) it is encoded once while everything compares equal."""
    key = (row.event_id, row.type, row.participant_id, row.occurred_at, row.source_partner,
           row.categories, row.consent_ids, row.notice, tuple(row.fields))
    held = memo.get(key)
    if held is not None and held[0] == row.fields:
        return held[1]
    text = encode_row_json(row.to_json())
    memo[key] = (row.fields, text)
    return text


#: An event's variants from ``n`` on.
_TRIM = delete(shared_rows).where(shared_rows.c.participant_id == bindparam("p"),
                                  shared_rows.c.event_id == bindparam("e"),
                                  shared_rows.c.variant >= bindparam("n"))
_entry = indexed_rows.c
_DROP_ENTRY = delete(indexed_rows).where(
    _entry.recipient == bindparam("r"), _entry.type == bindparam("t"),
    _entry.occurred_at == bindparam("o"), _entry.event_id == bindparam("e"),
    _entry.participant_id == bindparam("p"))
_pairs = recipient_participants.c
#: A (recipient ``r``, participant ``p``) pair, if no row of theirs is left.
DROP_EMPTY_PAIR = delete(recipient_participants).where(
    _pairs.recipient == bindparam("r"), _pairs.participant_id == bindparam("p"),
    ~exists().where(view_rows.c.participant_id == bindparam("p"),
                    view_rows.c.recipient == bindparam("r")))
_PARTICIPANTS_OF = select(view_rows.c.participant_id).where(
    view_rows.c.recipient == bindparam("r"), view_rows.c.event_id == bindparam("e"))

#: Event keys looked up per statement: one key test per term of an OR, which SQLite and
#: PostgreSQL answer by a search of the primary key each.
_KEYS_PER_QUERY = 20
_s = shared_rows.c
_SHARED_ROWS_OF = select(_s.participant_id, _s.event_id, _s.recipients, _s.type, _s.occurred_at,
                         _s.source_partner, _s.row_json).where(
    or_(*(and_(_s.participant_id == bindparam(f"p{n}"), _s.event_id == bindparam(f"e{n}"))
          for n in range(_KEYS_PER_QUERY))))
