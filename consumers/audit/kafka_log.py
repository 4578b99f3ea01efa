"""Kafka adapter of the audit layer: read a topic's partitions between offsets, group-free.

The auditor never joins a consumer group and never commits: it assigns partitions itself, reads
from explicit start offsets up to end offsets captured beforehand, and stops. Records stream
through; nothing holds the log.

Readers default to ``read_committed``: the hub's topics may be written in Kafka transactions
(the validator writes ``lead.events`` that way; partners may use transactional producers), so
records of aborted transactions are skipped, end offsets are the last stable offsets, and a
partition's offsets have gaps (commit markers, aborted records). Reading therefore iterates the
records that exist and ends a partition when the consumer's position reaches its end offset,
never by counting offsets.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from kafka import KafkaConsumer, TopicPartition
from kafka.errors import KafkaError

from consumers.audit.errors import AuditError
from schemas.kafka_connection import KafkaConnection

STALL_TIMEOUT_S = 60.0
#: How long to wait for a group's committed offsets (an open transaction holds them back).
COMMITTED_TIMEOUT_MS = 30000

#: (partition, offset, key, value) of one record.
RawRecord = tuple[int, int, bytes | None, bytes]
#: (partition, offset, key, value, headers) of one record; headers as Kafka gives them.
HeadedRecord = tuple[int, int, bytes | None, bytes, list[tuple[str, bytes | None]]]

#: The isolation level of every audit reader unless a caller asks otherwise.
DEFAULT_ISOLATION = "read_committed"


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
    reached; a missing topic reads as empty (see :meth:`partitions`). ``isolation_level``:
    ``read_committed`` (default: committed records only, end offsets are the last stable
    offsets) or ``read_uncommitted``.
    """

    def __init__(self, kafka: KafkaConnection, topic: str, *, client_id: str = "leadhub-audit",
                 max_poll_records: int = 5000,
                 isolation_level: str = DEFAULT_ISOLATION) -> None:
        self.topic = topic
        self.max_poll_records = max_poll_records
        try:
            self.consumer = KafkaConsumer(
                **kafka.client_options(), group_id=None, enable_auto_commit=False,
                client_id=client_id, max_poll_records=max_poll_records,
                max_partition_fetch_bytes=8 * 1024 * 1024, fetch_max_bytes=64 * 1024 * 1024,
                bootstrap_timeout_ms=10000, isolation_level=isolation_level,
            )
        except (KafkaError, OSError) as exc:
            raise AuditError(
                f"cannot reach Kafka at {kafka.describe()}: {type(exc).__name__}") from exc
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

    def beginning_offsets(self) -> dict[int, int]:
        """Per partition, the offset of its first record still in the log (0 unless retention
        or a deletion removed records)."""
        partitions = [TopicPartition(self.topic, p) for p in self.partitions()]
        if not partitions:
            return {}
        try:
            starts = self.consumer.beginning_offsets(partitions)
        except KafkaError as exc:
            raise AuditError(f"cannot read the beginning offsets of {self.topic}") from exc
        return {tp.partition: int(offset) for tp, offset in starts.items()}

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
        finished = self._finished = set()
        for partition, stop, records in self._batches(end, start):
            for record in records:
                if partition in finished or record.offset >= stop:
                    break
                yield partition, record.offset, record.key, record.value

    def read_headed(self, end: Mapping[int, int],
                    start: Mapping[int, int] | None = None) -> Iterator[HeadedRecord]:
        """:meth:`read_raw` with each record's headers as a fifth element."""
        finished = self._finished = set()
        for partition, stop, records in self._batches(end, start):
            for record in records:
                if partition in finished or record.offset >= stop:
                    break
                yield (partition, record.offset, record.key, record.value,
                       list(record.headers or ()))

    def _batches(self, end: Mapping[int, int],
                 start: Mapping[int, int] | None) -> Iterator[tuple[int, int, list[Any]]]:
        """Poll ``(partition, end offset, records)`` until every partition reached its end.

        A partition is done when the consumer's position reaches its end offset, checked after
        each of its batches and, after a poll that returned nothing, for every partition: the
        position also moves past commit markers and aborted transactions, which yield no
        records. Raises AuditError if no position moves for a minute.
        """
        start = start or {}
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
        positions: dict[int, int] = {}
        last_progress = time.monotonic()
        topic = self.topic
        while remaining - self._finished:
            try:
                polled = consumer.poll(timeout_ms=500, max_records=self.max_poll_records)
            except KafkaError as exc:
                raise AuditError(f"reading {self.topic} failed: {type(exc).__name__}") from exc
            if polled:
                last_progress = time.monotonic()
                for tp, records in polled.items():
                    partition = tp.partition
                    stop = todo[partition]
                    yield partition, stop, records
                    if partition in remaining and self._position(tp) >= stop:
                        remaining.discard(partition)
                        consumer.pause(tp)
                continue
            moved = False
            for partition in sorted(remaining - self._finished):
                tp = TopicPartition(topic, partition)
                position = self._position(tp)
                if position != positions.get(partition):
                    positions[partition] = position
                    moved = True
                if position >= todo[partition]:
                    remaining.discard(partition)
                    consumer.pause(tp)
            if moved:
                last_progress = time.monotonic()
            elif time.monotonic() - last_progress > STALL_TIMEOUT_S:
                missing = sorted(remaining - self._finished)
                raise AuditError(
                    f"{topic}: no records for {STALL_TIMEOUT_S:.0f}s before the end offsets "
                    f"of partitions {missing} (deleted by retention? broker down?)")

    def _position(self, tp: TopicPartition) -> int:
        try:
            return int(self.consumer.position(tp))
        except KafkaError as exc:
            raise AuditError(f"cannot read the position on {self.topic}") from exc

    def close(self) -> None:
        """Close the consumer."""
        self.consumer.close()

    def __enter__(self) -> TopicReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def committed_offsets(kafka: KafkaConnection, group_id: str, topic: str, partitions: list[int], *,
                      isolation_level: str = DEFAULT_ISOLATION) -> dict[int, int]:
    """The offsets consumer group ``group_id`` has committed on ``topic`` (absent: none yet).

    Under ``read_committed`` (default) the broker answers only once no open transaction holds
    offsets of the group for these partitions, so an offset returned here belongs to a
    committed transaction. Waits at most ``COMMITTED_TIMEOUT_MS`` per partition, then raises
    AuditError. Joins no group and commits nothing.
    """
    try:
        consumer = KafkaConsumer(**kafka.client_options(), group_id=group_id,
                                 enable_auto_commit=False, client_id="leadhub-audit-probe",
                                 bootstrap_timeout_ms=10000, isolation_level=isolation_level)
    except (KafkaError, OSError) as exc:
        raise AuditError(f"cannot reach Kafka at {kafka.describe()}: {type(exc).__name__}") from exc
    try:
        result: dict[int, int] = {}
        for p in partitions:
            offset = consumer.committed(TopicPartition(topic, p),
                                        timeout_ms=COMMITTED_TIMEOUT_MS)
            if offset is not None:
                result[p] = int(offset)
        return result
    except KafkaError as exc:
        raise AuditError(f"cannot read the committed offsets of group {group_id}") from exc
    finally:
        consumer.close()


def wait_until_stable(kafka: KafkaConnection, topic: str, timeout_s: float = 30.0) -> bool:
    """Wait until no open transaction hides records of ``topic`` that exist now.

    Records a transaction committed behind another, still open one stay invisible to
    read_committed readers until that one ends (a killed validator's is aborted by the broker
    after its timeout). Returns True once the last stable offset of every partition reached the
    high watermark seen at the call; False after ``timeout_s``.
    """
    with TopicReader(kafka, topic, client_id="leadhub-audit-stable",
                     isolation_level="read_uncommitted") as raw:
        high = raw.end_offsets()
    with TopicReader(kafka, topic, client_id="leadhub-audit-stable") as committed:
        deadline = time.monotonic() + timeout_s
        while True:
            stable = committed.end_offsets()
            if all(stable.get(p, 0) >= h for p, h in high.items()):
                return True
            if time.monotonic() > deadline:
                return False
            time.sleep(0.5)
