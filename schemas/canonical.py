"""The canonical envelope on ``lead.events``: an accepted event plus where and when it came in.

The validator writes one :class:`CanonicalRecord` per accepted inbound message, in Avro
single-object encoding like everything else on the wire. ``kind`` is ``EVENT`` for a partner's
(or the hub's) event, and ``CLOCK`` for a hub clock tick: ticks travel through the log so that
consent expiry and intake deadlines are replayed exactly as they happened live.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import fastavro
from fastavro.schema import fingerprint, to_parsing_canonical_form

from schemas.errors import HubError

CANONICAL_SCHEMA: dict[str, Any] = {
    "type": "record",
    "name": "CanonicalRecord",
    "namespace": "org.leadhub.hub",
    "doc": "One record of lead.events: an accepted event, or a hub clock tick.",
    "fields": [
        {"name": "kind", "doc": "EVENT or CLOCK.",
         "type": {"type": "enum", "name": "RecordKind", "symbols": ["EVENT", "CLOCK"]}},
        {"name": "received_at", "doc": "Hub time the record was accepted (UTC).",
         "type": {"type": "long", "logicalType": "timestamp-micros"}},
        {"name": "source_partner", "doc": "Partner id stamped from the inbound topic.",
         "type": "string"},
        {"name": "ingest_topic", "doc": "Inbound topic the event was read from.",
         "type": "string"},
        {"name": "ingest_partition", "doc": "Its partition.", "type": "int"},
        {"name": "ingest_offset", "doc": "Its offset.", "type": "long"},
        {"name": "event", "doc": "The event, Avro single-object encoding, source stamped; "
                                 "empty for CLOCK.", "type": "bytes"},
    ],
}

_PARSED = fastavro.parse_schema(CANONICAL_SCHEMA)
_FINGERPRINT = bytes.fromhex(
    fingerprint(to_parsing_canonical_form(_PARSED), "CRC-64-AVRO")
)
_HEADER = b"\xc3\x01" + _FINGERPRINT


class CanonicalRecordError(HubError):
    """A ``lead.events`` record is not a canonical record (written by something else?)."""


@dataclass(frozen=True, slots=True)
class CanonicalRecord:
    """One record of ``lead.events``."""

    kind: Literal["EVENT", "CLOCK"]
    received_at: datetime
    source_partner: str
    ingest_topic: str
    ingest_partition: int
    ingest_offset: int
    event: bytes


def encode_canonical(record: CanonicalRecord) -> bytes:
    """Single-object encode ``record``."""
    buffer = io.BytesIO()
    buffer.write(_HEADER)
    fastavro.schemaless_writer(
        buffer,
        _PARSED,
        {
            "kind": record.kind,
            "received_at": record.received_at,
            "source_partner": record.source_partner,
            "ingest_topic": record.ingest_topic,
            "ingest_partition": record.ingest_partition,
            "ingest_offset": record.ingest_offset,
            "event": record.event,
        },
    )
    return buffer.getvalue()


def decode_canonical(data: bytes) -> CanonicalRecord:
    """Decode a ``lead.events`` value; raise CanonicalRecordError if it is not one."""
    if not data.startswith(_HEADER):
        raise CanonicalRecordError("not a canonical lead.events record (header mismatch)")
    try:
        obj: Any = fastavro.schemaless_reader(io.BytesIO(data[len(_HEADER):]), _PARSED, None)
    except Exception as exc:  # fastavro raises assorted errors on truncated bodies
        raise CanonicalRecordError("malformed canonical lead.events record") from exc
    return CanonicalRecord(**obj)
