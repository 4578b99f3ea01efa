"""Recording: forms for the events the user's role may emit, published like POST /v1/events.

The form comes from the schema (:mod:`consumers.console.forms`); the submitted values become a
JSON event envelope parsed by :func:`schemas.event.event_from_json` — the gateway's parser —
and go through :meth:`consumers.api.ingest.Gateway.submit` as the user's partner (emitter
check, content rules, dedupe ledger, the partner's inbound topic; the validator stamps the
source from the topic). Who recorded it goes to ``event_authors`` first
(:mod:`consumers.console.authors`).
"""

from __future__ import annotations

import hashlib
import uuid
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from consumers.api.errors import ApiError, NotFound
from consumers.console.authors import EventAuthors
from consumers.console.forms import (
    NOT_FROM_FORMS,
    FormField,
    FormProblem,
    form_fields,
    occurred_at,
    payload_from_form,
)
from consumers.console.sessions import Session
from consumers.console.web import ConsoleRoute, context_of, reading, render
from schemas.errors import ContractError
from schemas.event import event_from_json

router = APIRouter(route_class=ConsoleRoute, include_in_schema=False)
MAX_UPLOAD = 20 * 1024 * 1024


def recordable(request: Request, session: Session) -> list[str]:
    """The event types this user's role may emit from a form."""
    catalog = context_of(request).catalog
    return [t for t in catalog.types()
            if t not in NOT_FROM_FORMS and catalog.may_emit(session.partner.role, t)]


def _fields(request: Request, session: Session, type_name: str) -> list[FormField]:
    if type_name not in recordable(request, session):
        raise NotFound("there is no form for this event for your organisation",
                       code="NOT_FOUND")
    return form_fields(context_of(request).catalog.latest(type_name))


@router.get("/record")
async def choose(request: Request) -> Response:
    """The events this user may record."""
    session = await reading(request)
    catalog = context_of(request).catalog
    kinds = [{"name": t, "doc": catalog.latest(t).doc} for t in recordable(request, session)]
    return render(request, "record_list.html", {
        "nav": "record", "title": "Record", "kinds": kinds,
        "participant_id": request.query_params.get("participant_id", "")[:64]})


def _form(request: Request, type_name: str, fields: list[FormField], values: dict[str, str],
          problem: str | None, status: int = 200) -> Response:
    event_type = context_of(request).catalog.latest(type_name)
    return render(request, "record_form.html", {
        "nav": "record", "title": f"Record: {type_name}", "type_name": type_name,
        "type_doc": event_type.doc, "fields": fields, "values": values, "problem": problem,
        "multipart": any(f.kind == "digest" for f in fields)}, status=status)


@router.get("/record/{type_name}")
async def form(request: Request, type_name: str) -> Response:
    """The generated form of one event type."""
    session = await reading(request)
    fields = _fields(request, session, type_name)
    values = {"participant_id": request.query_params.get("participant_id", "")[:64]}
    values.update({f.name: f.default for f in fields if f.default})
    return _form(request, type_name, fields, values, None)


@router.post("/record/{type_name}")
async def submit(request: Request, type_name: str) -> Response:
    """Validate the form as an event, record its author, publish it."""
    session = await reading(request)
    fields = _fields(request, session, type_name)
    context = context_of(request)
    submitted = await request.form()
    values: dict[str, str] = {}
    digests: dict[str, str] = {}
    for key, value in submitted.multi_items():
        if isinstance(value, UploadFile):
            data = await value.read(MAX_UPLOAD + 1)
            if data and len(data) <= MAX_UPLOAD:
                digests[key] = hashlib.sha256(data).hexdigest()
        elif key not in values:
            values[key] = value
        else:
            values[key] += "\n" + value
    try:
        envelope: dict[str, Any] = {
            "event_id": str(uuid.uuid4()), "type": type_name,
            "participant_id": values.get("participant_id", "").strip(),
            "occurred_at": occurred_at(values.get("occurred_at", ""), context.clock()),
            "payload": payload_from_form(fields, values, digests)}
        event = event_from_json(envelope, context.catalog)
    except FormProblem as exc:
        return _form(request, type_name, fields, values, f"{_label(exc.field)}: {exc.message}",
                     400)
    except ContractError as exc:
        where = (exc.field_path or "").removeprefix("payload.")
        return _form(request, type_name, fields, values,
                     f"{_label(where) if where else 'The event'}: {exc.message}", 400)
    authors = EventAuthors(context.credentials.engine, clock=lambda: context.clock())

    def work() -> None:
        authors.before_publish(session.partner.id, event.event_id, type_name,
                               session.user_name, session.session_id)
        context.gateway.submit(session.partner, event)
        authors.published(session.partner.id, event.event_id)

    try:
        await run_in_threadpool(work)
    except ApiError as exc:
        if exc.status >= 500:
            raise
        return _form(request, type_name, fields, values, exc.message, exc.status)
    return RedirectResponse(f"/record/{type_name}/done?event_id={event.event_id}&"
                            f"participant_id={event.participant_id}", status_code=303)


@router.get("/record/{type_name}/done")
async def done(request: Request, type_name: str) -> Response:
    """Confirmation: the event was accepted and is on its way through the hub."""
    await reading(request)
    return render(request, "record_done.html", {
        "nav": "record", "title": "Recorded", "type_name": type_name,
        "event_id": request.query_params.get("event_id", "")[:64],
        "participant_id": request.query_params.get("participant_id", "")[:64]})


def _label(name: str) -> str:
    return name.replace("_", " ").capitalize()
