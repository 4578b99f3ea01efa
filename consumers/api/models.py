"""Response models: they document the API in OpenAPI (``/docs``, ``/openapi.json``).

Handlers build plain JSON and return it directly; these models are the contract they keep.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

EVENT_EXAMPLE: dict[str, Any] = {
    "event_id": "5b0f3f5e-8a59-4a4f-9b7e-2f7a0c1d9e21",
    "type": "ContactLogged",
    "participant_id": "P-1042",
    "occurred_at": "2026-03-02T15:04:05.000000Z",
    "payload": {"contact_method": "OUTREACH", "successful": True, "duration_minutes": 20},
}
BATCH_EXAMPLE: list[dict[str, Any]] = [EVENT_EXAMPLE]


class ErrorDetail(BaseModel):
    """What went wrong: a stable code, a message without personal data, maybe a field path."""

    code: str = Field(description="Stable machine-readable code, e.g. INVALID_FIELD.")
    message: str = Field(description="What was wrong and what to do; never a field's value.")
    field_path: str | None = Field(
        default=None, description="The offending field, e.g. payload.door, when there is one.")


class ErrorBody(BaseModel):
    """Every error response has this shape."""

    error: ErrorDetail


_MEANING = {
    400: "Malformed request: a parameter, header, cursor or event is invalid (see code).",
    401: "No credential, an unknown one, or a revoked one.",
    403: "The credential may not do this (wrong kind, another partner, role, purpose).",
    404: "Nothing you may see has this id (the same answer whether or not it exists).",
    409: "The event_id was already accepted for a different event.",
    413: "The body or batch is larger than the limit.",
    415: "Unsupported Content-Type.",
    503: "Kafka or the database is unavailable; nothing was done or returned. Retry later.",
}


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` entries for the given error statuses."""
    return {s: {"model": ErrorBody, "description": _MEANING[s]} for s in statuses}


class Accepted(BaseModel):
    """The event is in the partner's inbound topic (or was already)."""

    event_id: str


class BatchItem(BaseModel):
    """The result of one batch item."""

    index: int = Field(description="0-based position of the item in the batch.")
    status: int = Field(description="202 accepted, or the item's own error status.")
    event_id: str | None = None
    error: ErrorDetail | None = None


class BatchResults(BaseModel):
    """Per-item results of a batch, in order."""

    accepted: int
    rejected: int
    results: list[BatchItem]


class Intake(BaseModel):
    """The latest arrest-diversion intake deadline the caller's rows show."""

    status: str = Field(description="pending, met or missed.")
    due_at: str
    overdue: bool = Field(description="Pending and past due (the hub will mark it missed).")


class CaseloadEntry(BaseModel):
    """One participant, summarized from the caller's own rows only."""

    participant_id: str
    status: str | None = Field(description="referred, enrolled or exited; null if unknown.")
    door: str | None
    case_manager: str | None
    intake: Intake | None
    last_contact: str | None


class CaseloadPage(BaseModel):
    """A page of the caseload, ordered by participant_id."""

    items: list[CaseloadEntry]
    next_cursor: str | None = Field(description="Pass as ?cursor= for the next page; null "
                                                "on the last page.")


class ParticipantSummary(CaseloadEntry):
    """A participant's caseload line plus counts of the caller's rows."""

    rows: int
    first_at: str | None
    last_at: str | None
    counts_by_type: dict[str, int]
    counts_by_category: dict[str, int]
    part2_rows: int = Field(description="Rows carrying the 42 CFR 2.32 redisclosure notice.")


class ViewRowModel(BaseModel):
    """One row of the caller's view: only the fields it may see."""

    event_id: str
    type: str
    participant_id: str
    occurred_at: str
    source_partner: str
    fields: dict[str, Any]
    categories: list[str]
    consent_ids: list[str]
    notice: str | None = Field(description="The 42 CFR 2.32 redisclosure notice on Part 2 "
                                           "rows; it must accompany any redisclosure.")


class TimelinePage(BaseModel):
    """A page of one participant's timeline, ordered by (occurred_at, event_id)."""

    items: list[ViewRowModel]
    next_cursor: str | None


class DeadlineModel(BaseModel):
    """One intake deadline."""

    participant_id: str
    referral_event_id: str
    referred_at: str
    due_at: str
    status: str
    overdue: bool


class DeadlinesPage(BaseModel):
    """A page of intake deadlines, ordered by due date. A page may hold fewer than ``limit``
    items; continue while ``next_cursor`` is not null."""

    items: list[DeadlineModel]
    next_cursor: str | None


class Me(BaseModel):
    """Who the token belongs to."""

    partner: str
    partner_name: str
    role: str
    user: str | None
    purposes: list[str] = Field(description="Purposes of use you may send in X-Purpose.")
    intake_deadline_days: int
