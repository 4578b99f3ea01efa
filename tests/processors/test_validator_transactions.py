"""The transactional validator on the real broker: exactly once, dead letters, fencing, ticks.

Each test creates its topics (4 partitions) under its own prefix and drives
:class:`~processors.kafka_validator.TransactionalValidator` in-process with ``run_once``.
What the validator committed is read back with ``isolation_level="read_committed"``, as the
projector and the sink read it; ``read_uncommitted`` shows what aborted transactions wrote.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.admin import ConfigResource, ConfigResourceType
from kafka.errors import MessageSizeTooLargeError
from kafka.structs import TopicPartition

from leadhub.topics_admin import create_topics
from processors import kafka_validator
from processors.kafka_validator import TransactionalValidator, ValidatorFenced, utc_now
from processors.validate import validate_inbound
from producers.sdk import PartnerPublisher
from schemas.canonical import decode_canonical
from schemas.catalog import load_catalog
from schemas.codec import decode, encode
from schemas.event import Event
from schemas.kafka_connection import KafkaConnection
from schemas.topics import TopicNames
from tests.factories import SITE, participant_id

pytestmark = pytest.mark.integration

CATALOG = load_catalog()
PARTITIONS = 4
T0 = datetime(2026, 11, 1, 9, 0, tzinfo=UTC)


# -- helpers ---------------------------------------------------------------------------------

def _contact(participant: str) -> Event:
    return Event(event_id=str(uuid.uuid4()), type="ContactLogged", participant_id=participant,
                 occurred_at=T0, payload={"contact_method": "OUTREACH", "successful": True,
                                          "duration_minutes": None})


def _referral(participant: str) -> Event:
    return Event(event_id=str(uuid.uuid4()), type="ReferralMade", participant_id=participant,
                 occurred_at=T0, payload={"door": "ARREST_DIVERSION",
                                          "offense_category": "THEFT_3", "charges_held": True,
                                          "referring_officer": "Officer 7", "area": "North"})


def _publish(kafka: KafkaConnection, topics: TopicNames, partner: str, *events: Event) -> None:
    with PartnerPublisher(partner, kafka, catalog=CATALOG, topics=topics) as publisher:
        publisher.publish_many(events)


def _raw(kafka: KafkaConnection, topic: str, *messages: tuple[bytes, bytes], **config: Any) -> None:
    producer = KafkaProducer(**kafka.client_options(), acks="all", **config)
    try:
        for key, value in messages:
            producer.send(topic, key=key, value=value).get(timeout=30)
    finally:
        producer.close()


def _read(kafka: KafkaConnection, topic: str, *, committed: bool = True) -> list[Any]:
    """Every record of ``topic`` up to its end (the last stable offset when ``committed``)."""
    consumer = KafkaConsumer(
        **kafka.client_options(), enable_auto_commit=False,
        isolation_level="read_committed" if committed else "read_uncommitted")
    try:
        tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        ends = consumer.end_offsets(tps)
        records: list[Any] = []
        deadline = time.monotonic() + 30
        while any(consumer.position(tp) < ends[tp] for tp in tps):
            assert time.monotonic() < deadline, f"could not read {topic} to its end"
            for batch in consumer.poll(timeout_ms=500).values():
                records.extend(batch)
        return records
    finally:
        consumer.close()


def _event_ids(records: list[Any]) -> Counter[str]:
    ids: Counter[str] = Counter()
    for record in records:
        canonical = decode_canonical(record.value)
        if canonical.kind == "EVENT":
            ids[decode(canonical.event, CATALOG).event_id] += 1
    return ids


def _clock_partitions(records: list[Any]) -> set[int]:
    return {r.partition for r in records if decode_canonical(r.value).kind == "CLOCK"}


def _run_until(done: Callable[[], bool], *validators: TransactionalValidator,
               timeout_s: float = 60.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout_s
    while not done():
        assert time.monotonic() < deadline, (
            f"validator did not get there in {timeout_s}s {what}: "
            f"{[(v.counters, v._consumer.assignment()) for v in validators]}")
        for validator in validators:
            validator.run_once()


def _dead_total(validator: TransactionalValidator) -> int:
    return sum(validator.counters.dead_letters_by_reason.values())


@pytest.fixture
def hub_topics(kafka: KafkaConnection, topics: TopicNames) -> TopicNames:
    create_topics(kafka, topics, SITE, PARTITIONS)
    return topics


@pytest.fixture
def make_validator(kafka: KafkaConnection,
                   hub_topics: TopicNames) -> Iterator[Callable[..., TransactionalValidator]]:
    made: list[TransactionalValidator] = []

    def make(**options: Any) -> TransactionalValidator:
        validator = TransactionalValidator(kafka, hub_topics, SITE, CATALOG,
                                           **options)
        made.append(validator)
        return validator

    yield make
    for validator in made:
        validator.close()


# -- tests -----------------------------------------------------------------------------------

def test_valid_events_reach_events_once_and_bad_ones_the_dlq_with_their_reason(
    kafka: KafkaConnection, hub_topics: TopicNames,
    make_validator: Callable[..., TransactionalValidator], caplog: pytest.LogCaptureFixture,
) -> None:
    topics = hub_topics
    police, cm = topics.inbound("evergreen-pd"), topics.inbound("harbor-cm")
    valid = [_referral(participant_id(i)) for i in range(6)]
    repeated = _contact(participant_id(0))
    _publish(kafka, topics, "evergreen-pd", *valid)
    # The same event twice: no longer dropped here (the projector dedupes).
    _publish(kafka, topics, "harbor-cm", repeated, repeated)
    revoke = Event(event_id=str(uuid.uuid4()), type="ConsentRevoked",
                   participant_id=participant_id(1),
                   occurred_at=T0, payload={"consent_id": "c-1"})
    non_canonical = encode(_contact(participant_id(2)), CATALOG)
    assert non_canonical[-3:-2] == b"\x02"  # OUTREACH's enum index; 0x03 is -2 (VIDEO)
    k1, k2, k9 = (participant_id(n).encode() for n in (1, 2, 9))
    bad = {
        (police, k1, b"\xc3\x01not-a-fingerprint-nor-a-body"): "UNKNOWN_FINGERPRINT",
        (cm, k1, b'{"type": "ContactLogged"}'): "NOT_SINGLE_OBJECT",
        (cm, k9, encode(_contact(participant_id(3)), CATALOG)): "KEY_MISMATCH",
        (police, k1, encode(revoke, CATALOG)): "EMITTER_NOT_ALLOWED",
        (cm, k2, non_canonical[:-3] + b"\x03" + non_canonical[-2:]): "MALFORMED_BODY",
    }
    for topic, key, value in bad:
        _raw(kafka, topic, (key, value))

    caplog.set_level(logging.INFO, logger="leadhub.validate")
    validator = make_validator()
    _run_until(lambda: validator.counters.accepted == 8 and _dead_total(validator) == 5,
               validator)

    events = _read(kafka, topics.events)
    assert _event_ids(events) == Counter(
        {**{e.event_id: 1 for e in valid}, repeated.event_id: 2})
    for record in events:
        canonical = decode_canonical(record.value)
        if canonical.kind == "EVENT":
            assert canonical.source_partner == canonical.ingest_topic.rsplit(".", 1)[-1]
    letters = {(dict(r.headers)["lead.source.topic"].decode(), r.key, r.value):
               dict(r.headers)["lead.reason"].decode()
               for r in _read(kafka, topics.dlq)}
    assert {(t, v): reason for (t, _, v), reason in letters.items()} == {
        (t, v): reason for (t, _, v), reason in bad.items()}
    assert validator.counters.dead_letters_by_reason == {
        "UNKNOWN_FINGERPRINT": 1, "NOT_SINGLE_OBJECT": 1, "KEY_MISMATCH": 1,
        "EMITTER_NOT_ALLOWED": 1, "MALFORMED_BODY": 1}
    lines = [r.getMessage() for r in caplog.records if r.name == "leadhub.validate"
             and r.levelno == logging.INFO and "dead letter" in r.getMessage()]
    assert len(lines) == 5
    assert not any(participant_id(1) in line or "Officer" in line for line in lines)


def test_too_large_values_are_dead_lettered_as_a_prefix_and_nothing_around_them_is_lost(
    kafka: KafkaConnection, hub_topics: TopicNames,
    make_validator: Callable[..., TransactionalValidator],
) -> None:
    topics = hub_topics
    police = topics.inbound("evergreen-pd")
    # let this inbound topic hold a 1 MiB value (the broker's default limit is 1 MiB)
    _set_topic_config(kafka, police, "max.message.bytes", str(4 << 20))
    before, after = _referral(participant_id("big")), _referral(participant_id("big"))
    big_300k = b"\xc3\x01" + os.urandom(300 * 1024)
    big_1m = b"\xc3\x01" + os.urandom(1024 * 1024)
    _publish(kafka, topics, "evergreen-pd", before)
    # Not idempotent: kafka-python's idempotent producer turns a refused record into a fatal
    # error, and the first tries may come before the broker applied the topic's new limit.
    big = KafkaProducer(**kafka.client_options(), acks="all", max_request_size=8 << 20,
                        enable_idempotence=False)
    try:
        for value in (big_300k, big_1m):
            for _ in range(40):  # until the broker applies the topic's new limit
                try:
                    big.send(police, key=participant_id("big").encode(),
                             value=value).get(timeout=30)
                    break
                except MessageSizeTooLargeError:
                    time.sleep(0.25)
            else:
                pytest.fail("the broker never took the 1 MiB value")
    finally:
        big.close()
    _publish(kafka, topics, "evergreen-pd", after)

    validator = make_validator()
    _run_until(lambda: validator.counters.accepted == 2 and _dead_total(validator) == 2,
               validator)

    assert _event_ids(_read(kafka, topics.events)) == Counter(
        {before.event_id: 1, after.event_id: 1})
    letters = _read(kafka, topics.dlq)
    assert len(letters) == 2
    for letter, raw in zip(sorted(letters, key=lambda r: len(r.value)), (big_300k, big_1m),
                           strict=True):
        headers = dict(letter.headers)
        assert headers["lead.reason"] == b"TOO_LARGE"
        assert letter.value == raw[:64 * 1024]
        assert headers["lead.size"] == str(len(raw)).encode()
        assert headers["lead.sha256"] == hashlib.sha256(raw).hexdigest().encode()
        assert letter.serialized_value_size < 1 << 20
    assert validator.counters.dead_letters_by_reason == {"TOO_LARGE": 2}


class _FailingOnce:
    """A stand-in for the validator's producer whose ``failing`` method raises on its
    ``nth`` call; everything else goes to the real producer (a C type: its methods cannot be
    patched in place)."""

    def __init__(self, producer: Any, failing: str, nth: int) -> None:
        self._producer, self._failing, self._nth, self.calls = producer, failing, nth, 0

    def __getattr__(self, name: str) -> Any:
        real = getattr(self._producer, name)
        if name != self._failing:
            return real

        def fail_once(*args: Any, **kwargs: Any) -> Any:
            self.calls += 1
            if self.calls == self._nth:
                raise RuntimeError("injected failure")
            return real(*args, **kwargs)

        return fail_once


@pytest.mark.parametrize("failing", ["produce", "send_offsets_to_transaction"])
def test_an_aborted_transaction_is_invisible_and_its_batch_is_redone_once(
    kafka: KafkaConnection, hub_topics: TopicNames,
    make_validator: Callable[..., TransactionalValidator], failing: str,
) -> None:
    topics = hub_topics
    events = [_referral(participant_id(i)) for i in range(12)]
    _publish(kafka, topics, "evergreen-pd", *events)
    validator = make_validator()
    # "produce": the third record of the first batch, after two were handed to the producer;
    # "send_offsets_to_transaction": after every output of the batch was written.
    validator._producer = _FailingOnce(validator._producer, failing,
                                       3 if failing == "produce" else 1)
    _run_until(lambda: validator.counters.accepted == len(events), validator)

    assert validator.counters.aborts == 1
    committed = _event_ids(_read(kafka, topics.events))
    assert committed == Counter({e.event_id: 1 for e in events})
    uncommitted = _event_ids(_read(kafka, topics.events, committed=False))
    if failing == "send_offsets_to_transaction":
        # The aborted attempt wrote its outputs; read_committed readers never see them.
        assert sum(uncommitted.values()) > len(events)
    assert set(uncommitted) == set(committed)


def test_a_record_the_broker_refuses_is_dead_lettered_after_the_attempts(
    kafka: KafkaConnection, hub_topics: TopicNames,
    make_validator: Callable[..., TransactionalValidator], monkeypatch: pytest.MonkeyPatch,
) -> None:
    """librdkafka reports only failed records, to one callback: a record ``lead.events``
    refuses aborts its transaction each time, and after the attempts it goes to ``lead.dlq``
    as PROCESSING_FAILED naming Kafka's error; nothing reaches ``lead.events``."""
    topics = hub_topics
    monkeypatch.setattr(kafka_validator, "BACKOFF_S", 0.01)
    # Below the event's record batch (about 280 bytes), above a transaction marker's (about
    # 80): with a limit that refuses the markers too, no abort can ever complete.
    _set_topic_config(kafka, topics.events, "max.message.bytes", "200")
    event = _referral(participant_id("refused"))
    _publish(kafka, topics, "evergreen-pd", event)

    validator = make_validator(tick_interval_s=3600)
    _run_until(lambda: _dead_total(validator) == 1, validator)

    assert validator.counters.accepted == 0
    assert validator.counters.aborts == kafka_validator.MAX_BATCH_ATTEMPTS + 1
    assert validator.counters.dead_letters_by_reason == {"PROCESSING_FAILED": 1}
    assert _read(kafka, topics.events, committed=False) == []
    [letter] = _read(kafka, topics.dlq)
    headers = dict(letter.headers)
    assert letter.value == encode(event, CATALOG, unsourced=True)  # the bytes it was sent as
    assert headers["lead.reason"] == b"PROCESSING_FAILED"
    assert headers["lead.message"] == b"KafkaException MSG_SIZE_TOO_LARGE"


def _set_topic_config(kafka: KafkaConnection, topic: str, name: str, value: str) -> None:
    admin = KafkaAdminClient(**kafka.client_options())
    try:
        admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, topic,
                                            configs={name: value})])
    finally:
        admin.close()


def test_a_record_that_keeps_failing_is_dead_lettered_as_processing_failed(
    kafka: KafkaConnection, hub_topics: TopicNames,
    make_validator: Callable[..., TransactionalValidator], monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    topics = hub_topics
    monkeypatch.setattr(kafka_validator, "BACKOFF_S", 0.01)
    real = validate_inbound

    def flaky(**message: Any) -> Any:
        if (message["value"] or b"").startswith(b"POISON"):
            raise ValueError("a bug that trips on this record")
        return real(**message)

    monkeypatch.setattr(kafka_validator, "validate_inbound", flaky)
    caplog.set_level(logging.INFO, logger="leadhub.validate")
    events = [_referral(participant_id("x")) for _ in range(3)]
    poison = b"POISON" + os.urandom(16)
    _publish(kafka, topics, "evergreen-pd", *events[:2])
    _raw(kafka, topics.inbound("evergreen-pd"), (participant_id("x").encode(), poison))
    _publish(kafka, topics, "evergreen-pd", events[2])

    validator = make_validator(tick_interval_s=3600)
    _run_until(lambda: validator.counters.accepted == 3 and _dead_total(validator) == 1,
               validator)

    # Five batch attempts, then the record's own transaction; its dead letter commits.
    assert validator.counters.aborts == kafka_validator.MAX_BATCH_ATTEMPTS + 1
    assert validator.counters.dead_letters_by_reason == {"PROCESSING_FAILED": 1}
    assert _event_ids(_read(kafka, topics.events)) == Counter(
        {e.event_id: 1 for e in events})
    [letter] = _read(kafka, topics.dlq)
    headers = dict(letter.headers)
    assert letter.value == poison
    assert headers["lead.reason"] == b"PROCESSING_FAILED"
    assert headers["lead.message"] == b"ValueError"
    assert headers["lead.source.offset"] == b"2"
    logged = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert any("PROCESSING_FAILED" in m and "lead.in.evergreen-pd" in m and "@2" in m
               for m in logged), logged
    assert not any("a bug that trips" in r.getMessage() for r in caplog.records)


def test_a_member_that_lost_its_partitions_cannot_commit(
    kafka: KafkaConnection, hub_topics: TopicNames,
    make_validator: Callable[..., TransactionalValidator], monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """KIP-447: the zombie's transaction carries a stale generation and is aborted."""
    topics = hub_topics
    caplog.set_level(logging.WARNING, logger="leadhub.validate")
    # A member that does not poll for 6 s (the session timeout, which librdkafka wants no
    # longer) leaves the group (its heartbeat thread says so).
    monkeypatch.setattr(kafka_validator, "MAX_POLL_INTERVAL_MS", 6000)
    events = [_referral(participant_id(i)) for i in range(20)]
    _publish(kafka, topics, "evergreen-pd", *events)

    stalled, release = threading.Event(), threading.Event()

    def stalling_clock() -> datetime:
        if not stalled.is_set():  # the zombie's first batch: stall past the poll interval
            stalled.set()
            release.wait(60)
        return utc_now()

    zombie = make_validator(clock=stalling_clock, tick_interval_s=3600)
    outcome: list[Any] = []

    def drive() -> None:  # until the run_once that stalled returns, with what it returned
        try:
            while True:
                handled = zombie.run_once()
                if stalled.is_set():
                    outcome.append(handled)
                    return
        except BaseException as exc:  # surfaced by the assertions below
            outcome.append(exc)

    thread = threading.Thread(target=drive, daemon=True)
    thread.start()
    assert stalled.wait(30), "the zombie never polled a batch"

    successor = make_validator(tick_interval_s=3600)
    _run_until(lambda: successor.counters.accepted == len(events), successor,
               what="(successor takes over once the zombie left)")

    release.set()
    thread.join(30)
    assert not thread.is_alive()
    assert outcome == [0], outcome  # its transaction failed: nothing handled, nothing raised
    assert zombie.counters.aborts == 1 and zombie.counters.accepted == 0
    # The broker refused the offsets of the stale generation (not the local check, which
    # refuses a snapshot without a member).
    assert any(f"moved on without this member ({code}" in r.getMessage()
               for r in caplog.records for code in ("UNKNOWN_MEMBER_ID", "ILLEGAL_GENERATION")
               ), [r.getMessage() for r in caplog.records]

    assert _event_ids(_read(kafka, topics.events)) == Counter(
        {e.event_id: 1 for e in events})
    # The zombie did write its batch, inside the transaction that was aborted.
    assert sum(_event_ids(_read(kafka, topics.events, committed=False)).values()) > (
        len(events))


def test_a_second_instance_with_the_same_client_id_fences_the_first(
    kafka: KafkaConnection, hub_topics: TopicNames,
    make_validator: Callable[..., TransactionalValidator],
) -> None:
    topics = hub_topics
    first = make_validator(client_id="worker-1", tick_interval_s=0.2)
    _run_until(lambda: bool(first._consumer.assignment()) and first.counters.ticks > 0, first,
               what="(first instance ticking)")
    second = make_validator(client_id="worker-1", tick_interval_s=3600)  # fences the first
    events = [_referral(participant_id(i)) for i in range(8)]
    _publish(kafka, topics, "evergreen-pd", *events)
    accepted_before = first.counters.accepted
    with pytest.raises(ValidatorFenced):
        _run_until(lambda: False, first, timeout_s=30, what="(first instance fenced)")
    assert first.counters.accepted == accepted_before
    first.close()
    _run_until(lambda: second.counters.accepted == len(events), second)
    assert _event_ids(_read(kafka, topics.events)) == Counter(
        {e.event_id: 1 for e in events})


def test_clock_ticks_go_to_the_partitions_each_member_holds(
    kafka: KafkaConnection, hub_topics: TopicNames,
    make_validator: Callable[..., TransactionalValidator],
) -> None:
    """Two members, each in its own thread as in two processes, share the partitions."""
    topics = hub_topics
    members = [make_validator(tick_interval_s=0.3) for _ in range(2)]
    ticked: list[list[set[int]]] = [[], []]
    wrong: list[tuple[set[int], set[int]]] = []
    stop = threading.Event()
    errors: list[BaseException] = []

    def watch(index: int, member: TransactionalValidator) -> None:
        real = member._ticks

        def spy(partitions: Any, now: datetime, tally: Any) -> Any:
            held = {tp.partition for tp in member._consumer.assignment()}
            if set(partitions) != held:
                wrong.append((set(partitions), held))
            ticked[index].append(set(partitions))
            return real(partitions, now, tally)

        member._ticks = spy  # type: ignore[method-assign]
        try:
            member.run(stop)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=watch, args=(i, m), daemon=True)
               for i, m in enumerate(members)]
    for thread in threads:
        thread.start()

    def shared() -> bool:  # the latest ticks of both members split the partitions
        if not all(ticked):
            return False
        a, b = ticked[0][-1], ticked[1][-1]
        return bool(a) and bool(b) and not a & b and a | b == set(range(PARTITIONS))

    deadline = time.monotonic() + 40
    while not shared() and time.monotonic() < deadline and not errors:
        time.sleep(0.1)
    stop.set()
    for thread in threads:
        thread.join(20)
    assert not errors, errors
    assert shared(), f"the members never split the partitions: {ticked}"
    assert not wrong, f"ticks went to partitions the member did not hold: {wrong}"
    events = _read(kafka, topics.events)
    assert _clock_partitions(events) == set(range(PARTITIONS))
    for record in events:
        tick = decode_canonical(record.value)
        assert (tick.kind, tick.source_partner, record.key) == ("CLOCK", "hub", None)
