"""Consent revocation and dead letters through the running pipeline, on the real broker."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from kafka import KafkaConsumer, KafkaProducer

from schemas.catalog import load_catalog
from schemas.codec import encode
from schemas.kafka_connection import KafkaConnection
from schemas.topics import TopicNames
from tests.factories import make_event, new_participant_id, publish_as

pytestmark = pytest.mark.integration

CATALOG = load_catalog()
T0 = datetime(2026, 11, 1, 9, 0, tzinfo=UTC)




def test_revocation_retracts_what_the_consent_shared(hub: Any, topics: TopicNames,
                                                     kafka: KafkaConnection,
                                                     live_view: Any) -> None:
    hub.start("validator")
    hub.start("projector")
    p = new_participant_id()
    housing = make_event("HousingStatusChanged", p, T0, status="TRANSITIONAL",
                     provider="Cedar Commons")
    publish_as(kafka, topics, "cedar-housing", housing)
    live_view.wait_for(lambda: live_view.rows("cedar-housing", p), what="(housing row)")
    assert live_view.rows("defender-assoc", p) == []

    grant = make_event("ConsentGranted", p, T0 + timedelta(hours=1), consent_id="c-housing-1",
                   recipients=["defender-assoc"], categories=["HOUSING"],
                   purposes=["legal_defense"], valid_from=T0,
                   expires_at=T0 + timedelta(days=3650), exceptions=[], part2=False,
                   form_sha256="0" * 64)
    publish_as(kafka, topics, "harbor-cm", grant)
    live_view.wait_for(lambda: [r["event_id"] for r in live_view.rows("defender-assoc", p)]
                       == [housing.event_id], what="(consented row)")
    shared = live_view.rows("defender-assoc", p)[0]
    assert shared["fields"]["status"] == "TRANSITIONAL"
    assert shared["consent_ids"] == ["c-housing-1"]

    revoke = make_event("ConsentRevoked", p, T0 + timedelta(hours=2), consent_id="c-housing-1")
    publish_as(kafka, topics, "harbor-cm", revoke)
    live_view.wait_for(lambda: live_view.rows("defender-assoc", p) == [],
                       what="(row retracted)")
    assert [r["event_id"] for r in live_view.rows("cedar-housing", p)] == [housing.event_id]


def test_poison_message_goes_to_the_dlq_and_the_pipeline_keeps_going(
    hub: Any, topics: TopicNames, kafka: KafkaConnection, live_view: Any
) -> None:
    hub.start("validator")
    hub.start("projector")
    p = new_participant_id()
    poison = b"\xc3\x01not-a-fingerprint-nor-a-body"
    raw = KafkaProducer(**kafka.client_options())
    raw.send(topics.inbound("evergreen-pd"), key=p.encode(), value=poison).get(timeout=30)
    raw.close()
    contact = make_event("ContactLogged", p, T0, contact_method="OUTREACH", successful=True)
    publish_as(kafka, topics, "harbor-cm", contact)
    live_view.wait_for(lambda: live_view.rows("harbor-cm", p), what="(row after poison)")

    consumer = KafkaConsumer(topics.dlq, **kafka.client_options(),
                             auto_offset_reset="earliest", consumer_timeout_ms=20000)
    letters = [m for _, m in zip(range(1), consumer, strict=False)]
    consumer.close()
    assert len(letters) == 1
    letter = letters[0]
    headers = dict(letter.headers)
    assert letter.value == poison
    assert headers["lead.reason"] == b"UNKNOWN_FINGERPRINT"
    assert headers["lead.source.topic"] == topics.inbound("evergreen-pd").encode()


def test_a_valid_200_kib_event_reaches_the_view_and_an_oversized_one_the_dlq(
    hub: Any, topics: TopicNames, kafka: KafkaConnection, live_view: Any
) -> None:
    """Under the 256 KiB limit an event is projected like any other (no produced record of the
    hub grows past the broker's limit with it); over it, it is dead-lettered as TOO_LARGE with
    its neighbours untouched."""
    hub.start("validator")
    hub.start("projector")
    p = new_participant_id()
    big = make_event("ServiceEncounter", p, T0, service_type="HOUSING", provider="Cedar Commons",
                 duration_minutes=30, notes="n" * (200 * 1024))
    before = make_event("ContactLogged", p, T0, contact_method="OUTREACH", successful=True)
    after = make_event("ContactLogged", p, T0 + timedelta(minutes=1), contact_method="PHONE",
                   successful=True)
    publish_as(kafka, topics, "harbor-cm", before, big, after)
    too_large = b"\xc3\x01" + b"x" * (300 * 1024)
    raw = KafkaProducer(**kafka.client_options(), max_request_size=2 * 1024 * 1024)
    raw.send(topics.inbound("harbor-cm"), key=p.encode(), value=too_large).get(timeout=30)
    raw.close()
    live_view.wait_for(lambda: len(live_view.rows("harbor-cm", p)) == 3,
                       what="(the big event and its neighbours)")
    big_row = next(r for r in live_view.rows("harbor-cm", p) if r["event_id"] == big.event_id)
    assert len(big_row["fields"]["notes"]) == 200 * 1024
    consumer = KafkaConsumer(topics.dlq, **kafka.client_options(),
                             auto_offset_reset="earliest", consumer_timeout_ms=20000,
                             isolation_level="read_committed")
    letters = [m for _, m in zip(range(1), consumer, strict=False)]
    consumer.close()
    assert len(letters) == 1
    headers = dict(letters[0].headers)
    assert headers["lead.reason"] == b"TOO_LARGE"
    assert headers["lead.size"] == str(len(too_large)).encode()
    assert letters[0].value == too_large[:64 * 1024]


def _swap_string(data: bytes, old: str, new: str) -> bytes:
    """``data`` with the Avro string ``old`` replaced by ``new`` (both under 64 bytes): what a
    client that skips the SDK's checks could send."""
    before = bytes([2 * len(old)]) + old.encode()
    assert data.count(before) == 1 and len(new) < 64
    return data.replace(before, bytes([2 * len(new)]) + new.encode())


def test_ids_outside_the_hub_formats_are_dead_lettered_as_invalid_field(
    hub: Any, topics: TopicNames, kafka: KafkaConnection, live_view: Any
) -> None:
    """A participant id that is not the hub's (``bob``) and a version-1 event id never reach
    lead.events or the view: each is dead-lettered as INVALID_FIELD naming the field."""
    hub.start("validator")
    hub.start("projector")
    p = new_participant_id()
    good = make_event("ContactLogged", p, T0, contact_method="OUTREACH", successful=True)
    bob = _swap_string(encode(make_event("ContactLogged", p, T0, contact_method="PHONE",
                                     successful=True), CATALOG), p, "bob")
    clock_id = str(uuid.uuid1())
    template = make_event("ContactLogged", p, T0, contact_method="TEXT", successful=True)
    version_1 = _swap_string(encode(template, CATALOG), template.event_id, clock_id)
    raw = KafkaProducer(**kafka.client_options())
    raw.send(topics.inbound("harbor-cm"), key=b"bob", value=bob).get(timeout=30)
    raw.send(topics.inbound("harbor-cm"), key=p.encode(), value=version_1).get(timeout=30)
    raw.close()
    publish_as(kafka, topics, "harbor-cm", good)
    live_view.wait_for(lambda: live_view.rows("harbor-cm", p), what="(the valid event)")
    consumer = KafkaConsumer(topics.dlq, **kafka.client_options(),
                             auto_offset_reset="earliest", consumer_timeout_ms=20000,
                             isolation_level="read_committed")
    letters = [m for _, m in zip(range(2), consumer, strict=False)]
    consumer.close()
    by_value = {letter.value: dict(letter.headers) for letter in letters}
    assert set(by_value) == {bob, version_1}
    for value, field in ((bob, "participant_id"), (version_1, "event_id")):
        headers = by_value[value]
        assert headers["lead.reason"] == b"INVALID_FIELD"
        assert headers["lead.message"].decode().startswith(f"{field} must be ")
        assert b"bob" not in headers["lead.message"]
    assert [r["event_id"] for r in live_view.rows("harbor-cm", p)] == [good.event_id]
    assert live_view.rows("harbor-cm", "bob") == []
