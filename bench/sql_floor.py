"""Benchmark: the database's own CPU for what the projector must write per event, at its floor.

The live projector writes, for each event, the event's row (``participant_events``), its
participant's head, the event's distinct rows once each (``shared_rows``: most recipients of an
event see the same row, so 1.169 rows per event on the simulated site by
``bench/row_sharing.py``, each naming its recipients), one ``indexed_rows`` entry per recipient
of a row of an indexed type (``consumers.store.INDEXED_TYPES``), its recipients in
``view_recipients`` and each recipient's ``recipient_participants`` pair, and per batch the
tracking row (``consumers.view_writer``, decision 0013). This bench writes exactly that set into
the hub's own schema (``ViewStore.create_schema``), with the sizes the projector writes on the
simulated site (``bench/projector_writes.py`` measured 283 bytes of event JSON, 706 of head, 367
per view row, 5.05 recipients per event), but as set-based statements: each table's rows of a
batch in one ``INSERT ... SELECT`` from a staging table, no Python per row and no round trip per
row. So what it measures is the least the database can spend on the projection's writes; the
projector's statements cost at least this.

Per batch of ``--batch`` events (distinct participants among ``--participants``): the batch's
keys go into a staging table (not counted), then the writes run and commit (counted). Counted:
on PostgreSQL the backend's CPU (``/proc/<pid>/stat``), on SQLite this process's CPU (SQLite
runs in it; the statements themselves do no Python work per row). ``--without`` leaves a part
out (repeatable), to see what it costs: ``view-rows`` (the shared rows), ``type-index`` (the
``indexed_rows`` entries: one event in sixteen is of an indexed type here, as on the simulated
site), ``recipients`` (``view_recipients``), ``pairs``, ``events``, ``heads``.

``--per-recipient-rows`` writes the view of projection versions 5-8 instead, for comparison:
one row per recipient and event in a table keyed (participant, event, recipient), without a
rowid on SQLite, with a partial index of the indexed types' rows by recipient and type (the
``type-index`` part; defined in this bench, the hub has neither since projection version 9).
With it, ``--every-type-index`` indexes every row by recipient and type, as versions 5-6 did.
``--shared-rows`` names the default (the commands in BENCHMARKS.md before version 9 use it).

    .venv/bin/python bench/sql_floor.py [--database-url postgresql+psycopg://...]
                                        [--events 20000] [--batch 50] [--rounds 3]
                                        [--without view-rows ...]
                                        [--per-recipient-rows [--every-type-index]]
                                        [--json]

Without ``--database-url`` the view is a fresh SQLite file in a scratch directory, configured
as the projector's (write-ahead log, the writer's page cache); with a PostgreSQL URL a fresh
database is made on that server and dropped after. Each round writes ``--events`` more events
into the same database; the figure of every round is printed (the first fills an empty
database). Exit codes: 0 figures printed, 1 the run failed, 2 the database cannot be reached.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Column,
    Connection,
    DateTime,
    Index,
    MetaData,
    PrimaryKeyConstraint,
    Table,
    bindparam,
    text,
)
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.schema import CreateTable

from consumers.projection_store import ProjectionStore
from consumers.store import INDEXED_TYPES, ViewStore, recipients_text, view_rows

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import machine_info
from pipeline_harness import BenchError, cpu_seconds_of, view_database

#: Sizes the projector writes on the simulated site (bench/projector_writes.py, 30,000 events).
EVENT_JSON_BYTES = 283
HEAD_JSON_BYTES = 706
ROW_JSON_BYTES = 367
RECIPIENTS = 5
PARTS = ("events", "heads", "view-rows", "type-index", "recipients", "pairs")
SHARED, PER_RECIPIENT = "shared rows", "per-recipient rows"

_STAGING = ("CREATE TEMPORARY TABLE floor_batch (p VARCHAR(64), e VARCHAR(64), s BIGINT, "
            "t VARCHAR(64), v INTEGER)")
#: Share of the simulated site's events of an indexed type (referrals, links, intakes: 792 of
#: 13,048 over 300 participants and a year), written as ReferralMade; the others ContactLogged.
INDEXED_SHARE = 0.061
#: Share of the simulated site's touched events with a second distinct row (1.169 - 1).
SECOND_VARIANT_SHARE = 0.169
_RECIPIENTS = "CREATE TEMPORARY TABLE floor_recipients (r VARCHAR(64))"
_VARIANTS = "CREATE TEMPORARY TABLE floor_variants (n INTEGER)"
#: The parts both layouts write alike (``WHERE true``: SQLite's parser needs it to tell the
#: upsert's ON CONFLICT from a join's ON).
_COMMON = {
    "events": "INSERT INTO participant_events (participant_id, event_id, seq, event_json) "
              "SELECT p, e, s, :event_json FROM floor_batch WHERE true "
              "ON CONFLICT (participant_id, event_id) DO UPDATE SET seq = excluded.seq, "
              "event_json = excluded.event_json",
    "heads": "INSERT INTO participant_heads (participant_id, partition, next_due_us, next_seq, "
             "head_json) SELECT p, 0, s, s, :head_json FROM floor_batch WHERE true "
             "ON CONFLICT (participant_id) DO UPDATE SET partition = excluded.partition, "
             "next_due_us = excluded.next_due_us, next_seq = excluded.next_seq, "
             "head_json = excluded.head_json",
}
_PAIRS = ("INSERT INTO recipient_participants (recipient, participant_id) "
          "SELECT r, p FROM floor_batch, floor_recipients WHERE true ORDER BY r, p "
          "ON CONFLICT DO NOTHING")
#: The hub's writes (``consumers.view_writer.SharedRowsWriter.write`` for events the view did
#: not hold), in its order: an event's distinct rows as variants 0..n-1 (a second one for
#: :data:`SECOND_VARIANT_SHARE` of the events), the entries of the indexed types' rows, the
#: batch's recipients, the pairs.
_SHARED_WRITES = {
    **_COMMON,
    "view-rows": "INSERT INTO shared_rows (participant_id, event_id, variant, recipients, type, "
                 "occurred_at, source_partner, row_json) SELECT p, e, v.n, :recipients, t, "
                 ":occurred_at, 'harbor-cm', :row_json FROM floor_batch, floor_variants v "
                 "WHERE v.n <= floor_batch.v "
                 "ON CONFLICT (participant_id, event_id, variant) DO UPDATE SET "
                 "recipients = excluded.recipients, type = excluded.type, "
                 "occurred_at = excluded.occurred_at, source_partner = excluded.source_partner, "
                 "row_json = excluded.row_json",
    "type-index": "INSERT INTO indexed_rows (recipient, type, occurred_at, event_id, "
                  "participant_id) SELECT r, t, :occurred_at, e, p "
                  "FROM floor_batch, floor_recipients WHERE t = 'ReferralMade' "
                  "ON CONFLICT DO NOTHING",
    "recipients": "INSERT INTO view_recipients (recipient) SELECT r FROM floor_recipients "
                  "WHERE true ON CONFLICT DO NOTHING",
    "pairs": _PAIRS,
}

#: ``--per-recipient-rows``: the view of projection versions 5-8, defined here (the hub has it
#: no more): one row per recipient and event, keyed (participant, event, recipient), clustered
#: on SQLite (decision 0005); the column order of that ``view_rows``.
_OLD = MetaData()
old_view_rows = Table(
    "per_recipient_rows", _OLD,
    *(Column(column.name, column.type, nullable=False) for column in view_rows.columns),
    PrimaryKeyConstraint("participant_id", "event_id", "recipient"),
    sqlite_with_rowid=False,
)
_by_type = (old_view_rows.c.recipient, old_view_rows.c.type, old_view_rows.c.occurred_at,
            old_view_rows.c.event_id)
#: Versions 7-8: the indexed types' rows only, by recipient and type (decision 0010).
_INDEXED_TYPES_INDEX = Index(
    "ix_per_recipient_rows_indexed_types", *_by_type,
    sqlite_where=old_view_rows.c.type.in_(INDEXED_TYPES),
    postgresql_where=old_view_rows.c.type.in_(INDEXED_TYPES))
#: Versions 5-6 (``--every-type-index``): every row by recipient and type.
_EVERY_TYPE_INDEX = Index("ix_per_recipient_rows_recipient_type_time", *_by_type)
_PER_RECIPIENT_WRITES = {
    **_COMMON,
    "view-rows": "INSERT INTO per_recipient_rows (recipient, event_id, participant_id, type, "
                 "occurred_at, source_partner, row_json) SELECT r, e, p, t, :occurred_at, "
                 "'harbor-cm', :row_json FROM floor_batch, floor_recipients WHERE true "
                 "ON CONFLICT (participant_id, event_id, recipient) DO UPDATE SET "
                 "type = excluded.type, occurred_at = excluded.occurred_at, "
                 "source_partner = excluded.source_partner, row_json = excluded.row_json",
    "pairs": _PAIRS,
}
_TRACKING = "UPDATE tracking SET next_offset = next_offset + :n WHERE topic = 'floor'"


def _cpu_meter(connection: Connection) -> Callable[[], float]:
    """CPU seconds so far of whatever runs ``connection``'s statements."""
    if connection.dialect.name != "postgresql":
        return time.process_time
    pid = int(connection.exec_driver_sql("SELECT pg_backend_pid()").scalar_one())

    def backend() -> float:
        seconds = cpu_seconds_of(pid)
        if seconds is None:
            raise BenchError(f"the PostgreSQL backend {pid} is not readable in /proc")
        return seconds
    return backend


def _prepare(connection: Connection, args: argparse.Namespace) -> None:
    """The staging tables and the tracking row; with ``--per-recipient-rows`` its table and
    index (the hub's own tables are there already)."""
    connection.exec_driver_sql(_STAGING)
    connection.exec_driver_sql(_VARIANTS)
    connection.exec_driver_sql("INSERT INTO floor_variants (n) VALUES (0), (1)")
    connection.exec_driver_sql(_RECIPIENTS)
    connection.execute(text("INSERT INTO floor_recipients (r) VALUES (:r)"),
                       [{"r": f"recipient-{n}"} for n in range(RECIPIENTS)])
    connection.execute(text("INSERT INTO tracking (topic, partition, next_offset) "
                            "VALUES ('floor', 0, 0)"))
    if args.per_recipient_rows:
        connection.execute(CreateTable(old_view_rows))  # its indexes as asked, below
        if args.every_type_index:
            _EVERY_TYPE_INDEX.create(connection)
        elif "type-index" not in args.without:
            _INDEXED_TYPES_INDEX.create(connection)
    connection.commit()


def _writes(args: argparse.Namespace) -> list[Any]:
    """The statements of a batch, in the projector's order, less the parts left out."""
    chosen = _PER_RECIPIENT_WRITES if args.per_recipient_rows else _SHARED_WRITES
    return [text(sql).bindparams(bindparam("occurred_at", type_=DateTime(timezone=True)))
            if ":occurred_at" in sql else text(sql)
            for part, sql in chosen.items() if part not in args.without]


def run_round(connection: Connection, args: argparse.Namespace, seq: list[int],
              rng: random.Random) -> dict[str, float]:
    """Write ``args.events`` events in batches; return CPU per event and events/s."""
    cpu = _cpu_meter(connection)
    writes = _writes(args)
    tracking = text(_TRACKING)
    values = {"event_json": "e" * EVENT_JSON_BYTES, "head_json": "h" * HEAD_JSON_BYTES,
              "row_json": "r" * ROW_JSON_BYTES, "n": args.batch,
              "recipients": recipients_text(f"recipient-{n}" for n in range(RECIPIENTS))}
    participants = [f"P{n:07d}" for n in range(args.participants)]
    # PostgreSQL's DELETE leaves dead rows that no autovacuum reaches in a temporary table
    empty = ("TRUNCATE floor_batch" if connection.dialect.name == "postgresql"
             else "DELETE FROM floor_batch")
    counted = written = 0.0
    events = 0
    started = time.perf_counter()
    while events < args.events:
        batch = rng.sample(participants, min(args.batch, args.participants))
        connection.exec_driver_sql(empty)
        seq[0] += 1
        connection.execute(text("INSERT INTO floor_batch (p, e, s, t, v) "
                                "VALUES (:p, :e, :s, :t, :v)"),
                           [{"p": p, "e": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
                             "s": seq[0], "t": "ReferralMade" if rng.random() < INDEXED_SHARE
                             else "ContactLogged",
                             "v": int(rng.random() < SECOND_VARIANT_SHARE)} for p in batch])
        parameters = dict(values, occurred_at=datetime.now(UTC))
        before = cpu()
        tick = time.perf_counter()
        for statement in writes:
            connection.execute(statement, parameters)
        connection.execute(tracking, values)
        connection.commit()
        counted += cpu() - before
        written += time.perf_counter() - tick
        events += len(batch)
    return {"events": events, "cpu_ms_per_event": counted / events * 1e3,
            "events_per_s_writing": events / written,
            "wall_s": time.perf_counter() - started}


def _table_rows(connection: Connection, args: argparse.Namespace) -> dict[str, int]:
    """Rows in each table the run wrote (a check that each part wrote what it should)."""
    tables = (["per_recipient_rows"] if args.per_recipient_rows
              else ["shared_rows", "indexed_rows", "view_recipients"])
    return {name: int(connection.exec_driver_sql(f"SELECT count(*) FROM {name}").scalar_one())
            for name in (*tables, "recipient_participants", "participant_events")}


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Make the database, run the rounds, return the figures."""
    layout = PER_RECIPIENT if args.per_recipient_rows else SHARED
    with tempfile.TemporaryDirectory(prefix="leadhub-floor-") as scratch, \
            view_database(args.database_url, Path(scratch)) as url:
        store = ViewStore(url)
        try:
            store.create_schema()
            ProjectionStore(store)
            store.tune_for_writing()
            rng, seq, rounds = random.Random(1), [0], []
            with store.engine.connect() as connection:
                _prepare(connection, args)
                for n in range(args.rounds):
                    figures = run_round(connection, args, seq, rng)
                    rounds.append(figures)
                    print(f"[floor] {layout}, round {n + 1}: "
                          f"{figures['cpu_ms_per_event']:.3f} ms of database CPU per event",
                          file=sys.stderr)
                tables = _table_rows(connection, args)
            backend = store.engine.dialect.name
        finally:
            store.close()
    return {"machine": machine_info(), "backend": backend,
            "config": {"events": args.events, "batch": args.batch,
                       "participants": args.participants, "recipients": RECIPIENTS,
                       "layout": layout, "without": sorted(args.without),
                       "every_type_index": args.every_type_index},
            "rounds": rounds, "table_rows": tables}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=(
        "Prints each round's database CPU per event; --json prints every figure."))
    parser.add_argument("--database-url", default=None,
                        help="PostgreSQL server URL: a fresh database there (default: a fresh "
                             "SQLite file)")
    parser.add_argument("--events", type=int, default=20_000,
                        help="events written per round (%(default)s)")
    parser.add_argument("--batch", type=int, default=50,
                        help="events per transaction (%(default)s)")
    parser.add_argument("--participants", type=int, default=1000,
                        help="participants the events belong to (%(default)s)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds (%(default)s)")
    parser.add_argument("--without", action="append", default=[], choices=PARTS,
                        help="leave this part of the writes out (repeatable; ``recipients`` "
                             "only in the default layout)")
    layouts = parser.add_mutually_exclusive_group()
    layouts.add_argument("--shared-rows", action="store_true",
                         help="the hub's view (the default): each distinct row of an event "
                              "once, naming its recipients, and the indexed types' entries "
                              "per recipient in indexed_rows")
    layouts.add_argument("--per-recipient-rows", action="store_true",
                         help="the view of projection versions 5-8 instead: one row per "
                              "recipient and event, the indexed types' rows in a partial "
                              "index by recipient and type")
    parser.add_argument("--every-type-index", action="store_true",
                        help="with --per-recipient-rows: index every row by recipient and type "
                             "(projection versions 5-6) instead of the indexed types' rows only")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    if args.every_type_index and not args.per_recipient_rows:
        parser.error("--every-type-index indexes the per-recipient rows: add "
                     "--per-recipient-rows")
    if args.every_type_index and "type-index" in args.without:
        parser.error("--every-type-index and --without type-index contradict each other")
    if args.per_recipient_rows and "recipients" in args.without:
        parser.error("--without recipients: the per-recipient rows have no view_recipients")
    try:
        figures = run(args)
    except BenchError as exc:
        print(f"sql_floor: {exc}", file=sys.stderr)
        return exc.exit_code
    except SQLAlchemyError as exc:
        print(f"sql_floor: the database failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(figures, indent=2))
        return 0
    config = figures["config"]
    left_out = f", without {', '.join(config['without'])}" if config["without"] else ""
    index = ", every row indexed by type" if config["every_type_index"] else ""
    print(f"{config['layout']} on {figures['backend']}{index}{left_out}: "
          f"{config['events']:,} events per round in batches of {config['batch']}, "
          f"{RECIPIENTS} recipients each")
    for n, figures_of_round in enumerate(figures["rounds"], 1):
        print(f"round {n}: {figures_of_round['cpu_ms_per_event']:.3f} ms of "
              f"{figures['backend']} CPU per event, "
              f"{figures_of_round['events_per_s_writing']:,.0f} events/s while writing")
    print("rows written: " + ", ".join(f"{name} {count:,}"
                                       for name, count in figures["table_rows"].items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
