"""SQL reads of one recipient's view rows (SQLAlchemy Core; SQLite and PostgreSQL).

Every query here is bound to a single ``recipient``: the staff API passes the caller's partner
id and nothing else, so no query can reach another recipient's rows. Rows come back as the JSON
objects the projector stored, in the view's stable order (occurred_at, event_id).

The statements are built once per shape (which optional filters are present) with bound
parameters, and reused: building a Core statement and its cache key on every request costs
more than the query itself takes in PostgreSQL. Stored row texts are parsed in one decoder
call per query (see :func:`parse_rows`).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from sqlalchemy import Engine, Select, String, and_, bindparam, select, tuple_
from sqlalchemy.exc import SQLAlchemyError

from consumers.api.errors import ServiceUnavailable
from consumers.store import (
    indexed_view_rows,
    names_recipient,
    recipient_participants,
    shared_rows,
    view_rows,
)
from processors.deadlines import REFERRAL_TYPE

Row = dict[str, Any]
TimeKey = tuple[datetime, str]

_c = view_rows.c


def _utc(value: datetime) -> datetime:
    """SQLite stores instants as naive UTC text: always bind UTC."""
    return value.astimezone(UTC)


def parse_rows(texts: Sequence[str]) -> list[Row]:
    """Parse stored row texts (each one JSON object) into dicts, in one decoder call.

    Joining the texts into one JSON array and decoding it once is about twice as fast as a
    ``json.loads`` per row; if the texts are not one object each, parse them one by one.
    """
    if not texts:
        return []
    parsed = json.loads("[" + ",".join(texts) + "]")
    if len(parsed) != len(texts) or not all(isinstance(row, dict) for row in parsed):
        return [json.loads(text) for text in texts]
    return list(parsed)


def _after_key(occurred_at: Any = _c.occurred_at, event_id: Any = _c.event_id) -> Any:
    """``(occurred_at, event_id) > (:after_at, :after_id)``: keyset pagination."""
    return tuple_(occurred_at, event_id) > tuple_(
        bindparam("after_at", type_=occurred_at.type),
        bindparam("after_id", type_=event_id.type))


@lru_cache(maxsize=4)
def _caseload_statement(paged: bool, dialect: str) -> Select[Any]:
    """The caseload page: participant ids after ``:after`` (``recipient_participants``), each
    joined to its typed rows (the shared rows naming the recipient: see
    :func:`~consumers.store.names_recipient`)."""
    pairs = recipient_participants.c
    page = select(pairs.participant_id).where(pairs.recipient == bindparam("recipient"))
    if paged:
        page = page.where(pairs.participant_id > bindparam("after"))
    ids = page.order_by(pairs.participant_id).limit(bindparam("limit")).subquery()
    rows = shared_rows.alias("typed")
    joined = ids.outerjoin(rows, and_(
        rows.c.participant_id == ids.c.participant_id,
        names_recipient(dialect, rows.c.recipients, bindparam("recipient", type_=String)),
        rows.c.type.in_(bindparam("types", expanding=True))))
    return select(ids.c.participant_id, rows.c.row_json).select_from(joined).order_by(
        ids.c.participant_id, rows.c.occurred_at, rows.c.event_id)


@lru_cache(maxsize=1)
def _has_rows_statement() -> Select[Any]:
    pairs = recipient_participants.c
    return select(pairs.participant_id).where(
        pairs.recipient == bindparam("recipient"),
        pairs.participant_id == bindparam("participant_id"))


@lru_cache(maxsize=2)
def _rows_of_statement(typed: bool) -> Select[Any]:
    query = select(_c.participant_id, _c.row_json).where(
        _c.recipient == bindparam("recipient"),
        _c.participant_id.in_(bindparam("participant_ids", expanding=True)))
    if typed:
        query = query.where(_c.type.in_(bindparam("types", expanding=True)))
    return query.order_by(_c.participant_id, _c.occurred_at, _c.event_id)


@lru_cache(maxsize=16)
def _timeline_statement(typed: bool, since: bool, until: bool, after: bool) -> Select[Any]:
    query = select(_c.row_json).where(_c.recipient == bindparam("recipient"),
                                      _c.participant_id == bindparam("participant_id"))
    if typed:
        query = query.where(_c.type.in_(bindparam("types", expanding=True)))
    if since:
        query = query.where(_c.occurred_at >= bindparam("since"))
    if until:
        query = query.where(_c.occurred_at < bindparam("until"))
    if after:
        query = query.where(_after_key())
    return query.order_by(_c.occurred_at, _c.event_id).limit(bindparam("limit"))


@lru_cache(maxsize=4)
def _referrals_statement(before: bool, after: bool) -> Select[Any]:
    joined, entries = indexed_view_rows([REFERRAL_TYPE])
    query = select(view_rows.c.row_json).select_from(joined).where(
        entries.recipient == bindparam("recipient"), entries.type == REFERRAL_TYPE)
    if before:
        query = query.where(entries.occurred_at < bindparam("before"))
    if after:
        query = query.where(_after_key(entries.occurred_at, entries.event_id))
    return query.order_by(entries.occurred_at, entries.event_id,
                          entries.participant_id).limit(bindparam("limit"))


class ViewQueries:
    """Read-only queries over ``view_rows`` for one recipient at a time."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def _run(self, query: Any, params: Mapping[str, Any]) -> list[Any]:
        try:
            with self.engine.connect() as connection:
                return list(connection.execute(query, dict(params)).all())
        except SQLAlchemyError as exc:
            raise ServiceUnavailable("the view database cannot be read; retry later",
                                     code="DATABASE_UNAVAILABLE") from exc

    def caseload_rows(self, recipient: str, after: str | None, limit: int,
                      types: Sequence[str]) -> dict[str, list[Row]]:
        """Up to ``limit`` participants after ``after`` with their rows of ``types``, in one
        query (a participant with no such rows maps to an empty list)."""
        params: dict[str, Any] = {"recipient": recipient, "limit": limit, "types": list(types)}
        if after is not None:
            params["after"] = after
        result = self._run(_caseload_statement(after is not None, self.engine.dialect.name),
                           params)
        parsed = iter(parse_rows([text for _, text in result if text is not None]))
        out: dict[str, list[Row]] = {}
        for participant_id, text in result:
            found = out.setdefault(str(participant_id), [])
            if text is not None:
                found.append(next(parsed))
        return out

    def has_rows(self, recipient: str, participant_id: str) -> bool:
        """True if the recipient has at least one row for ``participant_id``."""
        return bool(self._run(_has_rows_statement(), {"recipient": recipient,
                                                      "participant_id": participant_id}))

    def rows_of(self, recipient: str, participant_ids: Sequence[str],
                types: Sequence[str] | None = None) -> dict[str, list[Row]]:
        """The recipient's rows of each participant (optionally only ``types``), in order."""
        out: dict[str, list[Row]] = {p: [] for p in participant_ids}
        if not participant_ids:
            return out
        params: dict[str, Any] = {"recipient": recipient,
                                  "participant_ids": list(participant_ids)}
        if types is not None:
            params["types"] = list(types)
        result = self._run(_rows_of_statement(types is not None), params)
        for (participant_id, _), row in zip(result, parse_rows([t for _, t in result]),
                                            strict=True):
            out[str(participant_id)].append(row)
        return out

    def timeline(self, recipient: str, participant_id: str, *, types: Sequence[str] | None,
                 since: datetime | None, until: datetime | None, after: TimeKey | None,
                 limit: int) -> list[Row]:
        """Up to ``limit`` rows of one participant in order, after the key ``after``."""
        params: dict[str, Any] = {"recipient": recipient, "participant_id": participant_id,
                                  "limit": limit}
        if types:
            params["types"] = list(types)
        if since is not None:
            params["since"] = _utc(since)
        if until is not None:
            params["until"] = _utc(until)
        if after is not None:
            params["after_at"], params["after_id"] = _utc(after[0]), after[1]
        query = _timeline_statement(bool(types), since is not None, until is not None,
                                    after is not None)
        return parse_rows([r[0] for r in self._run(query, params)])

    def referrals(self, recipient: str, *, before: datetime | None, after: TimeKey | None,
                  limit: int) -> list[Row]:
        """Up to ``limit`` ReferralMade rows in order, occurred before ``before``."""
        params: dict[str, Any] = {"recipient": recipient, "limit": limit}
        if before is not None:
            params["before"] = _utc(before)
        if after is not None:
            params["after_at"], params["after_id"] = _utc(after[0]), after[1]
        query = _referrals_statement(before is not None, after is not None)
        return parse_rows([r[0] for r in self._run(query, params)])

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
