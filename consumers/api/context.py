"""What every request handler needs, held once per app, and the auth dependencies.

:class:`ApiConfig` is the app's configuration (built from the hub's settings by the composition
root); :class:`ApiContext` holds the adapters built from it. Handlers reach the context through
``request.app.state.context``.

Dependencies that do no I/O are ``async``: FastAPI runs a plain ``def`` dependency in its
thread pool, and each such hop costs a thread handoff per request. Only
:func:`authenticated` (one SQL lookup) runs in the pool.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from consumers.api.access_log import AccessLog
from consumers.api.auth import CredentialStore, Principal, require_kind
from consumers.api.crosswalk import Crosswalk
from consumers.api.ingest import Gateway
from consumers.api.queries import ViewQueries
from processors.site import SitePolicy
from schemas.catalog import Catalog
from schemas.kafka_connection import KafkaConnection

KIB = 1024


@dataclass(frozen=True)
class ApiConfig:
    """Settings of the API process."""

    database_url: str
    kafka: KafkaConnection
    topic_prefix: str = ""
    max_event_bytes: int = 256 * KIB
    max_batch_bytes: int = 5 * KIB * KIB
    max_batch_items: int = 5000
    kafka_timeout_s: float = 5.0
    #: The accounts database (keys, gateway ledger, crosswalk); None: the view database.
    accounts_database_url: str | None = None


@dataclass
class ApiContext:
    """The adapters one app instance uses."""

    config: ApiConfig
    site: SitePolicy
    catalog: Catalog
    credentials: CredentialStore
    gateway: Gateway
    views: ViewQueries
    access_log: AccessLog
    crosswalk: Crosswalk
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))


bearer = HTTPBearer(
    auto_error=False,
    description="A partner API key (publish only) or a staff token (read only), from "
                "`leadhub keys create`.",
)


async def get_context(request: Request) -> ApiContext:
    """The app's :class:`ApiContext`."""
    context: ApiContext = request.app.state.context
    return context


def authenticated(
    request: Request,
    context: Annotated[ApiContext, Depends(get_context)],
    _: Annotated[HTTPAuthorizationCredentials | None, Security(bearer)],
) -> Principal:
    """The caller, from the Authorization header only (401 otherwise)."""
    return context.credentials.authenticate(request.headers.get("authorization"))


async def partner_key(principal: Annotated[Principal, Depends(authenticated)]) -> Principal:
    """A partner system's key (403 for a staff token)."""
    return require_kind(principal, "partner")


async def staff_token(principal: Annotated[Principal, Depends(authenticated)]) -> Principal:
    """A staff user's token (403 for a partner key)."""
    return require_kind(principal, "staff")
