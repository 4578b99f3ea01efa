"""Consent revocation and dead letters through the running pipeline, on the real broker."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from kafka import KafkaConsumer, KafkaProducer

from producers.sdk import PartnerPublisher
from schemas.catalog import load_catalog
from schemas.event import Event
from schemas.topics import TopicNames

pytestmark = pytest.mark.integration

CATALOG = load_catalog()
T0 = datetime(2026, 11, 1, 9, 0, tzinfo=UTC)


def _event(type_: str, participant: str, at: datetime, **payload: Any) -> Event:
    return Event(event_id=str(uuid.uuid4()), type=type_, participant_id=participant,
                 occurred_at=at, payload=payload)


def _publish(bootstrap: str, topics: TopicNames, partner: str, *events: Event) -> None:
    with PartnerPublisher(partner, bootstrap, catalog=CATALOG, topics=topics) as publisher:
        publisher.publish_many(events)


def test_revocation_retracts_what_the_consent_shared(hub: Any, topics: TopicNames,
                                                     kafka_bootstrap: str,
                                                     live_view: Any) -> None:
    hub.start("validator")
    hub.start("projector")
    p = f"P-{uuid.uuid4().hex[:8]}"
    housing = _event("HousingStatusChanged", p, T0, status="TRANSITIONAL",
                     provider="Cedar Commons")
    _publish(kafka_bootstrap, topics, "cedar-housing", housing)
    live_view.wait_for(lambda: live_view.rows("cedar-housing", p), what="(housing row)")
    assert live_view.rows("defender-assoc", p) == []

    grant = _event("ConsentGranted", p, T0 + timedelta(hours=1), consent_id="c-housing-1",
                   recipients=["defender-assoc"], categories=["HOUSING"],
                   purposes=["legal_defense"], valid_from=T0,
                   expires_at=T0 + timedelta(days=3650), exceptions=[], part2=False,
                   form_sha256="0" * 64)
    _publish(kafka_bootstrap, topics, "harbor-cm", grant)
    live_view.wait_for(lambda: [r["event_id"] for r in live_view.rows("defender-assoc", p)]
                       == [housing.event_id], what="(consented row)")
    shared = live_view.rows("defender-assoc", p)[0]
    assert shared["fields"]["status"] == "TRANSITIONAL"
    assert shared["consent_ids"] == ["c-housing-1"]

    revoke = _event("ConsentRevoked", p, T0 + timedelta(hours=2), consent_id="c-housing-1")
    _publish(kafka_bootstrap, topics, "harbor-cm", revoke)
    live_view.wait_for(lambda: live_view.rows("defender-assoc", p) == [],
                       what="(row retracted)")
    assert [r["event_id"] for r in live_view.rows("cedar-housing", p)] == [housing.event_id]


def test_poison_message_goes_to_the_dlq_and_the_pipeline_keeps_going(
    hub: Any, topics: TopicNames, kafka_bootstrap: str, live_view: Any
) -> None:
    hub.start("validator")
    hub.start("projector")
    p = f"P-{uuid.uuid4().hex[:8]}"
    poison = b"\xc3\x01not-a-fingerprint-nor-a-body"
    raw = KafkaProducer(bootstrap_servers=kafka_bootstrap)
    raw.send(topics.inbound("evergreen-pd"), key=p.encode(), value=poison).get(timeout=30)
    raw.close()
    contact = _event("ContactLogged", p, T0, contact_method="OUTREACH", successful=True)
    _publish(kafka_bootstrap, topics, "harbor-cm", contact)
    live_view.wait_for(lambda: live_view.rows("harbor-cm", p), what="(row after poison)")

    consumer = KafkaConsumer(topics.dlq, bootstrap_servers=kafka_bootstrap,
                             auto_offset_reset="earliest", consumer_timeout_ms=20000)
    letters = [m for _, m in zip(range(1), consumer, strict=False)]
    consumer.close()
    assert len(letters) == 1
    letter = letters[0]
    headers = dict(letter.headers)
    assert letter.value == poison
    assert headers["lead.reason"] == b"UNKNOWN_FINGERPRINT"
    assert headers["lead.source.topic"] == topics.inbound("evergreen-pd").encode()
