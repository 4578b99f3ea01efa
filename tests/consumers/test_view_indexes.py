"""The entries of a recipient's rows by type (``indexed_rows``) hold only the types read across
participants, and the queries of those types read them, on SQLite and on PostgreSQL (decisions
0010 and 0013)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import Engine, event, select

from consumers.api import crosswalk
from consumers.api.queries import ViewQueries
from consumers.console import listing
from consumers.errors import ViewStoreError
from consumers.store import (
    INDEXED_TYPES,
    RowChange,
    ViewStore,
    indexed_rows,
    indexed_view_rows,
    of_types,
    view_rows,
)
from processors.deadlines import REFERRAL_TYPE
from schemas.catalog import load_catalog

#: What a query plan says when it finds the entries, and then their shared rows, by key (not by
#: a scan of either table), on each database.
BY_KEY = {"sqlite": ("SEARCH indexed_rows USING PRIMARY KEY", "SEARCH s USING PRIMARY KEY"),
          "postgresql": ("indexed_rows_pkey", "shared_rows_pkey")}


def _reads_by_key(engine: Engine, statement: str, parameters: Any) -> None:
    plan = _plan(engine, statement, parameters)
    for step in BY_KEY[engine.dialect.name]:
        assert step in plan, plan


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
    _reads_by_key(filled.engine, statement, parameters)


@pytest.mark.parametrize("types", [[crosswalk.LINK_TYPE], sorted(
    listing.name_fields(load_catalog()))], ids=["links", "names"])
def test_the_console_searches_read_the_index(filled: ViewStore, types: list[str]) -> None:
    """The console's link and name searches select a recipient's rows of these types through
    their entries (``consumers.console.listing``)."""
    joined, entries = indexed_view_rows(types)
    query = select(view_rows.c.row_json).select_from(joined).where(
        entries.recipient == "police", of_types(entries.type, types))
    compiled = query.compile(filled.engine, compile_kwargs={"render_postcompile": True})
    with filled.engine.connect() as connection:
        assert len(connection.execute(query).all()) == len(types)
    parameters: Any = compiled.params
    if compiled.positional:
        parameters = tuple(parameters[name] for name in compiled.positiontup or ())
    _reads_by_key(filled.engine, str(compiled), parameters)


def test_a_type_outside_the_index_is_still_found(filled: ViewStore) -> None:
    query = select(view_rows.c.event_id).where(
        view_rows.c.recipient == "police", of_types(view_rows.c.type, ["ContactLogged",
                                                                       REFERRAL_TYPE]))
    with filled.engine.connect() as connection:
        assert len(connection.execute(query).all()) == 2


def test_the_entries_of_a_type_outside_them_are_refused() -> None:
    with pytest.raises(ViewStoreError, match="not indexed"):
        indexed_view_rows(["ContactLogged"])


def test_an_entry_shows_only_what_its_recipient_still_has(store: ViewStore) -> None:
    """A referral retracted from one recipient leaves the others' list, and only theirs."""
    store.apply([RowChange(r, "a", _row("a", REFERRAL_TYPE)) for r in ("police", "pd")], {})
    store.apply([RowChange("police", "a", None)], {})
    queries = ViewQueries(store.engine)
    assert queries.referrals("police", before=None, after=None, limit=5) == []
    assert [row["event_id"] for row in queries.referrals("pd", before=None, after=None,
                                                          limit=5)] == ["a"]
    with store.engine.begin() as connection:
        entries = connection.execute(select(indexed_rows)).all()
        assert [e[0] for e in entries] == ["pd"]
        # an entry left behind (as a writer's bug would leave it) still shows police nothing
        connection.execute(indexed_rows.insert(), [dict(entries[0]._mapping, recipient="police")])
    assert queries.referrals("police", before=None, after=None, limit=5) == []
