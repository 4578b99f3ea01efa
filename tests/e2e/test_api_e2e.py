"""End to end on the real broker: gateway -> validator -> projector -> staff API,
and the access records on lead.audit.access list exactly what was returned."""

from __future__ import annotations

import json
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from kafka import KafkaConsumer

from consumers.api.app import create_api
from consumers.api.context import ApiConfig
from schemas.kafka_connection import KafkaConnection
from schemas.topics import TopicNames
from tests.factories import SITE, new_participant_id, participant_id

pytestmark = pytest.mark.integration

T0 = datetime.now(UTC).replace(microsecond=0) - timedelta(days=3)


def envelope(type_: str, participant: str, days: float, **payload: Any) -> dict[str, Any]:
    return {"event_id": str(uuid.uuid4()), "type": type_, "participant_id": participant,
            "occurred_at": (T0 + timedelta(days=days)).isoformat().replace("+00:00", "Z"),
            "payload": payload}


def audit_records(kafka: KafkaConnection, topics: TopicNames,
                  expected: int) -> list[dict[str, Any]]:
    consumer = KafkaConsumer(topics.audit_access, **kafka.client_options(),
                             auto_offset_reset="earliest", consumer_timeout_ms=10000)
    records = []
    for message in consumer:
        records.append((message.key, json.loads(message.value)))
        if len(records) >= expected:
            break
    consumer.close()
    assert all(key == record["partner"].encode() for key, record in records)
    return [record for _, record in records]


def test_publish_through_gateway_read_through_staff_api(
    hub: Any, topics: TopicNames, kafka: KafkaConnection, live_view: Any, database_url: str
) -> None:
    hub.start("validator")
    hub.start("projector")
    app = create_api(ApiConfig(database_url, kafka, topic_prefix=topics.prefix),
                     site=SITE)
    creds = app.state.context.credentials

    def auth(partner: str, kind: str, user: str | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {creds.create(partner, kind, user).secret}"}

    police, cm = auth("evergreen-pd", "partner"), auth("harbor-cm", "partner")
    ana = {**auth("harbor-cm", "staff", "ana"), "X-Purpose": "care_coordination"}
    bo = {**auth("county-pao", "staff", "bo"), "X-Purpose": "prosecution_decision"}
    p = new_participant_id()
    referral = envelope("ReferralMade", p, 0, door="ARREST_DIVERSION", charges_held=True)
    intake = envelope("IntakeCompleted", p, 2, referral_event_id=referral["event_id"],
                      preferred_name="Sam", phone="555-0100")
    contact = envelope("ContactLogged", p, 2.5, contact_method="OUTREACH", successful=True)
    returned: list[tuple[str, str, tuple[str, ...], tuple[str, ...]]] = []
    with TestClient(app) as http:
        assert http.post("/v1/events", json=referral, headers=police).status_code == 202
        batch = http.post("/v1/events:batch", json=[intake, contact], headers=cm)
        assert [r["status"] for r in batch.json()["results"]] == [202, 202]
        live_view.wait_for(lambda: len(live_view.rows("harbor-cm", p)) == 3
                           and len(live_view.rows("county-pao", p)) == 3, what="(3 rows each)")

        cm_rows = http.get(f"/v1/participants/{p}/timeline", headers=ana).json()["items"]
        assert cm_rows == live_view.rows("harbor-cm", p)
        returned.append(("harbor-cm", "timeline", (p,), tuple(r["event_id"] for r in cm_rows)))
        pao_rows = http.get(f"/v1/participants/{p}/timeline", headers=bo).json()["items"]
        assert pao_rows == live_view.rows("county-pao", p)
        intake_for_pao = next(r for r in pao_rows if r["type"] == "IntakeCompleted")
        assert "phone" not in intake_for_pao["fields"]  # CONTACT: never for the prosecutor
        returned.append(("county-pao", "timeline", (p,),
                         tuple(r["event_id"] for r in pao_rows)))
        caseload = http.get("/v1/participants", headers=bo).json()["items"]
        entry = next(e for e in caseload if e["participant_id"] == p)
        assert (entry["status"], entry["intake"]["status"]) == ("enrolled", "met")
        returned.append(("county-pao", "caseload", (p,),
                         tuple(r["event_id"] for r in pao_rows)))
        missing = http.get(f"/v1/participants/{participant_id('nobody')}", headers=bo)
        assert missing.status_code == 404
        returned.append(("county-pao", "{participant_id}", (), ()))

    records = audit_records(kafka, topics, len(returned))
    seen = Counter((r["partner"], r["endpoint"].rsplit("/", 1)[-1], tuple(r["participant_ids"]),
                    tuple(r["event_ids"])) for r in records)
    expected = Counter((partner, {"caseload": "participants"}.get(endpoint, endpoint), ps, es)
                       for partner, endpoint, ps, es in returned)
    assert seen == expected
    for record in records:
        assert record["user"] in ("ana", "bo") and record["purpose"] in (
            "care_coordination", "prosecution_decision")
        assert record["at"].endswith("Z")
