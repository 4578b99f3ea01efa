"""The live ``project`` step: ``lead.events`` into the SQL view, exactly once.

A consumer group on ``lead.events`` (``read_committed``: the validator writes it in Kafka
transactions). For each polled batch, **one database transaction** writes the view rows, the
participants' state changes (:mod:`consumers.projection_store`), their timers and the tracking
row of every partition the batch read. The projector resumes from its tracking rows, never from
Kafka's committed offsets (those are committed afterwards, for lag monitoring only): on every
partition assignment it reads them and seeks there. A crash at any point leaves either the whole
batch committed or none of it; the next owner re-reads exactly what did not commit.

Failures never skip a record silently. A batch that fails is rolled back and re-read; after
:data:`ATTEMPTS` failures the projector isolates the failing record by reading one record per
batch, and a record that still fails :data:`ATTEMPTS` times goes to ``lead.dlq`` with reason
``PROCESSING_FAILED`` (the error's class, no data) before its tracking row moves past it. A
record that is not a canonical record goes there as ``NOT_CANONICAL``; an event reusing an
event_id held with other content as ``EVENT_ID_REUSED`` (the view still shows one of them, by
the projector's deterministic rule).

Memory: a bounded cache of participant states (:class:`StateCache`) plus one batch.
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Producer
from sqlalchemy.exc import SQLAlchemyError

from consumers.batch_states import BatchStates, StateCache
from consumers.errors import ConsumerError
from consumers.projection_store import (
    ParticipantWrite,
    ProjectionStore,
    StoredParticipant,
    TrackingConflict,
)
from consumers.store import ViewStore
from processors.deadlines import MISSED_NAMESPACE
from processors.group_consumer import SESSION_TIMEOUT_MS, GroupConsumer
from processors.kafka_facts import describe
from processors.projection_step import ProjectionStep
from processors.projector import Projector
from processors.view import ViewChange
from schemas.canonical import CanonicalRecord, decode_canonical
from schemas.catalog import Catalog
from schemas.codec import decode
from schemas.errors import ContractError, DeadLetterReason, HubError
from schemas.event import Event, derived_event_id
from schemas.kafka_connection import KafkaConnection
from schemas.topics import TopicNames

log = logging.getLogger("leadhub.project")
#: librdkafka's own log lines (broker and topic names, never content).
KAFKA_LOG = logging.getLogger("leadhub.project.kafka")

STEP = "project"
#: Failures of one batch before the projector isolates records, and of one record before it
#: is dead-lettered as PROCESSING_FAILED.
ATTEMPTS = 3
#: The state cache's default capacity in events plus rows held, a head counting as
#: ``batch_states.HEAD_WEIGHT`` (about 100-150 bytes each: ``bench/state_memory.py``): a bound on
#: the projector's memory that does not depend on how many participants or how long a history
#: (``LEADHUB_PROJECTOR_CACHE``, whose default in ``leadhub.settings`` is this). A participant
#: that does not fit is read back from SQL when its next event comes, by its head unless the
#: event needs its history (decision 0007). Meant for the 512 MiB of a site of 100,000
#: participants-years with the SQLite page cache and the consumer's buffers; measured: 412 MiB
#: at most through that year (BENCHMARKS.md "Projector at scale").
CACHE_WEIGHT = 1_000_000
#: Records of the first batch after partitions are assigned (a start, a restart, a rebalance);
#: each committed batch may then be twice as large, up to the batch size. The first batch reads
#: back the state of every participant it touches (by its head, under a millisecond; whole, a
#: few milliseconds per year of history, when its event needs the history): a small one commits
#: soon however long those histories are (BENCHMARKS.md "Projector at scale"), and a full batch
#: follows within a few more.
FIRST_BATCH = 50
#: The cyclic collector's thresholds in a projector process (Python's default is 700, 10, 10).
#: Its heap is mostly the state cache, long-lived and free of cycles; at the default a full
#: collection walked it every few thousand records: 1.9 s of collector time in a 17,000-record
#: bench run, pauses up to 227 ms. With these: 0.27 s, pauses up to 67 ms (BENCHMARKS.md
#: "Pipeline"). Garbage without cycles is freed at once whatever the thresholds.
GC_THRESHOLDS = (10_000, 50, 1_000)
#: A projector whose loop has not polled for this long leaves the group (a batch on a slow
#: database may take long; a dead process's session timeout is what frees its partitions).
MAX_POLL_INTERVAL_MS = 300_000
#: The projector's dead-letter reasons (all of them: ``schemas.errors.DeadLetterReason``).
NOT_CANONICAL = DeadLetterReason.NOT_CANONICAL.value
EVENT_ID_REUSED = DeadLetterReason.EVENT_ID_REUSED.value
PROCESSING_FAILED = DeadLetterReason.PROCESSING_FAILED.value


def projector_group(topics: TopicNames) -> str:
    """The projector's consumer group (its Kafka offsets are advisory: lag monitoring)."""
    return f"{topics.prefix}leadhub-projector"


@dataclass
class ProjectorCounters:
    """What the projector did since it started (exported as metrics)."""

    records: int = 0
    batches: int = 0
    rows_changed: int = 0
    rollbacks: int = 0
    fenced: int = 0
    dead_letters_by_reason: dict[str, int] = field(default_factory=dict)
    batch_seconds: float = 0.0
    #: Participants' states the committed batches read, by source (``STATE_READ_SOURCES``).
    state_reads: dict[str, int] = field(default_factory=dict)
    #: Records behind the end, per partition (approximate: commit markers count), after the
    #: last batch.
    lag: dict[int, int] = field(default_factory=dict)


class _Rebalance:
    """The projector's rebalance listener: resync partitions assigned, forget those taken."""

    def __init__(self, owner: LiveProjector) -> None:
        self.owner = owner

    def revoked(self, partitions: Sequence[tuple[str, int]]) -> None:
        self.owner.forget([partition for _, partition in partitions])

    def assigned(self, partitions: Sequence[tuple[str, int]]) -> None:
        self.owner.forget([partition for _, partition in partitions])
        self.owner.batch_limit = FIRST_BATCH
        try:
            self.owner.sync([partition for _, partition in partitions])
        except HubError as exc:  # retried before the partition's records are used
            log.warning("project: reading tracking rows on assignment failed: %s", exc)


class DeadLetterProducer:
    """The projector's producer of dead letters: ``flush`` returns once Kafka acknowledged
    every one (``acks=all``) and raises ``KafkaException`` if any was refused or timed out."""

    def __init__(self, config: dict[str, Any]) -> None:
        self._producer = Producer(config)
        self._refused: list[KafkaError] = []

    def send(self, topic: str, key: bytes | None, value: bytes,
             headers: list[tuple[str, str | bytes | None]]) -> None:
        """Queue one record."""
        self._producer.produce(topic, value=value, key=key, headers=headers,
                               on_delivery=self._delivered)

    def flush(self, timeout: float) -> None:
        """Wait for every queued record's acknowledgement; raise if one was not delivered."""
        remaining = self._producer.flush(timeout)
        refused, self._refused = self._refused, []
        if refused:
            raise KafkaException(refused[0])
        if remaining:
            raise KafkaException(KafkaError(KafkaError._TIMED_OUT,
                                            f"{remaining} dead letters not acknowledged"))

    def close(self, timeout: float) -> None:
        """Deliver what is queued, up to ``timeout`` seconds."""
        self._producer.flush(timeout)

    def _delivered(self, error: KafkaError | None, _message: Any) -> None:
        if error is not None:
            self._refused.append(error)


class LiveProjector:
    """Projects ``lead.events`` into one :class:`ViewStore` (SQLite or PostgreSQL).

    ``on_commit``, if given, is called with each batch's view changes right after the batch's
    transaction committed (benchmarks time rows becoming visible with it). ``consumer`` and
    ``dlq`` replace the Kafka clients (a test's in-process fakes with the same methods).
    ``instance_id``, unique among running projectors and the same across restarts of one,
    makes it a static group member (KIP-345): restarted after a kill, it takes its
    predecessor's partitions at once instead of after the dead member's session timeout.
    """

    def __init__(self, kafka: KafkaConnection, topics: TopicNames, view: ViewStore,
                 projector: Projector, catalog: Catalog, *, batch_size: int = 2000,
                 poll_timeout_ms: int = 200,
                 session_timeout_ms: int = SESSION_TIMEOUT_MS, cache_weight: int = CACHE_WEIGHT,
                 client_id: str = "leadhub-projector",
                 on_commit: Callable[[Sequence[ViewChange]], None] | None = None,
                 consumer: Any | None = None, dlq: Any | None = None,
                 instance_id: str | None = None) -> None:
        self.topics = topics
        self.topic = topics.events
        self.view = view
        self.store = ProjectionStore(view)
        view.tune_for_writing()
        self.step = ProjectionStep(projector, catalog)
        self.batch_size = batch_size
        #: Records the next poll may return: :data:`FIRST_BATCH` after an assignment, doubling
        #: with each committed batch up to ``batch_size``.
        self.batch_limit = FIRST_BATCH
        self.poll_timeout_ms = poll_timeout_ms
        self.cache = StateCache(cache_weight)
        self.on_commit = on_commit
        self.counters = ProjectorCounters()
        #: Partition -> next offset this instance holds in its tracking row (synced ones only).
        self.expected: dict[int, int] = {}
        self._failures = 0
        if consumer is not None and dlq is not None:  # tests: in-process fakes
            self.consumer, self.dlq = consumer, dlq
        else:
            self.consumer, self.dlq = self._connect(kafka, client_id, session_timeout_ms,
                                                    instance_id)
        self.consumer.subscribe(_Rebalance(self))

    def _connect(self, kafka: KafkaConnection, client_id: str, session_timeout_ms: int,
                 instance_id: str | None) -> tuple[GroupConsumer, DeadLetterProducer]:
        """The librdkafka clients: a member of the projector group, a dead-letter producer."""
        common = {"client.id": client_id, "logger": KAFKA_LOG}
        try:
            dlq = DeadLetterProducer({**kafka.librdkafka_producer_config(), **common,
                                      "client.id": f"{client_id}-dlq", "linger.ms": 5})
            consumer = GroupConsumer(
                {**common, **kafka.librdkafka_config(),
                 # Fetched ahead while a batch is processed: a bound on that memory. A
                 # consumer of a backlog held 140 MiB with librdkafka's fetch sizes and a
                 # 16 MiB queue, 62 MiB with these, polling as fast (BENCHMARKS.md "Projector
                 # at scale"); a record larger than a fetch still comes whole.
                 "max.partition.fetch.bytes": 1024 * 1024,
                 "fetch.max.bytes": 8 * 1024 * 1024,
                 "queued.max.messages.kbytes": 4 * 1024,
                 "queued.min.messages": 5000},
                projector_group(self.topics), [self.topic], step=STEP,
                instance_id=instance_id, session_timeout_ms=session_timeout_ms,
                max_poll_interval_ms=MAX_POLL_INTERVAL_MS)
        except KafkaException as exc:
            raise ConsumerError(f"{STEP}: cannot reach Kafka at {kafka.describe()} "
                                f"({describe(exc)})") from exc
        except LookupError as exc:
            raise ConsumerError(f"{STEP}: {self.topic} has no partitions on {kafka.describe()}; "
                                "create the topics with `leadhub topics create`") from exc
        return consumer, dlq

    # -- partitions ----------------------------------------------------------------------------

    def forget(self, partitions: Iterable[int]) -> None:
        """Stop trusting what this instance knows of ``partitions`` (revoked or reassigned)."""
        partitions = list(partitions)
        for partition in partitions:
            self.expected.pop(partition, None)
        self.cache.drop_partitions(partitions)

    def sync(self, partitions: Iterable[int]) -> None:
        """Read the tracking rows of ``partitions`` and seek there."""
        wanted = sorted(set(partitions))
        if not wanted:
            return
        try:
            with self.view.engine.begin() as connection:
                offsets = self.store.tracked_offsets(connection, self.topic, wanted)
        except SQLAlchemyError as exc:
            raise ConsumerError(f"{STEP}: cannot read the tracking rows") from exc
        for partition, offset in offsets.items():
            self.consumer.seek(self.topic, partition, offset)
            self.expected[partition] = offset

    def _sync_unsynced(self) -> None:
        assigned = {tp.partition for tp in self.consumer.assignment()}
        self.sync(assigned - self.expected.keys())

    # -- the loop ------------------------------------------------------------------------------

    def run_once(self) -> int:
        """Poll one batch and commit it in one transaction; return how many records it held."""
        limit = 1 if self._failures >= ATTEMPTS else min(self.batch_limit, self.batch_size)
        try:
            polled = self.consumer.poll(limit, self.poll_timeout_ms / 1000)
        except KafkaException as exc:  # fatal: fenced by a newer member with our instance id
            raise ConsumerError(f"{STEP}: the Kafka consumer failed ({describe(exc)}); "
                                "restart the projector") from exc
        # A partition not synced when polled (its tracking row could not be read after a
        # rewind) was read from wherever the consumer was, maybe past records not projected:
        # its records are dropped, and it is sought to its tracking row for the next poll.
        expected = dict(self.expected)
        self._sync_unsynced()
        batch = [(record.partition, record) for record in polled
                 if record.partition in expected
                 and record.offset >= expected[record.partition]]
        if not batch:
            return 0
        started = time.perf_counter()
        try:
            self._commit_batch(batch)
        except TrackingConflict as exc:
            self.counters.fenced += 1
            log.warning("%s", exc)
            self._rewind(all_partitions=True)
            return 0
        except Exception as exc:  # any failure, a bug in the core included: retried, then
            return self._failed(batch, exc)  # dead-lettered; never passed silently
        self._failures = 0
        self.batch_limit = min(self.batch_limit * 2, self.batch_size)
        self.counters.batches += 1
        self.counters.records += len(batch)
        self.counters.batch_seconds += time.perf_counter() - started
        self._measure_lag()
        return len(batch)

    def _measure_lag(self) -> None:
        """Update ``counters.lag`` from the high watermarks the last fetches brought (no I/O)."""
        highwater = getattr(self.consumer, "highwater", None)
        if highwater is None:
            return
        lag: dict[int, int] = {}
        for partition, offset in self.expected.items():
            end = highwater(self.topic, partition)
            if end is not None:
                lag[partition] = max(0, int(end) - offset)
        self.counters.lag = lag

    def _failed(self, batch: list[tuple[int, Any]], exc: BaseException) -> int:
        self.counters.rollbacks += 1
        self._failures += 1
        log.warning("project: batch of %d records rolled back (%s), attempt %d", len(batch),
                    type(exc).__name__, self._failures)
        if len(batch) == 1 and self._failures >= 2 * ATTEMPTS:
            partition, record = batch[0]
            try:
                self._give_up(partition, record, exc)
            except Exception as again:
                log.error("project: dead-lettering a failing record failed (%s)",
                          type(again).__name__)
            else:
                self._failures = 0
                return 1
        self._rewind(all_partitions=False)
        time.sleep(min(2.0, 0.1 * self._failures))
        return 0

    def _rewind(self, *, all_partitions: bool) -> None:
        """Seek back to the tracked offsets (re-reading them first after a conflict)."""
        if all_partitions:
            self.forget(list(self.expected))
            try:
                self._sync_unsynced()
            except HubError as exc:
                log.warning("project: %s", exc)
            return
        for partition, offset in self.expected.items():
            try:
                self.consumer.seek(self.topic, partition, offset)
            except KafkaException as exc:  # re-read the tracking rows before the next batch
                log.warning("project: seeking back failed (%s)", describe(exc))
                self.forget([partition])

    def _commit_batch(self, batch: list[tuple[int, Any]]) -> None:
        dead: list[tuple[int, Any, str, str]] = []
        changes: list[ViewChange] = []
        touched: dict[str, set[str]] = {}
        rebuilt: set[str] = set()
        last: dict[int, int] = {}
        with self.view.engine.begin() as connection:
            states = BatchStates(self.store, connection, self.cache)
            decoded: list[tuple[int, Any, CanonicalRecord, Event | None]] = []
            for partition, record in batch:
                last[partition] = record.offset
                try:
                    canonical = decode_canonical(record.value)
                except HubError as exc:
                    dead.append((partition, record, NOT_CANONICAL, str(exc)))
                    continue
                event = None
                if canonical.kind == "EVENT":
                    try:  # the validator encoded it, strictly checked: no need to again
                        event = decode(canonical.event, self.step.catalog, strict=False)
                    except ContractError as exc:
                        dead.append((partition, record, str(exc.reason.value), str(exc)))
                        continue
                decoded.append((partition, record, canonical, event))
            self._prefetch(states, [event for *_, event in decoded if event is not None])
            for partition, record, canonical, event in decoded:
                result = self.step.apply(states, partition, canonical, event)
                changes.extend(result.changes)
                if result.participant_id is not None and result.event_id is not None:
                    touched.setdefault(result.participant_id, set()).add(result.event_id)
                if result.reused is not None:
                    rebuilt.add(result.reused.participant_id)
                    dead.append((partition, record, EVENT_ID_REUSED,
                                 f"event {result.reused.event_id} reuses an event_id this "
                                 "participant already holds with other content; give every "
                                 "event a fresh UUID"))
            for change in changes:
                touched.setdefault(change.participant_id, set()).add(change.event_id)
            self.store.advance_tracking(connection, self.topic, {
                p: (self.expected[p], offset + 1) for p, offset in last.items()})
            writes = [self._write_of(states, pid, touched.get(pid, set()), pid in rebuilt)
                      for pid in states.after]
            next_seqs = self.store.write_batch(connection, writes, changes)
            self._dead_letter(dead)
        for write in writes:
            pid = write.after.participant_id
            self.cache.put(pid, write.partition, StoredParticipant(write.after, next_seqs[pid]))
        for partition, offset in last.items():
            self.expected[partition] = offset + 1
        self.counters.rows_changed += len(changes)
        for source, count in states.reads.items():
            self.counters.state_reads[source] = self.counters.state_reads.get(source, 0) + count
        self._commit_advisory()
        if self.on_commit is not None:
            self.on_commit(changes)

    def _prefetch(self, states: BatchStates, events: list[Event]) -> None:
        """Read the batch's participants: whole if one of their events will re-project their
        history anyway, else their heads and the events the batch may repeat."""
        whole = {e.participant_id for e in events if self.step.projector.reads_history(e)}
        states.prefetch(pid for pid in dict.fromkeys(e.participant_id for e in events)
                        if pid in whole)
        heads: dict[str, list[str]] = {}
        for event in events:
            if event.participant_id not in whole:
                heads.setdefault(event.participant_id, []).append(event.event_id)
        states.prefetch_heads(heads)

    def _write_of(self, states: BatchStates, pid: str, ids: set[str],
                  rebuilt: bool) -> ParticipantWrite:
        """The participant's write, with the event ids that may have changed.

        Candidates: the events the batch projected for it, the misses its deadlines may have
        derived, and every row the batch changed. A displaced event_id, or any count that the
        candidates do not explain, falls back to comparing every event id (rare).
        """
        partition, after, next_due = states.after[pid]
        before = states.before.get(pid)
        old = before.state if before is not None else None
        candidates = set(ids)
        for state in (old, after):
            if state is not None:
                candidates.update(derived_event_id(MISSED_NAMESPACE, referral)
                                  for referral in state.deadlines)
        old_events = old.events if old is not None else {}
        added = sum(1 for e in candidates if e in after.events and e not in old_events)
        removed = sum(1 for e in candidates if e not in after.events and e in old_events)
        if rebuilt or len(old_events) + added - removed != len(after.events):
            candidates = set(old_events) | set(after.events)
        return ParticipantWrite(before, after, partition, next_due, frozenset(candidates))

    def _give_up(self, partition: int, record: Any, exc: BaseException) -> None:
        """Dead-letter one record that keeps failing and move its tracking row past it."""
        log.error("project: %s[%d]@%d failed %d times (%s); dead-lettered as "
                  "PROCESSING_FAILED", self.topic, partition, record.offset, self._failures,
                  type(exc).__name__)
        with self.view.engine.begin() as connection:
            self.store.advance_tracking(connection, self.topic, {
                partition: (self.expected[partition], record.offset + 1)})
            self._dead_letter([(partition, record, PROCESSING_FAILED, type(exc).__name__)])
        self.expected[partition] = record.offset + 1

    def _dead_letter(self, dead: list[tuple[int, Any, str, str]]) -> None:
        """Send dead letters and wait for Kafka's acknowledgement (before the commit)."""
        for partition, record, reason, message in dead:
            log.warning("project: dead letter %s[%d]@%d: %s", self.topic, partition,
                        record.offset, reason)
            self.counters.dead_letters_by_reason[reason] = (
                self.counters.dead_letters_by_reason.get(reason, 0) + 1)
            self.dlq.send(self.topics.dlq, key=self.topic.encode(), value=record.value,
                          headers=[("lead.step", STEP.encode()),
                                   ("lead.reason", reason.encode()),
                                   ("lead.message", message.encode()),
                                   ("lead.source.topic", self.topic.encode()),
                                   ("lead.source.partition", str(partition).encode()),
                                   ("lead.source.offset", str(record.offset).encode())])
        if dead:
            self.dlq.flush(timeout=30)

    def _commit_advisory(self) -> None:
        """Tell Kafka how far the projector is (lag monitoring only; never read back)."""
        try:
            self.consumer.commit_async(self.topic, dict(self.expected))
        except KafkaException as exc:  # a rebalance under way: the next batch commits again
            log.debug("project: advisory commit skipped (%s)", describe(exc))

    def run(self, stop: threading.Event, on_batch: Callable[[int], None] | None = None) -> None:
        """Project batches until ``stop`` is set; the batch under way completes first.

        Tunes the process's cyclic garbage collector first (:data:`GC_THRESHOLDS`) and, on a
        SQLite view, checkpoints its write-ahead log from a thread of its own meanwhile
        (:mod:`consumers.sqlite_wal`), so no batch's commit waits for a checkpoint.
        """
        gc.set_threshold(*GC_THRESHOLDS)
        self.view.create_schema()
        checkpointer = self.view.wal_checkpointer()
        if checkpointer is not None:
            checkpointer.start()
        try:
            while not stop.is_set():
                count = self.run_once()
                if count and on_batch is not None:
                    on_batch(count)
        finally:
            if checkpointer is not None:
                checkpointer.stop()

    def close(self) -> None:
        """Leave the group and release the clients."""
        try:
            self.consumer.close()
        finally:
            self.dlq.close(timeout=5)
