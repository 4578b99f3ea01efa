"""Avro single-object encoding of events: the wire format of every ``lead.in.*`` topic.

Layout: ``C3 01`` + the 8-byte little-endian CRC-64-AVRO fingerprint of the writer schema's
parsing canonical form + the Avro binary body (fastavro, schemaless). Every schema version ever
published stays in the catalog, so :func:`decode` finds any writer by fingerprint and resolves
it to the reader schema (the latest version unless told otherwise).

Both functions raise :class:`schemas.errors.ContractError` subclasses with a stable ``reason``;
messages name types, versions, fingerprints and field paths, never field values.
"""

from __future__ import annotations

from io import BytesIO
from typing import Any

from fastavro import schemaless_reader, schemaless_writer
from fastavro.read import SchemaResolutionError

from schemas.catalog import SINGLE_OBJECT_MARKER, Catalog, TypePlan
from schemas.errors import (
    InvalidField,
    MalformedBody,
    NonCanonicalBody,
    NotSingleObject,
    ResolutionFailed,
    UnknownEventType,
)
from schemas.event import Event, check_envelope_semantics, check_recorded_envelope
from schemas.shape import BadValue, safe_key
from schemas.zigzag import long_bytes, read_bytes, read_long

HEADER_SIZE = 10


def encode(event: Event, catalog: Catalog, version: int | None = None, *,
           unsourced: bool = False) -> bytes:
    """Validate ``event`` against its type's schema and return its single-object encoding.

    ``version`` picks the writer schema (default: the latest). Writing an older version drops
    newer payload fields only when they hold their default; otherwise :class:`InvalidField`.
    ``unsourced`` writes the event with no ``source_partner``, whatever it names, as a partner
    sends it (the hub stamps the source from the topic).
    Raises :class:`UnknownEventType` or :class:`InvalidField` (with ``field_path``); nothing is
    encoded unless the whole event is valid, so what encodes decodes back to an equal event.
    """
    if type(event.type) is not str:
        raise UnknownEventType("event type must be a string", field_path="type")
    plan = catalog.plan(event.type, version)
    payload = event.payload
    if version is not None:
        latest = catalog.latest_plan(event.type)
        if latest is not plan:
            payload = _downgrade(payload, plan, latest)
    record = {
        "event_id": event.event_id,
        "participant_id": event.participant_id,
        "occurred_at": event.occurred_at,
        "source_partner": None if unsourced else event.source_partner,
        "payload": payload,
    }
    try:
        plan.envelope.check(record)
    except BadValue as bad:
        raise InvalidField(
            f"{_label(plan)}: {bad.path}: {bad.message}", field_path=bad.path
        ) from None
    check_envelope_semantics(event.event_id, event.participant_id)
    buffer = BytesIO()
    buffer.write(plan.header)
    try:
        schemaless_writer(buffer, plan.event_type.schema, record, disable_tuple_notation=True)
    except Exception as exc:  # validated above, so this is a bug or an exotic value
        raise InvalidField(
            f"{_label(plan)}: event could not be encoded ({type(exc).__name__})"
        ) from exc
    return buffer.getvalue()


def decode(data: bytes, catalog: Catalog, *, reader_version: int | None = None,
           strict: bool = True) -> Event:
    """Decode one single-object encoded event, resolving its writer schema to the reader's.

    The writer is found by fingerprint among every version in ``catalog``; the reader is the
    latest version of the same type, or ``reader_version`` when given. Raises
    :class:`NotSingleObject`, :class:`UnknownFingerprint`, :class:`MalformedBody` (body does not
    decode, or has trailing bytes), :class:`NonCanonicalBody` (a ``MalformedBody``: the body
    decodes but is not the one encoding Avro allows for what it decodes to, e.g. a negative
    enum or union index, a varint with needless continuation bytes, a boolean byte other than
    0 or 1), :class:`ResolutionFailed` (e.g. an enum symbol the reader lacks) or
    :class:`InvalidField` (a decoded ``event_id`` that is not a version-4 UUID, a
    ``participant_id`` not in the hub's format: :func:`schemas.event.check_envelope_semantics`).

    Strictness: the body is decoded with the writer schema alone, re-encoded, and must come out
    byte for byte as it came in, so one event has exactly one accepted encoding (what the hub
    hashes and audits is what the partner meant). Arrays and maps must be written as a single
    block, as the common Avro encoders do. ``strict=False`` skips that check, for bodies the hub
    itself wrote (``lead.events``: the validator stamps the source into a strictly checked body,
    :func:`stamp_source_partner`, or re-encodes an older version at the latest), and
    checks the envelope only as :func:`schemas.event.check_recorded_envelope` does: the log is
    decoded as it was accepted, so a replay never re-judges an old record by newer rules.
    """
    if type(data) is not bytes:
        if not isinstance(data, bytearray | memoryview):
            raise NotSingleObject(f"expected bytes, got {type(data).__name__}")
        data = bytes(data)
    if len(data) < HEADER_SIZE or data[:2] != SINGLE_OBJECT_MARKER:
        raise NotSingleObject(
            "not an Avro single-object encoding (expected C3 01 + 8-byte fingerprint + body)"
        )
    writer, reader = catalog.writer_and_latest(data[2:HEADER_SIZE])
    if reader_version is not None:
        reader = catalog.plan(writer.event_type.name, reader_version)
    buffer = BytesIO(data)
    buffer.seek(HEADER_SIZE)
    try:
        record: Any = schemaless_reader(buffer, writer.event_type.schema, None)
    except Exception as exc:  # fastavro raises EOFError, ValueError, IndexError, ...
        raise MalformedBody(
            f"body does not decode as {_label(writer)} ({type(exc).__name__})"
        ) from exc
    if buffer.tell() != len(data):
        extra = len(data) - buffer.tell()
        raise MalformedBody(f"{extra} trailing bytes after the {_label(writer)} body")
    if strict:
        _require_canonical(record, writer, data)
    if reader is not writer:
        buffer.seek(HEADER_SIZE)
        try:
            record = schemaless_reader(buffer, writer.event_type.schema,
                                       reader.event_type.schema)
        except SchemaResolutionError as exc:
            raise ResolutionFailed(
                f"{_label(writer)} data cannot be read as {_label(reader)} "
                f"({type(exc).__name__})"
            ) from exc
        except Exception as exc:  # it decoded with the writer schema alone, so a bug
            raise MalformedBody(
                f"body does not decode as {_label(reader)} ({type(exc).__name__})"
            ) from exc
    if strict:
        check_envelope_semantics(record["event_id"], record["participant_id"])
    else:
        check_recorded_envelope(record["event_id"], record["participant_id"])
    return Event(
        event_id=record["event_id"],
        type=reader.event_type.name,
        participant_id=record["participant_id"],
        occurred_at=record["occurred_at"],
        payload=record["payload"],
        source_partner=record["source_partner"],
    )


def event_id_of(data: bytes) -> str:
    """The ``event_id`` of an event :func:`encode` wrote, read from its bytes alone (the first
    field of every version's envelope: a length, then the UTF-8); "unknown" if ``data`` is not
    such an encoding. For naming an event in an error without decoding it."""
    try:
        event_id, _ = read_bytes(data, HEADER_SIZE)
        return event_id.decode() or "unknown"
    except (IndexError, ValueError):  # UnicodeDecodeError is a ValueError
        return "unknown"


def stamp_source_partner(data: bytes, catalog: Catalog, partner_id: str) -> bytes | None:
    """What :func:`encode` gives for the event ``data`` encodes with ``source_partner`` set to
    ``partner_id``, made from ``data`` without encoding the event again; None when ``data`` is
    not at its type's latest version (:func:`encode` writes the latest) or names another source.

    ``data`` must have passed :func:`decode` (strict), so its body is canonical. Every version's
    envelope begins, as the catalog requires, with two strings (``event_id``,
    ``participant_id``: a length, then the bytes), a long (``occurred_at``) and
    ``source_partner``, a union whose null is the one byte 0 and whose string is the byte 2,
    then the string. A null is replaced by ``partner_id``; ``partner_id`` already there is kept.
    """
    writer, latest = catalog.writer_and_latest(data[2:HEADER_SIZE])
    if writer is not latest:
        return None
    position = HEADER_SIZE
    for _ in range(2):  # event_id, participant_id
        length, position = read_long(data, position)
        position += length
    _, position = read_long(data, position)  # occurred_at
    name = partner_id.encode()
    if data[position] == 0:
        return b"".join((data[:position], b"\x02", long_bytes(len(name)), name,
                         data[position + 1:]))
    length, start = read_long(data, position + 1)
    return data if data[start:start + length] == name else None


def _require_canonical(record: Any, writer: TypePlan, data: bytes) -> None:
    """Raise :class:`NonCanonicalBody` unless re-encoding ``record`` gives back ``data``.

    ``record`` is what ``data`` decoded to with ``writer``'s schema alone; every union in the
    catalog is null-or-one-type, so the encoder picks the branch the writer did.
    """
    out = BytesIO()
    out.write(writer.header)
    try:
        schemaless_writer(out, writer.event_type.schema, record, disable_tuple_notation=True)
    except Exception as exc:  # a decoded value the encoder refuses: not a canonical body
        raise NonCanonicalBody(
            f"{_label(writer)} body decodes to values that do not encode again "
            f"({type(exc).__name__})"
        ) from exc
    if out.getvalue() != data:
        raise NonCanonicalBody(
            f"{_label(writer)} body is not in canonical Avro encoding (a negative enum or union "
            "index, an over-long varint, a boolean other than 0/1, or arrays/maps in several "
            "blocks); encode with a standard Avro binary encoder"
        )


def _label(plan: TypePlan) -> str:
    return f"{plan.event_type.name} v{plan.event_type.version} ({plan.event_type.fingerprint})"


def _downgrade(payload: Any, plan: TypePlan, latest: TypePlan) -> Any:
    """Drop payload fields the older writer lacks, when they hold the latest schema's default."""
    if not isinstance(payload, dict):
        return payload  # the envelope check reports the type error
    writer_fields = {spec.name for spec in plan.event_type.fields}
    extra = [key for key in payload if key not in writer_fields]
    if not extra:
        return payload
    latest_payload = next(
        f["type"] for f in latest.event_type.schema["fields"] if f["name"] == "payload"
    )
    defaults = {f["name"]: f["default"] for f in latest_payload["fields"] if "default" in f}
    for key in extra:
        if key not in defaults or payload[key] != defaults[key]:
            path = f"payload.{safe_key(key)}"
            raise InvalidField(
                f"{_label(plan)}: {path} does not exist in this version and holds a non-default "
                f"value; write version {latest.event_type.version} instead",
                field_path=path,
            )
    return {key: value for key, value in payload.items() if key in writer_fields}
