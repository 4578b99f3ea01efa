"""What the validator needs to know of kafka-python's errors and offsets, apart from its loop.

Which errors mean this member lost its group (the batch's transaction must be aborted and the
records re-read) or this producer was fenced (another instance took its transactional id),
which are transient, how an error is written in a log line (never record data), and the offsets
a batch commits.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from kafka.errors import (
    CommitFailedError,
    FencedInstanceIdError,
    IllegalGenerationError,
    InvalidProducerEpochError,
    KafkaError,
    ProducerFencedError,
    RebalanceInProgressError,
    UnknownMemberIdError,
)
from kafka.structs import OffsetAndMetadata, TopicPartition

#: The group moved on without this member: its transaction cannot commit.
MEMBERSHIP_ERRORS = (CommitFailedError, IllegalGenerationError, UnknownMemberIdError,
                     RebalanceInProgressError, FencedInstanceIdError)
#: Another producer took this transactional id: this one must stop.
FENCING_ERRORS = (ProducerFencedError, InvalidProducerEpochError)


def next_offsets(records: Iterable[Any]) -> dict[Any, Any]:
    """``{TopicPartition: OffsetAndMetadata}`` one past the last of ``records`` per partition."""
    offsets: dict[Any, Any] = {}
    for record in records:
        epoch = record.leader_epoch if isinstance(record.leader_epoch, int) else -1
        offsets[TopicPartition(record.topic, record.partition)] = OffsetAndMetadata(
            record.offset + 1, "", epoch)
    return offsets


def is_transient(exc: BaseException) -> bool:
    """True for Kafka trouble that is no record's fault (timeouts, connections, leaders)."""
    return isinstance(exc, KafkaError) and bool(getattr(exc, "retriable", False))


def describe(exc: BaseException) -> str:
    """An exception for a log line: Kafka's errors carry no data; others only their class."""
    if isinstance(exc, KafkaError):
        return f"{type(exc).__name__}: {exc}"
    return type(exc).__name__
