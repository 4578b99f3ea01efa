"""The ``validate`` step, pure: one inbound message in, one accepted record or dead letter out.

No I/O and no clock: the adapter passes the message's coordinates and the hub time it was
received. An accepted event is stamped with the source partner taken from the inbound topic —
never from the payload — and wrapped in the canonical envelope for ``lead.events``. Anything
else becomes a dead letter that keeps the raw bytes and says why, with a stable reason code.
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass
from datetime import datetime
from typing import NamedTuple

from processors.consent import check_part2_elements
from processors.site import SitePolicy
from schemas.canonical import CanonicalRecord, encode_canonical
from schemas.catalog import Catalog
from schemas.codec import decode, encode, stamp_source_partner
from schemas.errors import ContractError, DeadLetterReason, InvalidField
from schemas.event import Event
from schemas.topics import TopicNames

STEP = "validate"

#: Reason codes the validator adds to the codec's (``schemas.errors.RejectReason``); every
#: dead-letter reason is in ``schemas.errors.DeadLetterReason``.
UNKNOWN_PARTNER = DeadLetterReason.UNKNOWN_PARTNER.value
EMITTER_NOT_ALLOWED = DeadLetterReason.EMITTER_NOT_ALLOWED.value
SOURCE_MISMATCH = DeadLetterReason.SOURCE_MISMATCH.value
KEY_MISMATCH = DeadLetterReason.KEY_MISMATCH.value
#: The inbound value is longer than :data:`MAX_EVENT_BYTES`.
TOO_LARGE = DeadLetterReason.TOO_LARGE.value
#: The adapter could not process the message (validation raised, or producing its outcome
#: failed, again and again); ``lead.message`` names the exception class.
PROCESSING_FAILED = DeadLetterReason.PROCESSING_FAILED.value

#: The largest inbound value the hub takes: the gateway's limit for one Avro event.
MAX_EVENT_BYTES = 256 * 1024
#: How much of a value longer than :data:`MAX_EVENT_BYTES` a dead letter keeps; the headers
#: ``lead.size`` and ``lead.sha256`` describe the whole. Keeps every dead letter far below
#: the broker's default 1 MiB message limit.
DLQ_PREFIX_BYTES = 64 * 1024


class Accepted(NamedTuple):
    """An event accepted for ``lead.events``: key participant_id, canonical envelope value. A
    named tuple: the validator makes one per event."""

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


def dead_letter(
    *,
    topic: str,
    partition: int,
    offset: int,
    value: bytes | None,
    received_at: datetime,
    reason: str,
    message: str,
) -> DeadLetter:
    """The dead letter for an inbound message: raw bytes, origin, reason, message.

    Keyed by the inbound topic. The value is the raw bytes when they are at most
    :data:`MAX_EVENT_BYTES` long; otherwise only their first :data:`DLQ_PREFIX_BYTES` bytes, with
    the headers ``lead.size`` (the whole length, decimal) and ``lead.sha256`` (hex digest of
    the whole value) added, so the record stays well under the broker's message limit and the
    original can still be identified. ``message`` must name no field values.
    """
    raw = value or b""
    headers: list[tuple[str, bytes]] = [
        ("lead.step", STEP.encode()),
        ("lead.reason", reason.encode()),
        ("lead.message", message.encode()),
        ("lead.source.topic", topic.encode()),
        ("lead.source.partition", str(partition).encode()),
        ("lead.source.offset", str(offset).encode()),
        ("lead.received_at", received_at.isoformat().encode()),
    ]
    kept = raw
    if len(raw) > MAX_EVENT_BYTES:
        kept = raw[:DLQ_PREFIX_BYTES]
        headers.append(("lead.size", str(len(raw)).encode()))
        headers.append(("lead.sha256", hashlib.sha256(raw).hexdigest().encode()))
    return DeadLetter(key=topic.encode(), value=kept, reason=reason, message=message,
                      headers=tuple(headers))


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
    """Decide one inbound message; never raises for bad input, it returns a DeadLetter.

    The size comes first: a value longer than :data:`MAX_EVENT_BYTES` is ``TOO_LARGE`` and is
    not decoded (its dead letter keeps a prefix, see :func:`dead_letter`). Repeated event ids
    are not this step's concern: every valid message is accepted, the projector dedupes.
    """
    raw = value or b""

    def reject(reason: str, message: str) -> DeadLetter:
        return dead_letter(topic=topic, partition=partition, offset=offset, value=raw,
                           received_at=received_at, reason=reason, message=message)

    if len(raw) > MAX_EVENT_BYTES:
        return reject(TOO_LARGE, f"the value is {len(raw)} bytes, more than the "
                                 f"{MAX_EVENT_BYTES} an event may have")
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
    try:
        check_content(event, partner.id)
    except ContractError as exc:
        return reject(str(exc.reason.value), f"event {event.event_id}: {exc}")
    body = stamp_source_partner(raw, catalog, partner.id)
    if body is None:  # an older version: re-encoded at the latest
        body = encode(dataclasses.replace(event, source_partner=partner.id), catalog)
    record = CanonicalRecord(
        kind="EVENT",
        received_at=received_at,
        source_partner=partner.id,
        ingest_topic=topic,
        ingest_partition=partition,
        ingest_offset=offset,
        event=body,
    )
    return Accepted(
        key=event.participant_id.encode(),
        value=encode_canonical(record),
        event_id=event.event_id,
        participant_id=event.participant_id,
    )


#: Event types that link or unlink a partner's local id to a participant id.
IDENTIFIER_TYPES = frozenset({"IdentifierLinked", "IdentifierUnlinked"})

def check_content(event: Event, partner_id: str) -> None:
    """Raise a :class:`ContractError` (with ``field_path``) if ``event``, sent by
    ``partner_id``, breaks a rule about its content that its schema's types cannot say;
    return None if it breaks none. The validator dead-letters such an event; the HTTP gateway
    answers 400 with the same path. The rules (``INVALID_FIELD``):

    * a ``ConsentGranted`` marked Part 2 carries every element of a 42 CFR § 2.31 consent
      (:func:`processors.consent.check_part2_elements`);
    * an ``IdentifierLinked`` or ``IdentifierUnlinked`` speaks of the sender's own local ids:
      its ``payload.partner`` is the sender (a partner cannot link another partner's ids).
    """
    if event.type == "ConsentGranted":
        check_part2_elements(event.payload)
    if event.type in IDENTIFIER_TYPES and event.payload.get("partner") != partner_id:
        raise InvalidField(f"payload.partner must be your own partner id ({partner_id}): a "
                           "partner links only its own local ids", field_path="payload.partner")
