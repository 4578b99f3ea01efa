"""Strict Avro: a body decodes only from the one encoding Avro gives the event it decodes to.

fastavro reads a negative enum or union index as a Python negative index, a varint with
needless continuation bytes as its value and any non-zero boolean byte as true; without the
re-encoding check the codec accepted all of them, so one event had many accepted encodings.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from schemas.catalog import load_catalog
from schemas.codec import HEADER_SIZE, decode, encode
from schemas.errors import MalformedBody, NonCanonicalBody, RejectReason
from schemas.event import Event
from tests.factories import participant_id

CATALOG = load_catalog()
PERSON = participant_id(7)
T0 = datetime(2026, 3, 4, 5, 6, 7, tzinfo=UTC)

# ContactLogged's body ends with the payload: contact_method (enum), successful (boolean),
# duration_minutes (union null|int); with IN_PERSON, True and None those are 00 01 00.
CONTACT = Event(
    event_id=str(uuid.UUID(int=7, version=4)), type="ContactLogged", participant_id=PERSON,
    occurred_at=T0, payload={"contact_method": "IN_PERSON", "successful": True,
                             "duration_minutes": None},
)
GOOD = encode(CONTACT, CATALOG)


def _with_tail(tail: bytes) -> bytes:
    assert GOOD[-3:] == b"\x00\x01\x00"
    return GOOD[:-3] + tail


def _avro_string(text: str) -> bytes:
    size = len(text.encode())
    assert size < 64  # one zigzag varint byte
    return bytes([size * 2]) + text.encode()


def _assert_not_canonical(data: bytes) -> None:
    with pytest.raises(NonCanonicalBody) as caught:
        decode(data, CATALOG)
    assert isinstance(caught.value, MalformedBody)
    assert caught.value.reason is RejectReason.MALFORMED_BODY
    assert PERSON not in str(caught.value) and "harbor-cm" not in str(caught.value)


def test_the_canonical_encoding_still_decodes() -> None:
    assert decode(GOOD, CATALOG) == CONTACT


def test_a_negative_enum_index_is_rejected() -> None:
    # zigzag 0x01 is -1: fastavro would read symbols[-1], i.e. OTHER.
    _assert_not_canonical(_with_tail(b"\x01\x01\x00"))


def test_a_negative_union_index_is_rejected() -> None:
    # zigzag 0x03 is -2: fastavro would read ["null", "int"][-2], i.e. null.
    _assert_not_canonical(_with_tail(b"\x00\x01\x03"))


def test_a_boolean_byte_other_than_0_or_1_is_rejected() -> None:
    _assert_not_canonical(_with_tail(b"\x00\x02\x00"))


def test_a_non_minimal_varint_is_rejected() -> None:
    # The body starts with event_id's length, 36, zigzag 0x48; 0xC8 0x00 is the same number
    # with a needless continuation byte.
    assert GOOD[HEADER_SIZE] == 0x48
    data = GOOD[:HEADER_SIZE] + b"\xc8\x00" + GOOD[HEADER_SIZE + 1:]
    _assert_not_canonical(data)


def test_an_array_in_two_blocks_is_rejected() -> None:
    grant = Event(
        event_id=str(uuid.UUID(int=8, version=4)), type="ConsentGranted", participant_id=PERSON,
        occurred_at=T0,
        payload={"consent_id": "c-1", "recipients": ["defender-assoc", "harbor-cm"],
                 "categories": ["HOUSING"], "purposes": ["legal_defense"], "valid_from": T0,
                 "expires_at": T0 + timedelta(days=365), "exceptions": [], "part2": False,
                 "disclosing_programs": [], "expires_on_event": None, "form_sha256": "0" * 64},
    )
    good = encode(grant, CATALOG)
    one_block = b"\x04" + _avro_string("defender-assoc") + _avro_string("harbor-cm") + b"\x00"
    two_blocks = (b"\x02" + _avro_string("defender-assoc") + b"\x02" + _avro_string("harbor-cm")
                  + b"\x00")
    assert good.count(one_block) == 1
    assert decode(good, CATALOG) == grant
    _assert_not_canonical(good.replace(one_block, two_blocks))


def test_an_older_writer_version_is_checked_against_its_own_schema() -> None:
    referral = Event(
        event_id=str(uuid.UUID(int=9, version=4)), type="ReferralMade", participant_id=PERSON,
        occurred_at=T0,
        payload={"door": "ARREST_DIVERSION", "offense_category": "THEFT_3",
                 "charges_held": True, "referring_officer": "Officer 7", "area": "North"},
    )
    v1 = encode(referral, CATALOG, version=1)
    assert decode(v1, CATALOG).payload["door"] == "ARREST_DIVERSION"
    # The same non-minimal varint trick on the v1 body: rejected before resolution to v2.
    _assert_not_canonical(v1[:HEADER_SIZE] + b"\xc8\x00" + v1[HEADER_SIZE + 1:])
