"""Schema evolution checks and catalog lint: what ``leadhub schemas check`` runs (and CI).

* :func:`resolution_problems` applies the Avro schema-resolution rules to a (writer, reader)
  pair. A new version must be *backward* compatible (the new reader reads old data) and
  *forward* compatible (an old reader reads new data) with the previous version.
* :func:`lint_schema` checks one file: envelope shape, a ``doc`` on every named type and field,
  known ``emitters`` and categories, ``value_categories`` only on enums, unions of the form
  ``["null", T]`` (so the JSON form stays unambiguous), supported logical types, valid defaults.
* :func:`check_catalog` runs both over a directory and returns every problem found.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastavro.schema import parse_schema

from schemas.catalog import (
    CATEGORIES,
    ENVELOPE_FIELDS,
    NAMESPACE,
    ROLES,
    SCHEMA_DIR,
    EventType,
    event_type_from_schema,
    read_schema_file,
)
from schemas.errors import CatalogError
from schemas.shape import SUPPORTED_LOGICAL_TYPES, BadValue, compile_shape

PRIMITIVES = frozenset({"null", "boolean", "int", "long", "float", "double", "bytes", "string"})
PROMOTIONS = {
    "int": {"long", "float", "double"},
    "long": {"float", "double"},
    "float": {"double"},
    "string": {"bytes"},
    "bytes": {"string"},
}
#: Field names that carry contact data and must say so explicitly.
CONTACT_FIELD = re.compile(r".*(name|birth|dob|phone|email|address).*")
#: Staff names are not participant contact data.
STAFF_FIELD = frozenset({"case_manager", "attorney", "referring_officer", "screened_by"})


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the catalog: which file (or type) and what."""

    where: str
    message: str

    def __str__(self) -> str:
        return f"{self.where}: {self.message}"


def _node(schema: Any, named: Mapping[str, Any]) -> Any:
    while isinstance(schema, str) and schema in named:
        schema = named[schema]
    return schema


def _kind(schema: Any) -> str:
    if isinstance(schema, list):
        return "union"
    if isinstance(schema, str):
        return schema
    return str(schema["type"])


def _logical(schema: Any) -> str | None:
    return schema.get("logicalType") if isinstance(schema, dict) else None


def _short(name: str) -> str:
    return name.rsplit(".", 1)[-1]


def resolution_problems(writer: Any, reader: Any) -> list[str]:
    """List why data written with ``writer`` could not be read with ``reader`` (Avro rules).

    Both are fastavro-parsed schemas. An empty list means every writer datum resolves.
    """
    named_w: dict[str, Any] = {}
    named_r: dict[str, Any] = {}
    parse_schema(writer, named_schemas=named_w)
    parse_schema(reader, named_schemas=named_r)
    problems: list[str] = []
    _resolve(writer, reader, "", named_w, named_r, problems, set())
    return problems


def _resolve(
    writer: Any,
    reader: Any,
    path: str,
    named_w: Mapping[str, Any],
    named_r: Mapping[str, Any],
    problems: list[str],
    seen: set[tuple[str, str]],
) -> None:
    w, r = _node(writer, named_w), _node(reader, named_r)
    wk, rk = _kind(w), _kind(r)
    where = path or "<root>"
    if wk == "union":
        for branch in w:
            _resolve(branch, r, path, named_w, named_r, problems, seen)
        return
    if rk == "union":
        for branch in r:
            trial: list[str] = []
            _resolve(w, branch, path, named_w, named_r, trial, set(seen))
            if not trial:
                return
        problems.append(f"{where}: writer type {wk} matches no branch of the reader union")
        return
    if wk != rk:
        if rk not in PROMOTIONS.get(wk, set()):
            problems.append(f"{where}: writer type {wk} cannot be read as {rk}")
        return
    w_logical, r_logical = _logical(w), _logical(r)
    if w_logical != r_logical:
        problems.append(f"{where}: logical type changed ({w_logical} -> {r_logical})")
    if wk in ("record", "error"):
        key = (w["name"], r["name"])
        if key in seen:
            return
        seen.add(key)
        if _short(w["name"]) != _short(r["name"]):
            problems.append(f"{where}: record name changed ({_short(w['name'])} -> "
                            f"{_short(r['name'])})")
        writer_fields = {f["name"]: f for f in w["fields"]}
        for field in r["fields"]:
            names = [field["name"], *field.get("aliases", [])]
            match = next((writer_fields[n] for n in names if n in writer_fields), None)
            sub = f"{path}.{field['name']}" if path else field["name"]
            if match is None:
                if "default" not in field:
                    problems.append(f"{sub}: reader field has no default and the writer lacks it")
            else:
                _resolve(match["type"], field["type"], sub, named_w, named_r, problems, seen)
    elif wk == "enum":
        missing = [s for s in w["symbols"] if s not in r["symbols"]]
        if missing and "default" not in r:
            problems.append(f"{where}: reader enum {_short(r['name'])} lacks symbols "
                            f"{', '.join(missing)} and has no default")
    elif wk == "fixed":
        if w["size"] != r["size"]:
            problems.append(f"{where}: fixed size changed ({w['size']} -> {r['size']})")
    elif wk == "array":
        _resolve(w["items"], r["items"], f"{path}[]", named_w, named_r, problems, seen)
    elif wk == "map":
        _resolve(w["values"], r["values"], f"{path}{{}}", named_w, named_r, problems, seen)


def compatibility_problems(previous: EventType, current: EventType) -> list[str]:
    """Backward and forward problems between two consecutive versions of one type."""
    label = f"v{previous.version} -> v{current.version}"
    backward = resolution_problems(previous.schema, current.schema)
    forward = resolution_problems(current.schema, previous.schema)
    return [f"{label} backward (new reads old): {p}" for p in backward] + [
        f"{label} forward (old reads new): {p}" for p in forward
    ]


def lint_schema(raw: Mapping[str, Any], file_type: str, event_type: EventType) -> list[str]:
    """Everything wrong with one loaded schema file besides compatibility."""
    problems: list[str] = []
    if raw.get("namespace") != NAMESPACE:
        problems.append(f"namespace must be {NAMESPACE}")
    if event_type.name != file_type:
        problems.append(f"file name says {file_type} but the record is {event_type.name}")
    if not event_type.emitters:
        problems.append("'emitters' must be a non-empty list of roles")
    for role in sorted(event_type.emitters - set(ROLES)):
        problems.append(f"unknown emitter role {role!r}; known: {', '.join(ROLES)}")
    if event_type.category not in CATEGORIES:
        problems.append(f"record 'category' must be one of {', '.join(CATEGORIES)}")
    problems += _lint_envelope(event_type)
    _lint_docs(raw, "", problems)
    named: dict[str, Any] = {}
    parse_schema(event_type.schema, named_schemas=named)
    _lint_types(event_type.schema, "", named, problems)
    payload = next(f["type"] for f in event_type.schema["fields"] if f["name"] == "payload")
    for field in payload["fields"]:
        problems += _lint_payload_field(field, named)
    return problems


def _lint_envelope(event_type: EventType) -> list[str]:
    fields = {f["name"]: f for f in event_type.schema["fields"]}
    expected = {
        "event_id": "string",
        "participant_id": "string",
        "source_partner": ["null", "string"],
    }
    problems = [f"envelope field {name} must be {kind}" for name, kind in expected.items()
                if fields[name]["type"] != kind]
    occurred = fields["occurred_at"]["type"]
    if not (isinstance(occurred, dict) and occurred.get("logicalType") == "timestamp-micros"):
        problems.append("envelope field occurred_at must be long/timestamp-micros")
    if fields["source_partner"].get("default", "missing") is not None:
        problems.append("envelope field source_partner must default to null")
    payload = fields["payload"]["type"]
    if _short(payload["name"]) != event_type.name + "Payload":
        problems.append(f"payload record must be named {event_type.name}Payload")
    return problems


def _lint_docs(schema: Any, path: str, problems: list[str]) -> None:
    if isinstance(schema, list):
        for branch in schema:
            _lint_docs(branch, path, problems)
        return
    if not isinstance(schema, dict):
        return
    kind = schema.get("type")
    if kind in ("record", "error", "enum", "fixed") and not str(schema.get("doc", "")).strip():
        problems.append(f"{path or '<root>'}: {kind} {schema.get('name')} has no doc")
    for field in schema.get("fields", []):
        sub = f"{path}.{field['name']}" if path else field["name"]
        if not str(field.get("doc", "")).strip():
            problems.append(f"{sub}: field has no doc")
        _lint_docs(field["type"], sub, problems)
    for key in ("items", "values"):
        if key in schema:
            _lint_docs(schema[key], f"{path}[]", problems)
    if isinstance(kind, dict | list):
        _lint_docs(kind, path, problems)


def _lint_types(schema: Any, path: str, named: Mapping[str, Any], problems: list[str]) -> None:
    if isinstance(schema, list):
        if len(schema) != 2 or schema[0] != "null" or _kind(_node(schema[1], named)) == "union":
            problems.append(f"{path}: unions must be [\"null\", T] so the JSON form is unambiguous")
        for branch in schema:
            _lint_types(branch, path, named, problems)
        return
    if not isinstance(schema, dict):
        return
    logical = schema.get("logicalType")
    if logical is not None and logical not in SUPPORTED_LOGICAL_TYPES:
        problems.append(f"{path}: logical type {logical} is not supported "
                        f"({', '.join(sorted(SUPPORTED_LOGICAL_TYPES))})")
    for field in schema.get("fields", []):
        sub = f"{path}.{field['name']}" if path else field["name"]
        _lint_types(field["type"], sub, named, problems)
        if "default" in field:
            try:
                shape = compile_shape(field["type"], named)
                shape.check(shape.from_default(field["default"]))
            except BadValue as bad:
                problems.append(f"{sub}: default does not fit the field type ({bad.message})")
    for key in ("items", "values"):
        if key in schema:
            _lint_types(schema[key], f"{path}[]", named, problems)


def _lint_payload_field(field: Mapping[str, Any], named: Mapping[str, Any]) -> list[str]:
    problems = []
    where = f"payload.{field['name']}"
    category = field.get("category")
    if category is not None and category not in CATEGORIES:
        problems.append(f"{where}: unknown category {category!r}")
    if (CONTACT_FIELD.fullmatch(field["name"]) and field["name"] not in STAFF_FIELD
            and category != "CONTACT"):
        problems.append(f"{where}: looks like contact data; mark it \"category\": \"CONTACT\"")
    value_categories = field.get("value_categories")
    if value_categories is not None:
        target = field["type"]
        if isinstance(target, list) and len(target) == 2 and target[0] == "null":
            target = target[1]
        target = _node(target, named)
        if not isinstance(value_categories, dict) or _kind(target) != "enum":
            problems.append(f"{where}: value_categories must be an object on an enum field")
        else:
            for value, cat in value_categories.items():
                if value not in target["symbols"]:
                    problems.append(f"{where}: value_categories key {value} is not an enum symbol")
                if cat not in CATEGORIES:
                    problems.append(f"{where}: value_categories maps {value} to unknown {cat!r}")
    return problems


def check_catalog(directory: Path | None = None) -> list[Problem]:
    """Lint every ``.avsc`` in ``directory`` (default: the packaged catalog) and check that each
    version is backward and forward compatible with the previous one. Never raises for a bad
    file: every problem is returned, in file order."""
    directory = SCHEMA_DIR if directory is None else Path(directory)
    problems: list[Problem] = []
    versions: dict[str, list[EventType]] = {}
    fingerprints: dict[str, str] = {}
    paths = sorted(directory.glob("*.avsc"))
    if not paths:
        return [Problem(str(directory), "no .avsc files")]
    for path in paths:
        try:
            file_type, version, raw = read_schema_file(path)
            event_type = event_type_from_schema(raw, version, path)
        except CatalogError as exc:
            problems.append(Problem(path.name, exc.message.removeprefix(f"{path.name}: ")))
            continue
        problems += [Problem(path.name, p) for p in lint_schema(raw, file_type, event_type)]
        if event_type.fingerprint in fingerprints:
            problems.append(Problem(path.name, "same fingerprint as "
                                    f"{fingerprints[event_type.fingerprint]}"))
        fingerprints[event_type.fingerprint] = path.name
        versions.setdefault(event_type.name, []).append(event_type)
    for name, found in sorted(versions.items()):
        found.sort(key=lambda et: et.version)
        numbers = [et.version for et in found]
        if numbers != list(range(1, len(found) + 1)):
            problems.append(Problem(name, f"versions must be 1..N without gaps, found {numbers}"))
        for previous, current in itertools.pairwise(found):
            problems += [Problem(name, p) for p in compatibility_problems(previous, current)]
    return problems


__all__ = ["ENVELOPE_FIELDS", "Problem", "check_catalog", "compatibility_problems",
           "lint_schema", "resolution_problems"]
