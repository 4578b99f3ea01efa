"""The staff query API: caseload, participant summary, timeline, intake deadlines, whoami.

Principle 3 in code: every query is bound to the caller's partner as ``recipient`` and reads
only those rows; nothing here evaluates policy. A participant the caller has no rows for is a
404 with exactly the body of one that does not exist. Each response is accounted for on
``lead.audit.access`` (see :mod:`consumers.api.access_log`) before it is returned.

Each route returns an instance of its declared response model (:mod:`consumers.api.models`),
built before the access record is written: an answer the model refuses fails with 500 before
anything is accounted as disclosed, and the OpenAPI document describes what is sent.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Path, Query

from consumers.api.access_log import AccessRecord, disclosures_of
from consumers.api.auth import Principal
from consumers.api.caseload import (
    CASELOAD_TYPES,
    DEADLINE_TYPES,
    caseload_entry,
    deadline_of,
    in_order,
    participant_summary,
    row_instant,
    starts_deadline,
)
from consumers.api.context import ApiContext, get_context, staff_token
from consumers.api.cursors import decode_cursor, decode_time_key, encode_cursor, time_key_cursor
from consumers.api.errors import BadRequest, Forbidden, NotFound
from consumers.api.models import (
    INSTANT_EXAMPLE,
    ME_ERRORS,
    PARTICIPANT_ERRORS,
    PARTICIPANT_EXAMPLE,
    STAFF_ERRORS,
    TIMELINE_ERRORS,
    CaseloadPage,
    DeadlinesPage,
    Me,
    ParticipantSummary,
    TimelinePage,
    error_responses,
)
from schemas.catalog import CATEGORIES

router = APIRouter(tags=["staff"])

MAX_LIMIT = 200
DEADLINE_CHUNK = 200
DEADLINE_MAX_CHUNKS = 10
PURPOSE_DOC = ("Purpose of use of this read; one of the purposes your partner acts under "
               "(see GET /v1/me). Recorded in the access log.")


@dataclass(frozen=True)
class StaffCall:
    """An authenticated staff read: who, under which purpose, with which adapters."""

    principal: Principal
    purpose: str | None
    context: ApiContext

    @property
    def recipient(self) -> str:
        """The caller's partner id: the only recipient whose rows this call may read."""
        return self.principal.partner.id

    @property
    def days(self) -> int:
        """The site's intake deadline in days."""
        return self.context.site.intake_deadline_days

    def now(self) -> datetime:
        """The API's clock (UTC)."""
        return self.context.clock()

    def account(self, endpoint: str, participant_ids: Iterable[str],
                rows: Iterable[Mapping[str, Any]]) -> None:
        """Write the access record for this response; raises 503 if it cannot be written."""
        self.context.access_log.record(AccessRecord(
            user=self.principal.user, partner=self.recipient, purpose=self.purpose,
            at=self.now(), endpoint=endpoint,
            participant_ids=tuple(dict.fromkeys(participant_ids)),
            disclosures=tuple(disclosures_of(rows)), key_id=self.principal.key_id))


def check_purpose(purpose: str | None, principal: Principal, context: ApiContext) -> str:
    """The declared purpose if the caller's partner acts under it; 400 or 403 otherwise."""
    if purpose is None or not purpose.strip():
        raise BadRequest("send the X-Purpose header with your purpose of use",
                         code="PURPOSE_REQUIRED", field_path="X-Purpose")
    if purpose not in context.site.purposes:
        raise BadRequest("X-Purpose is not a purpose of use of this site; see GET /v1/me",
                         code="UNKNOWN_PURPOSE", field_path="X-Purpose")
    if purpose != principal.partner.purpose:
        raise Forbidden(f"partner {principal.partner.id} does not act under this purpose; "
                        "see GET /v1/me", code="PURPOSE_NOT_PERMITTED", field_path="X-Purpose")
    return purpose


async def staff_call(
    principal: Annotated[Principal, Depends(staff_token)],
    context: Annotated[ApiContext, Depends(get_context)],
    x_purpose: Annotated[str, Header(alias="X-Purpose", description=PURPOSE_DOC)],
) -> StaffCall:
    """A staff read with a valid purpose of use."""
    return StaffCall(principal, check_purpose(x_purpose, principal, context), context)


async def whoami_call(
    principal: Annotated[Principal, Depends(staff_token)],
    context: Annotated[ApiContext, Depends(get_context)],
    x_purpose: Annotated[str | None, Header(alias="X-Purpose", description="Optional here.")]
    = None,
) -> StaffCall:
    """A staff call where the purpose is optional (it discloses no participant data)."""
    purpose = None if x_purpose is None else check_purpose(x_purpose, principal, context)
    return StaffCall(principal, purpose, context)


def utc_param(value: datetime | None, name: str) -> datetime | None:
    """A datetime query parameter as aware UTC (naive means UTC); 400 if out of range."""
    if value is None:
        return None
    try:
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    except (OverflowError, ValueError) as exc:
        raise BadRequest(f"{name} is out of range", code="INVALID_PARAMETER",
                         field_path=name) from exc


def not_found() -> NotFound:
    """The one 404 for participants: the same for unknown ids and ids the caller cannot see."""
    return NotFound("no participant with this id", code="NOT_FOUND")


def _clean_id(participant_id: str) -> str | None:
    return None if "\x00" in participant_id or len(participant_id) > 256 else participant_id


def _check_names(values: Sequence[str] | None, known: Iterable[str], name: str,
                 code: str) -> list[str] | None:
    if not values:
        return None
    allowed = set(known)
    for value in values:
        if value not in allowed:
            raise BadRequest(f"unknown {name}; see the catalog (leadhub schemas list)",
                             code=code, field_path=name)
    return list(values)


def _key_of(row: Mapping[str, Any]) -> str:
    return time_key_cursor("timeline", str(row["occurred_at"]), str(row["event_id"]))


Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT, description="Page size (1-200).")]
Cursor = Annotated[str | None, Query(max_length=2048,
                                     description="next_cursor of the previous page.")]
ParticipantId = Annotated[str, Path(min_length=1, description="The hub's participant id.",
                                     examples=[PARTICIPANT_EXAMPLE])]


@router.get(
    "/v1/participants",
    summary="Caseload",
    description=(
        "Every participant you have rows for, ordered by participant_id: status (referred, "
        "enrolled, exited), door, case manager, the latest arrest-diversion intake deadline "
        "(due date and whether it was met) and the last contact — all read from your own rows "
        "only, so a field you may not see is null. Paginated with `limit` and `cursor`."
    ),
    response_model=CaseloadPage,
    responses=error_responses(STAFF_ERRORS),
)
def caseload(call: Annotated[StaffCall, Depends(staff_call)], limit: Limit = 50,
             cursor: Cursor = None) -> CaseloadPage:
    """Caseload page (see the route description)."""
    after = decode_cursor("participants", cursor, 1)[0] if cursor else None
    views = call.context.views
    rows = views.caseload_rows(call.recipient, after, limit + 1, CASELOAD_TYPES)
    ids = list(rows)  # the database's order (its collation decides what `after` means)
    more = len(ids) > limit
    ids = ids[:limit]
    now = call.now()
    page = CaseloadPage.model_validate({
        "items": [caseload_entry(p, rows[p], call.days, now) for p in ids],
        "next_cursor": encode_cursor("participants", [ids[-1]]) if more else None})
    call.account("GET /v1/participants", ids, (r for p in ids for r in rows[p]))
    return page


@router.get(
    "/v1/participants/{participant_id}",
    summary="Participant summary",
    description=(
        "The caseload line of one participant plus counts of your rows by type and category. "
        "404 when you have no rows for this participant — the same answer as for an id that "
        "does not exist."
    ),
    response_model=ParticipantSummary,
    responses=error_responses(PARTICIPANT_ERRORS),
)
def participant(call: Annotated[StaffCall, Depends(staff_call)],
                participant_id: ParticipantId) -> ParticipantSummary:
    """Participant summary (see the route description)."""
    endpoint = "GET /v1/participants/{participant_id}"
    clean = _clean_id(participant_id)
    rows = call.context.views.rows_of(call.recipient, [clean])[clean] if clean else []
    if not rows:
        call.account(endpoint, [], [])
        raise not_found()
    summary = ParticipantSummary.model_validate(
        participant_summary(participant_id, rows, call.days, call.now()))
    call.account(endpoint, [participant_id], rows)
    return summary


@router.get(
    "/v1/participants/{participant_id}/timeline",
    summary="Participant timeline",
    description=(
        "Your rows of one participant, ordered by (occurred_at, event_id), with only the fields "
        "you may see. Part 2 rows carry the 42 CFR 2.32 redisclosure `notice`. Filters: `type` "
        "and `category` (repeatable), `since` (inclusive) and `until` (exclusive). Paginated "
        "with a stable cursor. 404 when you have no rows for this participant."
    ),
    response_model=TimelinePage,
    responses=error_responses(TIMELINE_ERRORS),
)
def timeline(
    call: Annotated[StaffCall, Depends(staff_call)],
    participant_id: ParticipantId,
    type: Annotated[list[str] | None, Query(description="Only these event types.")] = None,
    category: Annotated[list[str] | None,
                        Query(description="Only rows carrying one of these categories.")]
    = None,
    since: Annotated[datetime | None, Query(description="From this instant (inclusive).",
                                            examples=[INSTANT_EXAMPLE])] = None,
    until: Annotated[datetime | None, Query(description="Before this instant.",
                                            examples=["2026-06-01T00:00:00Z"])] = None,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> TimelinePage:
    """Timeline page (see the route description)."""
    endpoint = "GET /v1/participants/{participant_id}/timeline"
    types = _check_names(type, call.context.catalog.types(), "type", "UNKNOWN_EVENT_TYPE")
    categories = _check_names(category, CATEGORIES, "category", "UNKNOWN_CATEGORY")
    start, end = utc_param(since, "since"), utc_param(until, "until")
    after = decode_time_key("timeline", cursor) if cursor else None
    views = call.context.views
    clean = _clean_id(participant_id)
    if clean is None:
        call.account(endpoint, [], [])
        raise not_found()
    if categories is None:
        rows = views.timeline(call.recipient, clean, types=types, since=start, until=end,
                              after=after, limit=limit + 1)
    else:
        wanted = set(categories)
        rows = []
        for row in views.stream_timeline(call.recipient, clean, types=types, since=start,
                                         until=end, after=after, chunk=4 * limit):
            if wanted.intersection(row.get("categories") or ()):
                rows.append(row)
                if len(rows) > limit:
                    break
    # A page with rows proves the caller may see this participant; only an empty page needs
    # the existence check that tells "nothing in this window" from the one 404.
    if not rows and not views.has_rows(call.recipient, clean):
        call.account(endpoint, [], [])
        raise not_found()
    more = len(rows) > limit
    rows = rows[:limit]
    page = TimelinePage.model_validate(
        {"items": rows, "next_cursor": _key_of(rows[-1]) if more and rows else None})
    call.account(endpoint, [participant_id] if rows else [], rows)
    return page


@router.get(
    "/v1/intake-deadlines",
    summary="Intake deadlines",
    description=(
        "Arrest-diversion intake deadlines (referral date + the site's intake_deadline_days) "
        "from your own rows, earliest due first. `status` picks pending (default), met, missed "
        "or all; `due_before` keeps those due before an instant. A page may hold fewer than "
        "`limit` items: continue while `next_cursor` is not null."
    ),
    response_model=DeadlinesPage,
    responses=error_responses(STAFF_ERRORS),
)
def intake_deadlines(
    call: Annotated[StaffCall, Depends(staff_call)],
    due_before: Annotated[datetime | None, Query(description="Only deadlines due before "
                                                             "this instant.",
                                                 examples=["2026-06-01T00:00:00Z"])] = None,
    status: Annotated[str, Query(pattern="^(pending|met|missed|all)$",
                                 description="pending, met, missed or all.")] = "pending",
    limit: Limit = 50,
    cursor: Cursor = None,
) -> DeadlinesPage:
    """Intake deadlines page (see the route description)."""
    due = utc_param(due_before, "due_before")
    after = decode_time_key("deadlines", cursor) if cursor else None
    try:
        referred_before = due - timedelta(days=call.days) if due is not None else None
    except OverflowError:  # due before year 1 + days: nothing can be due that early
        call.account("GET /v1/intake-deadlines", [], [])
        return DeadlinesPage(items=[], next_cursor=None)
    views = call.context.views
    now = call.now()
    items: list[dict[str, Any]] = []
    disclosed: list[Mapping[str, Any]] = []
    next_key: tuple[str, str] | None = None
    for _ in range(DEADLINE_MAX_CHUNKS):
        referrals = views.referrals(call.recipient, before=referred_before, after=after,
                                    limit=DEADLINE_CHUNK)
        starting = [r for r in referrals if starts_deadline(r)]
        related = views.rows_of(call.recipient,
                                sorted({str(r["participant_id"]) for r in starting}),
                                DEADLINE_TYPES)
        for referral in referrals:
            key = (str(referral["occurred_at"]), str(referral["event_id"]))
            after = (row_instant(referral), key[1])
            next_key = key
            if not starts_deadline(referral):
                continue
            rows = in_order(related[str(referral["participant_id"])])
            deadline = deadline_of(referral, rows, call.days, now)
            if status not in ("all", deadline.status):
                continue
            items.append(deadline.to_json())
            disclosed.extend(r for r in rows if r["event_id"] in deadline.evidence)
            if len(items) == limit:
                break
        if len(items) == limit:
            break
        if len(referrals) < DEADLINE_CHUNK:
            next_key = None
            break
    next_cursor = time_key_cursor("deadlines", *next_key) if next_key else None
    page = DeadlinesPage.model_validate({"items": items, "next_cursor": next_cursor})
    call.account("GET /v1/intake-deadlines", (d["participant_id"] for d in items), disclosed)
    return page


@router.get(
    "/v1/me",
    summary="Who am I",
    description="The partner, role and user of the token, and the purposes you may declare.",
    response_model=Me,
    responses=error_responses(ME_ERRORS),
)
def me(call: Annotated[StaffCall, Depends(whoami_call)]) -> Me:
    """Whoami (see the route description)."""
    partner = call.principal.partner
    answer = Me(partner=partner.id, partner_name=partner.name, role=partner.role,
                user=call.principal.user, purposes=[partner.purpose],
                intake_deadline_days=call.days)
    call.account("GET /v1/me", [], [])
    return answer
