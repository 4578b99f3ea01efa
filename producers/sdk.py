"""The partner SDK: publish typed events to the partner's own inbound topic.

One :class:`PartnerPublisher` per partner system. It validates and encodes each event locally
(a bad event raises a clear :class:`~schemas.errors.ContractError` before anything is sent),
then produces it to ``lead.in.<partner>`` keyed by participant_id with an idempotent,
``acks=all`` kafka-python producer. The hub stamps the source from the topic; the SDK never
claims one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Callable, Iterable
from typing import Any

from kafka import KafkaProducer
from kafka.errors import KafkaError

from schemas.catalog import Catalog, load_catalog
from schemas.codec import encode
from schemas.errors import HubError
from schemas.event import Event
from schemas.kafka_connection import KafkaConnection
from schemas.topics import TopicNames


class PublishError(HubError):
    """An event could not be delivered to Kafka (broker down, timeout, authorization)."""


class PartnerPublisher:
    """Publishes one partner's events. Use as a context manager, or call :meth:`close`."""

    def __init__(
        self,
        partner_id: str,
        kafka: KafkaConnection,
        *,
        catalog: Catalog | None = None,
        topics: TopicNames | None = None,
        timeout_s: float = 10.0,
        **producer_config: Any,
    ) -> None:
        self.partner_id = partner_id
        self.catalog = catalog or load_catalog()
        self.topic = (topics or TopicNames()).inbound(partner_id)
        self.timeout_s = timeout_s
        self._pending: list[tuple[str, Any]] = []
        timeout_ms = int(timeout_s * 1000)
        try:
            self._producer = KafkaProducer(
                **kafka.client_options(),
                client_id=f"leadhub-sdk-{partner_id}",
                acks="all",
                enable_idempotence=True,
                linger_ms=5,
                bootstrap_timeout_ms=timeout_ms,
                max_block_ms=timeout_ms,
                request_timeout_ms=timeout_ms,
                delivery_timeout_ms=max(timeout_ms, 2 * timeout_ms),
                **producer_config,
            )
        except (KafkaError, OSError) as exc:
            raise PublishError(
                f"cannot reach Kafka at {kafka.describe()} within {timeout_s:.0f}s "
                f"({type(exc).__name__}); is the broker running? (leadhub services status)"
            ) from exc

    def __enter__(self) -> PartnerPublisher:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def send(self, event: Event) -> str:
        """Validate, encode and queue ``event``; return its event_id. :meth:`flush` to confirm."""
        unstamped = dataclasses.replace(event, source_partner=None)
        value = encode(unstamped, self.catalog)
        try:
            future = self._producer.send(
                self.topic, key=event.participant_id.encode(), value=value
            )
        except KafkaError as exc:
            raise PublishError(
                f"event {event.event_id} was not queued for {self.topic}: {type(exc).__name__}"
            ) from exc
        self._pending.append((event.event_id, future))
        return event.event_id

    def publish(self, event: Event) -> str:
        """Send one event and wait until the broker has it (acks=all); return its event_id."""
        event_id = self.send(event)
        self.flush()
        return event_id

    def publish_many(self, events: Iterable[Event]) -> int:
        """Send many events, then wait for all of them; return how many were published."""
        count = 0
        for event in events:
            self.send(event)
            count += 1
        self.flush()
        return count

    def flush(self) -> None:
        """Block until every queued event is acknowledged; raise PublishError if any failed."""
        pending, self._pending = self._pending, []
        try:
            self._producer.flush(timeout=self.timeout_s * 3)
        except KafkaError as exc:
            raise PublishError(
                f"{len(pending)} events for {self.topic} were not acknowledged within "
                f"{self.timeout_s * 3:.0f}s ({type(exc).__name__}); is the broker running?"
            ) from exc
        failed = [(event_id, f.exception) for event_id, f in pending if f.failed()]
        if failed:
            event_id, error = failed[0]
            raise PublishError(
                f"{len(failed)} of {len(pending)} events for {self.topic} failed, first "
                f"{event_id}: {type(error).__name__}"
            )

    def close(self) -> None:
        """Flush and release the producer."""
        with contextlib.suppress(KafkaError):
            self._producer.close(timeout=self.timeout_s)


def publish_by_source(
    events: Iterable[Event],
    connection_for: Callable[[str], KafkaConnection],
    *,
    catalog: Catalog | None = None,
    topics: TopicNames | None = None,
    rate: float | None = None,
    should_stop: Callable[[], bool] | None = None,
    on_progress: Callable[[int, float], None] | None = None,
    divert: Callable[[Event], bool] | None = None,
) -> int:
    """Publish each event through the publisher of its ``source_partner``; return the count.

    For replaying a simulated or exported history: the source field names the partner whose
    inbound topic gets the event (the hub stamps it again from that topic). ``rate`` paces the
    sends (events/s; None is as fast as possible); ``should_stop`` is polled to end early;
    ``on_progress(count, elapsed_s)`` is called about every 5 seconds. ``divert(event)``, if
    given, is offered each event first; True means it published the event another way (the
    demo's HTTP partners), and the count and pacing include it. Everything sent through the
    SDK is flushed (acknowledged by Kafka) before this returns.
    """
    catalog = catalog or load_catalog()
    publishers: dict[str, PartnerPublisher] = {}
    count = 0
    started = last_report = time.monotonic()
    try:
        for event in events:
            if should_stop is not None and should_stop():
                break
            if event.source_partner is None:
                raise PublishError(f"event {event.event_id} names no source partner")
            if divert is None or not divert(event):
                publisher = publishers.get(event.source_partner)
                if publisher is None:
                    publisher = PartnerPublisher(event.source_partner,
                                                 connection_for(event.source_partner),
                                                 catalog=catalog, topics=topics)
                    publishers[event.source_partner] = publisher
                publisher.send(event)
            count += 1
            if rate:
                ahead = count / rate - (time.monotonic() - started)
                if ahead > 0:
                    time.sleep(ahead)
            if on_progress is not None and time.monotonic() - last_report >= 5:
                last_report = time.monotonic()
                on_progress(count, last_report - started)
        for publisher in publishers.values():
            publisher.flush()
    finally:
        for publisher in publishers.values():
            publisher.close()
    return count
