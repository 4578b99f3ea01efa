"""The canonical envelope of ``lead.events`` is written and read by hand (decision 0011): the
same bytes as fastavro with the envelope's schema, the same record back, and malformed
records refused with :class:`CanonicalRecordError`."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta, timezone

import fastavro
import pytest
from hypothesis import given
from hypothesis import strategies as st

from schemas.canonical import (
    CANONICAL_SCHEMA,
    CanonicalRecord,
    CanonicalRecordError,
    decode_canonical,
    encode_canonical,
)

_PARSED = fastavro.parse_schema(CANONICAL_SCHEMA)
_HEADER_SIZE = 10
_LONG = st.integers(min_value=-(2**63), max_value=2**63 - 1)
_INSTANTS = st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30),
                         timezones=st.sampled_from([UTC, timezone(timedelta(hours=-7)),
                                                    timezone(timedelta(hours=5, minutes=30))]))
_RECORDS = st.builds(
    CanonicalRecord,
    kind=st.sampled_from(["EVENT", "CLOCK"]),
    received_at=_INSTANTS,
    source_partner=st.text(max_size=80),
    ingest_topic=st.text(max_size=300),
    ingest_partition=st.integers(min_value=-(2**31), max_value=2**31 - 1),
    ingest_offset=_LONG,
    event=st.binary(max_size=2000),
)


def _fastavro_body(record: CanonicalRecord) -> bytes:
    out = io.BytesIO()
    fastavro.schemaless_writer(out, _PARSED, record._asdict())
    return out.getvalue()


@given(_RECORDS)
def test_the_envelope_is_written_as_fastavro_writes_it_and_read_back(
        record: CanonicalRecord) -> None:
    data = encode_canonical(record)
    assert data[_HEADER_SIZE:] == _fastavro_body(record)
    back = decode_canonical(data)
    assert back == record._replace(received_at=record.received_at.astimezone(UTC))
    assert back.received_at.tzinfo is UTC
    assert back == CanonicalRecord(**fastavro.schemaless_reader(
        io.BytesIO(data[_HEADER_SIZE:]), _PARSED, None))


def test_a_naive_instant_is_taken_as_utc_as_fastavro_does() -> None:
    record = CanonicalRecord("CLOCK", datetime(2026, 12, 2, 12, 0, 0, 7), "", "t", 0, 1, b"")
    assert encode_canonical(record)[_HEADER_SIZE:] == _fastavro_body(record)
    assert decode_canonical(encode_canonical(record)).received_at == datetime(
        2026, 12, 2, 12, 0, 0, 7, tzinfo=UTC)


_GOOD = encode_canonical(CanonicalRecord(
    "EVENT", datetime(2026, 12, 2, tzinfo=UTC), "harbor-cm", "lead.in.harbor-cm", 3, 12345,
    b"\xc3\x01" + b"e" * 40))


#: After ``received_at``: an empty source and topic, partition 0, offset 0, an empty event.
_EMPTY_REST = b"\x00" * 5


def test_the_cases_below_are_whole_records_but_for_their_fault() -> None:
    assert decode_canonical(_GOOD[:10] + b"\x00\x00" + _EMPTY_REST).source_partner == ""
    assert decode_canonical(_GOOD[:10] + b"\x00\x00\x02a" + _EMPTY_REST[1:]).source_partner == (
        "a")


@pytest.mark.parametrize("data", [
    pytest.param(_GOOD[:n], id=f"cut at {n}") for n in (0, 9, 10, 11, 15, 30, len(_GOOD) - 1)
] + [
    pytest.param(_GOOD + b"\x00", id="a byte after the record"),
    pytest.param(_GOOD[:10] + b"\x04" + _GOOD[11:], id="kind index 2"),
    pytest.param(_GOOD[:10] + b"\x01" + _GOOD[11:], id="kind index -1"),
    pytest.param(_GOOD[:10] + b"\x00" + b"\xff" * 11, id="an eleven-byte long"),
    pytest.param(_GOOD[:10] + b"\x00\x00\x03", id="a negative length"),
    pytest.param(_GOOD[:10] + b"\x00\x00\x02\xff" + _EMPTY_REST[1:], id="not UTF-8"),
    pytest.param(_GOOD[:10] + b"\x00\xfe\xff\xff\xff\xff\xff\xff\xff\xff\x01" + _EMPTY_REST,
                 id="year 292,277"),
    pytest.param(b"\xc3\x01" + b"\x00" * 8 + _GOOD[10:], id="another fingerprint"),
])
def test_a_malformed_record_is_refused(data: bytes) -> None:
    with pytest.raises(CanonicalRecordError):
        decode_canonical(data)
