"""The crosswalk routes: ``POST /v1/participants`` and ``GET /v1/identifiers/{local_id}``.

A partner key gets the hub's participant id for its own local id of a person, minting it the
first time (:mod:`consumers.api.crosswalk`). Lookups answer from the caller's own links only;
the 404 is one body whether nobody or another partner linked the local id. The local id is
never logged nor put in an error (the request log of ``leadhub serve`` is off). Each route
returns an instance of its declared response model.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Response
from starlette.concurrency import run_in_threadpool

from consumers.api.auth import Principal
from consumers.api.context import ApiContext, get_context, partner_key
from consumers.api.crosswalk import LOCAL_ID_PATTERN, link_participant
from consumers.api.errors import NotFound
from consumers.api.models import (
    LINK_ERRORS,
    LOCAL_ID_EXAMPLE,
    LOOKUP_ERRORS,
    LinkRequest,
    ParticipantLink,
    error_responses,
)

router = APIRouter(tags=["identifiers"])

LocalId = Annotated[str, Path(pattern=LOCAL_ID_PATTERN, max_length=128,
                              description="Your own id for the person, as you linked it.",
                              examples=[LOCAL_ID_EXAMPLE])]


def not_linked() -> NotFound:
    """The one 404 of a lookup: the same whether nobody or another partner linked the id."""
    return NotFound("you have linked no participant to this local id; link it with POST "
                    "/v1/participants", code="NOT_FOUND")


@router.post(
    "/v1/participants",
    status_code=201,
    summary="Get the participant id for your local id",
    description=(
        "The hub's participant id for a person you know by your own local id (a booking "
        "number, a client id). The first time, the hub mints a new random id (`p-` and 16 "
        "hex digits), records the link as an `IdentifierLinked` event from you (published "
        "like `POST /v1/events`) and answers `201`; every later call for the same local id "
        "answers `200` with the same id. Local ids are per partner: another partner's equal "
        "local id gets another participant id, and no partner can see your links. After a "
        "`503`, retry: the id stays the same."
    ),
    response_model=ParticipantLink,
    responses={
        200: {"model": ParticipantLink,
              "description": "You had linked this local id already: the same participant id."},
        **error_responses(LINK_ERRORS),
    },
)
async def link(
    body: LinkRequest,
    principal: Annotated[Principal, Depends(partner_key)],
    context: Annotated[ApiContext, Depends(get_context)],
    response: Response,
) -> ParticipantLink:
    """Link a local id (see the route description): 201 when minted now, 200 when linked
    before."""

    def work() -> tuple[str, bool]:
        return link_participant(context.crosswalk, context.gateway, context.catalog,
                                principal.partner, body.local_id)

    participant_id, created = await run_in_threadpool(work)
    response.status_code = 201 if created else 200
    return ParticipantLink(participant_id=participant_id)


@router.get(
    "/v1/identifiers/{local_id}",
    summary="Look up the participant id you linked to a local id",
    description=(
        "The participant id you linked to your local id with `POST /v1/participants`. Only "
        "your own links: a local id nobody linked and one another partner linked give the "
        "same `404`."
    ),
    response_model=ParticipantLink,
    responses=error_responses(LOOKUP_ERRORS, {404: not_linked()}),
)
def lookup(
    local_id: LocalId,
    principal: Annotated[Principal, Depends(partner_key)],
    context: Annotated[ApiContext, Depends(get_context)],
) -> ParticipantLink:
    """Look up a link (see the route description)."""
    found = context.crosswalk.find(principal.partner.id, local_id)
    if found is None or not found.published:  # linked only once its event is acknowledged
        raise not_linked()
    return ParticipantLink(participant_id=found.participant_id)
