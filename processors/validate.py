"""The ``validate`` step, pure: one inbound message in, one accepted record or dead letter out.

No I/O and no clock: the adapter passes the message's coordinates and the hub time it was
received. An accepted event is stamped with the source partner taken from the inbound topic —
never from the payload — and wrapped in the canonical envelope for ``lead.events``. Anything
else becomes a dead letter that keeps the raw bytes and says why, with a stable reason code.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import datetime

from processors.site import SitePolicy
from schemas.canonical import CanonicalRecord, encode_canonical
from schemas.catalog import Catalog
from schemas.codec import decode, encode
from schemas.errors import ContractError
from schemas.topics import TopicNames

STEP = "validate"

#: Reason codes the validator adds to the codec's (``schemas.errors.RejectReason``).
UNKNOWN_PARTNER = "UNKNOWN_PARTNER"
EMITTER_NOT_ALLOWED = "EMITTER_NOT_ALLOWED"
SOURCE_MISMATCH = "SOURCE_MISMATCH"
KEY_MISMATCH = "KEY_MISMATCH"


@dataclass(frozen=True, slots=True)
class Accepted:
    """An event accepted for ``lead.events``: key participant_id, canonical envelope value."""

    key: bytes
    value: bytes
    event_id: str
    participant_id: str


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A rejected message for ``lead.dlq``: the raw bytes, where they came from, and why."""

    key: bytes
    value: bytes
    reason: str
    message: str
    headers: tuple[tuple[str, bytes], ...]


def validate_inbound(
    *,
    topic: str,
    partition: int,
    offset: int,
    key: bytes | None,
    value: bytes | None,
    received_at: datetime,
    topics: TopicNames,
    site: SitePolicy,
    catalog: Catalog,
) -> Accepted | DeadLetter:
    """Decide one inbound message; never raises for bad input, it returns a DeadLetter."""
    raw = value or b""

    def reject(reason: str, message: str) -> DeadLetter:
        return DeadLetter(
            key=topic.encode(),
            value=raw,
            reason=reason,
            message=message,
            headers=(
                ("lead.step", STEP.encode()),
                ("lead.reason", reason.encode()),
                ("lead.message", message.encode()),
                ("lead.source.topic", topic.encode()),
                ("lead.source.partition", str(partition).encode()),
                ("lead.source.offset", str(offset).encode()),
                ("lead.received_at", received_at.isoformat().encode()),
            ),
        )

    partner = site.partner(topics.partner_of(topic))
    if partner is None:
        return reject(UNKNOWN_PARTNER, f"topic {topic} belongs to no partner of this site")
    try:
        event = decode(raw, catalog)
    except ContractError as exc:
        return reject(str(exc.reason.value), str(exc))
    if key != event.participant_id.encode():
        return reject(
            KEY_MISMATCH,
            f"event {event.event_id}: the message key must be the event's participant_id, so "
            "that all of a participant's events share a partition and keep their order",
        )
    if event.source_partner is not None and event.source_partner != partner.id:
        return reject(
            SOURCE_MISMATCH,
            f"event {event.event_id} names source_partner other than {partner.id}; leave it "
            "empty, the hub stamps it from the topic",
        )
    if not catalog.may_emit(partner.role, event.type):
        return reject(
            EMITTER_NOT_ALLOWED,
            f"role {partner.role} may not emit {event.type} (event {event.event_id})",
        )
    stamped = dataclasses.replace(event, source_partner=partner.id)
    record = CanonicalRecord(
        kind="EVENT",
        received_at=received_at,
        source_partner=partner.id,
        ingest_topic=topic,
        ingest_partition=partition,
        ingest_offset=offset,
        event=encode(stamped, catalog),
    )
    return Accepted(
        key=event.participant_id.encode(),
        value=encode_canonical(record),
        event_id=event.event_id,
        participant_id=event.participant_id,
    )
