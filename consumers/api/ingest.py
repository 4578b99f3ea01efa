"""What the partner gateway does with an event body, apart from HTTP (routes in ``gateway``).

The gateway is a thin front door to the partner's own inbound topic. It checks what it can say
at once (the contract, the source claim, the emitter role), stamps nothing into the payload (the
validator stamps the source from the topic), and produces the event with the partner SDK keyed
by participant_id. Each accepted (partner, event_id) is remembered in SQL so a retried request
gets the same 202 and the event is published once.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from sqlalchemy import Engine, insert, select, tuple_
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from consumers.api.errors import (
    ApiError,
    BadRequest,
    Conflict,
    Forbidden,
    PayloadTooLarge,
    ServiceUnavailable,
    UnsupportedMediaType,
)
from consumers.api.tables import gateway_events
from processors.site import Partner
from processors.validate import check_content
from producers.sdk import PartnerPublisher, PublishError
from schemas.catalog import Catalog
from schemas.codec import decode, encode
from schemas.errors import ContractError, HubError, MalformedJson
from schemas.event import Event, event_from_json
from schemas.kafka_connection import KafkaConnection
from schemas.topics import TopicNames

JSON = "application/json"
AVRO = "application/vnd.leadhub.avro"
JSON_LINES = ("application/x-ndjson", "application/jsonl", "application/x-jsonlines")
SINGLE_TYPES = (JSON, AVRO)
BATCH_TYPES = (JSON, *JSON_LINES)
SOURCE_MISMATCH = "SOURCE_MISMATCH"
EMITTER_NOT_ALLOWED = "EMITTER_NOT_ALLOWED"
EVENT_ID_REUSED = "EVENT_ID_REUSED"


def media_type(content_type: str | None) -> str:
    """The bare media type of a Content-Type header, lowercased (``""`` when absent)."""
    return (content_type or "").split(";", 1)[0].strip().lower()


def require_media_type(content_type: str | None, accepted: Sequence[str]) -> str:
    """Return the request's media type if it is one of ``accepted``; else 415."""
    kind = media_type(content_type)
    if kind not in accepted:
        raise UnsupportedMediaType(
            f"Content-Type must be one of {', '.join(accepted)}", code="UNSUPPORTED_MEDIA_TYPE")
    return kind


def contract_error(exc: ContractError) -> BadRequest:
    """A 400 carrying the contract error's reason code and field path (never a value)."""
    return BadRequest(exc.message, code=exc.reason.value, field_path=exc.field_path)


def _loads(text: bytes | str) -> Any:
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise MalformedJson(f"the body is not valid JSON ({type(exc).__name__})") from exc


def parse_event(body: bytes, kind: str, catalog: Catalog) -> Event:
    """Parse one event body (JSON envelope or Avro single object); 400 with reason if invalid."""
    try:
        if kind == AVRO:
            return decode(body, catalog)
        return event_from_json(_loads(body), catalog)
    except ContractError as exc:
        raise contract_error(exc) from exc


def split_batch(body: bytes, kind: str) -> list[Any]:
    """Split a batch body into raw JSON items (a JSON array, or JSON Lines).

    A line of JSON Lines that is not JSON becomes a :class:`MalformedJson` item, so the other
    items still get their own results.
    """
    if kind == JSON:
        try:
            items = _loads(body)
        except ContractError as exc:
            raise contract_error(exc) from exc
        if not isinstance(items, list):
            raise BadRequest("a JSON batch is an array of event envelopes",
                             code="MALFORMED_JSON")
        return items
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadRequest("JSON Lines must be UTF-8", code="MALFORMED_JSON") from exc
    parsed: list[Any] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            parsed.append(_loads(line))
        except MalformedJson as exc:
            parsed.append(MalformedJson(f"line {number}: {exc.message}"))
    return parsed


def check_may_publish(event: Event, partner: Partner, catalog: Catalog) -> None:
    """403 unless the event claims no other source and the partner's role may emit its type."""
    if event.source_partner is not None and event.source_partner != partner.id:
        raise Forbidden(
            f"event {event.event_id} names another source_partner; a key publishes only as its "
            f"own partner ({partner.id}); leave source_partner empty", code=SOURCE_MISMATCH,
            field_path="source_partner")
    if not catalog.may_emit(partner.role, event.type):
        raise Forbidden(f"role {partner.role} may not emit {event.type}",
                        code=EMITTER_NOT_ALLOWED, field_path="type")


def body_digest(event: Event, catalog: Catalog) -> str:
    """SHA-256 of the event's unstamped Avro encoding: the same event gives the same digest."""
    return hashlib.sha256(encode(event, catalog, unsourced=True)).hexdigest()


class InboundPublisher(Protocol):
    """Port: produce events to a partner's inbound topic and wait for Kafka's acks.

    Raises :class:`ServiceUnavailable` when Kafka does not confirm every event.
    """

    def publish(self, partner_id: str, events: Sequence[Event]) -> None: ...

    def close(self) -> None: ...


class MemoryInbound:
    """In-memory :class:`InboundPublisher` for tests; ``fail=True`` acts as a down broker."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, Event]] = []
        self.fail = False

    def publish(self, partner_id: str, events: Sequence[Event]) -> None:
        """Keep ``(partner_id, event)`` pairs, or raise as an unreachable Kafka would."""
        if self.fail:
            raise ServiceUnavailable("Kafka did not acknowledge the events; retry later",
                                     code="KAFKA_UNAVAILABLE")
        self.sent.extend((partner_id, event) for event in events)

    def close(self) -> None:
        """Nothing to release."""


class KafkaInbound:
    """:class:`InboundPublisher` over one :class:`PartnerPublisher` per partner (lazy)."""

    def __init__(self, kafka: KafkaConnection, topics: TopicNames, catalog: Catalog,
                 timeout_s: float = 5.0) -> None:
        self.kafka = kafka
        self.topics = topics
        self.catalog = catalog
        self.timeout_s = timeout_s
        self._publishers: dict[str, PartnerPublisher] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    def publish(self, partner_id: str, events: Sequence[Event]) -> None:
        """Send ``events`` to ``lead.in.<partner_id>`` and flush (acks=all)."""
        with self._guard:
            lock = self._locks.setdefault(partner_id, threading.Lock())
        with lock:  # one batch at a time per partner: flush() confirms exactly our sends
            try:
                publisher = self._publisher(partner_id)
                publisher.publish_many(events)
            except PublishError as exc:
                self._drop(partner_id)
                raise ServiceUnavailable(
                    "Kafka did not acknowledge the events; nothing is confirmed, retry the "
                    "request later (a retry with the same event_id is safe)",
                    code="KAFKA_UNAVAILABLE") from exc

    def _publisher(self, partner_id: str) -> PartnerPublisher:
        publisher = self._publishers.get(partner_id)
        if publisher is None:
            publisher = PartnerPublisher(partner_id, self.kafka, catalog=self.catalog,
                                         topics=self.topics, timeout_s=self.timeout_s)
            self._publishers[partner_id] = publisher
        return publisher

    def _drop(self, partner_id: str) -> None:
        publisher = self._publishers.pop(partner_id, None)
        if publisher is not None:
            with contextlib.suppress(HubError):
                publisher.close()

    def close(self) -> None:
        """Flush and close every producer."""
        for partner_id in list(self._publishers):
            self._drop(partner_id)


class GatewayLedger:
    """SQL memory of accepted (partner, event_id) pairs and their body digests."""

    def __init__(self, engine: Engine,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.engine = engine
        self.clock = clock

    def digests(self, partner: str, event_ids: Sequence[str]) -> dict[str, str]:
        """Digest of each already accepted event among ``event_ids`` for ``partner``."""
        found: dict[str, str] = {}
        ids = sorted(set(event_ids))
        c = gateway_events.c
        try:
            with self.engine.connect() as connection:
                for start in range(0, len(ids), 500):
                    chunk = [(partner, e) for e in ids[start:start + 500]]
                    rows = connection.execute(select(c.event_id, c.body_sha256).where(
                        tuple_(c.partner, c.event_id).in_(chunk)))
                    found.update({str(e): str(d) for e, d in rows})
        except SQLAlchemyError as exc:
            raise ServiceUnavailable("the gateway database cannot be read; retry later",
                                     code="DATABASE_UNAVAILABLE") from exc
        return found

    def remember(self, partner: str, accepted: Sequence[tuple[str, str]]) -> None:
        """Record (event_id, digest) pairs as accepted; a concurrent duplicate is ignored."""
        now = self.clock()
        for event_id, digest in accepted:
            try:
                with self.engine.begin() as connection:
                    connection.execute(insert(gateway_events).values(
                        partner=partner, event_id=event_id, body_sha256=digest,
                        accepted_at=now))
            except IntegrityError:
                continue
            except SQLAlchemyError as exc:
                raise ServiceUnavailable(
                    "the events were published but the gateway could not record them; a retry "
                    "is safe (the validator drops duplicate event ids)",
                    code="DATABASE_UNAVAILABLE") from exc


@dataclass(frozen=True, slots=True)
class ItemResult:
    """The outcome of one batch item: 202 with its event_id, or an error."""

    index: int
    status: int
    event_id: str | None = None
    error: ApiError | None = None

    def to_json(self) -> dict[str, Any]:
        """JSON form: ``{"index", "status", "event_id"}`` or ``{"index", "status", "error"}``."""
        out: dict[str, Any] = {"index": self.index, "status": self.status}
        if self.event_id is not None:
            out["event_id"] = self.event_id
        if self.error is not None:
            out.update(self.error.body())
        return out


class Gateway:
    """Checks, dedupes and publishes events for one authenticated partner."""

    def __init__(self, catalog: Catalog, ledger: GatewayLedger,
                 inbound: InboundPublisher) -> None:
        self.catalog = catalog
        self.ledger = ledger
        self.inbound = inbound

    def submit(self, partner: Partner, event: Event) -> str:
        """Publish one event (once); return its event_id. Raises 403, 409 or 503."""
        results = self.submit_many(partner, [event])
        error = results[0].error
        if error is not None:
            raise error
        return event.event_id

    def submit_many(self, partner: Partner,
                    items: Sequence[Event | ContractError]) -> list[ItemResult]:
        """Publish every valid, new item; return one result per item, in order.

        Raises :class:`ServiceUnavailable` (nothing confirmed) when Kafka does not ack.
        """
        results: list[ItemResult | None] = [None] * len(items)
        fresh: list[tuple[int, Event, str]] = []
        candidates: list[tuple[int, Event, str]] = []
        for index, item in enumerate(items):
            try:
                if isinstance(item, ContractError):
                    raise contract_error(item)
                check_may_publish(item, partner, self.catalog)
                try:  # the validator's content rules (a Part 2 consent's elements): 400 now
                    check_content(item, partner.id)
                except ContractError as exc:
                    raise contract_error(exc) from exc
                candidates.append((index, item, body_digest(item, self.catalog)))
            except ApiError as exc:
                results[index] = ItemResult(index, exc.status, error=exc)
        known = self.ledger.digests(partner.id, [e.event_id for _, e, _ in candidates])
        in_batch: dict[str, str] = {}
        for index, event, digest in candidates:
            earlier = known.get(event.event_id, in_batch.get(event.event_id))
            if earlier is not None and earlier != digest:
                error = Conflict(f"event_id {event.event_id} was already accepted for a "
                                 "different event; use a new event_id", code=EVENT_ID_REUSED,
                                 field_path="event_id")
                results[index] = ItemResult(index, 409, error=error)
                continue
            results[index] = ItemResult(index, 202, event_id=event.event_id)
            if earlier is None:
                in_batch[event.event_id] = digest
                fresh.append((index, event, digest))
        if fresh:
            self.inbound.publish(partner.id, [event for _, event, _ in fresh])
            self.ledger.remember(partner.id, [(e.event_id, d) for _, e, d in fresh])
        return [r for r in results if r is not None]


def iter_batch_items(raw: Sequence[Any], catalog: Catalog) -> Iterator[Event | ContractError]:
    """Parse each raw batch item into an Event, or the ContractError that rejects it."""
    for item in raw:
        if isinstance(item, ContractError):
            yield item
            continue
        try:
            yield event_from_json(item, catalog)
        except ContractError as exc:
            yield exc


def check_size(declared: str | None, limit: int) -> None:
    """413 early when a declared Content-Length exceeds ``limit``."""
    if declared is not None and declared.strip().isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"the body is larger than the limit of {limit} bytes; "
                              "split it into smaller requests")


def too_large(limit: int) -> PayloadTooLarge:
    """The 413 for a body that turned out larger than ``limit`` while reading it."""
    return PayloadTooLarge(f"the body is larger than the limit of {limit} bytes; "
                           "split it into smaller requests")
