"""The view's row writers (DriverStatement; JsonRowsStatement on PostgreSQL) write exactly what
SQLAlchemy Core would write, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import Text, bindparam, cast, create_engine, delete, insert, select

from consumers.driver_statement import DriverStatement, JsonRowsStatement, RowWriter
from consumers.errors import ViewStoreError
from consumers.projection_store import participant_heads
from consumers.store import (
    SHARED_ROW_COLUMNS,
    ViewStore,
    recipient_participants,
    row_writer,
    shared_rows,
)

pytestmark = pytest.mark.integration

WHEN = datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=UTC)


#: A shared row by its key: parameters ``p``, ``e``, ``v`` (participant, event, variant).
RETRACT = delete(shared_rows).where(shared_rows.c.participant_id == bindparam("p"),
                                    shared_rows.c.event_id == bindparam("e"),
                                    shared_rows.c.variant == bindparam("v"))


def _values(writer: str, event_id: str, when: datetime, text: str = "{}",
            variant: int = 0) -> tuple[object, ...]:
    return (writer, event_id, variant, ",police,", "ContactLogged", when, "casemgmt", text)


def _upsert(store: ViewStore) -> RowWriter:
    return row_writer(store.engine, shared_rows, ("participant_id", "event_id", "variant"))


#: Texts a row's JSON or a partner's id may hold: quotes, backslashes, control characters,
#: non-ASCII, an astral character, what looks like JSON or SQL.
AWKWARD_TEXTS = ['{"fields":{"name":"O\'Brien \\ \"Bo\""}}', "tab\tnew\nline\r\u0001",
                 "Zoë Ünal 名前 \U0001f600", "'); DROP TABLE view_rows; --", "", "null"]


def test_rows_written_by_the_writer_equal_rows_written_by_sqlalchemy(store: ViewStore) -> None:
    upsert = _upsert(store)
    if store.engine.dialect.name == "postgresql":
        assert isinstance(upsert, JsonRowsStatement)
    else:
        assert isinstance(upsert, DriverStatement)
    instants = [WHEN, WHEN.astimezone(timezone(timedelta(hours=-8))),
                datetime(1, 1, 1, tzinfo=UTC), datetime(9999, 12, 31, 23, 59, 59, 999999,
                                                        tzinfo=UTC)]
    cases = [(when, text) for when in instants for text in AWKWARD_TEXTS]
    with store.engine.begin() as connection:
        upsert.execute(connection, [_values("driver", f"e{n}", when, text)
                                    for n, (when, text) in enumerate(cases)])
        connection.execute(insert(shared_rows), [
            dict(zip(SHARED_ROW_COLUMNS, _values("core", f"e{n}", when, text), strict=True))
            for n, (when, text) in enumerate(cases)])
    rows = shared_rows.c
    with store.engine.connect() as connection:
        stored = {(r.participant_id, r.event_id): (r.stored, r.row_json)
                  for r in connection.execute(
            select(rows.participant_id, rows.event_id, rows.row_json,
                   cast(rows.occurred_at, Text).label("stored")))}
    assert len(stored) == 2 * len(cases)
    for n, (_, text) in enumerate(cases):
        assert stored[("driver", f"e{n}")] == stored[("core", f"e{n}")]
        assert stored[("driver", f"e{n}")][1] == text


def test_nulls_and_large_integers_are_written_as_given(store: ViewStore) -> None:
    writer = row_writer(store.engine, participant_heads, ("participant_id",))
    rows = [("P1", 3, None, 0, "{}"), ("P2", 0, 2**62, 2**40, '{"a":[1,2]}')]
    with store.engine.begin() as connection:
        writer.execute(connection, rows)
    with store.engine.connect() as connection:
        found = sorted(tuple(r) for r in connection.execute(select(participant_heads)))
    assert found == rows


def test_insert_new_keeps_the_rows_already_there(store: ViewStore) -> None:
    pairs = row_writer(store.engine, recipient_participants)
    with store.engine.begin() as connection:
        pairs.execute(connection, [("police", "P1")])
    with store.engine.begin() as connection:
        pairs.execute(connection, [("police", "P1"), ("police", "P2"), ("police", "P2")])
        pairs.execute(connection, [])
    with store.engine.connect() as connection:
        found = sorted(tuple(r) for r in connection.execute(select(recipient_participants)))
    assert found == [("police", "P1"), ("police", "P2")]


def test_upsert_replaces_and_retract_removes_by_key(store: ViewStore) -> None:
    upsert = _upsert(store)
    retract = DriverStatement(store.engine, RETRACT, ("p", "e", "v"))
    with store.engine.begin() as connection:
        upsert.execute(connection, [_values("P1", "e1", WHEN, '{"v":1}'),
                                    _values("P1", "e1", WHEN, '{"v":1}', variant=1)])
    with store.engine.begin() as connection:
        upsert.execute(connection, [_values("P1", "e1", WHEN, '{"v":2}')])
        retract.execute(connection, [("P1", "e1", 1), ("P1", "nothing", 0)])
        retract.execute(connection, [])
    with store.engine.connect() as connection:
        found = list(connection.execute(select(shared_rows.c.variant, shared_rows.c.row_json)))
    assert found == [(0, '{"v":2}')]


def test_a_column_list_that_is_not_the_statements_parameters_is_refused() -> None:
    engine = create_engine("sqlite://")
    with pytest.raises(ViewStoreError, match="statement parameters"):
        DriverStatement(engine, RETRACT, ("p", "e"))
    with pytest.raises(ViewStoreError, match="statement parameters"):
        JsonRowsStatement(engine, RETRACT, ("p", "e", "v"))
