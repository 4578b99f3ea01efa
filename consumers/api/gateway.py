"""The partner gateway routes: ``POST /v1/events`` and ``POST /v1/events:batch``.

A partner API key publishes as its own partner: the event goes to ``lead.in.<partner>`` through
the partner SDK, and the normal validator takes it from there. Bodies are read with a size cap
before anything is parsed. Each route returns an instance of its declared response model.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from starlette.concurrency import run_in_threadpool

from consumers.api.auth import Principal
from consumers.api.context import ApiConfig, ApiContext, get_context, partner_key
from consumers.api.errors import ApiError, PayloadTooLarge
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
    BATCH_ERRORS,
    BATCH_EXAMPLE,
    EVENT_EXAMPLE,
    GATEWAY_ERRORS,
    Accepted,
    BatchResults,
    error_responses,
)
from consumers.api.openapi import EVENT_ENVELOPE_REF

router = APIRouter(tags=["gateway"])

_ENVELOPE: dict[str, Any] = {"$ref": EVENT_ENVELOPE_REF}
_JSON_LINES_BODY: dict[str, Any] = {
    "schema": {"type": "string", "description": "One EventEnvelope per line (UTF-8); blank "
                                                "lines are skipped."},
    "example": "\n".join(json.dumps(event) for event in BATCH_EXAMPLE) + "\n",
}


def too_many(limit: int) -> PayloadTooLarge:
    """The 413 for a batch of more than ``limit`` events."""
    return PayloadTooLarge(f"a batch holds at most {limit} events; split it",
                           code="TOO_MANY_EVENTS")


def _raised(call: Callable[[], object]) -> ApiError:
    """The error ``call`` raises (for the document's examples: the server's own errors)."""
    try:
        call()
    except ApiError as exc:
        return exc
    raise AssertionError("the call raised no ApiError")  # pragma: no cover


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
    responses=error_responses(GATEWAY_ERRORS, {
        413: too_large(ApiConfig.max_event_bytes),
        415: _raised(lambda: require_media_type("text/plain", SINGLE_TYPES))}),
    openapi_extra={"requestBody": {"required": True, "content": {
        JSON: {"schema": _ENVELOPE, "example": EVENT_EXAMPLE},
        AVRO: {"schema": {"type": "string", "format": "binary",
                          "description": "C3 01, the 8-byte CRC-64-AVRO fingerprint of the "
                                         "writer schema (little-endian), the Avro body."}},
    }}},
)
async def publish_event(
    request: Request,
    principal: Annotated[Principal, Depends(partner_key)],
    context: Annotated[ApiContext, Depends(get_context)],
) -> Accepted:
    """Publish one event (see the route description)."""
    kind = require_media_type(request.headers.get("content-type"), SINGLE_TYPES)
    body = await read_body(request, context.config.max_event_bytes)

    def work() -> str:
        event = parse_event(body, kind, context.catalog)
        return context.gateway.submit(principal.partner, event)

    return Accepted(event_id=await run_in_threadpool(work))


@router.post(
    "/v1/events:batch",
    summary="Publish many events",
    description=(
        "Publish many events as the key's partner. The body is a JSON array of event envelopes "
        f"(`{JSON}`) or JSON Lines, one envelope per line (`{JSON_LINES[0]}`, also "
        f"`{JSON_LINES[1]}` or `{JSON_LINES[2]}`); blank lines are skipped. Every item gets "
        "its own result, in order: `202` with its event_id, or its own `400`/`403`/`409` "
        "error. Valid items are published even when others fail. `503` means Kafka did not "
        "acknowledge and nothing is confirmed: retry the whole batch (accepted event_ids are "
        "not published twice)."
    ),
    response_model=BatchResults,
    # An item error's field_path is absent, not null, when there is none (ErrorDetail's
    # schema says so); BatchResults has no other field that may be None.
    response_model_exclude_none=True,
    responses=error_responses(BATCH_ERRORS, {
        413: too_many(ApiConfig.max_batch_items),
        415: _raised(lambda: require_media_type("text/plain", BATCH_TYPES))}),
    openapi_extra={"requestBody": {"required": True, "content": {
        JSON: {"schema": {"type": "array", "items": _ENVELOPE}, "example": BATCH_EXAMPLE},
        **{media: _JSON_LINES_BODY for media in JSON_LINES},
    }}},
)
async def publish_batch(
    request: Request,
    principal: Annotated[Principal, Depends(partner_key)],
    context: Annotated[ApiContext, Depends(get_context)],
) -> BatchResults:
    """Publish a batch of events (see the route description)."""
    kind = require_media_type(request.headers.get("content-type"), BATCH_TYPES)
    body = await read_body(request, context.config.max_batch_bytes)

    def work() -> BatchResults:
        raw = split_batch(body, kind)
        limit = context.config.max_batch_items
        if len(raw) > limit:
            raise too_many(limit)
        items = list(iter_batch_items(raw, context.catalog))
        results = context.gateway.submit_many(principal.partner, items)
        accepted = sum(1 for r in results if r.status == 202)
        return BatchResults.model_validate({
            "accepted": accepted, "rejected": len(results) - accepted,
            "results": [r.to_json() for r in results]})

    return await run_in_threadpool(work)
