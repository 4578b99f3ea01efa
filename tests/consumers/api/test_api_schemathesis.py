"""Schemathesis against the served OpenAPI document: every response is what the document says.

Runs against the ASGI app (no network) over a SQLite view seeded with what the policy core
projects from a simulated site (every partner has rows; one participant has the document's
example id), a recording inbound publisher and an in-memory access log. Each staff read carries
the token of a partner acting under the purpose the case declares, so generated reads reach the
handlers and real rows, not only the auth layer; a read of one participant is also repeated for
a participant the caller has rows for. Crosswalk calls carry the partner key, and a lookup is
repeated for a local id that partner has linked. Every response is checked against the document
for its status, content type, headers and body, and for no 5xx; beyond schemathesis, no object
in a body may carry a field its schema does not declare.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import tempfile
import zlib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import jsonschema_rs
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from consumers.api.access_log import MemoryAccessLog
from consumers.api.app import create_api
from consumers.api.context import ApiConfig
from consumers.api.crosswalk import link_participant
from consumers.api.ingest import MemoryInbound
from consumers.api.models import LOCAL_ID_EXAMPLE, PARTICIPANT_EXAMPLE
from consumers.store import RowChange, ViewStore
from processors.offline import project_events, rows_for
from processors.projector import Projector
from producers.simulator import simulate
from schemas.catalog import load_catalog
from schemas.event import Event
from schemas.kafka_connection import KafkaConnection
from tests.factories import SITE

CATALOG = load_catalog()
AVRO = "application/vnd.leadhub.avro"
START = datetime(2026, 1, 5, tzinfo=UTC)
DAYS = 90
NOW = START + timedelta(days=DAYS)
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_schema_conformance, response_headers_conformance]


def _site_events() -> Iterator[Event]:
    """A simulated site whose first participant has the document's example id."""
    events = list(simulate(SITE, CATALOG, 16, DAYS, 2011, START))
    first = events[0].participant_id
    for event in events:
        if event.participant_id == first:
            event = dataclasses.replace(event, participant_id=PARTICIPANT_EXAMPLE)
        yield event


@dataclasses.dataclass(frozen=True)
class Reader:
    """A staff token and its partner."""

    partner: str
    headers: dict[str, str]


def _build_app() -> tuple[Any, dict[str, str], dict[str, Reader], dict[str, list[str]]]:
    url = f"sqlite:///{tempfile.mkdtemp(prefix='leadhub-st-')}/view.sqlite"
    store = ViewStore(url)
    store.create_schema()
    view = project_events(_site_events(), Projector(SITE, CATALOG), at=NOW)
    known: dict[str, list[str]] = {}
    for partner in SITE.partner_ids():
        rows = rows_for(view, partner)
        store.apply([RowChange(partner, r.event_id, r.to_json()) for r in rows], {})
        known[partner] = sorted({r.participant_id for r in rows})
    store.close()
    app = create_api(ApiConfig(url, KafkaConnection("127.0.0.1:1")), site=SITE, catalog=CATALOG,
                     access_log=MemoryAccessLog(), inbound=MemoryInbound())
    app.state.context.clock = lambda: NOW
    creds = app.state.context.credentials
    partner_key = {"Authorization": f"Bearer {creds.create('harbor-cm', 'partner').secret}"}
    context = app.state.context
    harbor = SITE.partner("harbor-cm")
    assert harbor is not None
    link_participant(context.crosswalk, context.gateway, CATALOG, harbor, LOCAL_ID_EXAMPLE)
    staff: dict[str, Reader] = {}
    for partner_id in SITE.partner_ids():
        partner = SITE.partner(partner_id)
        assert partner is not None
        if partner.purpose not in staff:
            secret = creds.create(partner_id, "staff", "fuzz").secret
            staff[partner.purpose] = Reader(partner_id, {"Authorization": f"Bearer {secret}"})
    return app, partner_key, staff, known


APP, PARTNER, STAFF, KNOWN = _build_app()
assert PARTICIPANT_EXAMPLE in KNOWN["harbor-cm"], "the example participant has no rows"


def _closed(node: Any) -> Any:
    """A copy of a schema where every object with declared properties admits no others."""
    if isinstance(node, list):
        return [_closed(item) for item in node]
    if not isinstance(node, dict):
        return node
    closed = {key: _closed(value) for key, value in node.items()}
    if "properties" in closed and "additionalProperties" not in closed:
        closed["additionalProperties"] = False
    return closed


DOCUMENT = APP.openapi()
CLOSED_COMPONENTS = _closed(DOCUMENT["components"])


def _undeclared_fields(method: str, path: str, status: int, body: Any) -> list[str]:
    """Errors of ``body`` against the operation's response schema with closed components."""
    response = DOCUMENT["paths"][path][method.lower()]["responses"][str(status)]
    schema = response["content"]["application/json"]["schema"]
    validator = jsonschema_rs.validator_for({**schema, "components": CLOSED_COMPONENTS})
    return [str(error) for error in validator.iter_errors(body)]


@schemathesis.serializer(AVRO)
def _avro(ctx: Any, value: Any) -> bytes:
    """Send generated binary bodies as they are."""
    if isinstance(value, bytes):
        return value
    return str(value).encode("utf-8", "surrogatepass")


@schemathesis.serializer("application/x-ndjson", "application/jsonl",
                         "application/x-jsonlines")
def _json_lines(ctx: Any, value: Any) -> bytes:
    """Send generated JSON Lines text as UTF-8."""
    return value if isinstance(value, bytes) else str(value).encode("utf-8", "surrogatepass")


schema = schemathesis.openapi.from_asgi("/openapi.json", APP)
CALLS = itertools.count()


def _reader(case: Any) -> Reader:
    """The staff token of a partner acting under the case's purpose (harbor-cm's when the
    purpose is missing or not one of the site's); every tenth read, another purpose's (403)."""
    purpose = (case.headers or {}).get("X-Purpose")
    reader = STAFF.get(purpose if isinstance(purpose, str) else "", STAFF["care_coordination"])
    if next(CALLS) % 10 == 9:
        return next(r for r in STAFF.values() if r is not reader)
    return reader


def _check(case: Any, headers: dict[str, str]) -> None:
    response = case.call_and_validate(headers=headers, checks=CHECKS)
    documented = case.method.upper() == case.operation.method.upper()  # not a probe of 405
    if documented and "application/json" in response.headers.get("content-type", ""):
        errors = _undeclared_fields(case.method, case.operation.path, response.status_code,
                                    response.json())
        assert not errors, (case.method, case.path, response.status_code, errors[:3])


@schema.parametrize()
@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
def test_responses_conform_to_the_document(case: Any) -> None:
    if "local_id" in (case.path_parameters or {}):
        # A partner key's lookup (every tenth with a staff token: 403), then again for a local
        # id that partner has linked, so the handler answers 200.
        wrong = next(CALLS) % 10 == 9
        _check(case, STAFF["care_coordination"].headers if wrong else PARTNER)
        case.path_parameters["local_id"] = LOCAL_ID_EXAMPLE
        _check(case, PARTNER)
        return
    if case.operation.method.upper() == "POST":
        # Every tenth publish with a staff token (403 WRONG_CREDENTIAL_KIND).
        wrong = next(CALLS) % 10 == 9
        _check(case, STAFF["care_coordination"].headers if wrong else PARTNER)
        return
    reader = _reader(case)
    _check(case, reader.headers)
    if "participant_id" in (case.path_parameters or {}) and KNOWN[reader.partner]:
        # Again for a participant the caller has rows for, so the handler answers with them.
        ids = KNOWN[reader.partner]
        generated = json.dumps(case.path_parameters["participant_id"]).encode()
        case.path_parameters["participant_id"] = ids[zlib.crc32(generated) % len(ids)]
        _check(case, reader.headers)
