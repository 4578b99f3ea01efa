"""The accounts database: the hub's own records, kept apart from the derived view.

API keys and staff tokens, the gateway's ledger of accepted events and the participant
crosswalk are not derived from Kafka: a view rebuild must never touch them. They live in their
own database (``LEADHUB_ACCOUNTS_DATABASE_URL``; by default ``accounts.sqlite`` in the state
directory), created and migrated here, never by the projector or ``leadhub audit replay``.

Migrations are numbered steps in :data:`MIGRATIONS`, applied in order and recorded in the
``accounts_meta`` table; a database stamped with a version newer than this code knows is
refused. Step 1 creates every table of :data:`consumers.api.tables.api_metadata` (creating a
missing table is additive, so new tables join step 1; a change to an existing table gets a
step of its own).
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import (
    Column,
    Engine,
    MetaData,
    String,
    Table,
    create_engine,
    insert,
    select,
    text,
)
from sqlalchemy import inspect as inspect_database
from sqlalchemy.engine import Connection
from sqlalchemy.exc import SQLAlchemyError

from consumers.api.errors import ServiceUnavailable
from consumers.api.tables import api_credentials, api_metadata, gateway_events

_meta_metadata = MetaData()
accounts_meta = Table(
    "accounts_meta", _meta_metadata,
    Column("key", String(64), primary_key=True),
    Column("value", String(256), nullable=False),
)


def _create_tables(connection: Connection) -> None:
    api_metadata.create_all(connection)


def _console_display_names(connection: Connection) -> None:
    """Step 2: ``console_users.display_name`` (a table step 1 made before it had one)."""
    inspector = inspect_database(connection)
    if not inspector.has_table("console_users"):
        return  # step 1, re-run after the steps, creates it whole
    if "display_name" not in {c["name"] for c in inspector.get_columns("console_users")}:
        connection.execute(text("ALTER TABLE console_users ADD COLUMN display_name "
                                "VARCHAR(128)"))


#: Numbered migrations of the accounts database, oldest first.
MIGRATIONS: tuple[Callable[[Connection], None], ...] = (_create_tables, _console_display_names)
SCHEMA_VERSION = len(MIGRATIONS)


def open_accounts(url: str, **engine_options: object) -> Engine:
    """An engine on the accounts database, migrated to :data:`SCHEMA_VERSION`.

    Raises ServiceUnavailable (``DATABASE_UNAVAILABLE``) if it cannot be opened or is newer
    than this code.
    """
    try:
        engine = create_engine(url, **engine_options)
    except (SQLAlchemyError, ImportError, ValueError) as exc:
        raise ServiceUnavailable("cannot open the accounts database; check "
                                 "LEADHUB_ACCOUNTS_DATABASE_URL",
                                 code="DATABASE_UNAVAILABLE") from exc
    migrate(engine)
    return engine


def migrate(engine: Engine) -> int:
    """Apply the missing migrations (idempotent); return the database's schema version."""
    try:
        with engine.begin() as connection:
            _meta_metadata.create_all(connection)
            stored = connection.execute(select(accounts_meta.c.value).where(
                accounts_meta.c.key == "schema_version")).scalar_one_or_none()
            version = int(stored or 0)
            if version > SCHEMA_VERSION:
                raise ServiceUnavailable(
                    f"the accounts database has schema version {version}; this leadhub knows "
                    f"up to {SCHEMA_VERSION}: upgrade leadhub", code="DATABASE_UNAVAILABLE")
            for step in MIGRATIONS[version:]:
                step(connection)
            # Re-running step 1 is additive: tables added to it since are created too.
            MIGRATIONS[0](connection)
            if stored is None:
                connection.execute(insert(accounts_meta).values(
                    key="schema_version", value=str(SCHEMA_VERSION)))
            elif version != SCHEMA_VERSION:
                connection.execute(accounts_meta.update().where(
                    accounts_meta.c.key == "schema_version").values(value=str(SCHEMA_VERSION)))
    except SQLAlchemyError as exc:
        raise ServiceUnavailable("cannot prepare the accounts database",
                                 code="DATABASE_UNAVAILABLE") from exc
    return SCHEMA_VERSION


def adopt_from_view(accounts: Engine, view: Engine) -> int:
    """Copy the keys and the gateway ledger that an older leadhub kept in the view database.

    Runs only while the accounts database has no key at all, so it happens once; the view's
    copies are left in place (drop them after checking). Returns the number of rows copied.
    """
    try:
        if not inspect_database(view).has_table(api_credentials.name):
            return 0
        with accounts.begin() as target:
            if target.execute(select(api_credentials.c.key_id).limit(1)).first() is not None:
                return 0
            copied = 0
            with view.connect() as source:
                for table in (api_credentials, gateway_events):
                    if not inspect_database(view).has_table(table.name):
                        continue
                    rows = [dict(row) for row in source.execute(select(table)).mappings()]
                    if rows:
                        target.execute(insert(table), rows)
                        copied += len(rows)
            return copied
    except SQLAlchemyError as exc:
        raise ServiceUnavailable("cannot copy the keys from the view database",
                                 code="DATABASE_UNAVAILABLE") from exc
