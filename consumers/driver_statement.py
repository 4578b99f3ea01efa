"""SQL statements the projector runs for every row, compiled once and executed by the driver.

SQLAlchemy Core compiles a statement from its cache but still builds and processes every row's
parameters in Python: in ``bench/projector_writes.py`` that per-row work was about as much CPU as
SQLite's own work of inserting the rows (decision 0005). A :class:`DriverStatement` is the same
SQLAlchemy statement, compiled once for the engine's dialect; each execution hands the driver the
rows as tuples, converted only where the dialect's own bind processor would convert them (SQLite
stores instants as text). So what is written is exactly what SQLAlchemy would have written.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import Connection, Engine

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
