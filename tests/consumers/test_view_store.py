"""Contract tests of the SQL view store: on SQLite and on PostgreSQL, but for the write-ahead
log's checkpoints, which are SQLite's."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from consumers import sqlite_wal
from consumers.api.queries import ViewQueries
from consumers.errors import ProjectionVersionMismatch
from consumers.store import RowChange, ViewStore
from processors.view import ViewChange, ViewRow
from tests.factories import listed_pairs, view_of_version

pytestmark = pytest.mark.integration


def _row(event_id: str, participant: str = "P1", when: str = "2026-01-02T03:04:05.000006Z",
         **fields: Any) -> dict[str, Any]:
    return {"event_id": event_id, "type": "ContactLogged", "participant_id": participant,
            "occurred_at": when, "source_partner": "casemgmt", "fields": fields,
            "categories": ["PROGRAM_STATUS"], "consent_ids": [], "notice": None}


def test_upsert_then_retract_leaves_only_live_rows(store: ViewStore) -> None:
    store.apply([RowChange("police", "e1", _row("e1")),
                 RowChange("police", "e2", _row("e2", when="2026-01-03T00:00:00Z")),
                 RowChange("casemgmt", "e1", _row("e1", note="x"))],
                {("changes", 0): 3})
    store.apply([RowChange("police", "e1", None)], {("changes", 0): 4})
    assert [r["event_id"] for r in store.rows_for("police")] == ["e2"]
    assert store.rows_for("casemgmt")[0]["fields"] == {"note": "x"}
    assert store.committed_offsets("changes") == {0: 4}


def test_last_change_in_a_batch_wins(store: ViewStore) -> None:
    store.apply([RowChange("police", "e1", _row("e1", v=1)),
                 RowChange("police", "e1", None),
                 RowChange("police", "e1", _row("e1", v=3))], {("changes", 1): 10})
    assert [r["fields"] for r in store.rows_for("police")] == [{"v": 3}]


def test_rows_are_filtered_by_participant_and_ordered_by_time(store: ViewStore) -> None:
    store.apply([RowChange("r", "b", _row("b", "P1", "2026-02-01T00:00:00Z")),
                 RowChange("r", "a", _row("a", "P1", "2026-03-01T00:00:00Z")),
                 RowChange("r", "c", _row("c", "P2", "2026-01-01T00:00:00Z"))], {})
    assert [r["event_id"] for r in store.rows_for("r", "P1")] == ["b", "a"]
    assert [r["event_id"] for r in store.rows_for("r")] == ["c", "b", "a"]


def test_failed_batch_stores_neither_rows_nor_offsets(store: ViewStore) -> None:
    store.apply([RowChange("r", "e1", _row("e1"))], {("changes", 0): 1})
    broken = _row("e2")
    del broken["participant_id"]
    with pytest.raises(KeyError):
        store.apply([RowChange("r", "e2", _row("e2", "P9")), RowChange("r", "e3", broken)],
                    {("changes", 0): 3})
    assert [r["event_id"] for r in store.rows_for("r")] == ["e1"]
    assert store.committed_offsets("changes") == {0: 1}


def test_other_projection_version_demands_a_rebuild(database_url: str) -> None:
    ViewStore(database_url).create_schema()
    engine = create_engine(database_url)
    with engine.begin() as connection:
        connection.execute(text("UPDATE view_meta SET value = '0' "
                                "WHERE key = 'projection_version'"))
    engine.dispose()
    with pytest.raises(ProjectionVersionMismatch, match="rebuild"):
        ViewStore(database_url).create_schema()


def _change(recipient: str, participant: str, event_id: str, *, gone: bool = False) -> ViewChange:
    row = None if gone else ViewRow(
        recipient, event_id, "ContactLogged", participant, datetime(2026, 1, 2, tzinfo=UTC),
        "casemgmt", {}, ("PROGRAM_STATUS",), (), None)
    return ViewChange("retract" if gone else "upsert", recipient, participant, event_id, row)


def test_each_recipients_participants_follow_their_rows(store: ViewStore) -> None:
    """A pair is listed from its first row until its last is retracted, also when one batch
    retracts and adds rows of the same pair."""
    def write(*changes: ViewChange) -> set[tuple[str, str]]:
        with store.engine.begin() as connection:
            store.write_view_changes(connection, list(changes))
        return listed_pairs(store.engine)

    assert write(_change("police", "P1", "e1"), _change("police", "P1", "e2"),
                 _change("defender", "P1", "e1"), _change("police", "P2", "e3")) == {
        ("police", "P1"), ("defender", "P1"), ("police", "P2")}
    assert write(_change("police", "P1", "e1", gone=True)) == {
        ("police", "P1"), ("defender", "P1"), ("police", "P2")}
    assert write(_change("police", "P1", "e2", gone=True), _change("defender", "P1", "e1",
                                                                   gone=True)) == {
        ("police", "P2")}
    assert write(_change("police", "P2", "e3", gone=True), _change("police", "P2", "e4")) == {
        ("police", "P2")}


def test_seeded_rows_list_their_participants_too(store: ViewStore) -> None:
    store.apply([RowChange("r", "a", _row("a", "P1")), RowChange("r", "b", _row("b", "P2")),
                 RowChange("s", "a", _row("a", "P1"))], {})
    store.apply([RowChange("r", "a", None)], {})
    assert listed_pairs(store.engine) == {("r", "P2"), ("s", "P1")}


def test_a_view_of_version_8_is_refused_with_what_to_do(database_url: str) -> None:
    """Version 8 held one row per recipient in a table named ``view_rows``; version 9 stores
    shared rows and makes ``view_rows`` a view of them. An older view is not touched: the start
    fails with the way to rebuild it."""
    store = ViewStore(database_url)
    store.create_schema()
    with store.engine.begin() as connection:
        connection.execute(text("DROP VIEW view_rows"))
        connection.execute(text("CREATE TABLE view_rows (recipient VARCHAR(64))"))
        connection.execute(text("INSERT INTO view_rows VALUES ('r')"))
    with pytest.raises(ProjectionVersionMismatch, match=r"version 8.*audit replay --out"):
        view_of_version(store, "8")
    with store.engine.connect() as connection:
        assert connection.execute(text("SELECT recipient FROM view_rows")).scalars().all() == [
            "r"]
    store.close()


def test_background_checkpoint_copies_the_log_while_the_writer_goes_on(
        tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """A SQLite file view: the checkpointer copies every committed frame of the write-ahead log
    into the database from its own thread; past RESTART_PAGES it starts the log over itself, and
    the writer's own checkpoints wait for FALLBACK_PAGES."""
    store = ViewStore(f"sqlite:///{tmp_path / 'view.sqlite'}")
    store.create_schema()
    checkpointer = store.wal_checkpointer()
    assert checkpointer is not None
    with store.engine.connect() as connection:
        assert connection.exec_driver_sql(
            "PRAGMA wal_autocheckpoint").scalar() == sqlite_wal.FALLBACK_PAGES
    changes = [RowChange("r", f"e{n}", _row(f"e{n}", note="x" * 200)) for n in range(300)]
    store.apply(changes, {("changes", 0): 300})
    busy, frames, copied = checkpointer.checkpoint()
    assert (busy, copied) == (0, frames) and frames > 10
    assert checkpointer.restarts == 0  # passive only: the writer's next transaction restarts
    store.apply([RowChange("r", "late", _row("late"))], {("changes", 0): 301})
    _, frames_after_restart, _ = checkpointer.checkpoint()
    assert 0 < frames_after_restart < frames

    monkeypatch.setattr(sqlite_wal, "RESTART_PAGES", 1)
    checkpointer.interval_s = 0.05
    checkpointer.start()
    for n in range(20):
        store.apply([RowChange("r", f"x{n}", _row(f"x{n}"))], {("changes", 0): 302 + n})
    deadline = time.monotonic() + 10
    while checkpointer.restarts < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    checkpointer.stop()
    assert checkpointer.runs >= 2 and checkpointer.restarts >= 2
    assert len(store.rows_for("r")) == 321
    assert store.committed_offsets("changes") == {0: 321}
    store.close()


def test_no_background_checkpoint_without_a_sqlite_file(tmp_path: Any) -> None:
    assert ViewStore("sqlite://").wal_checkpointer() is None
    assert ViewStore("postgresql+psycopg://nobody@127.0.0.1:1/none").wal_checkpointer() is None


#: Partner ids that contain one another, or differ where ``LIKE`` would see a wildcard (``_``).
CLOSE_NAMES = ["police", "police-2", "x-police", "a_b", "axb", "p", "b"]


def test_a_recipient_sees_exactly_the_rows_that_name_it(store: ViewStore) -> None:
    """A shared row names its recipients in one text (decision 0013): each recipient finds the
    rows naming it and no other's, whatever its id has in common with another's."""
    changes = [RowChange(name, f"own-{name}", _row(f"own-{name}", note=name))
               for name in CLOSE_NAMES]
    changes += [RowChange(name, "shared", _row("shared")) for name in ("police", "a_b")]
    store.apply(changes, {})
    queries = ViewQueries(store.engine)
    for name in CLOSE_NAMES:
        expected = {f"own-{name}"} | ({"shared"} if name in ("police", "a_b") else set())
        assert {row["event_id"] for row in store.rows_for(name)} == expected, name
        timeline = queries.timeline(name, "P1", types=None, since=None, until=None, after=None,
                                    limit=50)
        assert {row["event_id"] for row in timeline} == expected, name
        caseload = queries.caseload_rows(name, None, 10, ["ContactLogged"])
        assert {p: {row["event_id"] for row in rows} for p, rows in caseload.items()} == {
            "P1": expected}, name
        assert {row["event_id"] for row in queries.rows_of(name, ["P1"])["P1"]} == expected
        assert [row["fields"] for row in store.rows_for(name)
                if row["event_id"] != "shared"] == [{"note": name}]
    store.apply([RowChange("police", "shared", None)], {})
    assert {row["event_id"] for row in store.rows_for("police")} == {"own-police"}
    assert {row["event_id"] for row in store.rows_for("a_b")} == {"own-a_b", "shared"}


def test_an_event_shown_alike_is_stored_once_and_split_when_it_differs(store: ViewStore) -> None:
    store.apply([RowChange(name, "e1", _row("e1")) for name in ("r", "s", "t")], {})
    assert _shared(store) == [(0, ",r,s,t,")]
    store.apply([RowChange("s", "e1", _row("e1", note="more"))], {})
    assert _shared(store) == [(0, ",r,t,"), (1, ",s,")]
    store.apply([RowChange("r", "e1", None), RowChange("t", "e1", None)], {})
    assert _shared(store) == [(0, ",s,")]
    assert [row["fields"] for row in store.rows_for("s")] == [{"note": "more"}]
    listed_pairs(store.engine)


def _shared(store: ViewStore) -> list[tuple[int, str]]:
    with store.engine.connect() as connection:
        return [(int(v), str(r)) for v, r in connection.execute(text(
            "SELECT variant, recipients FROM shared_rows ORDER BY variant"))]
