"""The partner SDK on the real broker: where its records land, and how it fails.

The SDK produces through librdkafka (decision 0002); these checks pin what the rest of the hub
relies on: Java's murmur2 partitioning of the participant key (docs/wire-format.md
"Partitioner"), acknowledged means stored, and clear errors that name no event content.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaAdminClient, KafkaConsumer
from kafka.admin import NewTopic
from kafka.partitioner.default import murmur2

from producers.sdk import PartnerPublisher, PublishError
from schemas.codec import decode
from schemas.kafka_connection import KafkaConnection
from schemas.topics import TopicNames
from tests.factories import catalog, make_event, new_participant_id
from tests.leadhub.test_kafka_isolation import partner_credential

pytestmark = pytest.mark.integration

PARTITIONS = 6
AT = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


@pytest.fixture
def inbound(kafka: KafkaConnection) -> Iterator[tuple[TopicNames, str]]:
    """A fresh prefix whose harbor-cm inbound topic has :data:`PARTITIONS` partitions."""
    topics = TopicNames(f"t{uuid.uuid4().hex[:8]}.")
    topic = topics.inbound("harbor-cm")
    admin = KafkaAdminClient(**kafka.client_options())
    admin.create_topics([NewTopic(topic, PARTITIONS, 1)])
    try:
        yield topics, topic
    finally:
        admin.delete_topics([topic])
        admin.close()


def _read_all(kafka: KafkaConnection, topic: str, expected: int) -> list[Any]:
    consumer = KafkaConsumer(topic, **kafka.client_options(), group_id=None,
                             auto_offset_reset="earliest", enable_auto_commit=False)
    records: list[Any] = []
    deadline = time.monotonic() + 30
    try:
        while len(records) < expected and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=500).values():
                records.extend(batch)
    finally:
        consumer.close()
    return records


def test_records_land_on_the_java_clients_partition_and_decode(
        kafka: KafkaConnection, inbound: tuple[TopicNames, str]) -> None:
    topics, topic = inbound
    events = [make_event("HousingStatusChanged", new_participant_id(), AT,
                         status="TRANSITIONAL", provider="Cedar Commons")
              for _ in range(60)]
    with PartnerPublisher("harbor-cm", kafka, catalog=catalog(), topics=topics) as publisher:
        assert publisher.publish_many(events) == 60
    records = _read_all(kafka, topic, 60)
    assert len(records) == 60
    by_id = {e.event_id: e for e in events}
    used = set()
    for record in records:
        event = decode(record.value, catalog())
        assert event.source_partner is None  # the SDK never claims a source
        assert by_id[event.event_id].participant_id == event.participant_id
        assert record.key == event.participant_id.encode()
        assert record.partition == (murmur2(record.key) & 0x7FFFFFFF) % PARTITIONS
        used.add(record.partition)
    assert len(used) > 1  # the keys spread: the check above compared real choices


def test_an_unreachable_broker_fails_construction_within_the_timeout() -> None:
    started = time.monotonic()
    with pytest.raises(PublishError, match=r"cannot reach Kafka at 127\.0\.0\.1:1 within 2s"):
        PartnerPublisher("harbor-cm", KafkaConnection("127.0.0.1:1"), catalog=catalog(),
                         timeout_s=2)
    assert time.monotonic() - started < 10


def test_an_unknown_compression_is_refused_before_connecting() -> None:
    with pytest.raises(PublishError, match="unknown compression 'brotli'"):
        PartnerPublisher("harbor-cm", KafkaConnection("127.0.0.1:1"), compression="brotli")


def test_a_refused_write_names_the_event_and_the_reason_not_the_content(
        hub: Any, kafka: KafkaConnection, topics: TopicNames, tmp_path: Path) -> None:
    """cedar-housing's credential may not write harbor-cm's topic: the flush says so."""
    if not kafka.secured:
        pytest.skip("the broker does not authenticate clients")
    cedar = partner_credential(hub, "cedar-housing", tmp_path, kafka)
    event = make_event("HousingStatusChanged", new_participant_id(), AT,
                         status="TRANSITIONAL", provider="Cedar Commons")
    with PartnerPublisher("harbor-cm", cedar, catalog=catalog(), topics=topics,
                          timeout_s=5) as publisher, pytest.raises(PublishError) as raised:
        publisher.publish(event)
    message = str(raised.value)
    assert event.event_id in message and "AUTHORIZATION" in message
    assert event.participant_id not in message and "Cedar Commons" not in message
