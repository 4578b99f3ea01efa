"""What the validator reads of librdkafka: group-metadata snapshots, offsets, error classes.

Pure: a consumer is built but never connects. That a joined member's snapshot parses is shown
on the broker by tests/processors/test_validator_transactions.py (every batch commits under
it, and a zombie's is refused by the broker, not locally).
"""

from __future__ import annotations

import sys

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException

from processors.kafka_facts import (
    ConsumedRecord,
    describe,
    fatal_cause,
    group_member,
    is_membership_lost,
    is_record_fault,
    next_offsets,
)


def _snapshot(generation: int, member: str, instance: str | None) -> bytes:
    """A snapshot as ``rd_kafka_consumer_group_metadata_write`` lays it out."""
    tail = b"\x01" if instance is None else b"\x00" + instance.encode() + b"\x00"
    return (b"CGMDv2:" + generation.to_bytes(4, sys.byteorder, signed=True) + b"g\x00"
            + member.encode() + b"\x00" + tail)


def test_a_consumer_outside_any_group_has_no_generation_nor_member() -> None:
    consumer = Consumer({"bootstrap.servers": "127.0.0.1:9", "group.id": "g",
                         "log_level": 0})
    try:
        assert group_member(consumer.consumer_group_metadata()) == (-1, "")
    finally:
        consumer.close()


@pytest.mark.parametrize("instance", [None, "worker-1"])
def test_a_member_snapshot_gives_its_generation_and_member_id(instance: str | None) -> None:
    assert group_member(_snapshot(7, "rdkafka-1234", instance)) == (7, "rdkafka-1234")


@pytest.mark.parametrize("snapshot", [b"", b"CGMDv1:\x00\x00\x00\x07g\x00m\x00\x01",
                                      b"CGMDv2:\x07\x00", "CGMDv2:"])
def test_an_unknown_snapshot_format_tells_nothing(snapshot: object) -> None:
    assert group_member(snapshot) is None


def test_next_offsets_are_one_past_each_partitions_last_record() -> None:
    records = [ConsumedRecord("a", 0, 5, None, b"", 3), ConsumedRecord("a", 1, 9, None, b"", None),
               ConsumedRecord("a", 0, 6, None, b"", 3), ConsumedRecord("b", 0, 0, None, b"", 1)]
    assert sorted((tp.topic, tp.partition, tp.offset, tp.leader_epoch)
                  for tp in next_offsets(records)) == [
        ("a", 0, 7, 3), ("a", 1, 10, None), ("b", 0, 1, 1)]


def test_errors_are_classed_by_what_the_validator_must_do() -> None:
    def kafka(code: int) -> KafkaException:
        return KafkaException(KafkaError(code))

    assert is_membership_lost(kafka(KafkaError.ILLEGAL_GENERATION))
    assert is_membership_lost(kafka(KafkaError.UNKNOWN_MEMBER_ID))
    assert not is_membership_lost(kafka(KafkaError._TIMED_OUT))
    assert not is_membership_lost(ValueError("x"))
    # A record's own fault is dead-lettered; Kafka's trouble is retried.
    assert is_record_fault(ValueError("a validation bug"))
    assert is_record_fault(kafka(KafkaError.MSG_SIZE_TOO_LARGE))
    assert not is_record_fault(kafka(KafkaError._MSG_TIMED_OUT))
    assert not is_record_fault(kafka(KafkaError.TOPIC_AUTHORIZATION_FAILED))


def test_a_log_line_names_the_error_never_the_exception_text() -> None:
    assert describe(ValueError("participant p-123 said ...")) == "ValueError"
    assert describe(KafkaException(KafkaError(KafkaError.UNKNOWN_MEMBER_ID))).startswith(
        "UNKNOWN_MEMBER_ID: ")


def test_a_fenced_static_members_fatal_message_names_its_cause() -> None:
    fenced = KafkaError(KafkaError._FATAL, "Fatal error: Broker: Static consumer fenced by "
                        "other consumer with same group.instance.id: Fatal consumer error: Broker: "
                        "Static consumer fenced by other consumer with same group.instance.id")
    cause = fatal_cause(fenced)
    assert cause.code() == KafkaError.FENCED_INSTANCE_ID and cause.fatal()
    other = KafkaError(KafkaError._FATAL, "Fatal error: something else")
    assert fatal_cause(other) is other
