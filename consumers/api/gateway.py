"""The partner gateway routes: ``POST /v1/events`` and ``POST /v1/events:batch``.

A partner API key publishes as its own partner: the event goes to ``lead.in.<partner>`` through
the partner SDK, and the normal validator takes it from there. Bodies are read with a size cap
before anything is parsed.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from consumers.api.auth import Principal
from consumers.api.context import ApiContext, get_context, partner_key
from consumers.api.errors import PayloadTooLarge
from consumers.api.ingest import (
    AVRO,
    BATCH_TYPES,
    JSON,
    JSON_LINES,
    SINGLE_TYPES,
    check_size,
    iter_batch_items,
    parse_event,
    require_media_type,
    split_batch,
    too_large,
)
from consumers.api.models import (
    BATCH_EXAMPLE,
    EVENT_EXAMPLE,
    Accepted,
    BatchResults,
    error_responses,
)

router = APIRouter(tags=["gateway"])

_EVENT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "The JSON event envelope (see `leadhub schemas show TYPE`).",
    "required": ["event_id", "type", "participant_id", "occurred_at", "payload"],
    "properties": {
        "event_id": {"type": "string", "format": "uuid"},
        "type": {"type": "string"},
        "participant_id": {"type": "string"},
        "occurred_at": {"type": "string", "format": "date-time"},
        "source_partner": {"type": ["string", "null"],
                           "description": "Leave empty; if set it must be your partner id."},
        "payload": {"type": "object"},
    },
}


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, read up to ``limit`` bytes; 413 beyond it."""
    check_size(request.headers.get("content-length"), limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large(limit)
        chunks.append(chunk)
    return b"".join(chunks)


@router.post(
    "/v1/events",
    status_code=202,
    summary="Publish one event",
    description=(
        "Publish one event as the partner the API key belongs to. The body is the JSON event "
        "envelope (`application/json`) or the Avro single-object encoding "
        f"(`{AVRO}`). The event is checked against its contract, produced to the partner's "
        "inbound topic keyed by participant_id (acks=all) and then validated by the hub like "
        "any other inbound event. `source_partner` is stamped by the hub: leave it empty. "
        "Repeating an accepted event_id returns the same 202 and publishes nothing."
    ),
    response_model=Accepted,
    responses=error_responses(400, 401, 403, 409, 413, 415, 503),
    openapi_extra={"requestBody": {"required": True, "content": {
        JSON: {"schema": _EVENT_SCHEMA, "example": EVENT_EXAMPLE},
        AVRO: {"schema": {"type": "string", "format": "binary"}},
    }}},
)
async def publish_event(
    request: Request,
    principal: Annotated[Principal, Depends(partner_key)],
    context: Annotated[ApiContext, Depends(get_context)],
) -> JSONResponse:
    """Publish one event (see the route description)."""
    kind = require_media_type(request.headers.get("content-type"), SINGLE_TYPES)
    body = await read_body(request, context.config.max_event_bytes)

    def work() -> str:
        event = parse_event(body, kind, context.catalog)
        return context.gateway.submit(principal.partner, event)

    event_id = await run_in_threadpool(work)
    return JSONResponse({"event_id": event_id}, status_code=202)


@router.post(
    "/v1/events:batch",
    summary="Publish many events",
    description=(
        "Publish many events as the key's partner. The body is a JSON array of event envelopes "
        f"(`{JSON}`) or JSON Lines, one envelope per line (`{JSON_LINES[0]}`, also "
        f"`{JSON_LINES[1]}`); blank lines are skipped. Every item gets its own result, in "
        "order: `202` with its event_id, or its own `400`/`403`/`409` error. Valid items are "
        "published even when others fail. `503` means Kafka did not acknowledge and nothing is "
        "confirmed: retry the whole batch (accepted event_ids are not published twice)."
    ),
    response_model=BatchResults,
    responses=error_responses(400, 401, 403, 413, 415, 503),
    openapi_extra={"requestBody": {"required": True, "content": {
        JSON: {"schema": {"type": "array", "items": _EVENT_SCHEMA},
               "example": BATCH_EXAMPLE},
        JSON_LINES[0]: {"schema": {"type": "string"}},
    }}},
)
async def publish_batch(
    request: Request,
    principal: Annotated[Principal, Depends(partner_key)],
    context: Annotated[ApiContext, Depends(get_context)],
) -> JSONResponse:
    """Publish a batch of events (see the route description)."""
    kind = require_media_type(request.headers.get("content-type"), BATCH_TYPES)
    body = await read_body(request, context.config.max_batch_bytes)

    def work() -> dict[str, Any]:
        raw = split_batch(body, kind)
        limit = context.config.max_batch_items
        if len(raw) > limit:
            raise PayloadTooLarge(f"a batch holds at most {limit} events; split it",
                                  code="TOO_MANY_EVENTS")
        items = list(iter_batch_items(raw, context.catalog))
        results = context.gateway.submit_many(principal.partner, items)
        accepted = sum(1 for r in results if r.status == 202)
        return {"accepted": accepted, "rejected": len(results) - accepted,
                "results": [r.to_json() for r in results]}

    return JSONResponse(await run_in_threadpool(work), status_code=200)
