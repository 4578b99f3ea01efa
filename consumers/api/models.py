"""Response models, error codes and examples: what the OpenAPI document (``/openapi.json``,
``/docs``) promises.

Every route returns an instance of its declared response model, which FastAPI serializes, so
the document and the answers cannot drift apart (errors leave through the app's handlers as
:class:`ErrorBody`); ``tests/consumers/api/test_api_schemathesis.py`` checks every response the
server gives against the document (status, content type, headers, body, error code).

Examples use the hub's id formats: event ids are random (version 4) UUIDs, participant ids the
hub's pseudonymous ``p-<16 hex digits>``, event instants the JSON form's
``YYYY-MM-DDTHH:MM:SS.ffffffZ`` (UTC) and the API's instants ISO 8601 UTC with ``Z``
(microseconds only when there are any).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from consumers.api.crosswalk import LOCAL_ID_PATTERN
from consumers.api.errors import ApiError
from processors.policy import REDISCLOSURE_NOTICE
from schemas.errors import RejectReason
from schemas.event import PARTICIPANT_ID_PATTERN

#: A participant id in the hub's format, used by every example.
PARTICIPANT_EXAMPLE = "p-3c5e0b8d91a24f67"
#: An event id: a random (version 4) UUID.
EVENT_ID_EXAMPLE = "5b0f3f5e-8a59-4a4f-9b7e-2f7a0c1d9e21"
#: The id of the participant's referral in the examples (a version 4 UUID).
REFERRAL_ID_EXAMPLE = "9d2c4e1a-7b3f-4c8e-a5d6-0f1e2b3c4d5e"
#: An instant as the API renders it.
INSTANT_EXAMPLE = "2026-03-02T15:04:05Z"
#: A partner's own id for a person (a booking number).
LOCAL_ID_EXAMPLE = "BK-2026-000123"

EVENT_EXAMPLE: dict[str, Any] = {
    "event_id": EVENT_ID_EXAMPLE,
    "type": "ContactLogged",
    "participant_id": PARTICIPANT_EXAMPLE,
    "occurred_at": "2026-03-02T15:04:05.000000Z",
    "payload": {"contact_method": "OUTREACH", "successful": True, "duration_minutes": 20},
}
BATCH_EXAMPLE: list[dict[str, Any]] = [
    EVENT_EXAMPLE,
    {
        "event_id": "c1d7a3e2-46b9-4f0e-8a1d-7e2b9c0f5a64",
        "type": "HousingStatusChanged",
        "participant_id": PARTICIPANT_EXAMPLE,
        "occurred_at": "2026-03-04T09:30:00.000000Z",
        "payload": {"status": "TRANSITIONAL", "provider": "Cedar Commons"},
    },
]

#: The reason codes of a 400 for an event body: the contract's (``leadhub schemas``), less
#: the catalog's own load error, which no event causes.
EVENT_REJECT_CODES: tuple[str, ...] = tuple(
    r.value for r in RejectReason if r is not RejectReason.INVALID_CATALOG)
CREDENTIAL_CODES = ("MISSING_CREDENTIAL", "INVALID_CREDENTIAL", "REVOKED_CREDENTIAL")
PUBLISH_FORBIDDEN_CODES = ("SOURCE_MISMATCH", "EMITTER_NOT_ALLOWED")
PURPOSE_CODES = ("PURPOSE_REQUIRED", "UNKNOWN_PURPOSE")

#: What the server may answer on the gateway's routes, by status: the error ``code``s.
GATEWAY_ERRORS: dict[int, tuple[str, ...]] = {
    400: EVENT_REJECT_CODES,
    401: CREDENTIAL_CODES,
    403: ("WRONG_CREDENTIAL_KIND", *PUBLISH_FORBIDDEN_CODES),
    409: ("EVENT_ID_REUSED",),
    413: ("PAYLOAD_TOO_LARGE",),
    415: ("UNSUPPORTED_MEDIA_TYPE",),
    503: ("KAFKA_UNAVAILABLE", "DATABASE_UNAVAILABLE"),
}
#: The same for the batch route: item errors are inside the 200; 413 also for too many items.
BATCH_ERRORS: dict[int, tuple[str, ...]] = {
    **{s: c for s, c in GATEWAY_ERRORS.items() if s != 409},
    400: ("MALFORMED_JSON",),
    413: ("TOO_MANY_EVENTS", "PAYLOAD_TOO_LARGE"),
}
#: The same for the staff routes (400s from query parameters; 404 only where an id is read).
STAFF_ERRORS: dict[int, tuple[str, ...]] = {
    400: ("INVALID_PARAMETER", "INVALID_CURSOR", *PURPOSE_CODES),
    401: CREDENTIAL_CODES,
    403: ("PURPOSE_NOT_PERMITTED", "WRONG_CREDENTIAL_KIND"),
    503: ("DATABASE_UNAVAILABLE", "AUDIT_UNAVAILABLE"),
}
#: One participant: no query parameters; ``NO_SUCH_ENDPOINT`` is the router's 404 for an id
#: holding a ``/`` (no route matches it).
NOT_FOUND_CODES = ("NOT_FOUND", "NO_SUCH_ENDPOINT")
PARTICIPANT_ERRORS: dict[int, tuple[str, ...]] = {
    **STAFF_ERRORS, 400: PURPOSE_CODES, 404: NOT_FOUND_CODES}
TIMELINE_ERRORS: dict[int, tuple[str, ...]] = {
    **STAFF_ERRORS, 400: (*STAFF_ERRORS[400], "UNKNOWN_EVENT_TYPE", "UNKNOWN_CATEGORY"),
    404: NOT_FOUND_CODES}
#: ``GET /v1/me`` reads no parameters but the optional purpose.
ME_ERRORS: dict[int, tuple[str, ...]] = {**STAFF_ERRORS, 400: PURPOSE_CODES}
#: ``POST /v1/participants`` with a partner key (the crosswalk; 400 for a bad ``local_id``).
LINK_ERRORS: dict[int, tuple[str, ...]] = {
    400: ("INVALID_PARAMETER", "MALFORMED_JSON"),
    401: CREDENTIAL_CODES,
    403: ("WRONG_CREDENTIAL_KIND", "EMITTER_NOT_ALLOWED"),
    503: ("KAFKA_UNAVAILABLE", "DATABASE_UNAVAILABLE"),
}
#: ``GET /v1/identifiers/{local_id}``: 404 for a local id the caller has not linked.
LOOKUP_ERRORS: dict[int, tuple[str, ...]] = {
    400: ("INVALID_PARAMETER",),
    401: CREDENTIAL_CODES,
    403: ("WRONG_CREDENTIAL_KIND",),
    404: NOT_FOUND_CODES,
    503: ("DATABASE_UNAVAILABLE",),
}

_MEANING = {
    400: "Malformed request: a parameter, header, cursor or event is invalid.",
    401: "No credential, an unknown one, or a revoked one.",
    403: "The credential may not do this (wrong kind, another partner, role, purpose).",
    404: "Nothing you may see has this id (the same answer whether or not it exists).",
    409: "The event_id was already accepted for a different event.",
    413: "The body or batch is larger than the limit.",
    415: "Unsupported Content-Type.",
    503: "Kafka or the database is unavailable; nothing was done or returned. Retry later.",
}

_ERROR_EXAMPLES: dict[str, tuple[str, str | None]] = {
    "INVALID_FIELD": ("payload.contact_method: not a symbol of ContactMethod; allowed: "
                      "IN_PERSON, OUTREACH, PHONE, TEXT, VIDEO, OTHER",
                      "payload.contact_method"),
    "MALFORMED_JSON": ("the body is not valid JSON (JSONDecodeError)", None),
    "INVALID_PARAMETER": ("limit: Input should be less than or equal to 200", "limit"),
    "UNKNOWN_PURPOSE": ("X-Purpose is not a purpose of use of this site; see GET /v1/me",
                        "X-Purpose"),
    "MISSING_CREDENTIAL": ("send 'Authorization: Bearer <secret>' with a partner key or staff "
                           "token", None),
    "WRONG_CREDENTIAL_KIND": ("staff tokens may only read; use a partner credential for this "
                              "endpoint", None),
    "PURPOSE_NOT_PERMITTED": ("partner harbor-cm does not act under this purpose; see GET "
                              "/v1/me", "X-Purpose"),
    "NOT_FOUND": ("no participant with this id", None),
    "EVENT_ID_REUSED": (f"event_id {EVENT_ID_EXAMPLE} was already accepted for a different "
                        "event; use a new event_id", "event_id"),
    "KAFKA_UNAVAILABLE": ("Kafka did not acknowledge the events; nothing is confirmed, retry "
                          "the request later (a retry with the same event_id is safe)", None),
    "AUDIT_UNAVAILABLE": ("the access log is unavailable", None),
}


def _absent_when_none(*names: str) -> Callable[[dict[str, Any]], None]:
    """A ``json_schema_extra`` hook: ``names`` are left out of the JSON when None, so their
    schema is the value's alone (no ``null``, no default)."""

    def rewrite(schema: dict[str, Any]) -> None:
        for name in names:
            prop = schema["properties"][name]
            options = [o for o in prop.pop("anyOf", []) if o.get("type") != "null"]
            prop.pop("default", None)
            if len(options) == 1:
                prop.update(options[0])
            elif options:
                prop["anyOf"] = options

    return rewrite


class ErrorDetail(BaseModel):
    """What went wrong: a stable code, a message without personal data, maybe a field path."""

    model_config = ConfigDict(json_schema_extra=_absent_when_none("field_path"))

    code: str = Field(description="Stable machine-readable code; each response lists the "
                                  "codes it may carry.", examples=["INVALID_FIELD"])
    message: str = Field(description="What was wrong and what to do; never a field's value.")
    field_path: str | None = Field(
        default=None, description="The offending field or parameter when there is one "
                                  "(e.g. `payload.door`, `participant_id`, `X-Purpose`); "
                                  "absent otherwise.", examples=["payload.door"])


class ErrorBody(BaseModel):
    """Every error response has this shape."""

    error: ErrorDetail


def _error_example(code: str) -> dict[str, Any]:
    message, field_path = _ERROR_EXAMPLES[code]
    detail: dict[str, Any] = {"code": code, "message": message}
    if field_path is not None:
        detail["field_path"] = field_path
    return {"error": detail}


def error_responses(errors: Mapping[int, tuple[str, ...]],
                    examples: Mapping[int, ApiError] | None = None,
                    ) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` entries for error statuses: the :class:`ErrorBody` schema with
    ``error.code`` limited to the codes listed for each status, and an example (the body of
    the route's own error in ``examples``, else a stock one for the first code that has one).

    A 401 also declares its ``WWW-Authenticate: Bearer`` header.
    """
    own = examples or {}
    responses: dict[int | str, dict[str, Any]] = {}
    for status, codes in sorted(errors.items()):
        listed = ", ".join(f"`{c}`" for c in codes)
        schema = {"allOf": [
            {"$ref": "#/components/schemas/ErrorBody"},
            {"type": "object", "properties": {"error": {"type": "object", "properties": {
                "code": {"type": "string", "enum": list(codes)}}}}},
        ]}
        content: dict[str, Any] = {"schema": schema}
        stock = next((c for c in codes if c in _ERROR_EXAMPLES), None)
        if status in own:
            content["example"] = own[status].body()
        elif stock is not None:
            content["example"] = _error_example(stock)
        entry: dict[str, Any] = {
            "description": f"{_MEANING[status]} Codes: {listed}.",
            "content": {"application/json": content},
        }
        if status == 401:
            entry["headers"] = {"WWW-Authenticate": {
                "description": "The authentication scheme to use.", "required": True,
                "schema": {"type": "string", "enum": ["Bearer"]}}}
        responses[status] = entry
    return responses


class Accepted(BaseModel):
    """The event is in the partner's inbound topic (or was already)."""

    event_id: str = Field(description="The event's id, as sent.")


class BatchAccepted(BaseModel):
    """A batch item that is in the partner's inbound topic (or was already)."""

    index: int = Field(description="0-based position of the item in the batch.")
    status: Literal[202]
    event_id: str


class BatchRejected(BaseModel):
    """A batch item that was refused, with its own error (nothing of it was published)."""

    index: int = Field(description="0-based position of the item in the batch.")
    status: Literal[400, 403, 409] = Field(
        description="400: not a valid event (a reason code of the event contract); 403: "
                    "SOURCE_MISMATCH or EMITTER_NOT_ALLOWED; 409: EVENT_ID_REUSED.")
    error: ErrorDetail


class BatchResults(BaseModel):
    """Per-item results of a batch, in order."""

    accepted: int
    rejected: int
    results: list[BatchAccepted | BatchRejected]


class Intake(BaseModel):
    """The latest arrest-diversion intake deadline the caller's rows show."""

    status: Literal["pending", "met", "missed"]
    due_at: str = Field(json_schema_extra={"format": "date-time"})
    overdue: bool = Field(description="Past due without an intake: missed, or pending and past "
                                      "due (the hub will mark it missed).")


class CaseloadEntry(BaseModel):
    """One participant, summarized from the caller's own rows only."""

    participant_id: str = Field(examples=[PARTICIPANT_EXAMPLE])
    status: Literal["referred", "enrolled", "exited"] | None = Field(
        description="referred, enrolled or exited; null if your rows show none.")
    door: str | None = Field(description="How the participant was referred, e.g. "
                                         "ARREST_DIVERSION; null if you may not see it.")
    case_manager: str | None
    intake: Intake | None
    last_contact: str | None = Field(json_schema_extra={"format": "date-time"})


class CaseloadPage(BaseModel):
    """A page of the caseload, ordered by participant_id."""

    items: list[CaseloadEntry]
    next_cursor: str | None = Field(description="Pass as ?cursor= for the next page; null "
                                                "on the last page.")


class ParticipantSummary(CaseloadEntry):
    """A participant's caseload line plus counts of the caller's rows."""

    rows: int
    first_at: str | None = Field(json_schema_extra={"format": "date-time"})
    last_at: str | None = Field(json_schema_extra={"format": "date-time"})
    counts_by_type: dict[str, int]
    counts_by_category: dict[str, int]
    part2_rows: int = Field(description="Rows carrying the 42 CFR 2.32 redisclosure notice.")


class ViewRowModel(BaseModel):
    """One row of the caller's view: only the fields it may see."""

    event_id: str = Field(description="The event's id (a UUID; version 8 for events the hub "
                                      "derives, such as IntakeDeadlineMissed).")
    type: str
    participant_id: str
    occurred_at: str = Field(json_schema_extra={"format": "date-time"})
    source_partner: str
    fields: dict[str, Any] = Field(description="The payload fields you may see; the others "
                                               "are absent.")
    categories: list[str]
    consent_ids: list[str] = Field(description="The consents that justified any part of "
                                               "the row.")
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
    referred_at: str = Field(json_schema_extra={"format": "date-time"})
    due_at: str = Field(json_schema_extra={"format": "date-time"})
    status: Literal["pending", "met", "missed"]
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


class LinkRequest(BaseModel):
    """A partner's own id for a person, to link to the hub's participant id."""

    model_config = ConfigDict(extra="forbid")

    local_id: str = Field(
        pattern=LOCAL_ID_PATTERN, max_length=128,
        description="Your own id for the person (booking number, client id): 1-128 letters, "
                    "digits and `. _ : -`, starting with a letter or digit. It is yours: "
                    "another partner's equal local id is another person to the hub.")


class ParticipantLink(BaseModel):
    """The hub's participant id for your local id."""

    participant_id: str = Field(pattern=f"^{PARTICIPANT_ID_PATTERN}$",
                                description="The hub's pseudonymous participant id: use it "
                                            "in every event about this person.")


_CONTACT_ROW: dict[str, Any] = {
    "event_id": EVENT_ID_EXAMPLE, "type": "ContactLogged",
    "participant_id": PARTICIPANT_EXAMPLE, "occurred_at": INSTANT_EXAMPLE,
    "source_partner": "harbor-cm",
    "fields": {"contact_method": "OUTREACH", "duration_minutes": 20, "successful": True},
    "categories": ["PROGRAM_STATUS"], "consent_ids": [], "notice": None}
_PART2_ROW: dict[str, Any] = {
    "event_id": "e3a9c6f1-0d42-4b7e-9c15-8f6a2d4b7e30", "type": "ServiceEncounter",
    "participant_id": PARTICIPANT_EXAMPLE, "occurred_at": "2026-03-12T16:00:00Z",
    "source_partner": "riverbend-sud",
    "fields": {"service_type": "SUD_TREATMENT", "provider": "riverbend-sud",
               "duration_minutes": 50, "notes": None},
    "categories": ["SUD_TREATMENT"], "consent_ids": [f"{PARTICIPANT_EXAMPLE}-c1"],
    "notice": REDISCLOSURE_NOTICE}
_CASELOAD_ENTRY: dict[str, Any] = {
    "participant_id": PARTICIPANT_EXAMPLE, "status": "enrolled",
    "door": "ARREST_DIVERSION", "case_manager": "R. Ortiz",
    "intake": {"status": "met", "due_at": "2026-03-16T15:04:05Z", "overdue": False},
    "last_contact": "2026-03-20T10:15:00Z"}
_DEADLINE: dict[str, Any] = {
    "participant_id": PARTICIPANT_EXAMPLE, "referral_event_id": REFERRAL_ID_EXAMPLE,
    "referred_at": INSTANT_EXAMPLE, "due_at": "2026-03-16T15:04:05Z", "status": "pending",
    "overdue": False}

#: An example of each response component, by component name. They are added to the document
#: after FastAPI has built it (:func:`consumers.api.openapi.finish_openapi`): FastAPI drops
#: every null from the document, so a ``json_schema_extra`` example would lose its nulls.
COMPONENT_EXAMPLES: dict[str, Any] = {
    "Accepted": {"event_id": EVENT_ID_EXAMPLE},
    "BatchResults": {"accepted": 1, "rejected": 1, "results": [
        {"index": 0, "status": 202, "event_id": EVENT_ID_EXAMPLE},
        {"index": 1, "status": 400, "error": {
            "code": "INVALID_FIELD", "message": "payload.status: required field missing",
            "field_path": "payload.status"}}]},
    "CaseloadEntry": _CASELOAD_ENTRY,
    "CaseloadPage": {"items": [_CASELOAD_ENTRY], "next_cursor": None},
    "ParticipantSummary": {
        **_CASELOAD_ENTRY, "rows": 6, "first_at": INSTANT_EXAMPLE,
        "last_at": "2026-03-20T10:15:00Z",
        "counts_by_type": {"CaseManagerAssigned": 1, "ContactLogged": 2, "IntakeCompleted": 1,
                           "ReferralMade": 1, "ServiceEncounter": 1},
        "counts_by_category": {"LEGAL_CASE": 1, "PROGRAM_STATUS": 4, "REFERRAL": 1,
                               "SUD_TREATMENT": 1},
        "part2_rows": 1},
    "ViewRowModel": _PART2_ROW,
    "TimelinePage": {"items": [_CONTACT_ROW, _PART2_ROW], "next_cursor": None},
    "DeadlineModel": _DEADLINE,
    "DeadlinesPage": {"items": [_DEADLINE], "next_cursor": None},
    "Me": {"partner": "harbor-cm",
           "partner_name": "Harbor Street Outreach (LEAD case management)",
           "role": "case_management", "user": "jdoe", "purposes": ["care_coordination"],
           "intake_deadline_days": 14},
    "ErrorBody": _error_example("INVALID_FIELD"),
    "LinkRequest": {"local_id": LOCAL_ID_EXAMPLE},
    "ParticipantLink": {"participant_id": PARTICIPANT_EXAMPLE},
}
