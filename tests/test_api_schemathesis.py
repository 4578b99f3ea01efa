"""Schemathesis against the served OpenAPI spec: no generated input gets a 5xx.

Runs against the ASGI app (no network) with a seeded SQLite view, a recording inbound
publisher and an in-memory access log; every operation gets at most 30 examples.
"""

from __future__ import annotations

import tempfile
import uuid
from pathlib import Path
from typing import Any

import schemathesis
from hypothesis import HealthCheck, settings

from consumers.api.access_log import MemoryAccessLog
from consumers.api.app import create_api
from consumers.api.context import ApiConfig
from consumers.store import RowChange, ViewStore
from processors.site import load_site
from schemas.event import Event

SITE = load_site(Path(__file__).resolve().parent.parent / "config" / "site.example.yaml")
AVRO = "application/vnd.leadhub.avro"


class RecordingInbound:
    """Inbound publisher that keeps what it was given."""

    def __init__(self) -> None:
        self.sent: list[Event] = []

    def publish(self, partner_id: str, events: Any) -> None:
        self.sent.extend(events)

    def close(self) -> None:
        pass


def _build_app() -> tuple[Any, dict[str, str], dict[str, str]]:
    url = f"sqlite:///{tempfile.mkdtemp(prefix='leadhub-st-')}/view.sqlite"
    store = ViewStore(url)
    store.create_schema()
    rows: list[dict[str, Any]] = []
    for index in range(5):
        rows.append({"event_id": str(uuid.uuid4()), "type": "ContactLogged",
                     "participant_id": f"P-{index}",
                     "occurred_at": f"2026-01-0{index + 1}T00:00:00Z",
                     "source_partner": "harbor-cm", "fields": {"contact_method": "OUTREACH"},
                     "categories": ["PROGRAM_STATUS"], "consent_ids": [], "notice": None})
    store.apply([RowChange("harbor-cm", str(r["event_id"]), r) for r in rows], {})
    store.close()
    app = create_api(ApiConfig(url, "127.0.0.1:1"), site=SITE, access_log=MemoryAccessLog(),
                     inbound=RecordingInbound())
    creds = app.state.context.credentials
    partner = {"Authorization": f"Bearer {creds.create('harbor-cm', 'partner').secret}"}
    staff = {"Authorization": f"Bearer {creds.create('harbor-cm', 'staff', 'fuzz').secret}"}
    return app, partner, staff


APP, PARTNER, STAFF = _build_app()


@schemathesis.serializer(AVRO)
def _avro(ctx: Any, value: Any) -> bytes:
    """Send generated binary bodies as they are."""
    if isinstance(value, bytes):
        return value
    return str(value).encode("utf-8", "surrogatepass")


@schemathesis.serializer("application/x-ndjson")
def _json_lines(ctx: Any, value: Any) -> bytes:
    """Send generated JSON Lines text as UTF-8."""
    return value if isinstance(value, bytes) else str(value).encode("utf-8", "surrogatepass")


schema = schemathesis.openapi.from_asgi("/openapi.json", APP)


@schema.parametrize()
@settings(max_examples=30, deadline=None,
          suppress_health_check=list(HealthCheck))
def test_no_server_error_on_any_input(case: Any) -> None:
    auth = PARTNER if case.method == "POST" else STAFF
    response = case.call(headers=auth)
    assert response.status_code < 500, (case.method, case.path, response.status_code,
                                        response.text[:200])
    if response.status_code >= 400:
        body = response.json()
        assert set(body) == {"error"} and {"code", "message"} <= set(body["error"])
