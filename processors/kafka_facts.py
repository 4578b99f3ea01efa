"""What the hub's steps need to know of librdkafka (confluent-kafka), apart from their loops.

The records a batch handles (:class:`ConsumedRecord`, read once from librdkafka's messages), the
offsets it commits, which errors mean this member lost its group (the batch's transaction must
be aborted and the records re-read), this instance was fenced (another instance took its
transactional or group instance id), Kafka is in trouble (wait and retry) or a record's output
was refused (its own fault: dead-letter it), the cause behind a consumer's ``_FATAL``, how an
error is written in a log line (never record data), and the member a group-metadata snapshot
names.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import NamedTuple

from confluent_kafka import KafkaError, KafkaException, Message, TopicPartition

#: The group moved on without this member: its transaction cannot commit.
MEMBERSHIP_CODES = frozenset({
    KafkaError.ILLEGAL_GENERATION, KafkaError.UNKNOWN_MEMBER_ID,
    KafkaError.REBALANCE_IN_PROGRESS, KafkaError.FENCED_INSTANCE_ID,
})
#: Another producer took this producer's transactional id: it must stop.
PRODUCER_FENCED_CODES = frozenset({
    KafkaError._FENCED, KafkaError.PRODUCER_FENCED, KafkaError.INVALID_PRODUCER_EPOCH,
})
#: ... or another consumer took this consumer's group instance id (static membership).
FENCING_CODES = PRODUCER_FENCED_CODES | {KafkaError.FENCED_INSTANCE_ID}
#: Kafka refused one record's output for what the record is: dead-letter it, do not retry.
RECORD_FAULT_CODES = frozenset({
    KafkaError.MSG_SIZE_TOO_LARGE, KafkaError.INVALID_MSG_SIZE,
    KafkaError.RECORD_LIST_TOO_LARGE, KafkaError.INVALID_RECORD, KafkaError.INVALID_MSG,
})
#: librdkafka's serialized group metadata (``rd_kafka_consumer_group_metadata_write``):
#: this magic, the generation id (int32, host byte order), then NUL-terminated group id and
#: member id, then the group instance id's null flag and value.
GROUP_METADATA_MAGIC = b"CGMDv2:"


class ConsumedRecord(NamedTuple):
    """One consumed record: where it was, its key and value. A named tuple: the hub's steps
    make one per record they poll (a frozen dataclass's ``__init__`` took 1.6 us, this 0.6)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    leader_epoch: int | None

    @classmethod
    def of(cls, message: Message) -> ConsumedRecord:
        """The record of a librdkafka message (one without an error)."""
        return cls(message.topic() or "", message.partition() or 0, message.offset() or 0,
                   message.key(), message.value(), message.leader_epoch())

    def where(self) -> str:
        """``topic[partition]@offset``, for log lines."""
        return f"{self.topic}[{self.partition}]@{self.offset}"


def next_offsets(records: Iterable[ConsumedRecord]) -> list[TopicPartition]:
    """One past the last of ``records`` per partition (records come in offset order)."""
    last: dict[tuple[str, int], ConsumedRecord] = {}
    for record in records:
        last[(record.topic, record.partition)] = record
    return [TopicPartition(r.topic, r.partition, r.offset + 1,
                           leader_epoch=-1 if r.leader_epoch is None else r.leader_epoch)
            for r in last.values()]


def kafka_error(exc: BaseException) -> KafkaError | None:
    """The librdkafka error ``exc`` carries, if any."""
    if isinstance(exc, KafkaException) and exc.args and isinstance(exc.args[0], KafkaError):
        return exc.args[0]
    return None


def is_membership_lost(exc: BaseException) -> bool:
    """True when the broker refused the offsets because the group moved on without us."""
    error = kafka_error(exc)
    return error is not None and error.code() in MEMBERSHIP_CODES


def is_record_fault(exc: BaseException) -> bool:
    """True when the record itself failed: not a Kafka error (the validation code raised), or
    Kafka refused its output for what it is. False for Kafka's own trouble (retry later)."""
    error = kafka_error(exc)
    if error is None:
        return not isinstance(exc, KafkaException)
    return error.code() in RECORD_FAULT_CODES


def describe(exc: BaseException) -> str:
    """An exception for a log line: Kafka's errors carry no data; others only their class."""
    error = kafka_error(exc)
    if error is not None:
        return f"{error.name()}: {error.str()}"
    return type(exc).__name__


def group_member(metadata: object) -> tuple[int, str] | None:
    """``(generation id, member id)`` of a ``consumer_group_metadata()`` snapshot, or None when
    it is not in the format above (then nothing can be told about the member)."""
    if not isinstance(metadata, bytes) or not metadata.startswith(GROUP_METADATA_MAGIC):
        return None
    head = len(GROUP_METADATA_MAGIC)
    generation = int.from_bytes(metadata[head:head + 4], sys.byteorder, signed=True)
    names = metadata[head + 4:].split(b"\x00", 2)
    if len(names) < 3:
        return None
    return generation, names[1].decode("utf-8", "replace")


_FENCED_INSTANCE_TEXT = KafkaError(KafkaError.FENCED_INSTANCE_ID).str()


def fatal_cause(error: KafkaError) -> KafkaError:
    """The fatal error behind a consumer's ``_FATAL`` message, as far as it says.

    librdkafka hands a consumer's fatal error to the poll as a ``_FATAL`` message (whose own
    ``fatal()`` is false) naming the cause only in its text, and the Python client has no call
    for the underlying code. The one the hub's static members meet is being fenced by a newer
    member with their instance id: that is returned as ``FENCED_INSTANCE_ID``
    (fatal); any other error is returned as it came.
    """
    if error.code() == KafkaError._FATAL and _FENCED_INSTANCE_TEXT in error.str():
        return KafkaError(KafkaError.FENCED_INSTANCE_ID, error.str(), fatal=True)
    return error
