"""The SQL view: each event's distinct rows once, naming their recipients (read as one row per
recipient and event through the SQL view ``view_rows``), plus the projector's tracking rows.

The store is an adapter (SQLAlchemy Core; SQLite and PostgreSQL). It never evaluates policy: the
projector decided what each recipient sees, and the store keeps exactly those rows. The tracking
rows (next offset of ``lead.events`` per partition) are written in the same transaction as the
rows, so a restarted projector resumes exactly where the last committed batch ended — nothing
lost, nothing applied twice (see :mod:`consumers.projection_store`).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    DateTime,
    Engine,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    and_,
    create_engine,
    event,
    func,
    insert,
    literal,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.schema import ExecutableDDLElement
from sqlalchemy.types import TypeEngine

from consumers.driver_statement import (
    DriverStatement,
    JsonRowsStatement,
    RowWriter,
    json_rows_select,
)
from consumers.errors import ProjectionVersionMismatch, ViewStoreError
from consumers.sqlite_wal import (
    WalCheckpointer,
    configure_fallback_checkpoint,
    configure_wal,
    configure_writer_cache,
)
from processors.view import ViewChange

log = logging.getLogger("leadhub.view")

#: Bump when the projection's output changes: an older view must be rebuilt by replay.
#: 3: the projector writes SQL directly (participant heads, events, tracking rows in the view
#: database); a view of version 2 came through lead.view.changes and has no projector state.
#: 4: the 42 CFR Part 2 consent rule: a Part 2 record reaches another partner only under a
#: complete Part 2 consent naming its source (rows a version-3 view shows under an ordinary or
#: v1 consent are gone); consents may end at a program exit (the projector's stored state).
#: 5: ``view_rows`` keyed (participant_id, event_id, recipient), clustered on SQLite (decision
#: 0005); the same rows.
#: 6: the caseload lists a recipient's participants from ``recipient_participants`` instead of an
#: index of every row by recipient (decision 0008); the same rows. A view of version 5 is
#: upgraded in place at start (:data:`UPGRADES_IN_PLACE`).
#: 7: ``view_rows`` is indexed by recipient and type only for the :data:`INDEXED_TYPES`
#: (decision 0010); the same rows. A view of version 6 is upgraded in place at start.
#: 8: on PostgreSQL the projection's identifiers compare byte for byte (:func:`identifier`,
#: decision 0011); the same rows. A view of version 7 is upgraded in place at start.
#: 9: the rows an event shows several recipients alike are stored once (``shared_rows``), and
#: ``view_rows`` is a SQL view of them (decision 0013); the same rows. Older views are rebuilt.
PROJECTION_VERSION = "9"

metadata = MetaData()


def identifier(length: int = 64) -> TypeEngine[str]:
    """The type of an identifier column of the projection's tables (ids, partner ids, types,
    topics): text compared byte for byte, as SQLite and Python compare it; on PostgreSQL with
    ``COLLATE "C"``, so that its keys and indexes compare with ``memcmp`` instead of the
    cluster's locale (the database's floor per event a tenth lower than in ``C.UTF-8``, a third
    lower than in ``en_US.UTF-8``; decision 0011) and order the same on every cluster."""
    return String(length).with_variant(String(length, collation="C"), "postgresql")

#: The view's rows, each stored once for all the recipients it is the same for (decision 0013).
#: Most recipients of an event see the same row (a row's JSON names no recipient): on the
#: simulated site 1.17 distinct rows per event against 5.14 recipients' rows, and what costs the
#: databases is the number of rows they write. ``recipients`` names them as ``,a,b,`` (sorted;
#: a partner id holds no comma); ``variant`` numbers an event's distinct rows from 0, in the
#: order of their ``recipients``. The rows of one event share their key's first two parts, so a
#: participant's rows are one range of the key; on SQLite the table *is* that key's B-tree (no
#: rowid, decision 0005).
shared_rows = Table(
    "shared_rows",
    metadata,
    Column("participant_id", identifier(), nullable=False),
    Column("event_id", identifier(), nullable=False),
    Column("variant", Integer, nullable=False, autoincrement=False),
    Column("recipients", Text, nullable=False),
    Column("type", identifier(), nullable=False),
    Column("occurred_at", DateTime(timezone=True), nullable=False),
    Column("source_partner", identifier(), nullable=False),
    Column("row_json", Text, nullable=False),
    PrimaryKeyConstraint("participant_id", "event_id", "variant"),
    sqlite_with_rowid=False,
)
SHARED_ROW_COLUMNS = tuple(column.name for column in shared_rows.columns)

#: Every recipient that has or had a row: what :data:`view_rows` joins the shared rows with.
view_recipients = Table(
    "view_recipients",
    metadata,
    Column("recipient", identifier(), primary_key=True),
)

#: The types the read path looks up across a recipient's participants: the referral list
#: (``consumers.api.queries``), and the console's searches of the caller's identifier links and
#: of the names in its intakes (``consumers.console.listing``). Every other read goes through a
#: participant (the key's prefix). ``tests/consumers/test_view_indexes.py`` checks that it covers
#: the catalog's types with name fields.
INDEXED_TYPES = ("IdentifierLinked", "IntakeCompleted", "ReferralMade")

#: A recipient's rows of the :data:`INDEXED_TYPES` in time order: one entry per recipient and
#: row of those types (one event in sixteen on the simulated site), written with the shared
#: rows. Read joined to :data:`view_rows` (:func:`indexed_view_rows`), which checks the
#: recipient again: an entry never shows a row its recipient does not have.
indexed_rows = Table(
    "indexed_rows",
    metadata,
    Column("recipient", identifier(), nullable=False),
    Column("type", identifier(), nullable=False),
    Column("occurred_at", DateTime(timezone=True), nullable=False),
    Column("event_id", identifier(), nullable=False),
    Column("participant_id", identifier(), nullable=False),
    PrimaryKeyConstraint("recipient", "type", "occurred_at", "event_id", "participant_id"),
    sqlite_with_rowid=False,
)

#: What each recipient sees, one row per (recipient, event): a SQL view of the shared rows, each
#: joined with the recipients it names. Every reader reads this (a query names its recipient);
#: only the view writers (:mod:`consumers.view_writer`, :mod:`consumers.audit.view_file`) know
#: the shared rows. Described here for SQLAlchemy, created by :func:`view_rows_ddl`.
view_rows = Table(
    "view_rows",
    MetaData(),
    Column("recipient", identifier(), nullable=False),
    Column("event_id", identifier(), nullable=False),
    Column("participant_id", identifier(), nullable=False),
    Column("type", identifier(), nullable=False),
    Column("occurred_at", DateTime(timezone=True), nullable=False),
    Column("source_partner", identifier(), nullable=False),
    Column("row_json", Text, nullable=False),
)

#: ``instr`` (SQLite) and ``strpos`` (PostgreSQL) find text as it is, with no wildcard: a
#: partner id with ``_`` in it matches only itself, which ``LIKE`` would not promise.
_FIND = {"sqlite": "instr", "postgresql": "strpos"}


def view_rows_ddl(dialect: str) -> str:
    """``CREATE VIEW view_rows``: every shared row once per recipient it names."""
    find = _FIND.get(dialect)
    if find is None:
        raise ViewStoreError(f"unsupported view database {dialect!r}: use SQLite or PostgreSQL")
    create = ("CREATE OR REPLACE VIEW" if dialect == "postgresql"
              else "CREATE VIEW IF NOT EXISTS")
    return (f"{create} view_rows AS SELECT r.recipient AS recipient, s.event_id AS event_id, "
            "s.participant_id AS participant_id, s.type AS type, s.occurred_at AS occurred_at, "
            "s.source_partner AS source_partner, s.row_json AS row_json "
            "FROM view_recipients AS r JOIN shared_rows AS s "
            f"ON {find}(s.recipients, ',' || r.recipient || ',') > 0")


def names_recipient(dialect: str, recipients: Any, recipient: Any) -> Any:
    """SQL: the shared rows' ``recipients`` name ``recipient`` (as :data:`view_rows` tests it),
    for a query that reads ``shared_rows`` itself: SQLite does not flatten :data:`view_rows`
    into the right side of an outer join, and would read all of it there."""
    find = getattr(func, _FIND[dialect])
    return find(recipients, literal(",") + recipient + literal(",")) > 0


def recipients_text(recipients: Iterable[str]) -> str:
    """How a shared row names its recipients: ``,a,b,`` in sorted order."""
    return ",".join(["", *sorted(recipients), ""])


def recipients_of(text: str) -> list[str]:
    """Invert :func:`recipients_text`."""
    return text[1:-1].split(",") if len(text) > 2 else []


def of_types(column: Any, types: Collection[str]) -> Any:
    """``column`` is one of ``types`` (sorted, so one statement per set of types)."""
    return column.in_(sorted(types))


def indexed_view_rows(types: Collection[str]) -> tuple[Any, Any]:
    """(``indexed_rows`` joined to its recipient's :data:`view_rows`, the entries' columns) for
    queries of one recipient's rows of some :data:`INDEXED_TYPES` in time order: filter on
    ``entries.recipient`` and order by ``entries.occurred_at, entries.event_id``. Raises
    ViewStoreError for a type that is not indexed (it would find nothing)."""
    missing = set(types) - set(INDEXED_TYPES)
    if missing:
        raise ViewStoreError(f"types {sorted(missing)} are not indexed by recipient")
    entries = indexed_rows.c
    joined = indexed_rows.join(view_rows, and_(
        view_rows.c.recipient == entries.recipient,
        view_rows.c.participant_id == entries.participant_id,
        view_rows.c.event_id == entries.event_id))
    return joined, entries


#: The participants a recipient has at least one row of: the caseload's listing. One row per
#: (recipient, participant), added with the first row and removed with the last, by every view
#: writer in the transaction that writes the rows (:mod:`consumers.view_writer`). It replaced an
#: index of every row by (recipient, participant_id, ...) (decision 0008).
recipient_participants = Table(
    "recipient_participants",
    metadata,
    Column("recipient", identifier(), nullable=False),
    Column("participant_id", identifier(), nullable=False),
    PrimaryKeyConstraint("recipient", "participant_id"),
    sqlite_with_rowid=False,
)
#: Lists every recipient's participants from the rows (a view built in bulk).
LIST_PARTICIPANTS = ("INSERT INTO recipient_participants (recipient, participant_id) "
                     "SELECT DISTINCT recipient, participant_id FROM view_rows")

#: Indexes the rows of the :data:`INDEXED_TYPES` from the rows (a view built in bulk).
LIST_INDEXED_ROWS = ("INSERT INTO indexed_rows (recipient, type, occurred_at, event_id, "
                     "participant_id) SELECT recipient, type, occurred_at, event_id, "
                     "participant_id FROM view_rows WHERE type IN ("
                     + ", ".join(f"'{name}'" for name in INDEXED_TYPES) + ")")

#: Projection versions this code upgrades where they are: the version each becomes, and the
#: statements that make it so (run in one transaction at start, by :meth:`ViewStore.create_schema`).
#: None since version 9: a view of an older version is rebuilt by replay.
UPGRADES_IN_PLACE: dict[str, tuple[str, tuple[str | ExecutableDDLElement, ...]]] = {}

#: Next offset to read per (topic, partition), written with the rows it accounts for.
tracking = Table(
    "tracking",
    metadata,
    Column("topic", identifier(255), primary_key=True),
    Column("partition", Integer, primary_key=True, autoincrement=False),
    Column("next_offset", BigInteger, nullable=False),
)

view_meta = Table(
    "view_meta",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("value", String(255), nullable=False),
)


@dataclass(frozen=True)
class RowChange:
    """One change to apply: ``row`` is the row's JSON object for an upsert, None to retract."""

    recipient: str
    event_id: str
    row: Mapping[str, Any] | None

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> RowChange:
        """Build from the JSON form of a change (``kind``, ``recipient``, ``event_id``, ``row``)."""
        kind = obj["kind"]
        if kind not in ("upsert", "retract"):
            raise ViewStoreError(f"unknown view change kind {kind!r}")
        return cls(
            recipient=str(obj["recipient"]),
            event_id=str(obj["event_id"]),
            row=obj["row"] if kind == "upsert" else None,
        )


class ViewStore:
    """SQL adapter for the per-recipient view and its tracking rows."""

    def __init__(self, url: str, *, engine: Engine | None = None) -> None:
        try:
            self.engine = engine or create_engine(url, pool_pre_ping=True)
        except (SQLAlchemyError, ImportError, ValueError) as exc:
            raise ViewStoreError(f"cannot open view database: {exc}") from exc
        if self.engine.dialect.name == "sqlite":
            event.listen(self.engine, "connect", configure_wal)
        # the writer's module reads this one's tables: imported here, not at the top
        from consumers.view_writer import SharedRowsWriter
        self.writer = SharedRowsWriter(self.engine)
        self._upsert_offsets = upsert_statement(self.engine, tracking, ("topic", "partition"))

    def create_schema(self) -> None:
        """Create the tables if missing and check the projection version.

        Several processes may call it at once (two projectors starting): one that loses the
        race to create a table tries again and finds it. Raises ProjectionVersionMismatch when
        the stored view came from another version.
        """
        for attempt in range(3):
            try:
                stored = self._create_schema_once()
                break
            except SQLAlchemyError as exc:
                if attempt == 2:
                    raise ViewStoreError(f"cannot create the view schema: {exc}") from exc
                time.sleep(0.5)
        if stored is not None and stored != PROJECTION_VERSION:
            raise ProjectionVersionMismatch(
                f"view was built by projection version {stored}, this is {PROJECTION_VERSION}: "
                "point LEADHUB_DATABASE_URL at a new, empty view database (the projector "
                "re-projects lead.events from the start into it), or build one offline with "
                "`leadhub audit replay --out NEW_FILE_OR_URL`. Nothing else is lost: API keys, "
                "the gateway's ledger and the crosswalk are in the accounts database "
                "(LEADHUB_ACCOUNTS_DATABASE_URL), which no rebuild touches; keep the old view "
                "until the new one has caught up"
            )

    def _create_schema_once(self) -> str | None:
        metadata.create_all(self.engine)
        with self.engine.begin() as connection:
            version = view_meta.c.key == "projection_version"
            stored: str | None = connection.execute(
                select(view_meta.c.value).where(version).with_for_update()
            ).scalar_one_or_none()
            if stored is None:
                connection.execute(
                    insert(view_meta).values(key="projection_version", value=PROJECTION_VERSION)
                )
            if stored in (None, PROJECTION_VERSION):  # an older view may hold a table of the name
                connection.exec_driver_sql(view_rows_ddl(connection.dialect.name))
            while stored in UPGRADES_IN_PLACE:
                upgraded, statements = UPGRADES_IN_PLACE[stored]
                for statement in statements:
                    if isinstance(statement, str):
                        connection.exec_driver_sql(statement)
                    else:
                        connection.execute(statement)
                connection.execute(update(view_meta).where(version).values(value=upgraded))
                log.warning("view upgraded in place from projection version %s to %s",
                            stored, upgraded)
                stored = upgraded
        return stored

    def committed_offsets(self, topic: str) -> dict[int, int]:
        """Next offset to read for each partition of ``topic`` that has committed a batch.

        Raises :class:`ViewStoreError` if the database cannot be read (no view there yet?).
        """
        try:
            with self.engine.connect() as connection:
                result = connection.execute(
                    select(tracking.c.partition, tracking.c.next_offset).where(
                        tracking.c.topic == topic
                    )
                )
                return {int(p): int(o) for p, o in result}
        except SQLAlchemyError as exc:
            raise ViewStoreError(
                f"cannot read the projector's tracking rows ({type(exc).__name__}); has a "
                "projector run against this database (LEADHUB_DATABASE_URL)?") from exc

    def apply(self, changes: Sequence[RowChange], offsets: Mapping[tuple[str, int], int]) -> None:
        """Apply ``changes`` in order and record ``offsets``, all in one transaction.

        ``offsets`` maps (topic, partition) to the next offset to read, written as they are
        (the live projector's conditional update is :mod:`consumers.projection_store`'s). If
        this raises, nothing of the batch is stored.
        """
        try:
            with self.engine.begin() as connection:
                self.write_changes(connection, changes)
                if offsets:
                    connection.execute(self._upsert_offsets, [
                        {"topic": topic, "partition": partition, "next_offset": next_offset}
                        for (topic, partition), next_offset in offsets.items()
                    ])
        except SQLAlchemyError as exc:
            raise ViewStoreError(f"writing a batch of {len(changes)} view changes failed") from exc

    def write_changes(self, connection: Connection, changes: Sequence[RowChange]) -> None:
        """Apply ``changes`` (JSON rows; the last change of a (recipient, event) wins) on
        ``connection``, inside the caller's transaction. For seeding a view: a retraction here
        names no participant, so it is found without the key's help."""
        self.writer.write_json_changes(connection, changes)

    def write_view_changes(self, connection: Connection, changes: Sequence[ViewChange],
                           listed: Collection[tuple[str, str]] = frozenset()) -> None:
        """Apply the projector's ``changes`` (the last change of a (recipient, event) wins) on
        ``connection``, inside the caller's transaction, reading the events' shared rows first
        (:meth:`consumers.view_writer.SharedRowsWriter.write_changes`). The audit replays'
        writer; the live projector knows what the view held and calls the writer's ``write``."""
        self.writer.write_changes(connection, changes, listed)

    def rows_for(self, recipient: str, participant_id: str | None = None) -> list[dict[str, Any]]:
        """The recipient's rows (JSON objects), ordered by occurred_at then event_id."""
        query = select(view_rows.c.row_json).where(view_rows.c.recipient == recipient)
        if participant_id is not None:
            query = query.where(view_rows.c.participant_id == participant_id)
        query = query.order_by(view_rows.c.occurred_at, view_rows.c.event_id)
        with self.engine.connect() as connection:
            return [json.loads(text) for text in connection.execute(query).scalars()]

    def all_rows(self) -> Iterable[tuple[str, dict[str, Any]]]:
        """Every (recipient, row) in a stable order, streamed (for digests and comparisons)."""
        query = select(view_rows.c.recipient, view_rows.c.row_json).order_by(
            view_rows.c.recipient, view_rows.c.event_id
        )
        with self.engine.connect() as connection:
            for recipient, text in connection.execution_options(yield_per=1000).execute(query):
                yield recipient, json.loads(text)

    def tune_for_writing(self) -> None:
        """Give the SQLite view's connections the writer's larger page cache from now on
        (:mod:`consumers.sqlite_wal`); idle pooled connections are closed. Nothing on PostgreSQL or
        in-memory SQLite."""
        if self._is_sqlite_file():
            self._configure_new_connections(configure_writer_cache)

    def wal_checkpointer(self) -> WalCheckpointer | None:
        """A background checkpointer of a SQLite file view's write-ahead log (not started), for
        the view's writer (:mod:`consumers.sqlite_wal`); None for PostgreSQL or in-memory SQLite.
        From now on the view's connections leave checkpoints to it (their own run only past
        ``FALLBACK_PAGES``); idle pooled connections are closed."""
        if not self._is_sqlite_file():
            return None
        self._configure_new_connections(configure_fallback_checkpoint)
        return WalCheckpointer(self.engine)

    def _configure_new_connections(self, configure: Any) -> None:
        """Run ``configure`` on every connection opened from now on; close the idle ones."""
        event.listen(self.engine, "connect", configure)
        self.engine.pool.dispose()

    def _is_sqlite_file(self) -> bool:
        return (self.engine.dialect.name == "sqlite"
                and self.engine.url.database not in (None, "", ":memory:"))

    def close(self) -> None:
        """Release the connection pool."""
        self.engine.dispose()


def encode_row_json(row: Mapping[str, Any]) -> str:
    """How every view writer (the live projector, the audit replays) spells a row's JSON: sorted
    keys, no spaces, UTF-8 (the digests' canonical JSON exactly, for rows without control
    characters). One spelling, so a view file's texts can be digested without parsing them."""
    return orjson.dumps(row, option=orjson.OPT_SORT_KEYS).decode()

def _dialect_insert(engine: Engine, table: Table) -> Any:
    dialect = engine.dialect.name
    if dialect == "sqlite":
        return sqlite_insert(table)
    if dialect == "postgresql":
        return postgresql_insert(table)
    raise ViewStoreError(f"unsupported view database {dialect!r}: use SQLite or PostgreSQL")


def upsert_statement(engine: Engine, table: Table, key: tuple[str, ...]) -> Any:
    """``INSERT ... ON CONFLICT (key) DO UPDATE`` of every other column (SQLite, PostgreSQL)."""
    return _on_conflict(_dialect_insert(engine, table), table, key)


def row_writer(engine: Engine, table: Table, key: tuple[str, ...] | None = None) -> RowWriter:
    """A writer of ``table``'s rows (tuples of every column, in the table's order): an upsert on
    ``key`` (every other column replaced) or, without a key, an insert of the rows not there
    yet. On PostgreSQL the rows of an execution go as one JSON text to one statement
    (:class:`JsonRowsStatement`), on SQLite to ``executemany`` (:class:`DriverStatement`)."""
    columns = tuple(c.name for c in table.columns)
    if engine.dialect.name == "postgresql":
        statement = postgresql_insert(table).from_select(columns, json_rows_select(table))
        return JsonRowsStatement(engine, _on_conflict(statement, table, key), columns)
    return DriverStatement(engine, _on_conflict(_dialect_insert(engine, table), table, key),
                           columns)


def _on_conflict(statement: Any, table: Table, key: tuple[str, ...] | None) -> Any:
    if key is None:
        return statement.on_conflict_do_nothing()
    updates = {c.name: statement.excluded[c.name] for c in table.columns if c.name not in key}
    return statement.on_conflict_do_update(index_elements=list(key), set_=updates)
