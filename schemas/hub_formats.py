"""The Avro formats of the hub's own topics, published as ``.avsc`` files under ``schemas/hub/``.

Partners never publish these: they are not event types and are not in the catalog (the
validator would refuse them as ``UNKNOWN_FINGERPRINT``). They are published so that an auditor
or a tool reading ``lead.events`` can decode its records from the file alone, in any language
(docs/wire-format.md "lead.events"). The code's own schema stays the authority: a test checks
that each published file has the code's parsing canonical form and fingerprint.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastavro.schema import fingerprint, parse_schema, to_parsing_canonical_form

from schemas.canonical import CANONICAL_SCHEMA
from schemas.topics import TopicNames

HUB_SCHEMA_DIR = Path(__file__).resolve().parent / "hub"


@dataclass(frozen=True)
class HubFormat:
    """One Avro record format the hub writes to one of its topics."""

    name: str  # the record's short name, also the file's: schemas/hub/<name>.avsc
    topic: str  # the topic it is written to, without the hub's topic prefix
    fingerprint: str  # 16 hex chars: the 8 bytes after C3 01 on the wire, as the code writes
    path: Path  # the published .avsc
    doc: str
    schema: Any  # the schema the code encodes with (raw JSON form)


def _format(schema: dict[str, Any], topic: str) -> HubFormat:
    name = str(schema["name"])
    canonical = to_parsing_canonical_form(parse_schema(schema, named_schemas={}))
    return HubFormat(
        name=name,
        topic=topic,
        fingerprint=fingerprint(canonical, "CRC-64-AVRO"),
        path=HUB_SCHEMA_DIR / f"{name}.avsc",
        doc=str(schema.get("doc", "")),
        schema=schema,
    )


def hub_formats() -> tuple[HubFormat, ...]:
    """Every Avro format of a hub topic: today ``CanonicalRecord`` on ``lead.events``.

    The hub's other topics carry JSON (``lead.audit.access``, ``lead.audit.checkpoints``) or a
    partner's raw bytes (``lead.dlq``); docs/wire-format.md describes them.
    """
    return (_format(CANONICAL_SCHEMA, TopicNames().events),)


def hub_format(name: str) -> HubFormat | None:
    """The hub format named ``name`` (e.g. ``CanonicalRecord``), or None."""
    return next((f for f in hub_formats() if f.name == name), None)
