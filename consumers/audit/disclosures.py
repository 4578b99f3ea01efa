"""Accounting of disclosures (42 CFR Part 2 § 2.24 shape): who received a participant's data.

Two sources, merged in time order:

- **materialized**: every row of the participant's data the projector put in the view of a
  recipient other than the data's source partner — from a replay of ``lead.events`` through the
  live core (the same changes the live projector emitted, at the same ``received_at``); each
  upsert is a disclosure of that row's categories, under its consent ids. Retractions are not
  disclosures.
- **accessed**: every staff read recorded on ``lead.audit.access`` (user, partner, purpose, at,
  events, consents) that returned the participant. The topic may not exist yet, and records of
  another shape are skipped and counted, never fatal.

:func:`materialized` and :func:`accessed` are pure; :func:`list_disclosures` is the adapter.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from consumers.audit.kafka_log import TopicReader
from consumers.audit.replay import LogReplay, Replayer
from processors.projector import Projector
from processors.timefmt import format_instant, parse_instant
from processors.view import ViewChange
from schemas.catalog import Catalog
from schemas.errors import HubError
from schemas.kafka_connection import KafkaConnection
from schemas.topics import TopicNames


@dataclass(frozen=True)
class Disclosure:
    """One disclosure: to whom, when, which events and categories, on what basis."""

    kind: Literal["materialized", "accessed"]
    at: datetime
    recipient: str
    event_ids: tuple[str, ...]
    types: tuple[str, ...]
    categories: tuple[str, ...]
    consent_ids: tuple[str, ...]
    source_partner: str | None = None
    user: str | None = None
    purpose: str | None = None
    part2_notice: bool = False

    def to_json(self) -> dict[str, Any]:
        """JSON-ready form (instants as ISO 8601 ``Z``)."""
        return {"kind": self.kind, "at": format_instant(self.at), "recipient": self.recipient,
                "event_ids": list(self.event_ids), "types": list(self.types),
                "categories": list(self.categories), "consent_ids": list(self.consent_ids),
                "source_partner": self.source_partner, "user": self.user,
                "purpose": self.purpose, "part2_notice": self.part2_notice}


def materialized(participant: str, received_at: datetime,
                 changes: Iterable[ViewChange]) -> list[Disclosure]:
    """The disclosures among ``changes`` made at ``received_at``: upserts of ``participant``'s
    rows for a recipient other than the row's source partner."""
    found = []
    for change in changes:
        row = change.row
        if (change.kind != "upsert" or row is None or change.participant_id != participant
                or change.recipient == row.source_partner):
            continue
        found.append(Disclosure("materialized", received_at, change.recipient,
                                (row.event_id,), (row.type,), tuple(row.categories),
                                tuple(row.consent_ids), source_partner=row.source_partner,
                                part2_notice=row.notice is not None))
    return found


def accessed(participant: str, records: Iterable[bytes]) -> tuple[list[Disclosure], int]:
    """Parse ``lead.audit.access`` values; return the reads that returned ``participant`` and
    how many records could not be read."""
    found: list[Disclosure] = []
    skipped = 0
    for value in records:
        try:
            obj = json.loads(value)
            if participant not in [str(p) for p in obj.get("participant_ids") or ()]:
                continue
            per_row = [d for d in obj.get("disclosures") or ()
                       if str(d.get("participant_id")) == participant]
            if per_row:
                event_ids = tuple(dict.fromkeys(str(d["event_id"]) for d in per_row))
                consents = tuple(sorted({str(c) for d in per_row
                                         for c in d.get("consent_ids") or ()}))
            else:
                event_ids = tuple(str(e) for e in obj.get("event_ids") or ())
                consents = tuple(str(c) for c in obj.get("consent_ids") or ())
            found.append(Disclosure("accessed", parse_instant(str(obj["at"])),
                                    str(obj["partner"]), event_ids, (), (), consents,
                                    user=obj.get("user"), purpose=obj.get("purpose")))
        except (ValueError, KeyError, TypeError, AttributeError, HubError):
            skipped += 1
    return found, skipped


@dataclass
class DisclosureList:
    """The answer: disclosures in time order, and access records that could not be read."""

    participant: str
    disclosures: list[Disclosure]
    unreadable_access_records: int
    access_topic_found: bool


def list_disclosures(kafka: KafkaConnection, topics: TopicNames, projector: Projector,
                     catalog: Catalog, participant: str,
                     since: datetime | None = None) -> DisclosureList:
    """Every disclosure of ``participant``'s data since ``since``, oldest first.

    Replays only that participant's events (exact: states are per participant) up to the end
    offsets of the moment, then reads ``lead.audit.access`` in full.
    """
    found: list[Disclosure] = []

    def collect(partition: int, received_at: datetime, changes: list[ViewChange]) -> None:
        found.extend(materialized(participant, received_at, changes))

    with TopicReader(kafka, topics.events, client_id="leadhub-audit-disclosures") as rd:
        LogReplay(rd, Replayer(projector, catalog, participant=participant), collect,
                  progress=True).run_to(rd.end_offsets())
    with TopicReader(kafka, topics.audit_access,
                     client_id="leadhub-audit-disclosures") as rd:
        end = rd.end_offsets()
        reads, skipped = accessed(participant, (r.value for r in rd.read(end)))
    found.extend(reads)
    if since is not None:
        found = [d for d in found if d.at >= since]
    found.sort(key=lambda d: (d.at, d.kind, d.recipient, d.event_ids))
    return DisclosureList(participant, found, skipped, bool(end))


