"""The validator's side of its consumer group: consume, rebalance, rewind (librdkafka).

:class:`InboundConsumer` is one member of the validator's group on the partners' inbound
topics: ``read_committed``, no auto-commit (offsets commit inside the validator's
transactions), the range assignor (partition *p* of every inbound topic goes to the same
member, which is what the CLOCK ticks rely on), and static membership when given an instance
id. It subscribes only once the broker knows every inbound topic's partitions: a static member
restarted after a kill keeps its predecessor's assignment without a rebalance, and one made
before the topics' metadata arrived would stay empty (docs/architecture.md "Group membership").

It logs each assignment with its partitions (INFO), and a warning when the member has held no
partitions for :data:`SLOW_JOIN_S`, then again each time that long passes.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, TopicPartition

from processors.kafka_facts import InboundRecord, describe, group_member

log = logging.getLogger("leadhub.validate")

#: A SIGKILLed member is out of the group this long after its last heartbeat.
SESSION_TIMEOUT_MS = 10_000
HEARTBEAT_INTERVAL_MS = 3_000
#: Holding no partitions longer than this is logged as a warning (and again each time).
SLOW_JOIN_S = 20.0
#: How long a start waits for the inbound topics' partitions; a rewind for committed offsets.
WAIT_S = 60.0


class InboundConsumer:
    """A member of ``group`` subscribed to ``topics``; see the module docstring.

    Construction raises ``KafkaException`` when the broker cannot be reached and
    ``LookupError`` naming the first topic without partitions after :data:`WAIT_S`.
    """

    def __init__(self, config: dict[str, Any], group: str, topics: list[str], *,
                 instance_id: str | None, max_poll_interval_ms: int) -> None:
        self.group = group
        self.topics = topics
        #: Set after an aborted transaction: seek back to the committed offsets before going on.
        self.rewind_needed = False
        self._unassigned_since: float | None = time.monotonic()
        self._warned_at: float | None = None
        settings = {
            **config,
            "group.id": group,
            "isolation.level": "read_committed",
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
            "partition.assignment.strategy": "range",
            "session.timeout.ms": SESSION_TIMEOUT_MS,
            "heartbeat.interval.ms": HEARTBEAT_INTERVAL_MS,
            "max.poll.interval.ms": max_poll_interval_ms,
        }
        if instance_id:
            # Static membership (KIP-345): restarted after a kill, the member takes its
            # predecessor's place and partitions at once, without a rebalance or waiting for
            # the dead member's session to expire.
            settings["group.instance.id"] = instance_id
        self._consumer = Consumer(settings)
        try:
            missing = self._await_partitions()
            if missing:
                raise LookupError(missing[0])
            self._consumer.subscribe(topics, on_assign=self._assigned,
                                     on_revoke=self._revoked, on_lost=self._revoked)
        except BaseException:
            self.close()
            raise

    def consume(self, max_records: int, timeout_s: float,
                on_fatal: Callable[[KafkaException], None]) -> tuple[list[InboundRecord], Any]:
        """Up to ``max_records`` records and the group metadata snapshot taken right after.

        A fatal error (this static member was fenced, say) is passed to ``on_fatal``, which
        must raise; other errors are informational and logged.
        """
        messages = self._consumer.consume(num_messages=max_records, timeout=timeout_s)
        group = self._consumer.consumer_group_metadata()
        records: list[InboundRecord] = []
        for message in messages:
            error = message.error()
            if error is None:
                records.append(InboundRecord.of(message))
            elif error.fatal():
                on_fatal(KafkaException(error))
            else:  # a broker went away, the poll interval passed: librdkafka goes on
                log.warning("validate: consumer reports %s: %s", error.name(), error.str())
        self._watch_membership(time.monotonic())
        return records, group

    def assignment(self) -> list[TopicPartition]:
        """The partitions this member holds."""
        return list(self._consumer.assignment())

    def rewind(self) -> None:
        """Seek every held partition to its committed offset (the beginning when none);
        clears :attr:`rewind_needed`. Raises ``KafkaException`` when that fails."""
        assignment = self._consumer.assignment()
        if assignment:
            for tp in self._consumer.committed(assignment, timeout=WAIT_S):
                if tp.error is not None:
                    raise KafkaException(tp.error)
                offset = tp.offset if tp.offset >= 0 else OFFSET_BEGINNING
                self._consumer.seek(TopicPartition(tp.topic, tp.partition, offset))
        self.rewind_needed = False

    def close(self) -> None:
        """Close the consumer (a static member keeps its place until its session expires)."""
        try:
            self._consumer.close()
        except (KafkaException, RuntimeError) as exc:
            log.warning("validate: closing the consumer failed (%s)", describe(exc))

    def _await_partitions(self) -> list[str]:
        """Wait until the broker knows every topic's partitions; those it still does not."""
        deadline = time.monotonic() + WAIT_S
        while True:
            known = self._consumer.list_topics(timeout=WAIT_S).topics
            missing = [t for t in self.topics
                       if t not in known or not known[t].partitions or known[t].error]
            if not missing or time.monotonic() >= deadline:
                return missing
            time.sleep(0.2)

    def _assigned(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        """Rebalance callback: log the new assignment (it starts at the committed offsets)."""
        self.rewind_needed = False
        self._unassigned_since = None if partitions else time.monotonic()
        member = group_member(consumer.consumer_group_metadata())
        held = sorted(f"{tp.topic}[{tp.partition}]" for tp in partitions)
        log.info("validate: member of group %s, generation %s, %d partitions: %s",
                 self.group, member[0] if member else "?", len(held), ", ".join(held) or "none")

    def _revoked(self, _consumer: Any, partitions: list[TopicPartition]) -> None:
        """Rebalance callback: partitions revoked or lost (no transaction is open here)."""
        self.rewind_needed = False
        self._unassigned_since = time.monotonic()
        log.info("validate: gave up %d partitions of group %s", len(partitions), self.group)

    def _watch_membership(self, now: float) -> None:
        since = self._unassigned_since
        if since is None:
            self._warned_at = None
            return
        if now - max(since, self._warned_at or since) >= SLOW_JOIN_S:
            self._warned_at = now
            log.warning("validate: still joining group %s: no partitions for %.0f s",
                        self.group, now - since)
