"""SQL statements the projector runs for every row, compiled once and executed by the driver.

SQLAlchemy Core compiles a statement from its cache but still builds and processes every row's
parameters in Python: in ``bench/projector_writes.py`` that per-row work was about as much CPU as
SQLite's own work of inserting the rows (decision 0005). A :class:`DriverStatement` is the same
SQLAlchemy statement, compiled once for the engine's dialect; each execution hands the driver the
rows as tuples, converted only where the dialect's own bind processor would convert them (SQLite
stores instants as text). So what is written is exactly what SQLAlchemy would have written.

On PostgreSQL the driver's ``executemany`` still adapts every row's parameters in Python and sends
a statement per row: 23-28 us of the projector's CPU per row, about a third of its time. A
:class:`JsonRowsStatement` sends all rows of an execution as one JSON text (``orjson``, in C) to
one ``INSERT ... SELECT FROM json_to_recordset(...)``: 6-8 us per row, the backend's CPU per row
unchanged (decision 0010).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

import orjson
from sqlalchemy import JSON, Connection, Engine, Select, Table, Text, bindparam, cast, column, func
from sqlalchemy import select as sql_select

from consumers.errors import ViewStoreError

Values = tuple[Any, ...]


class DriverStatement:
    """A DML statement compiled once for ``engine``; rows are tuples in ``columns`` order.

    ``columns`` names every bound parameter of the statement (for an INSERT, its columns; for a
    DELETE, its ``bindparam`` names), in the order the caller builds each row's tuple.
    """

    def __init__(self, engine: Engine, statement: Any, columns: Sequence[str]) -> None:
        dialect = engine.dialect
        compiled = statement.compile(dialect=dialect)
        binds = compiled.binds
        if sorted(binds) != sorted(columns):
            raise ViewStoreError(
                f"statement parameters {sorted(binds)} are not the columns {sorted(columns)}")
        self.sql = str(compiled)
        self.columns = tuple(columns)
        processors: list[tuple[int, Callable[[Any], Any]]] = []
        for index, name in enumerate(self.columns):
            processor = binds[name].type.dialect_impl(dialect).bind_processor(dialect)
            if processor is not None:
                processors.append((index, processor))
        self._processors = processors
        self._positions: tuple[int, ...] | None = None
        if compiled.positional:
            self._positions = tuple(self.columns.index(name) for name in compiled.positiontup)

    def parameters(self, rows: Sequence[Values]) -> list[Any]:
        """The driver's parameters for ``rows``: tuples for a positional paramstyle (SQLite),
        dicts for a named one (psycopg)."""
        if self._processors:
            # the rows of one event share their instant's object; by identity, as equal values
            # may convert differently (the same instant in two time zones)
            memo: dict[tuple[int, int], Any] = {}
            rows = [self._converted(row, memo) for row in rows]
        positions = self._positions
        if positions is None:
            columns = self.columns
            return [dict(zip(columns, row, strict=True)) for row in rows]
        if positions == tuple(range(len(positions))):
            return [tuple(row) for row in rows]
        return [tuple(row[i] for i in positions) for row in rows]

    def _converted(self, row: Values, memo: dict[tuple[int, int], Any]) -> Values:
        values = list(row)
        for index, processor in self._processors:
            value = values[index]
            key = (index, id(value))
            if key in memo:
                values[index] = memo[key]
            else:
                values[index] = memo[key] = processor(value)
        return tuple(values)

    def execute(self, connection: Connection, rows: Sequence[Values]) -> None:
        """Run the statement once per row of ``rows`` (nothing if empty), inside the caller's
        transaction."""
        if rows:
            connection.exec_driver_sql(self.sql, self.parameters(rows))


class RowWriter(Protocol):
    """Writes rows (tuples in its columns' order) inside the caller's transaction."""

    def execute(self, connection: Connection, rows: Sequence[Values]) -> None:
        """Write ``rows`` (nothing if empty)."""


#: The bound parameter of a :class:`JsonRowsStatement`: the rows as one JSON array of objects.
JSON_ROWS = "rows"


def json_rows_select(table: Table) -> Select[Any]:
    """``SELECT <every column> FROM json_to_recordset(CAST(:rows AS JSON)) AS batch(<columns
    with their types>)`` (PostgreSQL): the rows of :data:`JSON_ROWS` as ``table``'s columns."""
    batch = func.json_to_recordset(cast(bindparam(JSON_ROWS, type_=Text), JSON)).table_valued(
        *(column(c.name, c.type) for c in table.columns)).render_derived("batch", with_types=True)
    return sql_select(*batch.c)


class JsonRowsStatement:
    """A PostgreSQL statement reading its rows from :func:`json_rows_select`, compiled once; each
    execution sends every row at once as one JSON text.

    Rows are tuples in ``columns`` order of JSON-native values or timezone-aware datetimes
    (written in RFC 3339 with their offset, so the same instant as psycopg would send). The rows
    of one execution must not share a key the statement's ``ON CONFLICT DO UPDATE`` updates
    (PostgreSQL refuses to update a row twice in one statement); the view writers pass rows
    unique by key.
    """

    def __init__(self, engine: Engine, statement: Any, columns: Sequence[str]) -> None:
        compiled = statement.compile(dialect=engine.dialect)
        if list(compiled.binds) != [JSON_ROWS]:
            raise ViewStoreError(
                f"statement parameters {sorted(compiled.binds)} are not [{JSON_ROWS!r}]")
        self.sql = str(compiled)
        self.columns = tuple(f"{name}" for name in columns)  # plain str keys for orjson

    def parameters(self, rows: Sequence[Values]) -> dict[str, str]:
        """The one parameter of an execution writing ``rows``."""
        columns = self.columns
        return {JSON_ROWS: orjson.dumps(
            [dict(zip(columns, row, strict=True)) for row in rows]).decode()}

    def execute(self, connection: Connection, rows: Sequence[Values]) -> None:
        """Run the statement once for all ``rows`` (nothing if empty), inside the caller's
        transaction."""
        if rows:
            connection.exec_driver_sql(self.sql, self.parameters(rows))
