"""42 CFR Part 2 through the running pipeline (validator + projector, real broker, SQLite and
PostgreSQL): the SUD program's record stays with it under an ordinary consent, a Part 2 consent
lacking its disclosing program is dead-lettered, and a complete one opens the record, with the
§ 2.32 notice, until it is revoked."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from kafka import KafkaConsumer

from schemas.catalog import load_catalog
from schemas.event import Event
from schemas.kafka_connection import KafkaConnection
from schemas.topics import TopicNames
from tests.factories import make_event, new_participant_id, publish_as

pytestmark = pytest.mark.integration

CATALOG = load_catalog()
T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
SUD, CM, PDA, PD = "riverbend-sud", "harbor-cm", "defender-assoc", "evergreen-pd"




def _grant(participant: str, at: datetime, consent_id: str, **changes: Any) -> Event:
    payload: dict[str, Any] = {
        "consent_id": consent_id, "recipients": [CM, PDA],
        "categories": ["SUD_TREATMENT", "HOUSING"], "purposes": ["care_coordination",
                                                             "legal_defense"],
        "valid_from": at, "expires_at": at + timedelta(days=365), "exceptions": [],
        "part2": True, "disclosing_programs": [SUD], "expires_on_event": None,
        "form_sha256": "0" * 64,
    }
    payload.update(changes)
    return make_event("ConsentGranted", participant, at, **payload)


def _ids(live_view: Any, recipient: str, participant: str) -> set[str]:
    return {row["event_id"] for row in live_view.rows(recipient, participant)}


def test_a_part2_record_opens_only_under_a_complete_part2_consent(
    hub: Any, topics: TopicNames, kafka: KafkaConnection, live_view: Any
) -> None:
    hub.start("validator")
    hub.start("projector")
    p = new_participant_id()
    encounter = make_event("ServiceEncounter", p, T0, service_type="SUD_TREATMENT",
                       provider="Riverbend", duration_minutes=50, notes="on plan")
    publish_as(kafka, topics, SUD, encounter)
    ordinary = _grant(p, T0 + timedelta(hours=1), "c-ordinary", part2=False,
                      disclosing_programs=[])
    publish_as(kafka, topics, CM, ordinary)

    # before: the program sees its record; an ordinary consent listing SUD_TREATMENT opens nothing
    live_view.wait_for(lambda: encounter.event_id in _ids(live_view, SUD, p)
                       and ordinary.event_id in _ids(live_view, CM, p), what="(before)")
    assert encounter.event_id not in _ids(live_view, CM, p)
    assert encounter.event_id not in _ids(live_view, PDA, p)
    own = next(r for r in live_view.rows(SUD, p) if r["event_id"] == encounter.event_id)
    assert own["consent_ids"] == [] and "42 CFR part 2" in own["notice"]

    # a Part 2 consent without its disclosing program is dead-lettered with the field path
    incomplete = _grant(p, T0 + timedelta(hours=2), "c-incomplete", disclosing_programs=[])
    publish_as(kafka, topics, CM, incomplete)
    consumer = KafkaConsumer(topics.dlq, **kafka.client_options(),
                             auto_offset_reset="earliest", consumer_timeout_ms=30000,
                             isolation_level="read_committed")
    letters = [m for _, m in zip(range(1), consumer, strict=False)]
    consumer.close()
    assert len(letters) == 1
    headers = dict(letters[0].headers)
    assert headers["lead.reason"] == b"INVALID_FIELD"
    assert b"payload.disclosing_programs:" in headers["lead.message"]
    assert headers["lead.source.topic"] == topics.inbound(CM).encode()

    # after: a complete Part 2 consent opens the record to both recipients, with the notice
    complete = _grant(p, T0 + timedelta(hours=3), "c-part2")
    publish_as(kafka, topics, CM, complete)
    live_view.wait_for(lambda: encounter.event_id in _ids(live_view, CM, p)
                       and encounter.event_id in _ids(live_view, PDA, p), what="(after)")
    for recipient in (CM, PDA):
        row = next(r for r in live_view.rows(recipient, p) if r["event_id"] == encounter.event_id)
        assert row["consent_ids"] == ["c-part2"]
        assert "42 CFR part 2" in row["notice"]
        assert row["fields"]["service_type"] == "SUD_TREATMENT"
    assert incomplete.event_id not in _ids(live_view, CM, p)  # never reached the view
    assert encounter.event_id not in _ids(live_view, PD, p)  # the floor holds

    # and a revocation takes it back at once
    publish_as(kafka, topics, CM,
             make_event("ConsentRevoked", p, T0 + timedelta(hours=4), consent_id="c-part2"))
    live_view.wait_for(lambda: encounter.event_id not in _ids(live_view, CM, p)
                       and encounter.event_id not in _ids(live_view, PDA, p),
                       what="(revoked)")
    assert encounter.event_id in _ids(live_view, SUD, p)
