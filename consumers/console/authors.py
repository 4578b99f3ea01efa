"""Which staff user recorded which event: the ``event_authors`` table of the accounts database.

The partner-facing payload says nothing about the person who typed it (the schemas have no
such field); the hub keeps it here instead, next to the gateway's ledger, keyed like it by
(partner, event_id). The row is written *before* the event is published, so no event from the
console exists without its author; ``published_at`` is set once Kafka acknowledged the event
(a row without it is an attempt that failed or is still being retried).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from sqlalchemy import Engine, insert, select, update
from sqlalchemy.exc import SQLAlchemyError

from consumers.api.errors import ServiceUnavailable
from consumers.api.tables import event_authors


class EventAuthors:
    """SQL adapter for ``event_authors``."""

    def __init__(self, engine: Engine,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.engine = engine
        self.clock = clock

    def before_publish(self, partner: str, event_id: str, event_type: str, user_name: str,
                       session_id: str) -> None:
        """Record the author of an event about to be published (503 if it cannot)."""
        self._run(insert(event_authors).values(
            partner=partner, event_id=event_id, event_type=event_type, user_name=user_name,
            session_id=session_id, recorded_at=self.clock(), published_at=None))

    def published(self, partner: str, event_id: str) -> None:
        """Mark the event acknowledged by Kafka."""
        c = event_authors.c
        self._run(update(event_authors).where(c.partner == partner, c.event_id == event_id)
                  .values(published_at=self.clock()))

    def author_of(self, partner: str, event_id: str) -> str | None:
        """The user who recorded the event, if it was recorded in the console."""
        c = event_authors.c
        try:
            with self.engine.connect() as connection:
                found = connection.execute(select(c.user_name).where(
                    c.partner == partner, c.event_id == event_id)).scalar_one_or_none()
        except SQLAlchemyError as exc:
            raise ServiceUnavailable("the account database cannot be read; retry later",
                                     code="DATABASE_UNAVAILABLE") from exc
        return None if found is None else str(found)

    def _run(self, statement: object) -> None:
        try:
            with self.engine.begin() as connection:
                connection.execute(statement)  # type: ignore[call-overload]
        except SQLAlchemyError as exc:
            raise ServiceUnavailable("the account database cannot be written; nothing was "
                                     "recorded; retry later", code="DATABASE_UNAVAILABLE") from exc
