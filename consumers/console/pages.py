"""The reading pages: caseload (``/``), person (``/participants/{id}``), intake deadlines.

Each page reads through the staff API's own code with a :class:`ConsoleCall` (the caller's
partner as recipient, the session's purpose, the session id as key id): the caseload lines of
:mod:`consumers.console.listing`, and the API's timeline and intake-deadline handlers called as
functions, so a page can show no row the API would not return to the same person, and each
page is on ``lead.audit.access`` before it is shown (503 and nothing shown otherwise). The
person page's consent panel (:mod:`consumers.console.consents`, for roles that may see
CONSENT data) reads the caller's consent rows of the participant with
:meth:`ViewQueries.rows_of` and is accounted as a read of its own.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from consumers.api.caseload import parse_instant
from consumers.api.staff import intake_deadlines, timeline
from consumers.console.consents import PANEL_TYPES, consent_lines, may_see_consents
from consumers.console.listing import (
    SORTS,
    STATUSES,
    CaseloadPage,
    caseload_page,
    parse_filter,
    parse_sort,
    search,
    sorted_caseload_page,
)
from consumers.console.web import ConsoleRoute, call_for, context_of, reading, render
from schemas.catalog import CATEGORIES, Catalog
from schemas.errors import HubError

router = APIRouter(route_class=ConsoleRoute, include_in_schema=False)

PAGE_SIZE = 25
TIMELINE_PAGE = 50
DEADLINE_STATUSES = ("pending", "missed", "met", "all")
SORT_LABELS = {"participant": "Participant id", "deadline": "Next intake deadline",
               "last_contact": "Last contact, longest ago first"}
FILTER_KEYS = ("status", "due_within", "missed", "mine", "sort")


def _body(page: BaseModel) -> Any:
    """An API handler's answer as the JSON data the API sends for it."""
    return page.model_dump(mode="json")


def when(text: str | None) -> str:
    """An instant as the pages show it: ``2026-05-01 09:00 UTC``."""
    if not text:
        return "—"
    try:
        return parse_instant(text).strftime("%Y-%m-%d %H:%M UTC")
    except ValueError:
        return text


def label(name: str) -> str:
    """A field name as a label: ``case_manager`` -> ``Case manager``."""
    return name.replace("_", " ").capitalize()


def shown_value(value: Any) -> str:
    """A field value as text."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list):
        return ", ".join(shown_value(v) for v in value) or "—"
    if isinstance(value, dict):
        return "; ".join(f"{label(str(k))}: {shown_value(v)}" for k, v in value.items())
    if isinstance(value, str) and len(value) >= 20 and value[4:5] == "-" and "T" in value:
        return when(value)
    return str(value)


def described_row(row: Mapping[str, Any], catalog: Catalog) -> dict[str, Any]:
    """A timeline row with its type's doc and each field's label and doc from the schema."""
    try:
        event_type = catalog.latest(str(row.get("type")))
        docs = {spec.name: spec.doc for spec in event_type.fields}
        order = [spec.name for spec in event_type.fields]
        type_doc = event_type.doc
    except HubError:
        docs, order, type_doc = {}, [], ""
    fields = row.get("fields") or {}
    names = [n for n in order if n in fields] + [n for n in fields if n not in order]
    return {**row, "type_label": _type_label(str(row.get("type"))), "type_doc": type_doc,
            "when": when(str(row.get("occurred_at"))),
            "shown_fields": [{"name": n, "label": label(n), "doc": docs.get(n, ""),
                              "value": shown_value(fields[n])} for n in names]}


def _type_label(name: str) -> str:
    words = "".join(f" {c}" if c.isupper() else c for c in name).strip().split(" ")
    return " ".join([words[0], *(w.lower() for w in words[1:])])


@router.get("/")
async def caseload(request: Request) -> Response:
    """Caseload: the partner's participants, filtered, searched and paged."""
    session = await reading(request)
    context = context_of(request)
    params = request.query_params
    wanted = parse_filter(params.get("status"), params.get("due_within"), params.get("missed"),
                          params.get("mine"), session.assignee_name)
    sort, number = parse_sort(params.get("sort"), params.get("page"))
    query = (params.get("q") or "").strip()[:256]
    after = params.get("after") or None

    def work() -> CaseloadPage:
        if query:
            return CaseloadPage(search(call_for(session, context, "/?q"), query), None)
        call = call_for(session, context, "/")
        if sort != "participant":
            return sorted_caseload_page(call, wanted, sort, number, PAGE_SIZE)
        return caseload_page(call, wanted, after[:256] if after else None, PAGE_SIZE)

    page = await run_in_threadpool(work)
    keep = {k: v for k, v in params.items() if k in FILTER_KEYS and v}
    return render(request, "caseload.html", {
        "nav": "caseload", "title": "Caseload", "entries": page.entries, "query": query,
        "filter": wanted, "statuses": STATUSES, "next_after": page.next_after,
        "next_page": page.next_page, "truncated": page.truncated, "keep": keep,
        "sort": sort, "sorts": [(s, SORT_LABELS[s]) for s in SORTS],
        "mine": params.get("mine") == "1", "assignee": session.assignee_name,
        "when": when, "searched": bool(query)})


@router.get("/participants/{participant_id}")
async def person(request: Request, participant_id: str) -> Response:
    """Person page: the timeline rows this partner may see of one participant."""
    session = await reading(request)
    context = context_of(request)
    params = request.query_params
    wanted_type = params.get("type") or None
    wanted_category = params.get("category") or None
    cursor = params.get("cursor") or None

    show_consents = may_see_consents(context.site, session.partner.role)

    def work() -> tuple[dict[str, Any], list[dict[str, Any]]]:
        call = call_for(session, context, "/participants/{participant_id}")
        types = [wanted_type] if wanted_type in context.catalog.types() else None
        categories = [wanted_category] if wanted_category in CATEGORIES else None
        answer = timeline(call, participant_id, types, categories, None, None,
                          TIMELINE_PAGE, cursor[:2048] if cursor else None)
        page: dict[str, Any] = _body(answer)  # a 404 has left already: nothing else read
        consent_rows: list[dict[str, Any]] = []
        if show_consents:
            panel = call_for(session, context, "/participants/{participant_id} consents")
            consent_rows = context.views.rows_of(panel.recipient, [participant_id],
                                                 PANEL_TYPES)[participant_id]
            panel.account("consents", [participant_id] if consent_rows else [], consent_rows)
        return page, consent_rows

    page, consent_rows = await run_in_threadpool(work)
    rows = [described_row(r, context.catalog) for r in page["items"]]
    consents = (consent_lines(consent_rows, context.site, context.clock())
                if show_consents else None)
    return render(request, "person.html", {
        "nav": "caseload", "title": f"Participant {participant_id}",
        "participant_id": participant_id, "rows": rows, "next_cursor": page["next_cursor"],
        "types": context.catalog.types(), "categories": CATEGORIES,
        "wanted_type": wanted_type, "wanted_category": wanted_category,
        "part2": any(r.get("notice") for r in rows), "consents": consents,
        "can_record": [t for t in context.catalog.types()
                       if context.catalog.may_emit(session.partner.role, t)]})


@router.get("/deadlines")
async def deadlines(request: Request) -> Response:
    """Intake deadlines: pending, missed or met, due soonest first."""
    session = await reading(request)
    context = context_of(request)
    status = request.query_params.get("status") or "pending"
    status = status if status in DEADLINE_STATUSES else "pending"
    cursor = request.query_params.get("cursor") or None

    def work() -> dict[str, Any]:
        call = call_for(session, context, "/deadlines")
        page: dict[str, Any] = _body(intake_deadlines(call, None, status, PAGE_SIZE,
                                                      cursor[:2048] if cursor else None))
        return page

    page = await run_in_threadpool(work)
    items = sorted(page["items"], key=lambda d: (d["due_at"], d["participant_id"]))
    return render(request, "deadlines.html", {
        "nav": "deadlines", "title": "Intake deadlines", "items": items, "status": status,
        "statuses": DEADLINE_STATUSES, "next_cursor": page["next_cursor"], "when": when,
        "days": context.site.intake_deadline_days})
