"""Kafka adapter of the audit layer: read a topic's partitions between offsets, group-free.

The auditor never joins a consumer group and never commits: it assigns partitions itself, reads
from explicit start offsets up to end offsets captured beforehand, and stops. Records stream
through; nothing holds the log.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from kafka import KafkaConsumer, TopicPartition
from kafka.errors import KafkaError

from consumers.audit.errors import AuditError

STALL_TIMEOUT_S = 60.0

#: (partition, offset, key, value) of one record.
RawRecord = tuple[int, int, bytes | None, bytes]


@dataclass(frozen=True, slots=True)
class LogRecord:
    """One Kafka record with its coordinates (what the Merkle leaf commits to)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes


class TopicReader:
    """Reads one topic between offsets with an unmanaged consumer (no group, no commits).

    Raises :class:`AuditError` (wrapping the library's error) when the broker cannot be
    reached; a missing topic reads as empty (see :meth:`partitions`).
    """

    def __init__(self, bootstrap: str, topic: str, *, client_id: str = "leadhub-audit",
                 max_poll_records: int = 5000) -> None:
        self.topic = topic
        self.max_poll_records = max_poll_records
        try:
            self.consumer = KafkaConsumer(
                bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                client_id=client_id, max_poll_records=max_poll_records,
                max_partition_fetch_bytes=8 * 1024 * 1024, fetch_max_bytes=64 * 1024 * 1024,
                bootstrap_timeout_ms=10000,
            )
        except (KafkaError, OSError) as exc:
            raise AuditError(f"cannot reach Kafka at {bootstrap}: {type(exc).__name__}") from exc
        self._finished: set[int] = set()

    def partitions(self) -> list[int]:
        """The topic's partition numbers, sorted; [] if the topic does not exist."""
        try:
            found = self.consumer.partitions_for_topic(self.topic)
        except KafkaError as exc:
            raise AuditError(f"cannot read the metadata of {self.topic}") from exc
        return sorted(found or ())

    def end_offsets(self) -> dict[int, int]:
        """Per partition, the offset the next record will get (what exists right now)."""
        partitions = [TopicPartition(self.topic, p) for p in self.partitions()]
        if not partitions:
            return {}
        try:
            ends = self.consumer.end_offsets(partitions)
        except KafkaError as exc:
            raise AuditError(f"cannot read the end offsets of {self.topic}") from exc
        return {tp.partition: int(offset) for tp, offset in ends.items()}

    def finish(self, partition: int) -> None:
        """Stop reading ``partition`` during :meth:`read` (e.g. past ``--until``)."""
        self._finished.add(partition)
        self.consumer.pause(TopicPartition(self.topic, partition))

    def read(self, end: Mapping[int, int],
             start: Mapping[int, int] | None = None) -> Iterator[LogRecord]:
        """Yield every record with ``start[p] <= offset < end[p]``, in offset order per partition.

        Partitions interleave in fetch order. Raises AuditError if the broker stops delivering
        for a minute before ``end`` is reached (records deleted by retention, broker gone).
        """
        topic = self.topic
        for partition, offset, key, value in self.read_raw(end, start):
            yield LogRecord(topic, partition, offset, key, value)

    def read_raw(self, end: Mapping[int, int],
                 start: Mapping[int, int] | None = None) -> Iterator[RawRecord]:
        """:meth:`read` as plain ``(partition, offset, key, value)`` tuples (for hot loops)."""
        start = start or {}
        self._finished = set()
        todo = {p: e for p, e in end.items() if start.get(p, 0) < e}
        if not todo:
            return
        assignment = [TopicPartition(self.topic, p) for p in sorted(todo)]
        consumer = self.consumer
        try:
            consumer.assign(assignment)
            consumer.resume(*assignment)
            for tp in assignment:
                consumer.seek(tp, start.get(tp.partition, 0))
        except KafkaError as exc:
            raise AuditError(f"cannot assign {self.topic}") from exc
        remaining = set(todo)
        last_progress = time.monotonic()
        topic = self.topic
        while remaining - self._finished:
            try:
                polled = consumer.poll(timeout_ms=500, max_records=self.max_poll_records)
            except KafkaError as exc:
                raise AuditError(f"reading {self.topic} failed: {type(exc).__name__}") from exc
            if not polled:
                if time.monotonic() - last_progress > STALL_TIMEOUT_S:
                    missing = sorted(remaining - self._finished)
                    raise AuditError(
                        f"{topic}: no records for {STALL_TIMEOUT_S:.0f}s before the end offsets "
                        f"of partitions {missing} (deleted by retention? broker down?)")
                continue
            last_progress = time.monotonic()
            for tp, records in polled.items():
                partition = tp.partition
                stop = todo[partition]
                for record in records:
                    if partition in self._finished:
                        break
                    if record.offset >= stop:
                        break
                    yield partition, record.offset, record.key, record.value
                if partition in remaining and consumer.position(tp) >= stop:
                    remaining.discard(partition)
                    consumer.pause(tp)

    def close(self) -> None:
        """Close the consumer."""
        self.consumer.close()

    def __enter__(self) -> TopicReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def committed_offsets(bootstrap: str, group_id: str, topic: str,
                      partitions: list[int]) -> dict[int, int]:
    """The offsets consumer group ``group_id`` has committed on ``topic`` (absent: none yet)."""
    try:
        consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group_id,
                                 enable_auto_commit=False, client_id="leadhub-audit-probe",
                                 bootstrap_timeout_ms=10000)
    except (KafkaError, OSError) as exc:
        raise AuditError(f"cannot reach Kafka at {bootstrap}: {type(exc).__name__}") from exc
    try:
        result: dict[int, int] = {}
        for p in partitions:
            offset = consumer.committed(TopicPartition(topic, p))
            if offset is not None:
                result[p] = int(offset)
        return result
    except KafkaError as exc:
        raise AuditError(f"cannot read the committed offsets of group {group_id}") from exc
    finally:
        consumer.close()
