"""The participant crosswalk: ``POST /v1/participants`` mints (once per partner and local id),
``GET /v1/identifiers/{local_id}`` answers only the caller's own links, the local id is kept
only as a keyed hash, and the link is an ``IdentifierLinked`` that the hub validates like any
other event (on SQLite and PostgreSQL; the last test on the real broker)."""

from __future__ import annotations

import hashlib
import hmac
import logging
import uuid
import warnings
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, select

from consumers.api.access_log import MemoryAccessLog
from consumers.api.app import create_api
from consumers.api.context import ApiConfig
from consumers.api.errors import ServiceUnavailable
from consumers.api.tables import api_metadata, api_secrets, participant_links
from schemas.event import Event, is_participant_id
from schemas.kafka_connection import KafkaConnection
from schemas.topics import TopicNames
from tests.factories import SITE

with warnings.catch_warnings():  # starlette's note about httpx2, at import time
    warnings.simplefilter("ignore", DeprecationWarning)
    from fastapi.testclient import TestClient



class RecordingInbound:
    """Inbound publisher that keeps what it was given, or fails ``failures`` times first."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, Event]] = []
        self.failures = 0

    def publish(self, partner_id: str, events: Any) -> None:
        if self.failures:
            self.failures -= 1
            raise ServiceUnavailable("Kafka did not acknowledge", code="KAFKA_UNAVAILABLE")
        self.sent.extend((partner_id, e) for e in events)

    def close(self) -> None:
        pass


@dataclass
class Hub:
    """An API over a fresh database, with partner keys of two partners and a staff token."""

    http: TestClient
    inbound: RecordingInbound
    app: Any
    harbor: dict[str, str]
    cedar: dict[str, str]
    staff: dict[str, str]

    def link(self, local_id: Any, auth: dict[str, str]) -> Any:
        return self.http.post("/v1/participants", json={"local_id": local_id}, headers=auth)

    def lookup(self, local_id: str, auth: dict[str, str]) -> Any:
        return self.http.get(f"/v1/identifiers/{local_id}", headers=auth)


@pytest.fixture
def hub_api(database_url: str) -> Iterator[Hub]:
    inbound = RecordingInbound()
    app = create_api(ApiConfig(database_url, KafkaConnection("127.0.0.1:1")), site=SITE,
                     access_log=MemoryAccessLog(), inbound=inbound)
    creds = app.state.context.credentials

    def bearer(partner: str, kind: str, user: str | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {creds.create(partner, kind, user).secret}"}

    with TestClient(app) as http:
        yield Hub(http, inbound, app, bearer("harbor-cm", "partner"),
                  bearer("cedar-housing", "partner"), bearer("harbor-cm", "staff", "ana"))


def test_minting_is_idempotent_per_partner(hub_api: Hub) -> None:
    first = hub_api.link("BK-2026-000123", hub_api.harbor)
    assert first.status_code == 201
    minted = first.json()["participant_id"]
    assert first.json() == {"participant_id": minted} and is_participant_id(minted)
    again = hub_api.link("BK-2026-000123", hub_api.harbor)
    assert again.status_code == 200 and again.json() == {"participant_id": minted}
    other = hub_api.link("BK-2026-000124", hub_api.harbor)
    assert other.status_code == 201 and other.json()["participant_id"] != minted
    found = hub_api.lookup("BK-2026-000123", hub_api.harbor)
    assert found.status_code == 200 and found.json() == {"participant_id": minted}
    linked = [(p, e) for p, e in hub_api.inbound.sent if e.participant_id == minted]
    assert len(linked) == 1  # one IdentifierLinked per link, however often it is asked for
    partner, event = linked[0]
    assert (partner, event.type, event.source_partner) == ("harbor-cm", "IdentifierLinked", None)
    assert event.payload == {"partner": "harbor-cm", "local_id": "BK-2026-000123"}
    assert uuid.UUID(event.event_id).version == 4


def test_two_partners_linking_the_same_local_id_get_two_participants(hub_api: Hub) -> None:
    """Local ids are per partner: the police's BK-1 and the shelter's BK-1 are two people to
    the hub, and each partner finds only its own."""
    harbor = hub_api.link("BK-1", hub_api.harbor).json()["participant_id"]
    cedar_link = hub_api.link("BK-1", hub_api.cedar)
    assert cedar_link.status_code == 201
    cedar = cedar_link.json()["participant_id"]
    assert harbor != cedar
    assert hub_api.lookup("BK-1", hub_api.harbor).json() == {"participant_id": harbor}
    assert hub_api.lookup("BK-1", hub_api.cedar).json() == {"participant_id": cedar}
    assert [p for p, _ in hub_api.inbound.sent] == ["harbor-cm", "cedar-housing"]


def test_another_partners_link_is_the_same_404_as_no_link(hub_api: Hub) -> None:
    assert hub_api.link("CH-7", hub_api.cedar).status_code == 201
    theirs = hub_api.lookup("CH-7", hub_api.harbor)
    nobodys = hub_api.lookup("CH-8", hub_api.harbor)
    assert theirs.status_code == nobodys.status_code == 404
    assert theirs.content == nobodys.content
    assert dict(theirs.headers) == dict(nobodys.headers)
    assert theirs.json()["error"]["code"] == "NOT_FOUND"
    assert b"CH-7" not in theirs.content
    assert hub_api.lookup("CH-7", hub_api.cedar).status_code == 200


def test_only_a_keyed_hash_of_the_local_id_is_stored(hub_api: Hub, database_url: str,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    local_id = "BK-SECRET-4711"
    with caplog.at_level(logging.DEBUG):
        minted = hub_api.link(local_id, hub_api.harbor).json()["participant_id"]
        assert hub_api.lookup(local_id, hub_api.harbor).status_code == 200
    hub_lines = [r.getMessage() for r in caplog.records if not r.name.startswith("httpx")]
    assert not any(local_id in line for line in hub_lines)  # httpx: the test's own client
    engine = create_engine(database_url)
    try:
        with engine.connect() as connection:
            for table in api_metadata.sorted_tables:
                for row in connection.execute(select(table)):
                    assert not any(local_id in str(value) for value in row), table.name
            rows = connection.execute(select(participant_links)).mappings().all()
            key = bytes.fromhex(connection.execute(select(api_secrets.c.secret_hex)).scalar_one())
    finally:
        engine.dispose()
    assert len(key) == 32
    assert [(r["partner"], r["participant_id"]) for r in rows] == [("harbor-cm", minted)]
    expected = hmac.new(key, b"harbor-cm\x00" + local_id.encode(), hashlib.sha256).hexdigest()
    assert rows[0]["local_id_hmac"] == expected
    plain = hashlib.sha256(b"harbor-cm" + local_id.encode()).hexdigest()
    assert rows[0]["local_id_hmac"] != plain


def test_a_failed_publish_keeps_the_id_and_the_retry_publishes_the_link(hub_api: Hub) -> None:
    hub_api.inbound.failures = 1
    failed = hub_api.link("BK-9", hub_api.harbor)
    assert failed.status_code == 503 and failed.json()["error"]["code"] == "KAFKA_UNAVAILABLE"
    assert hub_api.lookup("BK-9", hub_api.harbor).status_code == 404  # not linked until sent
    kept = hub_api.app.state.context.crosswalk.find("harbor-cm", "BK-9")
    assert kept is not None and not kept.published
    retried = hub_api.link("BK-9", hub_api.harbor)
    assert retried.status_code == 201
    assert retried.json() == {"participant_id": kept.participant_id}
    assert [e.event_id for _, e in hub_api.inbound.sent] == [kept.event_id]
    assert hub_api.link("BK-9", hub_api.harbor).status_code == 200
    assert hub_api.lookup("BK-9", hub_api.harbor).json() == {
        "participant_id": kept.participant_id}


def test_a_lost_confirmation_republishes_the_same_event(hub_api: Hub, database_url: str) -> None:
    """Kafka took the link's event but the hub did not record that (a crash between the two):
    the next call sends the event rebuilt from the database, which the gateway's ledger knows
    as the same event, so it is not published twice and no 409 arises."""
    minted = hub_api.link("BK-lost", hub_api.harbor).json()["participant_id"]
    engine = create_engine(database_url)
    try:
        with engine.begin() as connection:
            connection.execute(participant_links.update().values(published_at=None))
    finally:
        engine.dispose()
    again = hub_api.link("BK-lost", hub_api.harbor)
    assert again.status_code == 201 and again.json() == {"participant_id": minted}
    assert len(hub_api.inbound.sent) == 1
    assert hub_api.link("BK-lost", hub_api.harbor).status_code == 200


def test_concurrent_links_of_one_local_id_get_one_participant(hub_api: Hub) -> None:
    crosswalk = hub_api.app.state.context.crosswalk
    with ThreadPoolExecutor(max_workers=6) as pool:
        links = list(pool.map(lambda _: crosswalk.link("harbor-cm", "BK-race"), range(12)))
    assert len({link.participant_id for link in links}) == 1
    assert len({link.event_id for link in links}) == 1


@pytest.mark.parametrize("body", [{"local_id": ""}, {"local_id": "x" * 129},
                                  {"local_id": "BK 1"}, {"local_id": "BK/1"},
                                  {"local_id": "-BK-1"}, {"local_id": 7}, {},
                                  {"local_id": "BK-1", "name": "Jane"}])
def test_a_bad_local_id_is_a_400_naming_no_value(hub_api: Hub, body: dict[str, Any]) -> None:
    response = hub_api.http.post("/v1/participants", json=body, headers=hub_api.harbor)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "INVALID_PARAMETER"
    assert "Jane" not in response.text and "BK 1" not in response.text
    assert hub_api.inbound.sent == []


def test_a_body_that_is_not_json_is_malformed_json(hub_api: Hub) -> None:
    for body, code in ((b"\xff", "MALFORMED_JSON"), (b"{local_id", "MALFORMED_JSON"),
                       (b"[]", "INVALID_PARAMETER"), (b"", "INVALID_PARAMETER")):
        response = hub_api.http.post("/v1/participants", content=body, headers={
            **hub_api.harbor, "Content-Type": "application/json"})
        assert response.status_code == 400
        assert response.json()["error"]["code"] == code, body
    assert hub_api.inbound.sent == []


def test_only_partner_keys_may_link_and_look_up(hub_api: Hub) -> None:
    for response in (hub_api.link("BK-1", hub_api.staff), hub_api.lookup("BK-1", hub_api.staff)):
        assert response.status_code == 403
        assert response.json()["error"]["code"] == "WRONG_CREDENTIAL_KIND"
    for response in (hub_api.link("BK-1", {}), hub_api.lookup("BK-1", {})):
        assert response.status_code == 401
    bad = hub_api.lookup("BK 1", hub_api.harbor)
    assert bad.status_code == 400 and bad.json()["error"]["field_path"] == "local_id"
    assert hub_api.inbound.sent == []


@pytest.mark.integration
def test_a_link_is_validated_and_projected_like_any_event(
        hub: Any, topics: TopicNames, kafka: KafkaConnection, live_view: Any,
        tmp_path: Path) -> None:
    """On the real broker: the IdentifierLinked goes through the key's partner's inbound topic
    and the validator (which stamps the source), and the minted id takes events at once."""
    hub.start("validator")
    hub.start("projector")
    config = ApiConfig(f"sqlite:///{tmp_path / 'api.sqlite'}", kafka,
                       topic_prefix=topics.prefix)
    app = create_api(config, site=SITE, access_log=MemoryAccessLog())
    key = app.state.context.credentials.create("harbor-cm", "partner").secret
    auth = {"Authorization": f"Bearer {key}"}
    with TestClient(app) as http:
        minted = http.post("/v1/participants", json={"local_id": "HC-00042"},
                           headers=auth).json()["participant_id"]
        contact = {"event_id": str(uuid.uuid4()), "type": "ContactLogged",
                   "participant_id": minted, "occurred_at": "2026-03-02T15:04:05Z",
                   "payload": {"contact_method": "OUTREACH", "successful": True}}
        assert http.post("/v1/events", json=contact, headers=auth).status_code == 202
    live_view.wait_for(lambda: len(live_view.rows("harbor-cm", minted)) == 2,
                       what="(the link and the contact)")
    rows = {r["type"]: r for r in live_view.rows("harbor-cm", minted)}
    assert set(rows) == {"IdentifierLinked", "ContactLogged"}
    assert rows["IdentifierLinked"]["source_partner"] == "harbor-cm"
    assert rows["IdentifierLinked"]["fields"]["local_id"] == "HC-00042"
