"""Recording forms generated from the Avro schemas (pure: no I/O, no clock).

:func:`form_fields` reads an event type's payload fields from the catalog — name, doc, Avro
type, enum symbols, default — into :class:`FormField` records a template renders; a new event
type gets its form with no new page code. :func:`payload_from_form` turns the submitted values
back into the JSON-native payload that :func:`schemas.event.event_from_json` (the gateway's own
parser) then validates against the schema. A string field whose name ends in ``_sha256`` is a
file upload: the form sends the file and the payload gets its SHA-256 (the signed consent
form's digest; the file itself is not kept).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from schemas.catalog import EventType
from schemas.event import format_timestamp

#: Types never recorded from a form: links go through the crosswalk (POST /v1/participants).
NOT_FROM_FORMS = frozenset({"IdentifierLinked", "IdentifierUnlinked"})


@dataclass(frozen=True, slots=True)
class FormField:
    """One input of a generated form."""

    name: str
    label: str
    doc: str
    kind: str  # text | enum | bool | int | float | datetime | date | list | digest | json
    required: bool
    options: tuple[str, ...] = ()
    default: str = ""


class FormProblem(ValueError):
    """A submitted value that cannot become the field's type (names the field, not the value)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def _label(name: str) -> str:
    return name.replace("_", " ").capitalize()


def _kind(avro: Any) -> tuple[str, tuple[str, ...]]:
    """(kind, enum symbols) of a non-null Avro type."""
    if isinstance(avro, dict):
        logical = avro.get("logicalType")
        if logical in ("timestamp-micros", "timestamp-millis"):
            return "datetime", ()
        if logical == "date":
            return "date", ()
        kind = avro.get("type")
        if kind == "enum":
            return "enum", tuple(avro.get("symbols", ()))
        if kind == "array" and avro.get("items") == "string":
            return "list", ()
        if kind == "array" and isinstance(avro.get("items"), dict) and \
                avro["items"].get("type") == "enum":
            return "list", tuple(avro["items"].get("symbols", ()))
        if kind in ("array", "map", "record"):
            return "json", ()
        return _kind(kind)
    return {"string": ("text", ()), "boolean": ("bool", ()), "int": ("int", ()),
            "long": ("int", ()), "float": ("float", ()), "double": ("float", ())}.get(
        str(avro), ("json", ()))


def form_fields(event_type: EventType) -> list[FormField]:
    """The form of an event type's payload, in schema order."""
    payload = next(f["type"] for f in event_type.schema["fields"] if f["name"] == "payload")
    out: list[FormField] = []
    for spec in payload["fields"]:
        avro = spec["type"]
        nullable = isinstance(avro, list) and "null" in avro
        if isinstance(avro, list):
            avro = next(t for t in avro if t != "null")
        kind, options = _kind(avro)
        if kind == "text" and spec["name"].endswith("_sha256"):
            kind = "digest"
        has_default = "default" in spec
        default = ""
        if kind == "json":
            default = json.dumps(spec.get("default", []))
        out.append(FormField(spec["name"], _label(spec["name"]), str(spec.get("doc", "")),
                             kind, not (nullable or has_default or kind == "bool"),
                             options, default))
    return out


def _datetime(text: str, field: str) -> str:
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError as exc:
        raise FormProblem(field, "enter a date and time (YYYY-MM-DD HH:MM, UTC)") from exc
    return format_timestamp(parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed)


def parse_value(spec: FormField, raw: str) -> Any:
    """One submitted text as the field's JSON value (None for a blank optional field)."""
    text = raw.strip()
    if spec.kind == "bool":
        return text in ("yes", "true", "on", "1")
    if spec.kind == "json":
        try:
            return json.loads(text or spec.default or "null")
        except ValueError as exc:
            raise FormProblem(spec.name, "enter JSON (see the field's help)") from exc
    if spec.kind == "list":
        items = [part.strip() for part in text.replace(",", "\n").splitlines() if part.strip()]
        if spec.required and not items:
            raise FormProblem(spec.name, "enter at least one value, one per line")
        return items
    if not text:
        if spec.required:
            raise FormProblem(spec.name, "this field is required")
        return None
    if spec.kind == "enum" and text not in spec.options:
        raise FormProblem(spec.name, "choose one of the listed values")
    if spec.kind == "int":
        try:
            return int(text)
        except ValueError as exc:
            raise FormProblem(spec.name, "enter a whole number") from exc
    if spec.kind == "float":
        try:
            return float(text)
        except ValueError as exc:
            raise FormProblem(spec.name, "enter a number") from exc
    if spec.kind == "datetime":
        return _datetime(text, spec.name)
    if spec.kind == "date":
        try:
            return date.fromisoformat(text).isoformat()
        except ValueError as exc:
            raise FormProblem(spec.name, "enter a date (YYYY-MM-DD)") from exc
    return text


def payload_from_form(fields: list[FormField], values: Mapping[str, str],
                      digests: Mapping[str, str]) -> dict[str, Any]:
    """The JSON payload of a submitted form; ``digests`` holds the SHA-256 of each uploaded
    file by field name. Raises :class:`FormProblem` for the first bad field."""
    payload: dict[str, Any] = {}
    for spec in fields:
        if spec.kind == "digest":
            digest = digests.get(spec.name)
            if digest is None and spec.required:
                raise FormProblem(spec.name, "attach the signed form")
            payload[spec.name] = digest
            continue
        value = parse_value(spec, values.get(spec.name, ""))
        if value is None and not spec.required and spec.kind != "bool":
            continue  # the schema's default (null) applies
        payload[spec.name] = value
    return payload


def occurred_at(text: str, now: datetime) -> str:
    """The event's ``occurred_at`` from the form (blank: now), as JSON."""
    return _datetime(text.strip(), "occurred_at") if text.strip() else _datetime(
        now.isoformat(), "occurred_at")
