"""The catalog of event types: every ``schemas/avro/<Type>.v<N>.avsc`` file, loaded and indexed.

The ``.avsc`` files are the contract (a partner in another language publishes from them alone).
This module reads them into :class:`EventType` records carrying the hub's policy metadata —
who may emit a type (``emitters``) and the data category of the event and of each payload field
(``category``, ``value_categories``). Policy always comes from the *latest* version of a type in
the hub's own catalog (``catalog.latest(event.type)``), never from the schema a writer used.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from fastavro.schema import fingerprint as crc64_fingerprint
from fastavro.schema import parse_schema, to_parsing_canonical_form

from schemas.errors import CatalogError, UnknownEventType, UnknownFingerprint
from schemas.shape import Shape, compile_shape, safe_key

CATEGORIES: tuple[str, ...] = (
    "PROGRAM_STATUS",
    "REFERRAL",
    "LEGAL_CASE",
    "SUD_TREATMENT",
    "MENTAL_HEALTH",
    "MEDICAL",
    "HOUSING",
    "BENEFITS",
    "EMPLOYMENT",
    "CONTACT",
    "CONSENT",
    "IDENTITY",
)
ROLES: tuple[str, ...] = (
    "police",
    "prosecutor",
    "defender",
    "case_management",
    "housing",
    "sud_treatment",
    "mental_health",
    "medical",
    "coordinator",
    "hub",
)
NAMESPACE = "org.leadhub.events"
ENVELOPE_FIELDS: tuple[str, ...] = (
    "event_id",
    "participant_id",
    "occurred_at",
    "source_partner",
    "payload",
)
SINGLE_OBJECT_MARKER = b"\xc3\x01"
SCHEMA_DIR = Path(__file__).resolve().parent / "avro"
FILE_NAME = re.compile(r"(?P<name>[A-Za-z_][A-Za-z0-9_]*)\.v(?P<version>[1-9][0-9]*)\.avsc")


@dataclass(frozen=True)
class FieldSpec:
    """One payload field and its policy metadata."""

    name: str
    doc: str
    category: str | None  # None: inherits the event type's category
    value_categories: Mapping[str, str] = field(hash=False)  # enum value -> whole-event category


@dataclass(frozen=True)
class EventType:
    """One version of one event type, as read from its ``.avsc`` file."""

    name: str
    version: int
    fingerprint: str  # 16 hex chars, as fastavro.schema.fingerprint(canonical, "CRC-64-AVRO")
    path: Path
    doc: str
    emitters: frozenset[str]
    category: str
    fields: tuple[FieldSpec, ...]
    schema: Any = field(compare=False, repr=False)  # parsed fastavro schema

    def event_category(self, payload: Mapping[str, Any]) -> str:
        """Return the row-level category of an event with this payload.

        A field with ``value_categories`` whose value is one of its keys gives the whole event
        that category (first such field in schema order wins); otherwise the type's category.
        """
        for spec in self.fields:
            if spec.value_categories:
                value = payload.get(spec.name)
                if isinstance(value, str) and value in spec.value_categories:
                    return spec.value_categories[value]
        return self.category

    def field_categories(self, payload: Mapping[str, Any]) -> dict[str, str]:
        """Map every payload field of this type to its resolved category for this payload."""
        override = self.event_category(payload)
        if override != self.category:
            return {spec.name: override for spec in self.fields}
        return {spec.name: spec.category or self.category for spec in self.fields}


@dataclass(frozen=True, slots=True)
class TypePlan:
    """Internal to ``schemas``: what the codec and JSON converters need for one version."""

    event_type: EventType
    header: bytes  # C3 01 + 8 fingerprint bytes
    envelope: Shape
    payload: Shape


def _short_name(name: str) -> str:
    return name.rsplit(".", 1)[-1]


def read_schema_file(path: Path) -> tuple[str, int, dict[str, Any]]:
    """Read ``<Type>.v<N>.avsc``; return (type name from the file name, N, raw JSON schema)."""
    match = FILE_NAME.fullmatch(path.name)
    if match is None:
        raise CatalogError(f"{path.name}: file name must be <TypeName>.v<N>.avsc")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CatalogError(f"{path.name}: cannot read JSON ({type(exc).__name__})") from exc
    if not isinstance(raw, dict):
        raise CatalogError(f"{path.name}: top level must be a JSON object (an Avro record)")
    return match["name"], int(match["version"]), raw


def event_type_from_schema(raw: Mapping[str, Any], version: int, path: Path) -> EventType:
    """Build an :class:`EventType` from one raw envelope schema (raises :class:`CatalogError`)."""
    where = path.name
    try:
        parsed: Any = parse_schema(dict(raw), named_schemas={})
        fp = crc64_fingerprint(to_parsing_canonical_form(dict(raw)), "CRC-64-AVRO")
    except Exception as exc:  # fastavro raises several types for bad schemas
        raise CatalogError(f"{where}: not a valid Avro schema ({type(exc).__name__})") from exc
    if parsed.get("type") != "record":
        raise CatalogError(f"{where}: top level must be an Avro record")
    by_name = {f["name"]: f for f in parsed["fields"]}
    if tuple(by_name) != ENVELOPE_FIELDS:
        raise CatalogError(f"{where}: envelope fields must be exactly {', '.join(ENVELOPE_FIELDS)}")
    payload = by_name["payload"]["type"]
    if not isinstance(payload, dict) or payload.get("type") != "record":
        raise CatalogError(f"{where}: payload must be an inline Avro record")
    fields = tuple(
        FieldSpec(
            name=f["name"],
            doc=str(f.get("doc", "")),
            category=f.get("category"),
            value_categories=MappingProxyType(dict(f.get("value_categories") or {})),
        )
        for f in payload["fields"]
    )
    emitters = raw.get("emitters") or []
    return EventType(
        name=_short_name(parsed["name"]),
        version=version,
        fingerprint=fp,
        path=path,
        doc=str(raw.get("doc", "")),
        emitters=frozenset(str(e) for e in emitters) if isinstance(emitters, list) else frozenset(),
        category=str(raw.get("category", "")),
        fields=fields,
        schema=parsed,
    )


def _plan(event_type: EventType) -> TypePlan:
    named: dict[str, Any] = {}
    parse_schema(event_type.schema, named_schemas=named)
    envelope = compile_shape(event_type.schema, named)
    payload_schema = next(f["type"] for f in event_type.schema["fields"] if f["name"] == "payload")
    return TypePlan(
        event_type=event_type,
        header=SINGLE_OBJECT_MARKER + bytes.fromhex(event_type.fingerprint),
        envelope=envelope,
        payload=compile_shape(payload_schema, named),
    )


class Catalog:
    """Every version of every event type, indexed by name, version and fingerprint."""

    def __init__(self, event_types: Iterable[EventType]) -> None:
        """Index event types; raise :class:`CatalogError` on duplicate versions or fingerprints."""
        self._plans: dict[tuple[str, int], TypePlan] = {}
        self._by_fingerprint: dict[bytes, TypePlan] = {}
        self._latest: dict[str, TypePlan] = {}
        self._resolution: dict[bytes, tuple[TypePlan, TypePlan]] = {}  # fp -> (writer, latest)
        for event_type in sorted(event_types, key=lambda et: (et.name, et.version)):
            key = (event_type.name, event_type.version)
            if key in self._plans:
                raise CatalogError(f"{event_type.name} v{event_type.version} is defined twice")
            plan = _plan(event_type)
            fp = plan.header[2:]
            if fp in self._by_fingerprint:
                other = self._by_fingerprint[fp].event_type
                raise CatalogError(
                    f"{event_type.name} v{event_type.version} has the same fingerprint as "
                    f"{other.name} v{other.version}"
                )
            self._plans[key] = plan
            self._by_fingerprint[fp] = plan
            self._latest[event_type.name] = plan
        for fp, plan in self._by_fingerprint.items():
            self._resolution[fp] = (plan, self._latest[plan.event_type.name])
        self._types = tuple(sorted(self._latest))

    def latest(self, type_name: str) -> EventType:
        """The newest version of ``type_name``: the one whose categories and emitters apply."""
        return self.latest_plan(type_name).event_type

    def get(self, type_name: str, version: int) -> EventType:
        """Exactly ``type_name`` version ``version``; raises :class:`UnknownEventType`."""
        return self.plan(type_name, version).event_type

    def by_fingerprint(self, fingerprint: bytes | str) -> EventType:
        """The version whose CRC-64-AVRO fingerprint is ``fingerprint``.

        Accepts the 8 raw bytes (as in the single-object header) or 16 hex characters.
        Raises :class:`UnknownFingerprint`.
        """
        return self._plan_for_fingerprint(_fingerprint_bytes(fingerprint)).event_type

    def types(self) -> tuple[str, ...]:
        """Sorted names of every event type."""
        return self._types

    def knows(self, type_name: str) -> bool:
        """True when ``type_name`` is an event type of the catalog (any version)."""
        return type_name in self._latest

    def all_versions(self) -> tuple[EventType, ...]:
        """Every version of every type, sorted by (name, version)."""
        return tuple(plan.event_type for plan in self._plans.values())

    def may_emit(self, role: str, type_name: str) -> bool:
        """True when the latest schema of ``type_name`` lists ``role`` as an emitter.

        Unknown types and roles are simply not allowed (deny by default).
        """
        plan = self._latest.get(type_name)
        return plan is not None and role in plan.event_type.emitters

    # -- internal to the schemas package (codec, event) -------------------------------------
    def latest_plan(self, type_name: str) -> TypePlan:
        """The compiled plan of ``type_name``'s latest version; UnknownEventType if none."""
        plan = self._latest.get(type_name)
        if plan is None:
            raise UnknownEventType(
                f"unknown event type {safe_key(type_name)}; see `leadhub schemas list`",
                field_path="type",
            )
        return plan

    def plan(self, type_name: str, version: int | None = None) -> TypePlan:
        """The compiled plan of one version (None: the latest); UnknownEventType if none."""
        if version is None:
            return self.latest_plan(type_name)
        plan = self._plans.get((type_name, version))
        if plan is None:
            latest = self.latest_plan(type_name)
            known = ", ".join(str(v) for (n, v) in self._plans if n == latest.event_type.name)
            raise UnknownEventType(
                f"{latest.event_type.name} has no version {int(version)} (known: {known})",
                field_path="type",
            )
        return plan

    def writer_and_latest(self, fp: bytes) -> tuple[TypePlan, TypePlan]:
        """The plans of the version with wire fingerprint ``fp`` and of its type's latest
        version; UnknownFingerprint if no version has it."""
        found = self._resolution.get(fp)
        if found is None:
            raise _unknown_fingerprint(fp)
        return found

    def _plan_for_fingerprint(self, fp: bytes) -> TypePlan:
        plan = self._by_fingerprint.get(fp)
        if plan is None:
            raise _unknown_fingerprint(fp)
        return plan


def _unknown_fingerprint(fp: bytes) -> UnknownFingerprint:
    return UnknownFingerprint(
        f"no schema version in the catalog has fingerprint {fp.hex()}; the writer used a "
        "schema the hub does not know (publish its .avsc to schemas/ first)"
    )


def _fingerprint_bytes(fingerprint: bytes | str) -> bytes:
    if isinstance(fingerprint, bytes | bytearray | memoryview):
        data = bytes(fingerprint)
        if len(data) == 8:
            return data
    elif isinstance(fingerprint, str) and re.fullmatch(r"[0-9a-fA-F]{16}", fingerprint):
        return bytes.fromhex(fingerprint)
    raise UnknownFingerprint("a fingerprint is 8 bytes or 16 hex characters (CRC-64-AVRO)")


def load_catalog(directory: Path | None = None) -> Catalog:
    """Load every ``*.avsc`` in ``directory`` (default: the packaged ``schemas/avro``, cached).

    Raises :class:`CatalogError` when a file cannot be loaded. Loading does not lint: run
    ``schemas.compat.check_catalog`` (``leadhub schemas check``) for docs, categories, emitters
    and compatibility between versions.
    """
    if directory is None:
        return _default_catalog()
    return _load(Path(directory))


@functools.cache
def _default_catalog() -> Catalog:
    return _load(SCHEMA_DIR)


def _load(directory: Path) -> Catalog:
    paths = sorted(directory.glob("*.avsc"))
    if not paths:
        raise CatalogError(f"no .avsc files in {directory}")
    event_types = []
    for path in paths:
        file_type, version, raw = read_schema_file(path)
        event_type = event_type_from_schema(raw, version, path)
        if event_type.name != file_type:
            raise CatalogError(f"{path.name}: file name does not match record {event_type.name}")
        event_types.append(event_type)
    return Catalog(event_types)
