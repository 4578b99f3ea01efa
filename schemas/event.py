"""The in-memory event and its JSON / JSON Lines form.

:class:`Event` holds Python values exactly as fastavro returns them, so an event survives
Avro and JSON round trips unchanged. The JSON form is JSON-native: timestamps are ISO-8601 UTC
strings with ``Z`` and microseconds (``2025-01-02T03:04:05.000006Z``), dates ``YYYY-MM-DD``,
nullable fields plain values or ``null`` (no Avro union wrapping)::

    {"event_id": ..., "type": ..., "participant_id": ..., "occurred_at": ...,
     "source_partner": ..., "payload": {...}}
"""

from __future__ import annotations

import json
import re
import secrets
import uuid
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import IO, Any

from schemas.catalog import Catalog
from schemas.errors import ContractError, InvalidField, MalformedJson
from schemas.shape import BadValue, safe_key

_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
#: The envelope's required keys in envelope order: a missing one is named by ``field_path``
#: (the first missing one in this order when several are).
_ENVELOPE_ORDER = ("event_id", "type", "participant_id", "occurred_at", "payload")
_JSON_KEYS = frozenset(_ENVELOPE_ORDER) | {"source_partner"}


@dataclass(frozen=True, slots=True)
class Event:
    """One immutable fact about one participant.

    ``occurred_at`` is timezone-aware UTC with microsecond precision; ``payload`` holds the
    type's fields as fastavro returns them (``datetime`` for ``timestamp-micros``, ``date`` for
    ``date``, ``str`` for enums, ``list`` for arrays, ``dict`` for records). ``source_partner``
    is stamped by the hub; whatever a writer puts there is overwritten on ingest.
    """

    event_id: str
    type: str
    participant_id: str
    occurred_at: datetime
    payload: Mapping[str, Any]
    source_partner: str | None = None


#: The UUID version reserved for the ids of events the hub derives (RFC 9562's custom version).
#: No partner event may carry it, so no partner can take a derived event's id and suppress it.
DERIVED_UUID_VERSION = 8
#: The UUID version of every partner event id: random (RFC 9562 version 4, RFC variant).
PARTNER_UUID_VERSION = 4
#: The one format of a participant id: ``p-`` and 16 lowercase hex digits, 64 random bits the
#: hub mints (:func:`mint_participant_id`; partners get one from ``POST /v1/participants``).
#: Pseudonymous: it says nothing about the person.
PARTICIPANT_ID_PATTERN = r"p-[0-9a-f]{16}"
_PARTICIPANT_ID = re.compile(PARTICIPANT_ID_PATTERN)


def mint_participant_id() -> str:
    """Return a new participant id: ``p-`` and 64 bits from :mod:`secrets` as 16 lowercase hex
    digits (so it matches :data:`PARTICIPANT_ID_PATTERN`)."""
    return "p-" + secrets.token_hex(8)


def is_participant_id(value: object) -> bool:
    """True if ``value`` is a string in the format of :data:`PARTICIPANT_ID_PATTERN`."""
    return isinstance(value, str) and _PARTICIPANT_ID.fullmatch(value) is not None


def derived_event_id(namespace: uuid.UUID, name: str) -> str:
    """Return the deterministic id of a hub-derived event: uuid5(namespace, name), re-stamped
    with the reserved :data:`DERIVED_UUID_VERSION` so it can never equal a partner's id."""
    value = uuid.uuid5(namespace, name).int & ~(0xF << 76)
    return str(uuid.UUID(int=value | (DERIVED_UUID_VERSION << 76)))


def check_envelope_semantics(event_id: object, participant_id: object) -> None:
    """Check what the Avro types cannot, for every event a partner sends (and everything the
    codec encodes): ``event_id`` is a random (version 4) UUID in canonical text form and
    ``participant_id`` is a hub participant id (:data:`PARTICIPANT_ID_PATTERN`).

    A version-8 ``event_id`` gets its own message: that version is reserved for events the hub
    derives. Raises :class:`InvalidField` naming the field (never its value).
    """
    check_recorded_envelope(event_id, participant_id)
    version, variant = str(event_id)[14], str(event_id)[19]
    if version != str(PARTNER_UUID_VERSION) or variant not in "89abAB":
        raise InvalidField(
            f"event_id must be a random (version {PARTNER_UUID_VERSION}) UUID, as uuid4() "
            "makes; other versions are refused",
            field_path="event_id",
        )
    if not is_participant_id(participant_id):
        raise InvalidField(
            "participant_id must be a hub participant id: p- and 16 lowercase hex digits "
            "(get one with POST /v1/participants)",
            field_path="participant_id",
        )


def check_recorded_envelope(event_id: object, participant_id: object) -> None:
    """The envelope rules a record of ``lead.events`` is decoded under: ``event_id`` a UUID in
    canonical text form that is not of the derived version, ``participant_id`` non-empty.

    The validator accepted the record under the rules of its day; a replay must decode the log
    as it is, so the stricter partner-input rules (:func:`check_envelope_semantics`: version 4,
    the participant id format) are not applied again. Raises :class:`InvalidField`.
    """
    if not isinstance(event_id, str) or _UUID.fullmatch(event_id) is None:
        raise InvalidField(
            "event_id must be a UUID in canonical text form (8-4-4-4-12 hex digits)",
            field_path="event_id",
        )
    if event_id[14] == str(DERIVED_UUID_VERSION):
        raise InvalidField(
            f"event_id must not be a version-{DERIVED_UUID_VERSION} UUID: that version is "
            "reserved for events the hub derives; use a random (version 4) UUID",
            field_path="event_id",
        )
    if not isinstance(participant_id, str) or not participant_id.strip():
        raise InvalidField("participant_id must be a non-empty string", field_path="participant_id")


def format_timestamp(value: datetime) -> str:
    """Render an aware datetime as ``YYYY-MM-DDTHH:MM:SS.ffffffZ`` (UTC)."""
    return value.astimezone(UTC).isoformat(timespec="microseconds")[:-6] + "Z"


def _to_json(value: Any, path: str) -> Any:
    kind = type(value)
    if value is None or kind is str or kind is bool or kind is int or kind is float:
        return value
    if isinstance(value, datetime):
        if value.utcoffset() is None:
            message = f"{path} is a naive datetime; use timezone-aware UTC"
            raise InvalidField(message, field_path=path)
        return format_timestamp(value)
    if isinstance(value, date):
        return value.isoformat()
    if kind is bytes:
        return value.decode("latin-1")
    if isinstance(value, Mapping):
        return {key: _to_json(item, f"{path}.{safe_key(key)}") for key, item in value.items()}
    if kind is list or kind is tuple:
        return [_to_json(item, f"{path}[{index}]") for index, item in enumerate(value)]
    raise InvalidField(
        f"{path} holds a {kind.__name__}, which has no JSON form in the event contract",
        field_path=path,
    )


def event_to_json(event: Event) -> dict[str, Any]:
    """Return the JSON-native dict of ``event`` (see the module doc); does not validate types."""
    return {
        "event_id": event.event_id,
        "type": event.type,
        "participant_id": event.participant_id,
        "occurred_at": _to_json(event.occurred_at, "occurred_at"),
        "source_partner": event.source_partner,
        "payload": _to_json(event.payload, "payload"),
    }


def event_from_json(obj: Any, catalog: Catalog) -> Event:
    """Parse and validate the JSON form against the latest schema of its ``type``.

    Payload fields that have a default in the schema may be omitted (they are filled in).
    Raises :class:`MalformedJson` (not an envelope object; ``field_path`` names the first
    missing envelope key, or an unknown one), :class:`UnknownEventType` or
    :class:`InvalidField` (with ``field_path``).
    """
    if not isinstance(obj, Mapping):
        raise MalformedJson(f"an event must be a JSON object, got {type(obj).__name__}")
    missing = [key for key in _ENVELOPE_ORDER if key not in obj]
    if missing:
        raise MalformedJson(f"event envelope lacks {', '.join(missing)}",
                            field_path=missing[0])
    unknown = [key for key in obj if key not in _JSON_KEYS]
    if unknown:
        shown = safe_key(unknown[0])
        raise MalformedJson(f"unknown envelope key {shown}",
                            field_path=shown if shown == unknown[0] else None)
    type_name = obj["type"]
    if not isinstance(type_name, str):
        raise InvalidField("type must be a string", field_path="type")
    plan = catalog.latest_plan(type_name)
    envelope = {key: obj[key] for key in obj if key != "type"}
    envelope.setdefault("source_partner", None)
    try:
        values = plan.envelope.from_json(envelope)
    except BadValue as bad:
        raise InvalidField(f"{bad.path}: {bad.message}", field_path=bad.path) from None
    check_envelope_semantics(values["event_id"], values["participant_id"])
    return Event(
        event_id=values["event_id"],
        type=plan.event_type.name,
        participant_id=values["participant_id"],
        occurred_at=values["occurred_at"],
        payload=values["payload"],
        source_partner=values["source_partner"],
    )


def read_jsonl(source: str | Path | IO[str] | IO[bytes], catalog: Catalog) -> Iterator[Event]:
    """Yield events from a JSON Lines file or path, one line at a time (never the whole file).

    Blank lines are skipped. Errors are the :func:`event_from_json` ones, prefixed with the
    1-based line number; invalid JSON raises :class:`MalformedJson`.
    """
    if isinstance(source, str | Path):
        with open(source, encoding="utf-8") as handle:
            yield from _read_lines(handle, catalog)
    else:
        yield from _read_lines(source, catalog)


def _read_lines(handle: Iterable[str | bytes], catalog: Catalog) -> Iterator[Event]:
    for number, line in enumerate(handle, start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise MalformedJson(f"line {number}: not valid JSON ({type(exc).__name__})") from exc
        try:
            event = event_from_json(obj, catalog)
        except ContractError as exc:
            raise type(exc)(f"line {number}: {exc.message}", field_path=exc.field_path) from exc
        yield event


def write_jsonl(events: Iterable[Event], file: str | Path | IO[str]) -> int:
    """Write each event as one compact JSON line (ASCII-escaped); return how many were written."""
    if isinstance(file, str | Path):
        with open(file, "w", encoding="utf-8") as handle:
            return write_jsonl(events, handle)
    count = 0
    for event in events:
        try:
            line = json.dumps(event_to_json(event), separators=(",", ":"), allow_nan=False)
        except ValueError as exc:
            raise InvalidField(
                f"event {event.event_id}: a float is NaN or infinite, which JSON cannot carry"
            ) from exc
        file.write(line)
        file.write("\n")
        count += 1
    return count
