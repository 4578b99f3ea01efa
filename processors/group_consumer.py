"""A hub step's member of its consumer group, on librdkafka (confluent-kafka): decision 0003.

:class:`GroupConsumer` is what the validator (on the partners' inbound topics) and the projector
(on ``lead.events``) consume through: ``read_committed`` (both read what Kafka transactions
wrote), no auto-commit (the validator commits offsets inside its transactions, the projector
its tracking rows inside its database transactions), the range assignor (partition *p* of every
inbound topic goes to the same validator, which is what the CLOCK ticks rely on), and static
membership when given an instance id: restarted after a kill, a member takes its predecessor's
place and partitions at once, without a rebalance or waiting for the dead member's session to
expire. librdkafka joins and fetches in its own threads, so a join is never lost between polls
and the next batch is usually fetched while this one is processed.

It subscribes only once the broker knows every topic's partitions: a static member restarted
after a kill keeps its predecessor's assignment without a rebalance, and one made before the
topics' metadata arrived would stay empty (docs/architecture.md "Group membership").

It logs each assignment with its partitions (INFO), and a warning when the member has held no
partitions for :data:`SLOW_JOIN_S`, then again each time that long passes.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any, Protocol

from confluent_kafka import (
    OFFSET_BEGINNING,
    OFFSET_INVALID,
    Consumer,
    KafkaError,
    KafkaException,
    TopicPartition,
)

from processors.kafka_facts import ConsumedRecord, describe, fatal_cause, group_member

#: A SIGKILLed member is out of its group this long after its last heartbeat: the broker's
#: minimum (``group.min.session.timeout.ms``). librdkafka heartbeats from a thread of its own
#: that the step's Python work does not hold up (kafka-python's needed the GIL: 10 s).
SESSION_TIMEOUT_MS = 6_000
#: Holding no partitions longer than this is logged as a warning (and again each time).
SLOW_JOIN_S = 20.0
#: How long a start waits for the topics' partitions; a rewind for the committed offsets.
WAIT_S = 60.0
#: How long :meth:`GroupConsumer.close` serves its revocation before closing regardless.
REVOKE_BEFORE_CLOSE_S = 10.0
#: A fetch is answered once this much is there to read, or after :data:`FETCH_WAIT_MAX_MS`
#: (librdkafka's defaults, 1 byte and 500 ms, answer as soon as one record is there). Under
#: load the broker then serves a few large fetches instead of one per handful of records, and
#: the validator's transactions and the projector's batches grow with them; a quiet site waits
#: at most :data:`FETCH_WAIT_MAX_MS` more per step. Measured by ``bench/pipeline.py``: the
#: broker's CPU per event fell by about a third and the p99 at 500 events/s did not rise
#: (BENCHMARKS.md "Pipeline", decision 0008).
FETCH_MIN_BYTES = 64 * 1024
#: The longest a fetch waits for :data:`FETCH_MIN_BYTES` (ms).
FETCH_WAIT_MAX_MS = 20


class RebalanceListener(Protocol):
    """Told of partitions assigned (may :meth:`GroupConsumer.seek` them) and taken away."""

    def assigned(self, partitions: Sequence[tuple[str, int]]) -> None: ...

    def revoked(self, partitions: Sequence[tuple[str, int]]) -> None: ...


class GroupConsumer:
    """A member of ``group`` on ``topics``; see the module docstring.

    Construction raises ``KafkaException`` when the configuration is refused or the broker
    cannot be reached, ``LookupError`` naming the first topic without partitions after
    :data:`WAIT_S`. :meth:`subscribe` joins. One thread uses it.
    """

    def __init__(self, config: dict[str, Any], group: str, topics: Sequence[str], *,
                 step: str, instance_id: str | None, max_poll_interval_ms: int,
                 session_timeout_ms: int = SESSION_TIMEOUT_MS, assignor: str = "range") -> None:
        self.group = group
        self.topics = list(topics)
        self.step = step
        self.log = logging.getLogger(f"leadhub.{step}")
        #: Set after a failed batch: seek back to the committed offsets before going on.
        self.rewind_needed = False
        self._listener: RebalanceListener | None = None
        #: While an assignment is being made: the start offsets the listener chose.
        self._starts: dict[tuple[str, int], int] | None = None
        self._unassigned_since: float | None = time.monotonic()
        #: Set by :meth:`close`: an assignment arriving now is declined (see :meth:`_assigned`).
        self._closing = False
        self._warned_at: float | None = None
        settings = {
            **config,
            "group.id": group,
            "isolation.level": "read_committed",
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
            "partition.assignment.strategy": assignor,
            "session.timeout.ms": session_timeout_ms,
            "heartbeat.interval.ms": max(1000, session_timeout_ms // 4),
            "max.poll.interval.ms": max_poll_interval_ms,
            "fetch.min.bytes": FETCH_MIN_BYTES,
            "fetch.wait.max.ms": FETCH_WAIT_MAX_MS,
        }
        if instance_id:
            settings["group.instance.id"] = instance_id
        self._consumer = Consumer(settings)
        try:
            missing = self._await_partitions()
            if missing:
                raise LookupError(missing[0])
        except BaseException:
            self.close()
            raise

    def subscribe(self, listener: RebalanceListener | None = None) -> None:
        """Join the group on the topics; ``listener`` hears of every assignment change."""
        self._listener = listener
        self._consumer.subscribe(self.topics, on_assign=self._assigned,
                                 on_revoke=self._revoked, on_lost=self._revoked)

    def poll(self, max_records: int, timeout_s: float) -> list[ConsumedRecord]:
        """Up to ``max_records`` records: waits up to ``timeout_s`` for the first, then takes
        what is already fetched (librdkafka's own ``consume`` would wait for all of them).

        Raises ``KafkaException`` for a fatal error (this static member was fenced, say; see
        :func:`fatal_cause`); other errors are informational and logged.
        """
        first = self._consumer.poll(timeout_s)
        messages = [] if first is None else [first, *self._consumer.consume(
            num_messages=max_records - 1, timeout=0)]
        records: list[ConsumedRecord] = []
        for message in messages:
            error = message.error()
            if error is None:
                records.append(ConsumedRecord.of(message))
            elif error.fatal() or error.code() == KafkaError._FATAL:
                raise KafkaException(fatal_cause(error))
            else:  # a broker went away, the poll interval passed: librdkafka goes on
                self.log.warning("%s: consumer reports %s: %s", self.step, error.name(),
                                 error.str())
        self._watch_membership(time.monotonic())
        return records

    def group_metadata(self) -> Any:
        """A snapshot of this member's group metadata, for a transaction's offsets."""
        return self._consumer.consumer_group_metadata()

    def assignment(self) -> list[TopicPartition]:
        """The partitions this member holds."""
        return list(self._consumer.assignment())

    def seek(self, topic: str, partition: int, offset: int) -> None:
        """Read ``topic[partition]`` from ``offset`` on (while it is being assigned: start
        there). Raises ``KafkaException`` when librdkafka refuses."""
        if self._starts is not None:
            self._starts[(topic, partition)] = offset
        else:
            self._consumer.seek(TopicPartition(topic, partition, offset))

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

    def commit_async(self, topic: str, offsets: dict[int, int]) -> None:
        """Commit ``{partition: next offset}`` of ``topic`` without waiting (advisory)."""
        if offsets:
            self._consumer.commit(offsets=[TopicPartition(topic, p, o)
                                           for p, o in offsets.items()], asynchronous=True)

    def highwater(self, topic: str, partition: int) -> int | None:
        """The end of ``topic[partition]`` as the last fetch saw it (no I/O); None if unknown."""
        _low, high = self._consumer.get_watermark_offsets(TopicPartition(topic, partition),
                                                          cached=True)
        return None if high is None or high < 0 else int(high)

    def close(self) -> None:
        """Leave the group and close the consumer; returns within about
        :data:`REVOKE_BEFORE_CLOSE_S` plus librdkafka's own close.

        It unsubscribes and serves the revocation in polls first, so that librdkafka's
        ``close`` finds nothing to revoke: a revocation served inside ``close`` could wait for
        ever in whatever call into the group it made, confluent-kafka's own ``unassign`` or
        its ``rebalance_protocol`` question alike (confluentinc/librdkafka#4041, #4884; it hung
        the suite). So a member stopped cleanly leaves its group, static or not, and its
        partitions move at once; a killed static member keeps its place until its session
        expires.
        """
        self._closing = True
        try:
            self._consumer.unsubscribe()
            deadline = time.monotonic() + REVOKE_BEFORE_CLOSE_S
            while True:  # records polled here are dropped: uncommitted, read again elsewhere
                self._consumer.poll(0.05)
                if not self._consumer.assignment() or time.monotonic() >= deadline:
                    break
        except (KafkaException, RuntimeError) as exc:  # fenced, say: close regardless
            self.log.info("%s: unsubscribing before close failed (%s)", self.step,
                          describe(exc))
        try:
            self._consumer.close()
        except (KafkaException, RuntimeError) as exc:
            self.log.warning("%s: closing the consumer failed (%s)", self.step, describe(exc))

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
        """Rebalance callback: let the listener choose start offsets, assign, log.

        While closing, the assignment is declined with an unassign: librdkafka's ``assign`` of
        partitions from inside ``close`` can wait for ever (confluentinc/librdkafka#4884; it
        hung a test's teardown here), and a closing member has no use for partitions.
        """
        if self._closing:
            consumer.unassign()
            self.log.info("%s: declined %d partitions of group %s while closing", self.step,
                          len(partitions), self.group)
            return
        self.rewind_needed = False
        self._unassigned_since = None if partitions else time.monotonic()
        self._starts = {}
        try:
            if self._listener is not None:
                self._listener.assigned([(tp.topic, tp.partition) for tp in partitions])
            starts = self._starts
        finally:
            self._starts = None
        consumer.assign([TopicPartition(tp.topic, tp.partition,
                                        starts.get((tp.topic, tp.partition), OFFSET_INVALID))
                         for tp in partitions])
        member = group_member(consumer.consumer_group_metadata())
        held = sorted(f"{tp.topic}[{tp.partition}]" for tp in partitions)
        self.log.info("%s: member of group %s, generation %s, %d partitions: %s", self.step,
                      self.group, member[0] if member else "?", len(held),
                      ", ".join(held) or "none")

    def _revoked(self, _consumer: Any, partitions: list[TopicPartition]) -> None:
        """Rebalance callback: partitions revoked or lost."""
        self.rewind_needed = False
        self._unassigned_since = time.monotonic()
        if self._listener is not None:
            self._listener.revoked([(tp.topic, tp.partition) for tp in partitions])
        self.log.info("%s: gave up %d partitions of group %s", self.step, len(partitions),
                      self.group)

    def _watch_membership(self, now: float) -> None:
        since = self._unassigned_since
        if since is None:
            self._warned_at = None
            return
        if now - max(since, self._warned_at or since) >= SLOW_JOIN_S:
            self._warned_at = now
            self.log.warning("%s: still joining group %s: no partitions for %.0f s",
                             self.step, self.group, now - since)

