"""The index of a recipient's rows by type holds only the types read across participants, and
the queries of those types use it, on SQLite and on PostgreSQL (decision 0010)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import Engine, event, inspect, select, text

from consumers.api import crosswalk
from consumers.api.queries import ViewQueries
from consumers.console import listing
from consumers.store import (
    INDEXED_TYPES,
    INDEXED_TYPES_INDEX,
    PROJECTION_VERSION,
    RowChange,
    ViewStore,
    of_types,
    view_rows,
)
from processors.deadlines import REFERRAL_TYPE
from schemas.catalog import load_catalog
from tests.factories import view_of_version

OLD_INDEX = "ix_view_rows_recipient_type_time"


def test_the_indexed_types_are_every_type_read_across_participants() -> None:
    read_by_type = {REFERRAL_TYPE, crosswalk.LINK_TYPE, listing.LINK_TYPE,
                    *listing.name_fields(load_catalog())}
    assert read_by_type <= set(INDEXED_TYPES)


def _row(event_id: str, kind: str) -> dict[str, Any]:
    return {"event_id": event_id, "type": kind, "participant_id": "P1",
            "occurred_at": "2026-01-02T03:04:05Z", "source_partner": "casemgmt", "fields": {},
            "categories": ["PROGRAM_STATUS"], "consent_ids": [], "notice": None}


@pytest.fixture
def filled(store: ViewStore) -> ViewStore:
    store.apply([RowChange("police", f"e{n}", _row(f"e{n}", kind))
                 for n, kind in enumerate([*INDEXED_TYPES, "ContactLogged"])], {})
    return store


@pytest.fixture
def executed(filled: ViewStore) -> Iterator[list[tuple[str, Any]]]:
    """The statements the store's engine runs, with their parameters."""
    seen: list[tuple[str, Any]] = []

    def record(conn: Any, cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        seen.append((statement, parameters))

    event.listen(filled.engine, "before_cursor_execute", record)
    yield seen
    event.remove(filled.engine, "before_cursor_execute", record)


def _plan(engine: Engine, statement: str, parameters: Any) -> str:
    with engine.connect() as connection:
        if engine.dialect.name == "sqlite":
            rows = connection.exec_driver_sql(f"EXPLAIN QUERY PLAN {statement}", parameters)
            return "\n".join(str(row[-1]) for row in rows)
        connection.exec_driver_sql("SET enable_seqscan = off")  # the table is tiny
        return "\n".join(str(row[0]) for row in connection.exec_driver_sql(
            f"EXPLAIN {statement}", parameters))


def test_the_referral_list_reads_the_index(filled: ViewStore,
                                           executed: list[tuple[str, Any]]) -> None:
    rows = ViewQueries(filled.engine).referrals("police", before=None, after=None, limit=10)
    assert [row["type"] for row in rows] == [REFERRAL_TYPE]
    statement, parameters = executed[-1]
    assert INDEXED_TYPES_INDEX.name in _plan(filled.engine, statement, parameters)


@pytest.mark.parametrize("types", [[crosswalk.LINK_TYPE], sorted(
    listing.name_fields(load_catalog()))], ids=["links", "names"])
def test_the_console_searches_read_the_index(filled: ViewStore, types: list[str]) -> None:
    """The console's link and name searches select a recipient's rows by ``of_types`` of these
    types (``consumers.console.listing``); such a query reads the index."""
    query = select(view_rows.c.row_json).where(view_rows.c.recipient == "police",
                                               of_types(view_rows.c.type, types))
    compiled = query.compile(filled.engine, compile_kwargs={"render_postcompile": True})
    with filled.engine.connect() as connection:
        assert len(connection.execute(query).all()) == len(types)
    parameters: Any = compiled.params
    if compiled.positional:
        parameters = tuple(parameters[name] for name in compiled.positiontup or ())
    assert INDEXED_TYPES_INDEX.name in _plan(filled.engine, str(compiled), parameters)


def test_a_type_outside_the_index_is_still_found(filled: ViewStore) -> None:
    query = select(view_rows.c.event_id).where(
        view_rows.c.recipient == "police", of_types(view_rows.c.type, ["ContactLogged",
                                                                       REFERRAL_TYPE]))
    with filled.engine.connect() as connection:
        assert len(connection.execute(query).all()) == 2


def test_a_view_of_version_6_is_upgraded_where_it_is(database_url: str) -> None:
    """Version 6 indexed every row by recipient and type; at start that index is dropped, the
    index of the indexed types made, and the view is current with its rows."""
    store = ViewStore(database_url)
    store.create_schema()
    store.apply([RowChange("r", "a", _row("a", REFERRAL_TYPE))], {})
    upgraded = view_of_version(store, "6", f"DROP INDEX {INDEXED_TYPES_INDEX.name}",
                               f"CREATE INDEX {OLD_INDEX} ON view_rows "
                               "(recipient, type, occurred_at, event_id)")
    indexes = {i["name"] for i in inspect(upgraded.engine).get_indexes("view_rows")}
    assert OLD_INDEX not in indexes
    assert INDEXED_TYPES_INDEX.name in indexes
    with upgraded.engine.connect() as connection:
        version = connection.execute(text("SELECT value FROM view_meta")).scalar_one()
    assert version == PROJECTION_VERSION
    rows = ViewQueries(upgraded.engine).referrals("r", before=datetime(2027, 1, 1, tzinfo=UTC),
                                                  after=None, limit=5)
    assert [row["event_id"] for row in rows] == ["a"]
    upgraded.close()
