"""The caseload as the console lists it: the staff API's caseload lines, filtered and searched.

The lines are exactly the API's (:func:`consumers.api.caseload.caseload_entry` over
:meth:`ViewQueries.caseload_rows`, the caller's own rows only); the filters pick among them,
and only the lines shown are accounted for. Search looks only at the caller's own rows: a
participant id the caller has rows for, or a local id in one of the caller's own
``IdentifierLinked`` rows. Anything else, including a person known only to another partner,
finds nothing, and the page says exactly what it says for a person nobody knows.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError

from consumers.api.caseload import CASELOAD_TYPES, caseload_entry, parse_instant
from consumers.api.errors import ServiceUnavailable
from consumers.api.queries import parse_rows
from consumers.api.staff import StaffCall
from consumers.store import view_rows

#: Participants read per query while filling a filtered page, and at most how many queries.
CHUNK = 200
MAX_CHUNKS = 10
STATUSES = ("referred", "enrolled", "exited")
LINK_TYPE = "IdentifierLinked"


@dataclass(frozen=True, slots=True)
class CaseloadFilter:
    """Which caseload lines to show: a status, intake due within N days, missed only."""

    status: str | None = None
    due_within_days: int | None = None
    missed: bool = False

    def matches(self, entry: Mapping[str, Any], now: datetime) -> bool:
        """True if the caseload line passes every filter set."""
        if self.status is not None and entry.get("status") != self.status:
            return False
        intake = entry.get("intake")
        if self.missed and not (intake and intake.get("overdue")):
            return False
        if self.due_within_days is not None:
            if not intake or intake.get("status") != "pending":
                return False
            due = parse_instant(str(intake["due_at"]))
            if due > now + timedelta(days=self.due_within_days):
                return False
        return True

    @property
    def active(self) -> bool:
        """True if any filter is set."""
        return self.status is not None or self.due_within_days is not None or self.missed


@dataclass(frozen=True, slots=True)
class CaseloadPage:
    """Caseload lines to show and the participant id to continue after (None: the end)."""

    entries: list[dict[str, Any]]
    next_after: str | None


def caseload_page(call: StaffCall, wanted: CaseloadFilter, after: str | None,
                  limit: int) -> CaseloadPage:
    """Up to ``limit`` caseload lines after ``after`` that pass ``wanted``; accounted."""
    views = call.context.views
    now = call.now()
    shown: list[dict[str, Any]] = []
    disclosed: list[Mapping[str, Any]] = []
    next_after: str | None = None
    cursor = after
    chunk = limit + 1 if not wanted.active else CHUNK
    for _ in range(MAX_CHUNKS):
        rows = views.caseload_rows(call.recipient, cursor, chunk, CASELOAD_TYPES)
        ids = list(rows)
        for participant_id in ids:
            if len(shown) == limit:
                next_after = shown[-1]["participant_id"]
                break
            entry = caseload_entry(participant_id, rows[participant_id], call.days, now)
            cursor = participant_id
            if wanted.matches(entry, now):
                shown.append(entry)
                disclosed.extend(rows[participant_id])
        if next_after is not None or len(ids) < chunk:
            break
    else:
        next_after = cursor  # scanned the most one page may: let the reader go on
    call.account("caseload", [e["participant_id"] for e in shown], disclosed)
    return CaseloadPage(shown, next_after)


def _own_links(call: StaffCall) -> list[dict[str, Any]]:
    """The caller's own IdentifierLinked rows (the links it published)."""
    c = view_rows.c
    query = select(c.row_json).where(c.recipient == call.recipient, c.type == LINK_TYPE,
                                     c.source_partner == call.recipient)
    try:
        with call.context.views.engine.connect() as connection:
            texts = [r[0] for r in connection.execute(query)]
    except SQLAlchemyError as exc:
        raise ServiceUnavailable("the view database cannot be read; retry later",
                                 code="DATABASE_UNAVAILABLE") from exc
    return parse_rows(texts)


def search(call: StaffCall, text: str) -> list[dict[str, Any]]:
    """Caseload lines of the caller's participants matching ``text`` (a participant id or the
    caller's own local id); accounted. Empty for anyone else, whoever knows them."""
    wanted = text.strip()[:256]
    views = call.context.views
    found: dict[str, list[Mapping[str, Any]]] = {}
    if wanted and "\x00" not in wanted:
        if views.has_rows(call.recipient, wanted):
            found[wanted] = []
        for link in _own_links(call):
            fields = link.get("fields") or {}
            if fields.get("local_id") == wanted and fields.get("partner") == call.recipient:
                found.setdefault(str(link["participant_id"]), []).append(link)
    ids = sorted(found)
    rows = views.rows_of(call.recipient, ids, CASELOAD_TYPES) if ids else {}
    entries = [caseload_entry(p, rows[p], call.days, call.now()) for p in ids]
    disclosed: list[Mapping[str, Any]] = [r for p in ids for r in (*rows[p], *found[p])]
    call.account("search", ids, disclosed)
    return entries


def parse_filter(status: str | None, due_within: str | None, missed: str | None) -> \
        CaseloadFilter:
    """The filter of the caseload form's values (blank or unknown values are no filter)."""
    days: int | None = None
    if due_within and due_within.strip().isdigit():
        days = min(int(due_within.strip()), 3650)
    return CaseloadFilter(status if status in STATUSES else None, days, missed == "1")


def id_list(entries: Sequence[Mapping[str, Any]]) -> list[str]:
    """The participant ids of caseload lines, in order."""
    return [str(e["participant_id"]) for e in entries]
