"""The caseload as the console lists it: the staff API's caseload lines, filtered and searched.

The lines are exactly the API's (:func:`consumers.api.caseload.caseload_entry` over
:meth:`ViewQueries.caseload_rows`, the caller's own rows only); the filters pick among them,
and only the lines shown are accounted for. "Assigned to me" keeps the lines whose case
manager (the latest ``CaseManagerAssigned`` row the caller sees) is the signed-in user's
display name, or their user name when they have none (compared ignoring case and repeated
spaces). In participant-id order (the default) pages are read by keyset; sorted by the next
intake deadline or by the last contact, the caseload is read whole — at most
:data:`SORT_SCAN` participants, the page says when there were more — sorted in memory and
paged by number. Search looks only at the caller's own rows: a
participant id the caller has rows for, a local id in one of the caller's own
``IdentifierLinked`` rows, or a name: a part of a name field (a payload field named ``*name``
of category IDENTITY or CONTACT, e.g. ``IntakeCompleted.preferred_name``) in a row the caller
has. A caller whose role may not see that category has no such field in its rows, so it cannot
find anyone by name. Anything else, including a person known only to another partner,
finds nothing, and the page says exactly what it says for a person nobody knows.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError

from consumers.api.caseload import CASELOAD_TYPES, caseload_entry, parse_instant
from consumers.api.errors import ServiceUnavailable
from consumers.api.queries import parse_rows
from consumers.api.staff import StaffCall
from consumers.store import indexed_view_rows, of_types, view_rows
from schemas.catalog import Catalog

#: A filtered caseload page reads one page's worth of participants first, then twice as many
#: per query up to CHUNK (most filters match most lines), and at most CHUNK * MAX_CHUNKS.
CHUNK = 200
MAX_CHUNKS = 10
#: The most participants a sorted caseload reads (then sorts in memory).
SORT_SCAN = 2000
STATUSES = ("referred", "enrolled", "exited")
#: Caseload orders: participant id (keyset pages), next pending intake deadline (soonest
#: first, then the lines with none), last contact (longest ago first; never contacted first).
SORTS = ("participant", "deadline", "last_contact")
LINK_TYPE = "IdentifierLinked"


@dataclass(frozen=True, slots=True)
class CaseloadFilter:
    """Which caseload lines to show: a status, intake due within N days, missed only, and
    (``assignee``) only those whose case manager has this name."""

    status: str | None = None
    due_within_days: int | None = None
    missed: bool = False
    assignee: str | None = None

    def matches(self, entry: Mapping[str, Any], now: datetime) -> bool:
        """True if the caseload line passes every filter set."""
        if self.status is not None and entry.get("status") != self.status:
            return False
        if self.assignee is not None and not same_name(entry.get("case_manager"),
                                                       self.assignee):
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
        return (self.status is not None or self.due_within_days is not None or self.missed
                or self.assignee is not None)


def same_name(shown: Any, name: str) -> bool:
    """True if the caseload line's case manager ``shown`` is ``name`` (ignoring case and
    repeated spaces)."""
    if not isinstance(shown, str):
        return False
    return " ".join(shown.split()).casefold() == " ".join(name.split()).casefold()


@dataclass(frozen=True, slots=True)
class CaseloadPage:
    """Caseload lines to show and where the next page starts: the participant id to continue
    after (keyset order), or the next page number (sorted order); None: the end.
    ``truncated``: a sorted caseload had more than :data:`SORT_SCAN` participants."""

    entries: list[dict[str, Any]]
    next_after: str | None
    next_page: int | None = None
    truncated: bool = False


def sort_key(sort: str, entry: Mapping[str, Any]) -> tuple[int, datetime, str]:
    """The key of a caseload line in order ``sort`` (one of :data:`SORTS`)."""
    pid = str(entry["participant_id"])
    if sort == "deadline":
        intake = entry.get("intake")
        if intake and intake.get("status") == "pending":
            return (0, parse_instant(str(intake["due_at"])), pid)
        return (1, datetime.min.replace(tzinfo=UTC), pid)
    if sort == "last_contact":
        contact = entry.get("last_contact")
        if not contact:
            return (0, datetime.min.replace(tzinfo=UTC), pid)
        return (1, parse_instant(str(contact)), pid)
    return (0, datetime.min.replace(tzinfo=UTC), pid)


def sorted_caseload_page(call: StaffCall, wanted: CaseloadFilter, sort: str, page: int,
                         limit: int) -> CaseloadPage:
    """Page ``page`` (from 0) of the caseload lines passing ``wanted`` in order ``sort``, read
    from at most :data:`SORT_SCAN` participants; only the lines shown are accounted."""
    views = call.context.views
    now = call.now()
    found: list[tuple[dict[str, Any], list[dict[str, Any]]]] = []
    cursor: str | None = None
    truncated = False
    for _ in range(SORT_SCAN // CHUNK):
        rows = views.caseload_rows(call.recipient, cursor, CHUNK, CASELOAD_TYPES)
        for participant_id, own in rows.items():
            entry = caseload_entry(participant_id, own, call.days, now)
            if wanted.matches(entry, now):
                found.append((entry, own))
            cursor = participant_id
        if len(rows) < CHUNK:
            break
    else:
        truncated = bool(views.caseload_rows(call.recipient, cursor, 1, CASELOAD_TYPES))
    found.sort(key=lambda pair: sort_key(sort, pair[0]))
    start = page * limit
    shown = found[start:start + limit]
    call.account("caseload", [e["participant_id"] for e, _ in shown],
                 [r for _, own in shown for r in own])
    more = start + limit < len(found)
    return CaseloadPage([e for e, _ in shown], None, page + 1 if more else None, truncated)


def caseload_page(call: StaffCall, wanted: CaseloadFilter, after: str | None,
                  limit: int) -> CaseloadPage:
    """Up to ``limit`` caseload lines after ``after`` that pass ``wanted``; accounted."""
    views = call.context.views
    now = call.now()
    shown: list[dict[str, Any]] = []
    disclosed: list[Mapping[str, Any]] = []
    next_after: str | None = None
    cursor = after
    chunk = limit + 1
    left = CHUNK * MAX_CHUNKS if wanted.active else chunk  # participants it may still read
    while True:
        size = min(chunk, left)
        rows = views.caseload_rows(call.recipient, cursor, size, CASELOAD_TYPES)
        ids = list(rows)
        left -= len(ids)
        for participant_id in ids:
            if len(shown) == limit:
                next_after = shown[-1]["participant_id"]
                break
            entry = caseload_entry(participant_id, rows[participant_id], call.days, now)
            cursor = participant_id
            if wanted.matches(entry, now):
                shown.append(entry)
                disclosed.extend(rows[participant_id])
        if next_after is not None or len(ids) < size:
            break
        if left <= 0:
            next_after = cursor  # read the most one page may: let the reader go on
            break
        chunk = min(2 * chunk, CHUNK)
    call.account("caseload", [e["participant_id"] for e in shown], disclosed)
    return CaseloadPage(shown, next_after)


#: Categories whose ``*name`` fields a name search reads.
NAME_CATEGORIES = frozenset({"IDENTITY", "CONTACT"})
#: Shortest text a name search accepts (shorter would list nearly everyone).
MIN_NAME_SEARCH = 2


def name_fields(catalog: Catalog) -> dict[str, tuple[str, ...]]:
    """Event type -> its payload fields that hold a person's name (``*name``, IDENTITY or
    CONTACT), from the latest version of every type."""
    found: dict[str, tuple[str, ...]] = {}
    for type_name in catalog.types():
        event_type = catalog.latest(type_name)
        names = tuple(f.name for f in event_type.fields if f.name.endswith("name")
                      and (f.category or event_type.category) in NAME_CATEGORIES)
        if names:
            found[type_name] = names
    return found


def _folded(text: str) -> str:
    return " ".join(text.casefold().split())


def _own_links(call: StaffCall) -> list[dict[str, Any]]:
    """The caller's own IdentifierLinked rows (the links it published)."""
    joined, entries = indexed_view_rows([LINK_TYPE])
    return _read(call, select(view_rows.c.row_json).select_from(joined).where(
        entries.recipient == call.recipient, entries.type == LINK_TYPE,
        view_rows.c.source_partner == call.recipient))


def _rows_with_names(call: StaffCall,
                     fields: Mapping[str, tuple[str, ...]]) -> list[dict[str, Any]]:
    """The caller's rows of the types that have name fields (whoever recorded them)."""
    if not fields:
        return []
    joined, entries = indexed_view_rows(fields)
    return _read(call, select(view_rows.c.row_json).select_from(joined).where(
        entries.recipient == call.recipient, of_types(entries.type, fields)))


def _read(call: StaffCall, query: Any) -> list[dict[str, Any]]:
    try:
        with call.context.views.engine.connect() as connection:
            texts = [r[0] for r in connection.execute(query)]
    except SQLAlchemyError as exc:
        raise ServiceUnavailable("the view database cannot be read; retry later",
                                 code="DATABASE_UNAVAILABLE") from exc
    return parse_rows(texts)


def search(call: StaffCall, text: str) -> list[dict[str, Any]]:
    """Caseload lines of the caller's participants matching ``text`` (a participant id, the
    caller's own local id, or a part of a name in the caller's own rows); accounted. Empty for
    anyone else, whoever knows them."""
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
        if not found and len(_folded(wanted)) >= MIN_NAME_SEARCH:
            by_type = name_fields(call.context.catalog)
            folded = _folded(wanted)
            for row in _rows_with_names(call, by_type):
                values = row.get("fields") or {}
                if any(isinstance(values.get(name), str) and folded in _folded(values[name])
                       for name in by_type.get(str(row["type"]), ())):
                    found.setdefault(str(row["participant_id"]), []).append(row)
    ids = sorted(found)
    rows = views.rows_of(call.recipient, ids, CASELOAD_TYPES) if ids else {}
    entries = [caseload_entry(p, rows[p], call.days, call.now()) for p in ids]
    disclosed: list[Mapping[str, Any]] = [r for p in ids for r in (*rows[p], *found[p])]
    call.account("search", ids, disclosed)
    return entries


def parse_filter(status: str | None, due_within: str | None, missed: str | None,
                 mine: str | None = None, assignee: str | None = None) -> CaseloadFilter:
    """The filter of the caseload form's values (blank or unknown values are no filter);
    ``mine`` = "1" keeps the lines whose case manager is ``assignee``."""
    days: int | None = None
    if due_within and due_within.strip().isdigit():
        days = min(int(due_within.strip()), 3650)
    return CaseloadFilter(status if status in STATUSES else None, days, missed == "1",
                          assignee if mine == "1" and assignee else None)


def parse_sort(sort: str | None, page: str | None) -> tuple[str, int]:
    """The caseload order and page number of the form's values (unknown: participant, 0)."""
    chosen = sort if sort in SORTS else "participant"
    number = int(page) if page and page.isdigit() and len(page) < 6 else 0
    return chosen, number


def id_list(entries: Sequence[Mapping[str, Any]]) -> list[str]:
    """The participant ids of caseload lines, in order."""
    return [str(e["participant_id"]) for e in entries]
