"""The pure ``validate`` step: every outcome, each dead letter with its reason code."""

from __future__ import annotations

import dataclasses
import uuid
from datetime import UTC, datetime

import pytest

from processors.validate import Accepted, DeadLetter, validate_inbound
from schemas.canonical import decode_canonical
from schemas.catalog import load_catalog
from schemas.codec import decode, encode
from schemas.event import Event
from schemas.topics import TopicNames
from tests.factories import SITE, participant_id

CATALOG = load_catalog()
TOPICS = TopicNames()
RECEIVED = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
PERSON = participant_id(1)
KEY = PERSON.encode()

REFERRAL = Event(
    event_id=str(uuid.UUID(int=1, version=4)), type="ReferralMade", participant_id=PERSON,
    occurred_at=datetime(2026, 11, 25, 9, 0, tzinfo=UTC),
    payload={"door": "ARREST_DIVERSION", "offense_category": "THEFT_3", "charges_held": True,
             "referring_officer": "Officer 7", "area": "North"},
)


def _validate(partner: str, value: bytes, key: bytes = KEY) -> Accepted | DeadLetter:
    return validate_inbound(topic=TOPICS.inbound(partner), partition=2, offset=41, key=key,
                            value=value, received_at=RECEIVED, topics=TOPICS, site=SITE,
                            catalog=CATALOG)


def test_accepted_event_is_stamped_from_the_topic_and_wrapped() -> None:
    outcome = _validate("evergreen-pd", encode(REFERRAL, CATALOG))
    assert isinstance(outcome, Accepted)
    assert outcome.key == KEY
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
        ("nobody", encode(REFERRAL, CATALOG), KEY, "UNKNOWN_PARTNER"),
        ("evergreen-pd", b'{"json": "not avro"}', KEY, "NOT_SINGLE_OBJECT"),
        ("evergreen-pd", b"\xc3\x01" + b"\x00" * 8 + b"body", KEY, "UNKNOWN_FINGERPRINT"),
        ("evergreen-pd", encode(REFERRAL, CATALOG)[:-3], KEY, "MALFORMED_BODY"),
        ("evergreen-pd", encode(REFERRAL, CATALOG), participant_id(2).encode(), "KEY_MISMATCH"),
        ("evergreen-pd", encode(dataclasses.replace(REFERRAL, source_partner="county-pao"),
                                CATALOG), KEY, "SOURCE_MISMATCH"),
        ("riverbend-sud", encode(REFERRAL, CATALOG), KEY, "EMITTER_NOT_ALLOWED"),
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
        event_id=str(uuid.UUID(int=2, version=4)), type="ConsentRevoked",
        participant_id=PERSON,
        occurred_at=REFERRAL.occurred_at, payload={"consent_id": "c-1"})
    outcome = _validate("evergreen-pd", encode(consent, CATALOG))
    assert isinstance(outcome, DeadLetter) and outcome.reason == "EMITTER_NOT_ALLOWED"

def _swap_string(data: bytes, old: str, new: str) -> bytes:
    """``data`` with the Avro string ``old`` replaced by ``new`` (both under 64 bytes): how a
    client that skips the hub's checks would encode an envelope the codec refuses to write."""
    assert len(old) < 64 and len(new) < 64
    before = bytes([2 * len(old)]) + old.encode()
    assert data.count(before) == 1
    return data.replace(before, bytes([2 * len(new)]) + new.encode())


@pytest.mark.parametrize("bad", ["bob", "P-1", "p-0123456789ABCDEF", "p-0123456789abcde",
                                 "p-0123456789abcdef0", " p-0123456789abcdef"])
def test_a_participant_id_outside_the_format_is_invalid_field(bad: str) -> None:
    value = _swap_string(encode(REFERRAL, CATALOG), PERSON, bad)
    outcome = _validate("evergreen-pd", value, bad.encode())
    assert isinstance(outcome, DeadLetter) and outcome.reason == "INVALID_FIELD"
    message = dict(outcome.headers)["lead.message"].decode()
    assert message.startswith("participant_id ") and bad.strip() not in message
    assert outcome.value == value


@pytest.mark.parametrize(("version", "variant"), [(1, 0b10), (3, 0b10), (5, 0b10), (7, 0b10),
                                                 (8, 0b10), (0, 0b00), (4, 0b00), (4, 0b11)])
def test_an_event_id_other_than_a_version_4_uuid_is_invalid_field(version: int,
                                                                   variant: int) -> None:
    number = uuid.UUID(REFERRAL.event_id).int & ~(0xF << 76) & ~(0b11 << 62)
    other = str(uuid.UUID(int=number | version << 76 | variant << 62))
    assert (other[14], other[19]) != (REFERRAL.event_id[14], REFERRAL.event_id[19])
    value = _swap_string(encode(REFERRAL, CATALOG), REFERRAL.event_id, other)
    outcome = _validate("evergreen-pd", value)
    assert isinstance(outcome, DeadLetter) and outcome.reason == "INVALID_FIELD"
    assert dict(outcome.headers)["lead.message"].decode().startswith("event_id ")


def test_a_uuid1_from_the_clock_is_refused_and_a_uuid4_accepted() -> None:
    v1 = str(uuid.uuid1())
    value = _swap_string(encode(REFERRAL, CATALOG), REFERRAL.event_id, v1)
    assert isinstance(_validate("evergreen-pd", value), DeadLetter)
    fresh = dataclasses.replace(REFERRAL, event_id=str(uuid.uuid4()))
    assert isinstance(_validate("evergreen-pd", encode(fresh, CATALOG)), Accepted)


@pytest.mark.parametrize("named", ["evergreen-pd", "harbor-cm"])
def test_a_partner_links_only_its_own_local_ids(named: str) -> None:
    link = Event(event_id=str(uuid.uuid4()), type="IdentifierLinked", participant_id=PERSON,
                 occurred_at=REFERRAL.occurred_at,
                 payload={"partner": named, "local_id": "CM-12345"})
    outcome = _validate("harbor-cm", encode(link, CATALOG))
    if named == "harbor-cm":
        assert isinstance(outcome, Accepted)
    else:
        assert isinstance(outcome, DeadLetter) and outcome.reason == "INVALID_FIELD"
        assert "payload.partner" in outcome.message and "CM-12345" not in outcome.message
