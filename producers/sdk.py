"""The partner SDK: publish typed events to the partner's own inbound topic.

One :class:`PartnerPublisher` per partner system. It validates and encodes each event locally
(a bad event raises a clear :class:`~schemas.errors.ContractError` before anything is sent),
then produces it to ``lead.in.<partner>`` keyed by participant_id with an idempotent,
``acks=all`` producer. The hub stamps the source from the topic; the SDK never claims one.

The producer is confluent-kafka's (librdkafka, a C client): per event it costs about a tenth
of kafka-python's CPU (docs/decisions/0002-partner-sdk-on-librdkafka.md); the hub's validator
and projector use it too (0003).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from schemas.catalog import Catalog, load_catalog
from schemas.codec import encode, event_id_of
from schemas.errors import HubError
from schemas.event import Event
from schemas.kafka_connection import KafkaConnection
from schemas.topics import TopicNames

#: librdkafka's own log lines (connection failures, retries) go to this logger: they name
#: brokers and topics, never an event's content.
KAFKA_LOG = logging.getLogger("leadhub.sdk.kafka")

#: Kafka's compression codecs, as the SDK's ``compression`` parameter names them.
COMPRESSION_CODECS = ("none", "gzip", "snappy", "lz4", "zstd")


class PublishError(HubError):
    """An event could not be delivered to Kafka (broker down, timeout, authorization)."""


class PartnerPublisher:
    """Publishes one partner's events. Use as a context manager, or call :meth:`close`.

    Construction reaches the broker (its metadata for the partner's topic) within
    ``timeout_s`` or raises :class:`PublishError`. ``compression`` is one of
    :data:`COMPRESSION_CODECS` (default none).
    """

    def __init__(
        self,
        partner_id: str,
        kafka: KafkaConnection,
        *,
        catalog: Catalog | None = None,
        topics: TopicNames | None = None,
        timeout_s: float = 10.0,
        compression: str = "none",
    ) -> None:
        if compression not in COMPRESSION_CODECS:
            raise PublishError(f"unknown compression {compression!r}: use one of "
                               f"{', '.join(COMPRESSION_CODECS)}")
        self.partner_id = partner_id
        self.catalog = catalog or load_catalog()
        self.topic = (topics or TopicNames()).inbound(partner_id)
        self.timeout_s = timeout_s
        #: Events sent since the last flush, and the failed ones' ids and errors.
        self._queued = 0
        self._failed: list[tuple[str, KafkaError]] = []
        timeout_ms = int(timeout_s * 1000)
        config: dict[str, Any] = {
            **kafka.librdkafka_producer_config(),
            "client.id": f"leadhub-sdk-{partner_id}",
            "linger.ms": 5,
            # One callback for the producer, called for failed events only: a callback per
            # event (a closure made, then called, for each) cost the partner's process CPU
            # for every success (decision 0012).
            "on_delivery": self._on_delivery,
            "delivery.report.only.error": True,
            "compression.type": compression,
            "request.timeout.ms": timeout_ms,
            "message.timeout.ms": 2 * timeout_ms,
            "logger": KAFKA_LOG,
        }
        try:
            self._producer = Producer(config)
            self._producer.list_topics(topic=self.topic, timeout=timeout_s)
        except (KafkaException, ValueError) as exc:
            raise PublishError(
                f"cannot reach Kafka at {kafka.describe()} within {timeout_s:.0f}s "
                f"({_describe(exc)}); is the broker running? (leadhub services status)"
            ) from exc

    def __enter__(self) -> PartnerPublisher:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def send(self, event: Event) -> str:
        """Validate, encode and queue ``event``; return its event_id. :meth:`flush` to confirm.

        Waits up to ``timeout_s`` for room when the client's queue is full.
        """
        value = encode(event, self.catalog, unsourced=True)
        event_id = event.event_id
        deadline = time.monotonic() + self.timeout_s
        while True:
            try:
                self._producer.produce(self.topic, value=value,
                                       key=event.participant_id.encode())
                break
            except BufferError as exc:  # the local queue is full: let deliveries drain it
                if time.monotonic() >= deadline:
                    raise PublishError(
                        f"event {event_id} was not queued for {self.topic}: the client's queue "
                        f"stayed full for {self.timeout_s:.0f}s; is the broker running?"
                    ) from exc
                self._producer.poll(0.05)
            except KafkaException as exc:
                raise PublishError(f"event {event_id} was not queued for {self.topic}: "
                                   f"{_describe(exc)}") from exc
        self._queued += 1
        self._producer.poll(0)
        return event_id

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
        queued, self._queued = self._queued, 0
        left = self._producer.flush(self.timeout_s * 3)
        failed, self._failed = self._failed, []
        if left:
            raise PublishError(
                f"{left} of {queued} events for {self.topic} were not acknowledged within "
                f"{self.timeout_s * 3:.0f}s; is the broker running?"
            )
        if failed:
            event_id, error = failed[0]
            raise PublishError(
                f"{len(failed)} of {queued} events for {self.topic} failed, first "
                f"{event_id}: {error.name()}"
            )

    def close(self) -> None:
        """Wait up to ``timeout_s`` for what is still queued, then release the producer."""
        self._producer.flush(self.timeout_s)

    def _on_delivery(self, error: KafkaError | None, message: Message) -> None:
        """librdkafka's report of a failed event (``poll``/``flush`` call it): kept by the
        event's id, read back from the encoded event."""
        if error is not None:
            self._failed.append((event_id_of(message.value() or b""), error))


def _describe(exc: BaseException) -> str:
    """The error's class, and librdkafka's error name when it has one (never a payload)."""
    inner = exc.args[0] if exc.args else None
    if isinstance(inner, KafkaError):
        return f"{type(exc).__name__}: {inner.name()}"
    return type(exc).__name__


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
