"""The ``sink`` step: applies ``lead.view.changes`` to the SQL view in batches.

The sink does not use Kafka's group offsets. It assigns itself every partition of the topic,
seeks to the offsets stored in the view database, and stores the new offsets in the same
transaction as each batch of rows. A crash at any point loses nothing and doubles nothing:
the next start re-reads exactly the batch that did not commit.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence

import orjson
from kafka import KafkaConsumer, TopicPartition
from kafka.errors import KafkaError

from consumers.errors import ConsumerError
from consumers.store import RowChange, ViewStore

log = logging.getLogger("leadhub.sink")

STEP = "sink"


def changes_from_message(value: bytes) -> list[RowChange]:
    """The row changes of one ``lead.view.changes`` message, in the order to apply them.

    Raises :class:`ConsumerError` if the message is not a view-changes message.
    """
    try:
        body = orjson.loads(value)
        return [RowChange.from_json(change) for change in body["changes"]]
    except (ValueError, TypeError, KeyError) as exc:
        raise ConsumerError(f"{STEP}: not a view-changes message ({type(exc).__name__})") from exc


class ViewSink:
    """Consumes one view-changes topic into one :class:`ViewStore`.

    ``on_commit``, if given, is called with each batch's changes right after that batch and its
    offsets have committed (used by benchmarks to time rows becoming visible).
    """

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        store: ViewStore,
        *,
        batch_size: int = 2000,
        poll_timeout_ms: int = 200,
        on_commit: Callable[[Sequence[RowChange]], None] | None = None,
    ) -> None:
        self.topic = topic
        self.store = store
        self.batch_size = batch_size
        self.poll_timeout_ms = poll_timeout_ms
        self.on_commit = on_commit
        try:
            self.consumer = KafkaConsumer(
                bootstrap_servers=bootstrap,
                group_id=None,
                enable_auto_commit=False,
                client_id="leadhub-sink",
                max_poll_records=batch_size,
                bootstrap_timeout_ms=10000,
            )
        except (KafkaError, OSError) as exc:
            raise ConsumerError(f"{STEP}: cannot reach Kafka at {bootstrap}") from exc
        self._assigned: set[int] = set()

    def _assign(self) -> None:
        """(Re)assign every partition of the topic and seek to the stored offsets."""
        partitions = self.consumer.partitions_for_topic(self.topic) or set()
        if partitions == self._assigned:
            return
        assignment = [TopicPartition(self.topic, p) for p in sorted(partitions)]
        self.consumer.assign(assignment)
        stored = self.store.committed_offsets(self.topic)
        for tp in assignment:
            if tp.partition in stored:
                self.consumer.seek(tp, stored[tp.partition])
            else:
                self.consumer.seek_to_beginning(tp)
        self._assigned = set(partitions)

    def run_once(self) -> int:
        """Poll one batch and commit it with its offsets; return how many changes it held."""
        self._assign()
        if not self._assigned:
            return 0
        polled = self.consumer.poll(timeout_ms=self.poll_timeout_ms, max_records=self.batch_size)
        changes: list[RowChange] = []
        offsets: dict[tuple[str, int], int] = {}
        for tp, records in polled.items():
            for record in records:
                changes.extend(changes_from_message(record.value))
            offsets[(tp.topic, tp.partition)] = records[-1].offset + 1
        if offsets:
            self.store.apply(changes, offsets)
            if self.on_commit is not None:
                self.on_commit(changes)
        return len(changes)

    def run(self, stop: threading.Event, on_batch: Callable[[int], None] | None = None) -> None:
        """Apply batches until ``stop`` is set; the batch under way completes first."""
        self.store.create_schema()
        while not stop.is_set():
            count = self.run_once()
            if count and on_batch is not None:
                on_batch(count)
            if not self._assigned:
                stop.wait(0.5)

    def close(self) -> None:
        self.consumer.close()
