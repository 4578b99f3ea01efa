"""The app factory: :func:`create_api` wires config, site and adapters into a FastAPI app.

The composition root (``leadhub serve``) calls it with settings; tests call it with an
in-memory access log or a real Kafka one. Every error leaves as ``{"error": {"code",
"message"}}`` (plus ``field_path``); no input produces a stack trace or a 5xx. The OpenAPI
document is finished for the site and catalog by :mod:`consumers.api.openapi`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.exc import DisconnectionError, SQLAlchemyError
from starlette.exceptions import HTTPException as StarletteHTTPException

from consumers.api.access_log import AccessLog, KafkaAccessLog
from consumers.api.accounts import adopt_from_view, migrate, open_accounts
from consumers.api.auth import CredentialStore
from consumers.api.context import ApiConfig, ApiContext
from consumers.api.crosswalk import Crosswalk
from consumers.api.errors import ApiError, ServiceUnavailable
from consumers.api.gateway import router as gateway_router
from consumers.api.identifiers import router as identifiers_router
from consumers.api.ingest import Gateway, GatewayLedger, InboundPublisher, KafkaInbound
from consumers.api.openapi import finish_openapi
from consumers.api.queries import ViewQueries
from consumers.api.staff import router as staff_router
from consumers.console.routes import STATIC_DIR as CONSOLE_STATIC
from consumers.console.routes import STATIC_PATH as CONSOLE_STATIC_PATH
from consumers.console.routes import router as console_router
from consumers.store import ViewStore
from processors.site import SitePolicy
from schemas.catalog import Catalog, load_catalog
from schemas.topics import TopicNames

log = logging.getLogger("leadhub.api")

#: Connections of the API's pool (a staff read holds one for a single query; uvicorn's
#: thread pool bounds how many run at once).
POOL_SIZE = 10
POOL_OVERFLOW = 20
#: A pooled connection idle for longer than this is pinged before use (see
#: :func:`ping_when_idle`); a busy connection is used as it is.
IDLE_PING_S = 5.0

DESCRIPTION = """\
The leadhub HTTP API: a **partner gateway** for publishing events and a **staff query API**
over the consent-filtered view.

* Partner systems publish with an **API key** (`Authorization: Bearer <key>`); the source
  partner is the key's, never the body's. Events name people by the hub's participant id
  (`p-` and 16 hex digits): a key gets it for its partner's own local id of a person with
  `POST /v1/participants` and looks it up with `GET /v1/identifiers/{local_id}` (its own
  links only).
* Staff read with a **staff token** and declare a purpose of use in `X-Purpose`. They see only
  their own partner's rows of the view, exactly as the hub's policy core materialized them: the
  API never evaluates policy. A participant you may not see is a 404 identical to one that does
  not exist.
* Every staff read is recorded on the `lead.audit.access` topic (who, purpose, which records,
  under which consents) before it is returned; if that fails, the read fails with 503.

Errors always have the shape `{"error": {"code": ..., "message": ..., "field_path"?: ...}}`
(`field_path` names the offending field or parameter, e.g. `payload.door`, and is absent when
there is none); each response below lists the codes it may carry. A request that fails
validation is a `400`, never a `422`.
Keys and tokens are managed with `leadhub keys create|list|revoke|rotate`.
"""


def open_schema(engine: Engine) -> None:
    """Create the view's tables and indexes if missing (idempotent). The API's own tables are in
    the accounts database (:mod:`consumers.api.accounts`)."""
    try:
        ViewStore("", engine=engine).create_schema()
    except SQLAlchemyError as exc:
        raise ServiceUnavailable("cannot prepare the API tables in the view database",
                                 code="DATABASE_UNAVAILABLE") from exc


def ping_when_idle(engine: Engine, idle_s: float | None = None) -> None:
    """Ping a pooled connection on checkout only if it sat idle for more than ``idle_s``.

    ``pool_pre_ping`` costs a round trip on every checkout, and a staff read checks out a
    connection two or three times. A connection used a moment ago is almost surely alive; one
    that sat through a database restart is caught here and replaced (``DisconnectionError``
    makes the pool reconnect). A connection that breaks while busy fails its query with 503,
    and the dialect then invalidates the whole pool, so the next read reconnects.
    ``idle_s`` defaults to :data:`IDLE_PING_S`.
    """
    limit = IDLE_PING_S if idle_s is None else idle_s

    @event.listens_for(engine, "checkin")
    def checkin(_dbapi: Any, record: Any) -> None:
        record.info["leadhub_idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def checkout(dbapi: Any, record: Any, _proxy: Any) -> None:
        since = record.info.get("leadhub_idle_since")
        if since is None or time.monotonic() - since <= limit:
            return
        try:
            engine.dialect.do_ping(dbapi)
        except Exception as exc:  # any failure means: use another connection
            raise DisconnectionError("idle connection failed its ping") from exc


def create_api(
    config: ApiConfig,
    *,
    site: SitePolicy,
    catalog: Catalog | None = None,
    access_log: AccessLog | None = None,
    inbound: InboundPublisher | None = None,
    engine: Engine | None = None,
    accounts_engine: Engine | None = None,
) -> FastAPI:
    """Build the API app. Adapters default to Kafka and SQL from ``config``.

    Keys, the gateway ledger and the crosswalk go to ``accounts_engine``, else to the database
    at ``config.accounts_database_url`` (keys an older leadhub kept in the view database are
    copied there once), else, when that is None, to the view database itself (tests).

    The app owns what it builds here (the engine, the Kafka producers) and releases it at
    shutdown (lifespan). Kafka producers connect on first use, so the app starts while Kafka
    is down and answers 503 until it is back.
    """
    catalog = catalog or load_catalog()
    topics = TopicNames(config.topic_prefix)
    if engine is None:
        try:
            engine = create_engine(config.database_url, pool_size=POOL_SIZE,
                                   max_overflow=POOL_OVERFLOW)
        except (SQLAlchemyError, ImportError, ValueError) as exc:
            raise ServiceUnavailable("cannot open the view database; check "
                                     "LEADHUB_DATABASE_URL",
                                     code="DATABASE_UNAVAILABLE") from exc
        ping_when_idle(engine)
    open_schema(engine)
    if accounts_engine is None and config.accounts_database_url not in (None,
                                                                        config.database_url):
        accounts_engine = open_accounts(str(config.accounts_database_url),
                                        pool_size=POOL_SIZE, max_overflow=POOL_OVERFLOW)
        adopt_from_view(accounts_engine, engine)
    elif accounts_engine is None:
        accounts_engine = engine
    migrate(accounts_engine)
    # Reads are single statements: autocommit spares each one a BEGIN and a ROLLBACK round
    # trip. The readers share the pools; writes (credentials, gateway ledger) use the engines.
    reader = engine.execution_options(isolation_level="AUTOCOMMIT")
    accounts_reader = accounts_engine.execution_options(isolation_level="AUTOCOMMIT")
    access_log = access_log or KafkaAccessLog(config.kafka, topics.audit_access,
                                              config.kafka_timeout_s)
    inbound = inbound or KafkaInbound(config.kafka, topics, catalog,
                                      config.kafka_timeout_s)
    context = ApiContext(
        config=config, site=site, catalog=catalog,
        credentials=CredentialStore(accounts_engine, site, reader=accounts_reader),
        gateway=Gateway(catalog, GatewayLedger(accounts_engine), inbound),
        views=ViewQueries(reader), access_log=access_log,
        crosswalk=Crosswalk(accounts_engine, reader=accounts_reader),
    )

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        context.access_log.close()
        inbound.close()
        engine.dispose()
        accounts_engine.dispose()

    app = FastAPI(title="leadhub API", version="1", description=DESCRIPTION,
                  lifespan=lifespan, docs_url=None, redoc_url=None)  # offline: console.docs
    app.state.context = context
    app.include_router(gateway_router)
    app.include_router(identifiers_router)
    app.include_router(staff_router)
    app.include_router(console_router)  # the staff console (/), /docs and /redoc
    app.mount(CONSOLE_STATIC_PATH, StaticFiles(directory=CONSOLE_STATIC), name="console-static")
    install_error_handlers(app)
    install_openapi(app, site, catalog)
    return app


def install_openapi(app: FastAPI, site: SitePolicy, catalog: Catalog) -> None:
    """Serve the document :func:`consumers.api.openapi.finish_openapi` finishes (built once)."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = finish_openapi(build(), site, catalog)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def install_error_handlers(app: FastAPI) -> None:
    """Map every error to the one JSON error shape (never a stack trace)."""

    @app.exception_handler(ApiError)
    async def api_error(_: Request, exc: ApiError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        if exc.status >= 500:
            log.warning("api: %s (%s)", exc.code, type(exc.__cause__).__name__)
        return JSONResponse(exc.body(), status_code=exc.status, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        first: dict[str, Any] = exc.errors()[0] if exc.errors() else {}
        loc = [str(part) for part in first.get("loc", ())]
        where = ".".join(loc[1:]) or "request"
        if loc[:2] == ["header", "X-Purpose"]:
            body = ApiError("send the X-Purpose header with your purpose of use",
                            code="PURPOSE_REQUIRED", field_path="X-Purpose").body()
        elif first.get("type") == "json_invalid":  # a JSON body that does not parse
            body = ApiError("the body is not valid JSON", code="MALFORMED_JSON").body()
        else:
            body = ApiError(f"{where}: {first.get('msg', 'invalid')}",
                            code="INVALID_PARAMETER", field_path=where).body()
        return JSONResponse(body, status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        # FastAPI's 400 is a JSON body it could not parse (a route with a model body).
        code = {400: "MALFORMED_JSON", 404: "NO_SUCH_ENDPOINT", 405: "METHOD_NOT_ALLOWED"}.get(
            exc.status_code, "HTTP_ERROR")
        return JSONResponse({"error": {"code": code, "message": str(exc.detail)}},
                            status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(Exception)
    async def unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.error("api: unexpected %s", type(exc).__name__)
        return JSONResponse({"error": {"code": "INTERNAL", "message":
                                       "unexpected server error; this is a bug, report it"}},
                            status_code=500)
