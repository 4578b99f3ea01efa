"""The ``validate`` step on Kafka transactions: consume, decide, produce, commit as one.

A confluent-kafka (librdkafka) loop, decision 0003 (docs/decisions). :mod:`processors.validate`
decides each message; this adapter only moves bytes and keeps the books.

Per polled batch, ONE Kafka transaction: every accepted event to ``lead.events``, every dead
letter to ``lead.dlq``, any CLOCK ticks that are due, and the batch's next input offsets
(``send_offsets_to_transaction`` with the consumer's group metadata); then commit. Outputs and
input progress become visible together or not at all (readers of ``lead.events`` and
``lead.dlq`` use ``isolation_level="read_committed"``), so a crash, a ``kill -9`` or a
rebalance at any point neither drops an inbound record nor doubles an output.

Failures:

* Any error inside a transaction aborts it, every assigned partition is sought back to its
  committed offset (the beginning when none) and the records are consumed and tried again.
  After :data:`MAX_BATCH_ATTEMPTS` failed attempts in a row the next batch goes record by
  record, one transaction each; a record that still fails (validation raised, or Kafka refused
  its output for what it is: too large, invalid) goes to ``lead.dlq`` as ``PROCESSING_FAILED``
  with the exception's class name, in the transaction that commits its offset. No offset is
  ever committed past a record without its output or its dead letter; Kafka's own trouble
  (timeouts, leaders, connections) is retried, never dead-lettered.
* Lost group membership (the group moved to a new generation without this member): KIP-447
  makes the broker refuse the transaction's offsets (``ILLEGAL_GENERATION``,
  ``UNKNOWN_MEMBER_ID``, ``FENCED_INSTANCE_ID``), the transaction aborts, and the next consume
  rejoins the group.
* A fenced producer (another producer took this transactional id, or the coordinator aborted a
  transaction that outlived :data:`TRANSACTION_TIMEOUT_MS`), a consumer fenced by a newer
  static member with the same instance id, or any other fatal librdkafka error raises
  :class:`ValidatorFenced` / :class:`ValidatorError`: the process must exit non-zero and its
  supervisor restart it.

Zombie fencing: the group metadata (group id, generation, member id, instance id) is
snapshotted right after the consume that returned the batch and sent with its offsets; the
group coordinator checks member and generation. A snapshot without a generation (librdkafka
resets it when it learns the member is out, before the application is told) is refused here,
because the broker accepts a transactional offset commit that names no member at all. A new
owner of the partitions reads committed offsets with ``require_stable`` (librdkafka sets it
for read_committed consumers), so it waits for an open transaction of the old owner to end.

Transactional ids: ``f"{group}-{client_id}"`` when ``client_id`` is given, which must then be
unique among running validators and stable across restarts of one worker (a restarted worker
fences its predecessor and aborts its open transaction at once); otherwise
``f"{group}-{host}-{pid}-{random}"``, unique per process. With KIP-447 the group generation, not
the transactional id, fences zombies, so a unique id per process is safe; a killed process's
open transaction is then aborted by the coordinator once it is older than
:data:`TRANSACTION_TIMEOUT_MS` (checked every second by the local launcher and compose, every
10 s by Kafka's default), which bounds how long readers of ``lead.events`` wait behind it. A
given ``client_id`` is also the consumer's ``group.instance.id`` (static membership): a
restarted worker takes its predecessor's partitions without a rebalance.

CLOCK ticks: every ``tick_interval_s``, one CLOCK record to each partition *p* of
``lead.events`` for every partition number *p* this member holds of any inbound topic (the
range assignor gives partition *p* of every inbound topic to the same member). They ride in
the batch's transaction, or in one of their own when the consume returned nothing. Two members
may both tick a partition around a rebalance; duplicate ticks are harmless.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, NamedTuple

from confluent_kafka import KafkaError, KafkaException, Producer, TopicPartition

from processors.group_consumer import GroupConsumer
from processors.kafka_facts import (
    FENCING_CODES,
    PRODUCER_FENCED_CODES,
    ConsumedRecord,
    describe,
    group_member,
    is_membership_lost,
    is_record_fault,
    kafka_error,
    next_offsets,
)
from processors.site import SitePolicy
from processors.validate import (
    PROCESSING_FAILED,
    Accepted,
    DeadLetter,
    dead_letter,
    validate_inbound,
)
from schemas.canonical import CanonicalRecord, encode_canonical
from schemas.catalog import Catalog
from schemas.errors import HubError
from schemas.kafka_connection import KafkaConnection
from schemas.topics import TopicNames

log = logging.getLogger("leadhub.validate")
#: librdkafka's own log lines (broker and topic names, never content).
KAFKA_LOG = logging.getLogger("leadhub.validate.kafka")

Clock = Callable[[], datetime]

#: Records per consume, hence per transaction.
MAX_POLL_RECORDS = 500
#: A member whose loop has not consumed for this long leaves the group (librdkafka's
#: background thread says so), so a stuck validator does not hold its partitions.
MAX_POLL_INTERVAL_MS = 60_000
#: The coordinator aborts (and fences) a transaction older than this. A batch's transaction
#: takes well under a second; the bound is how long a killed process's open transaction can
#: hold back ``read_committed`` readers (plus the broker's abort-check interval: 1 s in the
#: local launcher and compose, 10 s by Kafka's default).
TRANSACTION_TIMEOUT_MS = 5_000
#: Failed transactions in a row before a batch is retried record by record.
MAX_BATCH_ATTEMPTS = 5
#: The longest a consume waits for records (shorter when a tick is due sooner).
POLL_TIMEOUT_MS = 500
#: How long to wait for Kafka to acknowledge a transaction's records, offsets and commit.
FLUSH_TIMEOUT_S = 60.0
#: How long to wait at start for the broker to initialize the transactional producer.
START_TIMEOUT_S = 60.0
#: Pause after the n-th failure in a row: BACKOFF_S * 2**(n-1), at most BACKOFF_MAX_S.
BACKOFF_S = 0.1
BACKOFF_MAX_S = 2.0


def group_id(topics: TopicNames) -> str:
    """The validator's consumer group: ``<prefix>leadhub-validator``."""
    return f"{topics.prefix}leadhub-validator"


def utc_now() -> datetime:
    """The adapter's clock (the pure step never reads one)."""
    return datetime.now(UTC)


class ValidatorError(HubError):
    """The validator cannot go on with this producer; exit non-zero and let it be restarted."""


class ValidatorFenced(ValidatorError):
    """This instance was fenced: it is a zombie, another instance owns its work."""


class _MembershipLost(HubError):
    """Internal, never escapes: the group moved on without this member; rewind and rejoin."""


@dataclass(slots=True)
class ValidatorCounters:
    """What this instance has committed so far (aborted work is not counted, except aborts)."""

    accepted: int = 0
    dead_letters_by_reason: dict[str, int] = field(default_factory=dict)
    batches: int = 0
    aborts: int = 0
    ticks: int = 0


class _Outgoing(NamedTuple):
    """One record to produce in the transaction (a named tuple: one per event)."""

    topic: str
    key: bytes | None
    value: bytes
    headers: tuple[tuple[str, bytes], ...] = ()
    partition: int = -1  # librdkafka's "unassigned": the partitioner picks one by the key


@dataclass(slots=True)
class _Tally:
    """One transaction's outcomes, booked into the counters and logged once it commits."""

    accepted: int = 0
    dead: list[tuple[str, str, int, int]] = field(default_factory=list)
    ticks: int = 0


class TransactionalValidator:
    """The ``validate`` step as one member of the ``<prefix>leadhub-validator`` group.

    Construction connects, initializes the transactional producer (fencing an earlier
    producer with the same transactional id), waits for the inbound topics' partitions and
    subscribes to every site partner's inbound topic. Raises :class:`ValidatorError` if Kafka
    cannot be reached or refuses. Not thread-safe: one thread calls :meth:`run_once` /
    :meth:`run`, then :meth:`close`.
    """

    def __init__(
        self,
        kafka: KafkaConnection,
        topics: TopicNames,
        site: SitePolicy,
        catalog: Catalog,
        *,
        tick_interval_s: float = 5.0,
        clock: Clock = utc_now,
        client_id: str | None = None,
    ) -> None:
        self.topics = topics
        self.site = site
        self.catalog = catalog
        self.tick_interval_s = tick_interval_s
        self.clock = clock
        self.group_id = group_id(topics)
        unique = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.transactional_id = f"{self.group_id}-{client_id or unique}"
        self.client_id = client_id or f"leadhub-validator-{os.getpid()}"
        self.counters = ValidatorCounters()
        self.inbound_topics = [topics.inbound(p) for p in site.partner_ids()]
        self._failures = 0
        self._next_tick = time.monotonic() + tick_interval_s
        self._fatal: KafkaError | None = None
        #: The open transaction's records librdkafka reported as not delivered.
        self._refused: list[KafkaError] = []
        self._producer: Any = None
        self._consumer: Any = None
        common = {"client.id": self.client_id, "logger": KAFKA_LOG, "error_cb": self._on_error}
        try:
            self._producer = Producer({
                **kafka.librdkafka_producer_config(), **common,
                "transactional.id": self.transactional_id,
                "transaction.timeout.ms": TRANSACTION_TIMEOUT_MS,
                "compression.type": "lz4",
                "linger.ms": 5,
                # librdkafka reports failed records only, to one callback: a report per
                # record made and called a Python callback for every success (decision 0012)
                "on_delivery": self._on_delivery,
                "delivery.report.only.error": True,
            })
            self._producer.init_transactions(START_TIMEOUT_S)
            self._consumer = GroupConsumer(
                {**kafka.librdkafka_config(), **common}, self.group_id, self.inbound_topics,
                step="validate", instance_id=client_id, max_poll_interval_ms=MAX_POLL_INTERVAL_MS)
            self._consumer.subscribe()
        except LookupError as exc:
            self.close()
            raise ValidatorError(
                f"inbound topic {exc.args[0]} has no partitions on {kafka.describe()}; "
                "create the topics with `leadhub topics create`") from exc
        except (KafkaException, ValueError, OSError) as exc:
            self.close()
            if self._fenced(exc):
                raise ValidatorFenced(
                    f"transactional id {self.transactional_id} was taken over while starting"
                ) from exc
            raise ValidatorError(
                f"cannot start the validator against Kafka at {kafka.describe()} "
                f"({describe(exc)}); is the broker running? (leadhub services status)"
            ) from exc

    # -- public surface ----------------------------------------------------------------------

    def run_once(self) -> int:
        """Consume once and process what came in one transaction; return the records handled.

        "Handled" means committed with their outputs: 0 when nothing came, when the
        transaction failed (the records will come again) or when membership was lost.
        Raises :class:`ValidatorFenced` or :class:`ValidatorError` when this instance cannot
        go on; every other failure is absorbed here (aborted, rewound, retried later).
        """
        if self._consumer.rewind_needed and not self._rewind():
            return 0
        try:
            records = self._consumer.poll(MAX_POLL_RECORDS, self._poll_timeout_ms() / 1000)
        except KafkaException as exc:  # fatal: fenced by a newer static member, say
            self._raise_if_fatal(exc)
            raise
        group = self._consumer.group_metadata()
        ticks = self._due_tick_partitions()
        if not records and not ticks:
            return 0
        if records and self._failures >= MAX_BATCH_ATTEMPTS:
            return self._one_by_one(records, ticks, group)
        try:
            self._transact(records, ticks, group)
        except _MembershipLost as exc:
            self._lost_membership(exc)
            return 0
        except ValidatorError:
            raise
        except Exception as exc:
            self._failed(exc, f"batch of {len(records)} records")
            return 0
        self._failures = 0
        if records:
            self.counters.batches += 1
        return len(records)

    def run(self, stop: threading.Event) -> None:
        """Call :meth:`run_once` until ``stop`` is set.

        Returns after the batch in progress when ``stop`` is set; raises
        :class:`ValidatorFenced` / :class:`ValidatorError` if the instance cannot go on, and
        the caller should then exit non-zero.
        """
        while not stop.is_set():
            self.run_once()

    def close(self) -> None:
        """Leave the group (:meth:`GroupConsumer.close`) and close both clients; an open
        transaction is aborted by Kafka."""
        if self._consumer is not None:
            self._consumer.close()
        self._consumer = self._producer = None  # librdkafka's producer closes when released

    # -- Kafka callbacks and fatal errors ----------------------------------------------------

    def _on_delivery(self, error: KafkaError | None, _message: Any) -> None:
        """librdkafka's report of a record not delivered (``flush`` calls it): the open
        transaction must abort."""
        if error is not None:
            self._refused.append(error)

    def _on_error(self, error: KafkaError) -> None:
        """librdkafka's error callback: remember a fatal error (the reason of later _FATALs)."""
        if error.fatal():
            self._fatal = error
        KAFKA_LOG.warning("%s: %s", error.name(), error.str())

    # -- transactions ------------------------------------------------------------------------

    def _transact(self, records: Sequence[ConsumedRecord], ticks: Sequence[int],
                  group: Any) -> None:
        """One transaction: the records' outcomes, the ticks, the records' next offsets."""
        self._in_transaction(lambda tally: self._batch_outputs(records, ticks, tally),
                             next_offsets(records), group)

    def _in_transaction(self, outputs: Callable[[_Tally], list[_Outgoing]],
                        offsets: list[TopicPartition], group: Any) -> None:
        """Begin; produce ``outputs``; add ``offsets`` for ``group``; commit. Book on commit.

        Any failure aborts the transaction and is re-raised (as :class:`_MembershipLost`
        for a lost membership, :class:`ValidatorFenced`/:class:`ValidatorError` when the
        instance cannot go on).
        """
        if offsets:
            member = group_member(group)
            if member is None or member[0] < 0 or not member[1]:
                raise _MembershipLost(f"no group generation to commit offsets under {member}")
        producer = self._producer
        try:
            producer.begin_transaction()
        except KafkaException as exc:
            self._raise_if_fatal(exc)
            raise
        tally = _Tally()
        self._refused = []
        try:
            for out in outputs(tally):
                self._produce(out)
            if producer.flush(FLUSH_TIMEOUT_S):
                raise KafkaException(KafkaError(KafkaError._TIMED_OUT, "flush timed out"))
            if self._refused:
                raise KafkaException(self._refused[0])
            if offsets:
                producer.send_offsets_to_transaction(offsets, group, FLUSH_TIMEOUT_S)
            producer.commit_transaction(FLUSH_TIMEOUT_S)
        except BaseException as exc:
            self._abort(exc)
            if is_membership_lost(exc):
                raise _MembershipLost(describe(exc)) from exc
            raise
        self._book(tally)

    def _produce(self, out: _Outgoing) -> None:
        """Hand one output to the producer, waiting while its local queue is full."""
        while True:
            try:
                self._producer.produce(out.topic, value=out.value, key=out.key,
                                       partition=out.partition,
                                       headers=list(out.headers) or None)
                return
            except BufferError:
                self._producer.poll(0.05)

    def _abort(self, cause: BaseException) -> None:
        """Abort the open transaction; raise if the instance cannot go on."""
        self.counters.aborts += 1
        self._raise_if_fatal(cause)
        try:
            self._producer.abort_transaction(FLUSH_TIMEOUT_S)
        except KafkaException as exc:
            self._raise_if_fatal(exc)
            raise ValidatorError(
                f"aborting a transaction failed ({describe(exc)}); restart the validator"
            ) from exc

    def _fenced(self, cause: BaseException) -> bool:
        """True when ``cause`` (or the fatal error behind it) says another instance took over."""
        errors = [kafka_error(cause), self._fatal]
        return any(e is not None and e.code() in FENCING_CODES for e in errors)

    def _raise_if_fatal(self, cause: BaseException) -> None:
        """Raise ValidatorFenced/ValidatorError if ``cause`` left a client unusable."""
        error = kafka_error(cause)
        if error is None or not (error.fatal() or error.code() == KafkaError._FATAL
                                 or error.code() in PRODUCER_FENCED_CODES):
            return
        if self._fenced(cause):
            raise ValidatorFenced(
                f"validator {self.transactional_id} was fenced: another instance took over "
                "(or a transaction outlived the transaction timeout); this process is a "
                "zombie and must exit"
            ) from cause
        raise ValidatorError(
            f"a Kafka client of the validator failed fatally ({describe(cause)}); "
            "restart the validator"
        ) from cause

    def _book(self, tally: _Tally) -> None:
        """Count a committed transaction's outcomes and log its dead letters."""
        self.counters.accepted += tally.accepted
        self.counters.ticks += tally.ticks
        by_reason = self.counters.dead_letters_by_reason
        for reason, topic, partition, offset in tally.dead:
            by_reason[reason] = by_reason.get(reason, 0) + 1
            log.info("validate: dead letter %s from %s[%d]@%d", reason, topic, partition, offset)
        if tally.ticks:
            self._next_tick = time.monotonic() + self.tick_interval_s

    # -- outputs -----------------------------------------------------------------------------

    def _batch_outputs(self, records: Sequence[ConsumedRecord], ticks: Sequence[int],
                       tally: _Tally) -> list[_Outgoing]:
        """Decide every record (one hub instant for the batch) and add the due ticks."""
        now = self.clock()
        outputs = [self._outcome(record, now, tally) for record in records]
        outputs.extend(self._ticks(ticks, now, tally))
        return outputs

    def _outcome(self, record: ConsumedRecord, now: datetime, tally: _Tally) -> _Outgoing:
        outcome = validate_inbound(
            topic=record.topic, partition=record.partition, offset=record.offset,
            key=record.key, value=record.value, received_at=now,
            topics=self.topics, site=self.site, catalog=self.catalog,
        )
        if isinstance(outcome, Accepted):
            tally.accepted += 1
            return _Outgoing(self.topics.events, outcome.key, outcome.value)
        return self._dead(outcome, record, tally)

    def _single(self, record: ConsumedRecord) -> Callable[[_Tally], list[_Outgoing]]:
        """The outputs of a one-record transaction: the record's outcome."""
        return lambda tally: [self._outcome(record, self.clock(), tally)]

    def _dead(self, letter: DeadLetter, record: ConsumedRecord, tally: _Tally) -> _Outgoing:
        tally.dead.append((letter.reason, record.topic, record.partition, record.offset))
        return _Outgoing(self.topics.dlq, letter.key, letter.value, letter.headers)

    def _ticks(self, partitions: Iterable[int], now: datetime, tally: _Tally) -> list[_Outgoing]:
        tick = encode_canonical(CanonicalRecord(
            kind="CLOCK", received_at=now, source_partner="hub", ingest_topic="",
            ingest_partition=-1, ingest_offset=-1, event=b"",
        ))
        outputs = [_Outgoing(self.topics.events, None, tick, partition=p) for p in partitions]
        tally.ticks += len(outputs)
        return outputs

    def _due_tick_partitions(self) -> list[int]:
        """The partition numbers to tick now: those held of any inbound topic, if a tick is due."""
        if time.monotonic() < self._next_tick:
            return []
        return sorted({tp.partition for tp in self._consumer.assignment()})

    # -- failure handling --------------------------------------------------------------------

    def _one_by_one(self, records: Sequence[ConsumedRecord], ticks: Sequence[int],
                    group: Any) -> int:
        """Process ``records`` one transaction each; dead-letter what still fails.

        Stops (rewinding to the last committed record) at a lost membership or when Kafka
        itself fails, so that nothing is dead-lettered for a broker's trouble.
        """
        log.warning("validate: %d failed attempts in a row; going record by record over %d "
                    "records", self._failures, len(records))
        handled = 0
        for record in records:
            offsets = next_offsets([record])
            try:
                self._in_transaction(self._single(record), offsets, group)
            except _MembershipLost as exc:
                self._lost_membership(exc)
                return handled
            except ValidatorError:
                raise
            except Exception as exc:
                if not is_record_fault(exc):
                    self._failed(exc, f"record {record.where()}")
                    return handled
                if not self._dead_letter_failure(record, exc, offsets, group):
                    return handled
            handled += 1
        self._failures = 0
        self.counters.batches += 1
        if ticks:
            try:
                self._in_transaction(lambda tally: self._ticks(ticks, self.clock(), tally),
                                     [], group)
            except ValidatorError:
                raise
            except Exception as exc:  # the ticks are due again on the next loop
                log.warning("validate: tick transaction failed (%s)", describe(exc))
        return handled

    def _dead_letter_failure(self, record: ConsumedRecord, failure: BaseException,
                             offsets: list[TopicPartition], group: Any) -> bool:
        """Commit a PROCESSING_FAILED dead letter with the record's offset; False if not."""
        name = type(failure).__name__
        error = kafka_error(failure)
        if error is not None:
            name = f"{name} {error.name()}"
        log.error("validate: %s for %s (%s); dead-lettering it", PROCESSING_FAILED,
                  record.where(), name)

        def letter(tally: _Tally) -> list[_Outgoing]:
            dead = dead_letter(topic=record.topic, partition=record.partition,
                               offset=record.offset, value=record.value,
                               received_at=self.clock(), reason=PROCESSING_FAILED,
                               message=name)
            return [self._dead(dead, record, tally)]

        try:
            self._in_transaction(letter, offsets, group)
        except _MembershipLost as exc:
            self._lost_membership(exc)
            return False
        except ValidatorError:
            raise
        except Exception as exc:
            self._failed(exc, f"dead letter for {record.where()}")
            return False
        return True

    def _failed(self, exc: BaseException, what: str) -> None:
        """After an aborted transaction: rewind, count the failure, pause a little."""
        self._failures += 1
        log.warning("validate: transaction for %s aborted (%s); attempt %d, retrying from the "
                    "committed offsets", what, describe(exc), self._failures)
        self._consumer.rewind_needed = True
        self._rewind()
        self._back_off()

    def _lost_membership(self, exc: BaseException) -> None:
        # A _MembershipLost names only Kafka error codes and group metadata.
        log.warning("validate: the group moved on without this member (%s); transaction "
                    "aborted, rejoining", exc)
        self._consumer.rewind_needed = True
        self._rewind()

    def _rewind(self) -> bool:
        """Seek back to the committed offsets; False (the rewind stays pending, so nothing is
        consumed until it is done) if they cannot be read or sought."""
        try:
            self._consumer.rewind()
        except KafkaException as exc:
            self._raise_if_fatal(exc)
            log.warning("validate: rewinding to the committed offsets failed (%s); will "
                        "retry", describe(exc))
            self._back_off()
            return False
        return True

    def _back_off(self) -> None:
        attempt = max(self._failures, 1)
        time.sleep(min(BACKOFF_S * 2 ** (attempt - 1), BACKOFF_MAX_S))

    def _poll_timeout_ms(self) -> int:
        if not self._consumer.assignment():
            return POLL_TIMEOUT_MS
        until_tick = self._next_tick - time.monotonic()
        return max(0, min(POLL_TIMEOUT_MS, int(until_tick * 1000)))
