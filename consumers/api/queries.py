"""SQL reads of one recipient's view rows (SQLAlchemy Core; SQLite and PostgreSQL).

Every query here is bound to a single ``recipient``: the staff API passes the caller's partner
id and nothing else, so no query can reach another recipient's rows. Rows come back as the JSON
objects the sink stored, in the view's stable order (occurred_at, event_id).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, and_, select, tuple_
from sqlalchemy.exc import SQLAlchemyError

from consumers.api.errors import ServiceUnavailable
from consumers.store import view_rows

Row = dict[str, Any]
TimeKey = tuple[datetime, str]


def _utc(value: datetime) -> datetime:
    """SQLite stores instants as naive UTC text: always bind UTC."""
    return value.astimezone(UTC)


class ViewQueries:
    """Read-only queries over ``view_rows`` for one recipient at a time."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def _run(self, query: Any) -> list[Any]:
        try:
            with self.engine.connect() as connection:
                return list(connection.execute(query).all())
        except SQLAlchemyError as exc:
            raise ServiceUnavailable("the view database cannot be read; retry later",
                                     code="DATABASE_UNAVAILABLE") from exc

    def participants(self, recipient: str, after: str | None, limit: int) -> list[str]:
        """Up to ``limit`` participant ids the recipient has rows for, after ``after``."""
        c = view_rows.c
        query = select(c.participant_id).where(c.recipient == recipient)
        if after is not None:
            query = query.where(c.participant_id > after)
        query = query.group_by(c.participant_id).order_by(c.participant_id).limit(limit)
        return [str(r[0]) for r in self._run(query)]

    def caseload_rows(self, recipient: str, after: str | None, limit: int,
                      types: Sequence[str]) -> dict[str, list[Row]]:
        """Up to ``limit`` participants after ``after`` with their rows of ``types``, in one
        query (a participant with no such rows maps to an empty list)."""
        c = view_rows.c
        page = select(c.participant_id).where(c.recipient == recipient)
        if after is not None:
            page = page.where(c.participant_id > after)
        ids = page.group_by(c.participant_id).order_by(c.participant_id).limit(limit).subquery()
        rows = view_rows.alias("typed")
        joined = ids.outerjoin(rows, and_(rows.c.recipient == recipient,
                                          rows.c.participant_id == ids.c.participant_id,
                                          rows.c.type.in_(list(types))))
        query = select(ids.c.participant_id, rows.c.row_json).select_from(joined).order_by(
            ids.c.participant_id, rows.c.occurred_at, rows.c.event_id)
        out: dict[str, list[Row]] = {}
        for participant_id, text in self._run(query):
            found = out.setdefault(str(participant_id), [])
            if text is not None:
                found.append(json.loads(text))
        return out

    def has_rows(self, recipient: str, participant_id: str) -> bool:
        """True if the recipient has at least one row for ``participant_id``."""
        c = view_rows.c
        query = select(c.event_id).where(
            c.recipient == recipient, c.participant_id == participant_id).limit(1)
        return bool(self._run(query))

    def rows_of(self, recipient: str, participant_ids: Sequence[str],
                types: Sequence[str] | None = None) -> dict[str, list[Row]]:
        """The recipient's rows of each participant (optionally only ``types``), in order."""
        out: dict[str, list[Row]] = {p: [] for p in participant_ids}
        if not participant_ids:
            return out
        c = view_rows.c
        query = select(c.participant_id, c.row_json).where(
            c.recipient == recipient, c.participant_id.in_(list(participant_ids)))
        if types is not None:
            query = query.where(c.type.in_(list(types)))
        query = query.order_by(c.participant_id, c.occurred_at, c.event_id)
        for participant_id, text in self._run(query):
            out[str(participant_id)].append(json.loads(text))
        return out

    def timeline(self, recipient: str, participant_id: str, *, types: Sequence[str] | None,
                 since: datetime | None, until: datetime | None, after: TimeKey | None,
                 limit: int) -> list[Row]:
        """Up to ``limit`` rows of one participant in order, after the key ``after``."""
        c = view_rows.c
        query = select(c.row_json).where(c.recipient == recipient,
                                         c.participant_id == participant_id)
        if types:
            query = query.where(c.type.in_(list(types)))
        if since is not None:
            query = query.where(c.occurred_at >= _utc(since))
        if until is not None:
            query = query.where(c.occurred_at < _utc(until))
        if after is not None:
            query = query.where(tuple_(c.occurred_at, c.event_id) > (_utc(after[0]), after[1]))
        query = query.order_by(c.occurred_at, c.event_id).limit(limit)
        return [json.loads(r[0]) for r in self._run(query)]

    def referrals(self, recipient: str, *, before: datetime | None, after: TimeKey | None,
                  limit: int) -> list[Row]:
        """Up to ``limit`` ReferralMade rows in order, occurred before ``before``."""
        c = view_rows.c
        query = select(c.row_json).where(c.recipient == recipient, c.type == "ReferralMade")
        if before is not None:
            query = query.where(c.occurred_at < _utc(before))
        if after is not None:
            query = query.where(tuple_(c.occurred_at, c.event_id) > (_utc(after[0]), after[1]))
        query = query.order_by(c.occurred_at, c.event_id).limit(limit)
        return [json.loads(r[0]) for r in self._run(query)]

    def stream_timeline(self, recipient: str, participant_id: str, *,
                        types: Sequence[str] | None, since: datetime | None,
                        until: datetime | None, after: TimeKey | None,
                        chunk: int) -> Iterator[Row]:
        """Every matching row in order, fetched ``chunk`` at a time (for in-memory filters)."""
        while True:
            rows = self.timeline(recipient, participant_id, types=types, since=since,
                                 until=until, after=after, limit=chunk)
            yield from rows
            if len(rows) < chunk:
                return
            last = rows[-1]
            after = (datetime.fromisoformat(str(last["occurred_at"]).replace("Z", "+00:00")),
                     str(last["event_id"]))
