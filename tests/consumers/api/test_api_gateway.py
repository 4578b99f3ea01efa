"""The partner gateway: 202 once per event_id, every 4xx path, Avro bodies, Kafka down 503."""

from __future__ import annotations

import io
import json
import uuid
import warnings
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from fastavro import schemaless_writer
from kafka import KafkaConsumer

from consumers.api.access_log import MemoryAccessLog
from consumers.api.app import create_api
from consumers.api.context import ApiConfig
from consumers.api.ingest import MemoryInbound
from schemas.catalog import load_catalog
from schemas.codec import decode, encode
from schemas.event import event_from_json
from schemas.kafka_connection import KafkaConnection
from schemas.topics import TopicNames
from tests.factories import SITE, participant_id

with warnings.catch_warnings():  # starlette's note about httpx2, at import time
    warnings.simplefilter("ignore", DeprecationWarning)
    from fastapi.testclient import TestClient

CATALOG = load_catalog()
AVRO = "application/vnd.leadhub.avro"


def contact(participant: str = participant_id(1), **overrides: Any) -> dict[str, Any]:
    event = {"event_id": str(uuid.uuid4()), "type": "ContactLogged",
             "participant_id": participant, "occurred_at": "2026-03-02T15:04:05Z",
             "payload": {"contact_method": "OUTREACH", "successful": True}}
    event.update(overrides)
    return event


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[tuple[TestClient, MemoryInbound, dict[str, str]]]:
    inbound = MemoryInbound()
    config = ApiConfig(f"sqlite:///{tmp_path / 'v.sqlite'}", KafkaConnection("127.0.0.1:1"),
                       max_event_bytes=4096, max_batch_bytes=16384, max_batch_items=20)
    app = create_api(config, site=SITE, access_log=MemoryAccessLog(), inbound=inbound)
    store = app.state.context.credentials
    key = store.create("harbor-cm", "partner").secret
    with TestClient(app) as http:
        yield http, inbound, {"Authorization": f"Bearer {key}"}


def test_accepted_once_per_event_id(gateway: Any) -> None:
    http, inbound, auth = gateway
    event = contact()
    first = http.post("/v1/events", json=event, headers=auth)
    again = http.post("/v1/events", json=event, headers=auth)
    assert first.status_code == again.status_code == 202
    assert first.content == again.content == json.dumps(
        {"event_id": event["event_id"]}, separators=(",", ":")).encode()
    assert [(p, e.event_id, e.source_partner) for p, e in inbound.sent] == [
        ("harbor-cm", event["event_id"], None)]
    reused = http.post("/v1/events", json={**event, "participant_id": participant_id(2)},
                       headers=auth)
    assert reused.status_code == 409
    assert reused.json()["error"]["code"] == "EVENT_ID_REUSED"


def test_avro_single_object_body(gateway: Any) -> None:
    http, inbound, auth = gateway
    event = event_from_json(contact(), CATALOG)
    response = http.post("/v1/events", content=encode(event, CATALOG),
                         headers={**auth, "Content-Type": AVRO})
    assert response.status_code == 202
    assert inbound.sent[0][1] == event
    bad = http.post("/v1/events", content=b"\xc3\x01" + b"\x00" * 8 + b"junk",
                    headers={**auth, "Content-Type": AVRO})
    assert bad.status_code == 400
    assert bad.json()["error"]["code"] == "UNKNOWN_FINGERPRINT"


def test_invalid_event_names_field_and_reason_not_value(gateway: Any) -> None:
    http, inbound, auth = gateway
    secret_value = "Jane Q. Participant 1984-01-01"
    event = contact(payload={"contact_method": secret_value, "successful": True})
    response = http.post("/v1/events", json=event, headers=auth)
    assert response.status_code == 400
    error = response.json()["error"]
    assert (error["code"], error["field_path"]) == ("INVALID_FIELD", "payload.contact_method")
    assert secret_value not in response.text and "Traceback" not in response.text
    assert http.post("/v1/events", content=b"{not json", headers={
        **auth, "Content-Type": "application/json"}).json()["error"]["code"] == "MALFORMED_JSON"
    assert http.post("/v1/events", json=contact(event_id="nope"), headers=auth).json()[
        "error"]["field_path"] == "event_id"
    assert inbound.sent == []


def test_forbidden_source_and_emitter(gateway: Any) -> None:
    http, inbound, auth = gateway
    other = http.post("/v1/events", json=contact(source_partner="evergreen-pd"), headers=auth)
    assert other.status_code == 403
    assert other.json()["error"]["code"] == "SOURCE_MISMATCH"
    own = http.post("/v1/events", json=contact(source_partner="harbor-cm"), headers=auth)
    assert own.status_code == 202
    filed = {"event_id": str(uuid.uuid4()), "type": "ChargesFiled",
             "participant_id": participant_id(1),
             "occurred_at": "2026-03-02T15:04:05Z",
             "payload": {"case_number": "C-1", "charges": ["X"], "after_missed_intake": False}}
    denied = http.post("/v1/events", json=filed, headers=auth)
    assert denied.status_code == 403
    assert denied.json()["error"]["code"] == "EMITTER_NOT_ALLOWED"
    assert len(inbound.sent) == 1


def test_size_and_media_type_limits(gateway: Any) -> None:
    http, inbound, auth = gateway
    big = contact(payload={"contact_method": "OUTREACH", "successful": True,
                           "padding": "x" * 5000})
    assert http.post("/v1/events", json=big, headers=auth).status_code == 413
    chunked = http.post("/v1/events", content=iter([b"{" + b" " * 5000 + b"}"]),
                        headers={**auth, "Content-Type": "application/json"})
    assert chunked.status_code == 413
    assert http.post("/v1/events:batch", json=[big] * 4, headers=auth).status_code == 413
    many = http.post("/v1/events:batch", json=[{}] * 21, headers=auth)
    assert many.status_code == 413
    assert many.json()["error"]["code"] == "TOO_MANY_EVENTS"
    for content_type in ("text/plain", "application/xml", ""):
        response = http.post("/v1/events", content=b"{}",
                             headers={**auth, "Content-Type": content_type})
        assert response.status_code == 415
        assert response.json()["error"]["code"] == "UNSUPPORTED_MEDIA_TYPE"
    assert http.post("/v1/events:batch", content=b"x", headers={
        **auth, "Content-Type": AVRO}).status_code == 415
    assert inbound.sent == []


def test_batch_json_array_and_json_lines_give_per_item_results(gateway: Any) -> None:
    http, inbound, auth = gateway
    good, dup = contact(participant_id(1)), contact(participant_id(2))
    items = [good, contact(event_id="nope"), dup, dup, contact(source_partner="county-pao")]
    response = http.post("/v1/events:batch", json=items, headers=auth)
    assert response.status_code == 200
    body = response.json()
    assert (body["accepted"], body["rejected"]) == (3, 2)
    assert [r["status"] for r in body["results"]] == [202, 400, 202, 202, 403]
    assert body["results"][1]["error"]["field_path"] == "event_id"
    bob = http.post("/v1/events:batch", json=[contact("bob"), contact()], headers=auth).json()
    assert [r["status"] for r in bob["results"]] == [400, 202]
    assert bob["results"][0]["error"] == {
        "code": "INVALID_FIELD", "field_path": "participant_id",
        "message": "participant_id must be a hub participant id: p- and 16 lowercase hex "
                   "digits (get one with POST /v1/participants)"}
    inbound.sent.pop()
    assert [e.event_id for _, e in inbound.sent] == [good["event_id"], dup["event_id"]]
    third = contact(participant_id(3))
    lines = "\n".join([json.dumps(good), "", "{broken", json.dumps(third)]) + "\n"
    again = http.post("/v1/events:batch", content=lines.encode(),
                      headers={**auth, "Content-Type": "application/x-ndjson"})
    assert [r["status"] for r in again.json()["results"]] == [202, 400, 202]
    assert again.json()["results"][1]["error"]["code"] == "MALFORMED_JSON"
    assert len(inbound.sent) == 3  # the repeated `good` was not published again
    not_array = http.post("/v1/events:batch", json={"events": []}, headers=auth)
    assert not_array.status_code == 400


ENVELOPE_FIELDS = ("event_id", "type", "participant_id", "occurred_at", "payload")


@pytest.mark.parametrize("field", ENVELOPE_FIELDS)
def test_a_missing_envelope_field_is_named_by_field_path(gateway: Any, field: str) -> None:
    http, inbound, auth = gateway
    event = contact()
    del event[field]
    single = http.post("/v1/events", json=event, headers=auth)
    assert single.status_code == 400
    assert single.json()["error"] == {"code": "MALFORMED_JSON", "field_path": field,
                                      "message": f"event envelope lacks {field}"}
    batch = http.post("/v1/events:batch", json=[contact(), event], headers=auth)
    assert [(r["status"], r.get("error", {}).get("field_path"))
            for r in batch.json()["results"]] == [(202, None), (400, field)]
    lines = http.post("/v1/events:batch", content=(json.dumps(event) + "\n").encode(),
                      headers={**auth, "Content-Type": "application/x-ndjson"})
    assert lines.json()["results"][0]["error"]["field_path"] == field
    assert len(inbound.sent) == 1


def test_several_missing_fields_name_the_first_in_envelope_order(gateway: Any) -> None:
    http, _, auth = gateway
    event = {"type": "ContactLogged", "payload": {}}
    error = http.post("/v1/events", json=event, headers=auth).json()["error"]
    assert error["field_path"] == "event_id"
    assert error["message"] == "event envelope lacks event_id, participant_id, occurred_at"


@pytest.mark.parametrize(("change", "path"), [
    ({"payload": {"successful": True}}, "payload.contact_method"),
    ({"payload": {"contact_method": "OUTREACH", "successful": True, "mood": "ok"}},
     "payload.mood"),
    ({"payload": []}, "payload"),
    ({"event_id": "not-a-uuid"}, "event_id"),
    ({"participant_id": "  "}, "participant_id"),
    ({"participant_id": "bob"}, "participant_id"),
    ({"participant_id": "P-3C5E0B8D91A24F67"}, "participant_id"),
    ({"participant_id": "p-3c5e0b8d91a24f6"}, "participant_id"),
    ({"event_id": str(uuid.uuid1())}, "event_id"),
    ({"event_id": "0b4c3f0e-5d7e-8c55-9f43-3d5b1e2a9c11"}, "event_id"),
    ({"occurred_at": "2026-03-02T15:04:05"}, "occurred_at"),
    ({"type": 7}, "type"),
    ({"type": "NoSuchType"}, "type"),
    ({"source_partner": 7}, "source_partner"),
    ({"extra": 1}, "extra"),
])
def test_a_wrong_field_is_named_by_field_path(gateway: Any, change: dict[str, Any],
                                              path: str) -> None:
    http, inbound, auth = gateway
    response = http.post("/v1/events", json=contact(**change), headers=auth)
    assert response.status_code == 400
    assert response.json()["error"]["field_path"] == path
    assert inbound.sent == []


def _avro_body(event_id: str, participant_id: str) -> bytes:
    """A ContactLogged single object written with fastavro alone (no envelope checks)."""
    event_type = CATALOG.latest("ContactLogged")
    out = io.BytesIO(b"\xc3\x01" + bytes.fromhex(event_type.fingerprint))
    out.seek(0, io.SEEK_END)
    schemaless_writer(out, event_type.schema, {
        "event_id": event_id, "participant_id": participant_id,
        "occurred_at": datetime(2026, 3, 2, 15, 4, 5, tzinfo=UTC), "source_partner": None,
        "payload": {"contact_method": "OUTREACH", "successful": True,
                    "duration_minutes": None}})
    return out.getvalue()


@pytest.mark.parametrize(("event_id", "participant", "path"), [
    ("not-a-uuid", "p-3c5e0b8d91a24f67", "event_id"),
    ("0b4c3f0e-5d7e-8c55-9f43-3d5b1e2a9c11", "p-3c5e0b8d91a24f67", "event_id"),  # version 8
    (str(uuid.uuid4()), " ", "participant_id"),
    (str(uuid.uuid1()), "p-3c5e0b8d91a24f67", "event_id"),
    (str(uuid.uuid4()), "bob", "participant_id"),
])
def test_a_wrong_avro_envelope_field_is_named_by_field_path(
        gateway: Any, event_id: str, participant: str, path: str) -> None:
    http, inbound, auth = gateway
    response = http.post("/v1/events", content=_avro_body(event_id, participant),
                         headers={**auth, "Content-Type": AVRO})
    assert response.status_code == 400
    assert response.json()["error"]["field_path"] == path
    good = http.post("/v1/events", content=_avro_body(str(uuid.uuid4()), participant_id(1)),
                     headers={**auth, "Content-Type": AVRO})
    assert good.status_code == 202 and len(inbound.sent) == 1


@pytest.mark.integration
def test_gateway_produces_to_the_partner_inbound_topic(kafka: KafkaConnection, tmp_path: Path,
                                                       topics: TopicNames) -> None:
    config = ApiConfig(f"sqlite:///{tmp_path / 'v.sqlite'}", kafka,
                       topic_prefix=topics.prefix)
    app = create_api(config, site=SITE, access_log=MemoryAccessLog())
    key = app.state.context.credentials.create("harbor-cm", "partner").secret
    event = contact(participant_id("kafka"))
    with TestClient(app) as http:
        for _ in range(2):
            response = http.post("/v1/events", json=event,
                                 headers={"Authorization": f"Bearer {key}"})
            assert response.status_code == 202
    consumer = KafkaConsumer(topics.inbound("harbor-cm"), **kafka.client_options(),
                             auto_offset_reset="earliest", consumer_timeout_ms=5000)
    messages = list(consumer)
    consumer.close()
    assert len(messages) == 1
    assert messages[0].key == event["participant_id"].encode()
    assert decode(messages[0].value, CATALOG).event_id == event["event_id"]


def test_kafka_down_is_503_and_nothing_is_remembered(tmp_path: Path) -> None:
    config = ApiConfig(f"sqlite:///{tmp_path / 'v.sqlite'}", KafkaConnection("127.0.0.1:9"),
                       kafka_timeout_s=1.0)
    app = create_api(config, site=SITE, access_log=MemoryAccessLog())
    key = app.state.context.credentials.create("harbor-cm", "partner").secret
    event = contact()
    with TestClient(app) as http:
        response = http.post("/v1/events", json=event,
                             headers={"Authorization": f"Bearer {key}"})
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "KAFKA_UNAVAILABLE"
    assert app.state.context.gateway.ledger.digests("harbor-cm", [event["event_id"]]) == {}


def test_a_partner_may_not_link_another_partners_local_id(gateway: Any) -> None:
    http, inbound, auth = gateway
    link = contact(type="IdentifierLinked",
                   payload={"partner": "evergreen-pd", "local_id": "BK-123456"})
    refused = http.post("/v1/events", json=link, headers=auth)
    assert refused.status_code == 400
    error = refused.json()["error"]
    assert (error["code"], error["field_path"]) == ("INVALID_FIELD", "payload.partner")
    assert "BK-123456" not in refused.text and inbound.sent == []
    own = contact(type="IdentifierLinked",
                  payload={"partner": "harbor-cm", "local_id": "CM-12345"})
    assert http.post("/v1/events", json=own, headers=auth).status_code == 202
