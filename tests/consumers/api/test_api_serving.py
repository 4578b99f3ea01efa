"""How the API is served fast: reused statements, one-call row parsing, no ping per checkout
(but idle connections are checked), and TCP_NODELAY with several uvicorn workers."""

from __future__ import annotations

import json
import socket
import time
import uuid
import warnings
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from consumers.api.access_log import MemoryAccessLog
from consumers.api.app import create_api
from consumers.api.context import ApiConfig
from consumers.api.queries import parse_rows
from consumers.store import RowChange, ViewStore
from leadhub.cli_api import listening_socket
from schemas.kafka_connection import KafkaConnection
from tests.factories import SITE, participant_id

with warnings.catch_warnings():  # starlette's note about httpx2, at import time
    warnings.simplefilter("ignore", DeprecationWarning)
    from fastapi.testclient import TestClient

CM = {"X-Purpose": "care_coordination"}
PERSON = participant_id(1)


def _row(participant: str, day: int) -> dict[str, Any]:
    return {"event_id": str(uuid.uuid4()), "type": "ContactLogged",
            "participant_id": participant, "occurred_at": f"2026-01-{day:02d}T00:00:00Z",
            "source_partner": "harbor-cm", "fields": {"contact_method": "OUTREACH"},
            "categories": ["PROGRAM_STATUS"], "consent_ids": ["c-1"] if day % 2 else [],
            "notice": None}


def test_parse_rows_matches_one_loads_per_row() -> None:
    texts = [json.dumps(_row(PERSON, day), sort_keys=True) for day in range(1, 6)]
    texts.append('{"a": "x\\u00e9,\\"]", "b": [1, {"c": null}]}')
    assert parse_rows(texts) == [json.loads(t) for t in texts]
    assert parse_rows([]) == []
    # Texts that are not one object each are still parsed one by one.
    assert parse_rows(["1", "[2]"]) == [1, [2]]


def test_reads_survive_connections_killed_while_idle(database_url: str) -> None:
    """Without pool_pre_ping, a connection the server dropped is found by the idle ping."""
    if not database_url.startswith("postgresql"):
        pytest.skip("needs a server that can drop connections")
    store = ViewStore(database_url)
    store.create_schema()
    rows = [_row(PERSON, day) for day in range(1, 4)]
    store.apply([RowChange("harbor-cm", r["event_id"], r) for r in rows], {})
    store.close()
    import consumers.api.app as app_module

    saved = app_module.IDLE_PING_S
    app_module.IDLE_PING_S = 0.05
    try:
        app = create_api(ApiConfig(database_url, KafkaConnection("127.0.0.1:1")), site=SITE,
                         access_log=MemoryAccessLog())
    finally:
        app_module.IDLE_PING_S = saved
    token = app.state.context.credentials.create("harbor-cm", "staff", "ana").secret
    headers = {"Authorization": f"Bearer {token}", **CM}
    with TestClient(app) as http:
        first = http.get(f"/v1/participants/{PERSON}/timeline", headers=headers)
        assert first.status_code == 200 and len(first.json()["items"]) == 3
        admin = create_engine(database_url, isolation_level="AUTOCOMMIT")
        with admin.connect() as connection:
            killed = connection.execute(text(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()")).scalar()
        admin.dispose()
        assert killed
        time.sleep(0.2)
        again = http.get(f"/v1/participants/{PERSON}/timeline", headers=headers)
        assert again.status_code == 200
        assert again.json() == first.json()


def test_worker_socket_disables_nagle() -> None:
    """uvicorn's own worker socket is protocol 0, so asyncio leaves Nagle on (+40 ms)."""
    sock = listening_socket("127.0.0.1", 0)
    try:
        assert sock.proto == socket.IPPROTO_TCP
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
        sock.listen()
        client = socket.create_connection(sock.getsockname())
        accepted, _ = sock.accept()
        try:
            assert accepted.proto == socket.IPPROTO_TCP
            assert accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
        finally:
            accepted.close()
            client.close()
    finally:
        sock.close()
