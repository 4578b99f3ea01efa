"""The pure ``validate`` step: every outcome, each dead letter with its reason code."""

from __future__ import annotations

import dataclasses
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest

from processors.site import load_site
from processors.validate import Accepted, DeadLetter, validate_inbound
from schemas.canonical import decode_canonical
from schemas.catalog import load_catalog
from schemas.codec import decode, encode
from schemas.event import Event
from schemas.topics import TopicNames

SITE = load_site(Path(__file__).resolve().parent.parent / "config" / "site.example.yaml")
CATALOG = load_catalog()
TOPICS = TopicNames()
RECEIVED = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)

REFERRAL = Event(
    event_id=str(uuid.UUID(int=1)), type="ReferralMade", participant_id="P-1",
    occurred_at=datetime(2026, 11, 25, 9, 0, tzinfo=UTC),
    payload={"door": "ARREST_DIVERSION", "offense_category": "THEFT_3", "charges_held": True,
             "referring_officer": "Officer 7", "area": "North"},
)


def _validate(partner: str, value: bytes, key: bytes = b"P-1") -> Accepted | DeadLetter:
    return validate_inbound(topic=TOPICS.inbound(partner), partition=2, offset=41, key=key,
                            value=value, received_at=RECEIVED, topics=TOPICS, site=SITE,
                            catalog=CATALOG)


def test_accepted_event_is_stamped_from_the_topic_and_wrapped() -> None:
    outcome = _validate("evergreen-pd", encode(REFERRAL, CATALOG))
    assert isinstance(outcome, Accepted)
    assert outcome.key == b"P-1"
    record = decode_canonical(outcome.value)
    assert (record.kind, record.source_partner, record.received_at) == (
        "EVENT", "evergreen-pd", RECEIVED)
    assert (record.ingest_topic, record.ingest_partition, record.ingest_offset) == (
        "lead.in.evergreen-pd", 2, 41)
    stamped = dataclasses.replace(REFERRAL, source_partner="evergreen-pd")
    assert decode(record.event, CATALOG) == decode(encode(stamped, CATALOG), CATALOG)


@pytest.mark.parametrize(
    ("partner", "value", "key", "reason"),
    [
        ("nobody", encode(REFERRAL, CATALOG), b"P-1", "UNKNOWN_PARTNER"),
        ("evergreen-pd", b'{"json": "not avro"}', b"P-1", "NOT_SINGLE_OBJECT"),
        ("evergreen-pd", b"\xc3\x01" + b"\x00" * 8 + b"body", b"P-1", "UNKNOWN_FINGERPRINT"),
        ("evergreen-pd", encode(REFERRAL, CATALOG)[:-3], b"P-1", "MALFORMED_BODY"),
        ("evergreen-pd", encode(REFERRAL, CATALOG), b"P-2", "KEY_MISMATCH"),
        ("evergreen-pd", encode(dataclasses.replace(REFERRAL, source_partner="county-pao"),
                                CATALOG), b"P-1", "SOURCE_MISMATCH"),
        ("riverbend-sud", encode(REFERRAL, CATALOG), b"P-1", "EMITTER_NOT_ALLOWED"),
    ],
)
def test_each_rejection_keeps_raw_bytes_origin_and_reason(
    partner: str, value: bytes, key: bytes, reason: str
) -> None:
    outcome = _validate(partner, value, key)
    assert isinstance(outcome, DeadLetter)
    assert outcome.reason == reason
    assert outcome.value == value
    headers = dict(outcome.headers)
    assert headers["lead.reason"] == reason.encode()
    assert headers["lead.source.topic"] == TOPICS.inbound(partner).encode()
    assert (headers["lead.source.partition"], headers["lead.source.offset"]) == (b"2", b"41")
    assert b"Officer 7" not in headers["lead.message"]
    assert b"THEFT_3" not in headers["lead.message"]


def test_police_may_not_record_a_consent() -> None:
    consent = Event(
        event_id=str(uuid.UUID(int=2)), type="ConsentRevoked", participant_id="P-1",
        occurred_at=REFERRAL.occurred_at, payload={"consent_id": "c-1"})
    outcome = _validate("evergreen-pd", encode(consent, CATALOG))
    assert isinstance(outcome, DeadLetter) and outcome.reason == "EMITTER_NOT_ALLOWED"
