"""Pure read-side summaries built from one recipient's view rows (no I/O, no clock reads).

Everything here works on the row objects the SQL view stores (``event_id, type,
participant_id, occurred_at, source_partner, fields, categories, consent_ids, notice``) and on
nothing else: a summary can only say what the recipient's own rows say. A field the recipient
may not see is absent from its rows, so it is absent (``None``) from the summary too.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from processors.deadlines import ARREST_DIVERSION, INTAKE_TYPE, MISSED_TYPE, REFERRAL_TYPE
from processors.timefmt import format_instant

Row = Mapping[str, Any]

EXIT_TYPE = "ParticipantExited"
CASE_MANAGER_TYPE = "CaseManagerAssigned"
CONTACT_TYPE = "ContactLogged"
#: Row types that move a participant's program status, and the status each one means.
STATUS_BY_TYPE: Mapping[str, str] = {
    REFERRAL_TYPE: "referred",
    INTAKE_TYPE: "enrolled",
    EXIT_TYPE: "exited",
}
#: Row types a caseload entry is built from (the rest of a timeline does not change it).
CASELOAD_TYPES: tuple[str, ...] = (
    REFERRAL_TYPE, INTAKE_TYPE, EXIT_TYPE, MISSED_TYPE, CASE_MANAGER_TYPE, CONTACT_TYPE,
)
DEADLINE_TYPES: tuple[str, ...] = (REFERRAL_TYPE, INTAKE_TYPE, MISSED_TYPE)


def parse_instant(text: str) -> datetime:
    """Parse a view instant (ISO 8601, ``Z``) into an aware UTC datetime; ValueError if bad."""
    parsed = datetime.fromisoformat(text)  # Python 3.11+ reads the "Z" suffix
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def row_instant(row: Row) -> datetime:
    """The row's ``occurred_at`` as an aware UTC datetime."""
    return parse_instant(str(row["occurred_at"]))


def in_order(rows: Iterable[Row]) -> list[Row]:
    """Rows by (occurred_at, event_id): the view's one stable order."""
    return sorted(rows, key=lambda r: (row_instant(r), str(r["event_id"])))


@dataclass(frozen=True, slots=True)
class Deadline:
    """One arrest-diversion intake deadline as the recipient's rows show it."""

    participant_id: str
    referral_event_id: str
    referred_at: datetime
    due_at: datetime
    status: str  # "pending" | "met" | "missed"
    overdue: bool  # missed, or pending and past due (the hub has not derived the miss yet)
    evidence: tuple[str, ...]  # event ids of the rows the status is read from

    def to_json(self) -> dict[str, Any]:
        """JSON form for the API."""
        return {
            "participant_id": self.participant_id,
            "referral_event_id": self.referral_event_id,
            "referred_at": format_instant(self.referred_at),
            "due_at": format_instant(self.due_at),
            "status": self.status,
            "overdue": self.overdue,
        }


def starts_deadline(row: Row) -> bool:
    """True for an arrest-diversion ReferralMade row whose charges are (or may be) held.

    Mirrors :func:`processors.deadlines.deadline_for`; when the recipient may not see
    ``charges_held`` (LEGAL_CASE), an arrest diversion is taken to start a deadline.
    """
    if row.get("type") != REFERRAL_TYPE:
        return False
    fields = row.get("fields") or {}
    return fields.get("door") == ARREST_DIVERSION and fields.get("charges_held") is not False


def deadline_of(referral: Row, rows: Sequence[Row], days: int, now: datetime) -> Deadline:
    """The deadline a referral row starts, with its status read from ``rows`` (same person)."""
    referral_id = str(referral["event_id"])
    referred_at = row_instant(referral)
    due_at = referred_at + timedelta(days=days)
    for row in rows:
        fields = row.get("fields") or {}
        if row.get("type") == MISSED_TYPE and fields.get("referral_event_id") == referral_id:
            return Deadline(str(referral["participant_id"]), referral_id, referred_at, due_at,
                            "missed", True, (referral_id, str(row["event_id"])))
    for row in rows:
        if row.get("type") != INTAKE_TYPE:
            continue
        at = row_instant(row)
        linked = (row.get("fields") or {}).get("referral_event_id")
        meets = at <= due_at and (linked == referral_id if linked is not None
                                  else referred_at <= at)
        if meets:
            return Deadline(str(referral["participant_id"]), referral_id, referred_at, due_at,
                            "met", False, (referral_id, str(row["event_id"])))
    return Deadline(str(referral["participant_id"]), referral_id, referred_at, due_at,
                    "pending", now > due_at, (referral_id,))


def deadlines_of(rows: Sequence[Row], days: int, now: datetime) -> list[Deadline]:
    """Every intake deadline of one participant's rows, earliest referral first."""
    ordered = in_order(rows)
    return [deadline_of(r, ordered, days, now) for r in ordered if starts_deadline(r)]


def caseload_entry(participant_id: str, rows: Sequence[Row], days: int,
                   now: datetime) -> dict[str, Any]:
    """One caseload line built from one participant's rows.

    ``status`` is the latest of referred / enrolled / exited the rows show (``None`` when they
    show none); ``intake`` is the latest arrest-diversion deadline, or ``None``.
    """
    ordered = in_order(rows)
    status: str | None = None
    door: str | None = None
    case_manager: str | None = None
    last_contact: str | None = None
    for row in ordered:
        kind = str(row.get("type"))
        fields = row.get("fields") or {}
        status = STATUS_BY_TYPE.get(kind, status)
        if kind == REFERRAL_TYPE and isinstance(fields.get("door"), str):
            door = fields["door"]
        elif kind == CASE_MANAGER_TYPE and isinstance(fields.get("case_manager"), str):
            case_manager = fields["case_manager"]
        elif kind == CONTACT_TYPE:
            last_contact = str(row["occurred_at"])
    deadlines = [deadline_of(r, ordered, days, now) for r in ordered if starts_deadline(r)]
    intake: dict[str, Any] | None = None
    if deadlines:
        latest = deadlines[-1]
        intake = {"status": latest.status, "due_at": format_instant(latest.due_at),
                  "overdue": latest.overdue}
    return {
        "participant_id": participant_id,
        "status": status,
        "door": door,
        "case_manager": case_manager,
        "intake": intake,
        "last_contact": last_contact,
    }


def participant_summary(participant_id: str, rows: Sequence[Row], days: int,
                        now: datetime) -> dict[str, Any]:
    """The caseload line plus counts by type and category and the first and last row time."""
    entry = caseload_entry(participant_id, rows, days, now)
    ordered = in_order(rows)
    by_type = Counter(str(r.get("type")) for r in ordered)
    by_category = Counter(str(c) for r in ordered for c in (r.get("categories") or ()))
    return {
        **entry,
        "rows": len(ordered),
        "first_at": str(ordered[0]["occurred_at"]) if ordered else None,
        "last_at": str(ordered[-1]["occurred_at"]) if ordered else None,
        "counts_by_type": dict(sorted(by_type.items())),
        "counts_by_category": dict(sorted(by_category.items())),
        "part2_rows": sum(1 for r in ordered if r.get("notice")),
    }
