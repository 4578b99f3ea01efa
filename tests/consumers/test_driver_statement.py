"""DriverStatement writes exactly what SQLAlchemy Core would write, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import Text, cast, create_engine, insert, select

from consumers.driver_statement import DriverStatement
from consumers.errors import ViewStoreError
from consumers.store import (
    RETRACT,
    VIEW_ROW_COLUMNS,
    VIEW_ROW_KEY,
    ViewStore,
    upsert_statement,
    view_rows,
)

pytestmark = pytest.mark.integration

WHEN = datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=UTC)


def _values(recipient: str, event_id: str, when: datetime, text: str = "{}") -> tuple[object, ...]:
    return (recipient, event_id, "P1", "ContactLogged", when, "casemgmt", text)


def _upsert(store: ViewStore) -> DriverStatement:
    return DriverStatement(store.engine, upsert_statement(store.engine, view_rows, VIEW_ROW_KEY),
                           VIEW_ROW_COLUMNS)


def test_rows_written_by_the_driver_equal_rows_written_by_sqlalchemy(store: ViewStore) -> None:
    upsert = _upsert(store)
    instants = [WHEN, WHEN.astimezone(timezone(timedelta(hours=-8)))]
    with store.engine.begin() as connection:
        upsert.execute(connection, [_values("driver", f"e{n}", when)
                                    for n, when in enumerate(instants)])
        connection.execute(insert(view_rows), [
            dict(zip(VIEW_ROW_COLUMNS, _values("core", f"e{n}", when), strict=True))
            for n, when in enumerate(instants)])
    with store.engine.connect() as connection:
        stored = {(r.recipient, r.event_id): r.stored for r in connection.execute(
            select(view_rows.c.recipient, view_rows.c.event_id,
                   cast(view_rows.c.occurred_at, Text).label("stored")))}
    assert len(stored) == 4
    for n in range(len(instants)):
        assert stored[("driver", f"e{n}")] == stored[("core", f"e{n}")]


def test_upsert_replaces_and_retract_removes_by_key(store: ViewStore) -> None:
    upsert = _upsert(store)
    retract = DriverStatement(store.engine, RETRACT, ("p", "e", "r"))
    with store.engine.begin() as connection:
        upsert.execute(connection, [_values("police", "e1", WHEN, '{"v":1}'),
                                    _values("defender", "e1", WHEN, '{"v":1}')])
    with store.engine.begin() as connection:
        upsert.execute(connection, [_values("police", "e1", WHEN, '{"v":2}')])
        retract.execute(connection, [("P1", "e1", "defender"), ("P1", "nothing", "police")])
        retract.execute(connection, [])
    with store.engine.connect() as connection:
        found = list(connection.execute(select(view_rows.c.recipient, view_rows.c.row_json)))
    assert found == [("police", '{"v":2}')]


def test_a_column_list_that_is_not_the_statements_parameters_is_refused() -> None:
    engine = create_engine("sqlite://")
    with pytest.raises(ViewStoreError, match="statement parameters"):
        DriverStatement(engine, RETRACT, ("p", "e"))
