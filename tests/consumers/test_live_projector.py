"""The live projector in-process: a fake consumer, a real database, crashes at every step.

The projector's one transaction per batch (rows, participant state, timers, tracking row) is
what makes it exactly-once. These tests crash it between each step of a batch's commit and at
random batches, start a fresh instance (empty cache, as after a kill -9), and require the view
to equal the auditor's replay of the same log: nothing lost, nothing doubled. They also check
the tracking-row fence, the timer index, event_id reuse and poison records.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from confluent_kafka import TopicPartition
from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError

from consumers.audit.digest import digest_rows
from consumers.audit.replay import Replayer, ViewWriter, open_fresh_store, ordered_rows
from consumers.batch_states import HEAD_WEIGHT, READ_BACK_CHUNK, BatchStates, StateCache
from consumers.live_projector import CACHE_WEIGHT, FIRST_BATCH, LiveProjector
from consumers.projection_store import ProjectionStore, TrackingConflict, participant_events
from consumers.store import ViewStore
from consumers.view_writer import SharedRowsWriter
from processors.projector import Projector
from producers.simulator import simulate
from schemas.canonical import CanonicalRecord, encode_canonical
from schemas.catalog import load_catalog
from schemas.codec import encode
from schemas.event import Event
from schemas.kafka_connection import KafkaConnection
from schemas.topics import TopicNames
from tests.factories import SITE, listed_pairs, participant_id

CATALOG = load_catalog()
START = datetime(2026, 1, 5, tzinfo=UTC)
TOPICS = TopicNames("fake.")
PARTITIONS = 3


class SimulatedCrash(BaseException):
    """A kill -9 stand-in: not an error the projector handles; it unwinds everything."""


@dataclass(frozen=True)
class FakeRecord:
    partition: int
    offset: int
    key: bytes | None
    value: bytes


class FakeLog:
    """``lead.events`` as lists per partition, with a committed-position per consumer group."""

    def __init__(self) -> None:
        self.partitions: dict[int, list[FakeRecord]] = {p: [] for p in range(PARTITIONS)}

    def append(self, partition: int, key: bytes | None, value: bytes) -> None:
        records = self.partitions[partition]
        records.append(FakeRecord(partition, len(records), key, value))


class FakeConsumer:
    """The GroupConsumer methods the projector uses, over a :class:`FakeLog`; owns every
    partition."""

    def __init__(self, log: FakeLog, owned: list[int] | None = None) -> None:
        self.log = log
        self.owned = owned if owned is not None else list(log.partitions)
        self.position: dict[int, int] = {}
        self.listener: Any = None
        self.committed: dict[int, int] = {}

    def subscribe(self, listener: Any) -> None:
        self.listener = listener

    def assignment(self) -> list[TopicPartition]:
        return [TopicPartition(TOPICS.events, p) for p in self.owned]

    def poll(self, max_records: int, timeout_s: float) -> list[FakeRecord]:
        if self.listener is not None and not self.position:
            self.listener.assigned([(TOPICS.events, p) for p in self.owned])
        out: list[FakeRecord] = []
        for p in self.owned:
            at = self.position.get(p, 0)
            take = self.log.partitions[p][at:at + max_records - len(out)]
            out.extend(take)
            self.position[p] = at + len(take)
            if len(out) >= max_records:
                break
        return out

    def seek(self, topic: str, partition: int, offset: int) -> None:
        self.position[partition] = offset

    def commit_async(self, topic: str, offsets: dict[int, int]) -> None:
        self.committed.update(offsets)

    def close(self) -> None:
        pass


class FakeProducer:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes | None, bytes, list[tuple[str, bytes]]]] = []

    def send(self, topic: str, key: bytes | None, value: bytes,
             headers: list[tuple[str, bytes]]) -> None:
        self.sent.append((topic, key, value, headers))

    def flush(self, timeout: float | None = None) -> None:
        pass

    def close(self, timeout: float | None = None) -> None:
        pass

    def reasons(self) -> list[str]:
        return [dict(h)["lead.reason"].decode() for _, _, _, h in self.sent]


def _partition(participant_id: str) -> int:
    return sum(participant_id.encode()) % PARTITIONS


def _log(events: list[Event], tick_every: int = 25) -> FakeLog:
    """Events in receive order, each partition ticked by a CLOCK every ``tick_every`` events."""
    log = FakeLog()
    for n, event in enumerate(events):
        received = event.occurred_at + timedelta(minutes=5)
        record = CanonicalRecord("EVENT", received, event.source_partner or "", "in", 0, n,
                                 encode(event, CATALOG))
        log.append(_partition(event.participant_id), event.participant_id.encode(),
                   encode_canonical(record))
        if n % tick_every == tick_every - 1:
            _tick(log, received)
    _tick(log, events[-1].occurred_at + timedelta(days=45))
    return log


def _tick(log: FakeLog, at: datetime) -> None:
    clock = encode_canonical(CanonicalRecord("CLOCK", at, "hub", "", -1, -1, b""))
    for p in range(PARTITIONS):
        log.append(p, None, clock)


def _history(participants: int = 25, days: int = 200) -> list[Event]:
    return sorted(simulate(SITE, CATALOG, participants, days, 5, START),
                  key=lambda e: (e.occurred_at, e.event_id))


def _replayed_digest(log: FakeLog, tmp_path: Path) -> Any:
    """The auditor's replay of the whole log."""
    store = open_fresh_store(str(tmp_path / f"replay-{uuid.uuid4().hex[:6]}.sqlite"))
    writer = ViewWriter(store)
    replayer = Replayer(Projector(SITE, CATALOG), CATALOG)
    for p, records in log.partitions.items():
        for record in records:
            from schemas.canonical import decode_canonical

            writer(p, START, replayer.apply(p, record.offset, record.key,
                                            decode_canonical(record.value)))
    writer.flush()
    assert listed_pairs(store.engine)
    digest = digest_rows(ordered_rows(store))
    store.close()
    return digest


def _projector(store: ViewStore, log: FakeLog, producer: FakeProducer | None = None,
               owned: list[int] | None = None, batch_size: int = 40,
               cache_weight: int = CACHE_WEIGHT) -> LiveProjector:
    return LiveProjector(KafkaConnection("unused:0"), TOPICS, store, Projector(SITE, CATALOG),
                         CATALOG, batch_size=batch_size, consumer=FakeConsumer(log, owned),
                         dlq=producer or FakeProducer(), cache_weight=cache_weight)


def _drain(projector: LiveProjector, log: FakeLog) -> None:
    total = sum(len(r) for r in log.partitions.values())
    for _ in range(total + 50):
        if projector.run_once() == 0 and all(
                projector.expected.get(p) == len(r) for p, r in log.partitions.items()):
            return
    raise AssertionError("the projector did not reach the end of the log")


@pytest.fixture
def view(store: ViewStore) -> ViewStore:
    """The view database the projector writes (conftest's ``store``)."""
    return store


def test_the_live_view_equals_the_replay(view: ViewStore, tmp_path: Path) -> None:
    log = _log(_history())
    _drain(_projector(view, log), log)
    assert digest_rows(ordered_rows(view)) == _replayed_digest(log, tmp_path)
    assert listed_pairs(view.engine)
    assert view.committed_offsets(TOPICS.events) == {
        p: len(r) for p, r in log.partitions.items()}


def test_a_batch_does_not_list_again_the_pairs_its_states_held_rows_of(
        view: ViewStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """With every state in the cache, each (recipient, participant) pair is inserted once: the
    pairs of the rows a state held before its batch are listed already (decision 0009)."""
    inserted: list[tuple[str, str]] = []
    add_pairs = view.writer._add_pairs
    execute = add_pairs.execute

    def counting(connection: Any, rows: Any) -> None:
        inserted.extend(rows)
        execute(connection, rows)

    monkeypatch.setattr(add_pairs, "execute", counting)
    log = _log(_history())
    _drain(_projector(view, log), log)
    assert sorted(inserted) == sorted(listed_pairs(view.engine))


def test_a_state_read_back_equals_the_state_built_live(view: ViewStore) -> None:
    """What the store rebuilds from SQL (a fresh instance's read back) is the state the projector
    held in its cache, and the rows share one object per distinct shape, as built live."""
    events = _history(participants=12, days=150)
    log = _log(events)
    projector = _projector(view, log)
    _drain(projector, log)
    pids = sorted({event.participant_id for event in events})
    with view.engine.connect() as connection:
        loaded = ProjectionStore(view).load(connection, pids)
    assert sorted(loaded) == pids
    for pid in pids:
        held = projector.cache.get(pid)
        assert held is not None
        assert loaded[pid].state == held.state
        assert loaded[pid].next_seq == held.next_seq
    shapes = [shape for stored in loaded.values() for shapes_of in stored.state.rows.values()
              for shape in shapes_of.values()]
    assert len(shapes) > len(set(shapes)) > 1
    assert len({id(shape) for shape in shapes}) == len(set(shapes))


def test_states_read_back_by_their_heads_project_as_whole_ones(
        view: ViewStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A cache far too small for the site: most events find their participant's state in SQL
    and read back only its head; a consent change or a deadline reads the rest. The view is
    still the replay's."""
    reads = {"load_heads": 0, "load": 0}

    def counted(name: str) -> Callable[..., Any]:
        original = getattr(ProjectionStore, name)

        def wrapped(*args: Any, **kwargs: Any) -> Any:
            reads[name] += 1
            return original(*args, **kwargs)
        return wrapped

    for name in reads:
        monkeypatch.setattr(ProjectionStore, name, counted(name))
    events = _history(participants=20, days=200)
    ordinary = next(e for e in events[len(events) // 2:] if e.type == "ContactLogged")
    # later: redeliveries (absorbed) and one event_id reused with other content (dead-lettered),
    # both found only through the lookups a head-only read does
    reused = replace(ordinary, occurred_at=ordinary.occurred_at - timedelta(minutes=1))
    log = _log([*events, *events[::7], reused])
    producer = FakeProducer()
    projector = _projector(view, log, producer, batch_size=15, cache_weight=60)
    _drain(projector, log)
    assert reads["load_heads"] > 20 and reads["load"] > 10
    assert projector.counters.state_reads["head"] > projector.counters.state_reads["whole"] > 0
    assert producer.reasons() == ["EVENT_ID_REUSED"]
    assert digest_rows(ordered_rows(view)) == _replayed_digest(log, tmp_path)


CRASH_POINTS = ["load", "load_heads", "due", "advance_tracking", "write_batch", "write_rows",
                "commit"]


@pytest.mark.parametrize("point", CRASH_POINTS)
def test_a_crash_at_any_step_of_a_batch_loses_and_doubles_nothing(
        point: str, view: ViewStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Crash at ``point`` at every third call (six times); each time a fresh instance takes
    over. ``load_heads``: a state read back by its head; ``load``: whole."""
    log = _log(_history(participants=15, days=150))
    calls = {"n": 0, "crashes": 0}

    def crash_sometimes(original: Callable[..., Any]) -> Callable[..., Any]:
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            calls["n"] += 1
            if calls["n"] % 3 == 0 and calls["crashes"] < 6:
                calls["crashes"] += 1
                if point == "commit":
                    original(*args, **kwargs)
                    raise SimulatedCrash(point)  # after the writes, before COMMIT
                raise SimulatedCrash(point)
            return original(*args, **kwargs)
        return wrapped

    targets = {"load": (ProjectionStore, "load"), "due": (ProjectionStore, "due"),
               "load_heads": (ProjectionStore, "load_heads"),
               "advance_tracking": (ProjectionStore, "advance_tracking"),
               "write_batch": (ProjectionStore, "write_batch"),
               "write_rows": (SharedRowsWriter, "write"),
               "commit": (ProjectionStore, "write_batch")}
    owner, name = targets[point]
    monkeypatch.setattr(owner, name, crash_sometimes(getattr(owner, name)))
    crashes = 0
    total = sum(len(r) for r in log.partitions.values())
    for _ in range(total * 3):
        # a fresh process: empty cache, tracking rows only; a cache too small for the site, so
        # most states are read back from SQL, by their heads or whole
        projector = _projector(view, log, cache_weight=100)
        try:
            _drain(projector, log)
            break
        except SimulatedCrash:
            crashes += 1
    else:
        raise AssertionError("never finished")
    monkeypatch.undo()
    assert crashes >= 2, "the crash point was never reached"
    assert digest_rows(ordered_rows(view)) == _replayed_digest(log, tmp_path)
    assert listed_pairs(view.engine)
    with view.engine.connect() as connection:
        held = connection.execute(select(func.count()).select_from(participant_events)).scalar()
    assert held == len({(e.participant_id, e.event_id) for e in _history(15, 150)}) + _derived(
        view)


def _derived(view: ViewStore) -> int:
    """How many hub-derived events the projector holds (missed deadlines)."""
    with view.engine.connect() as connection:
        return int(connection.execute(
            select(func.count()).select_from(participant_events).where(
                participant_events.c.event_json.like('%"source_partner":"hub"%'))).scalar() or 0)


def test_random_crashes_and_two_instances_sharing_partitions(view: ViewStore,
                                                             tmp_path: Path) -> None:
    """Two instances split the partitions, then swap them, with random crashes in between."""
    log = _log(_history(participants=20, days=120))
    rng = random.Random(7)
    for round_ in range(60):
        owned = [p for p in range(PARTITIONS) if (p + round_) % 2 == 0] or [0]
        projector = _projector(view, log, owned=owned, batch_size=rng.randint(1, 30))
        for _ in range(rng.randint(1, 6)):
            projector.run_once()
    _drain(_projector(view, log), log)
    assert digest_rows(ordered_rows(view)) == _replayed_digest(log, tmp_path)
    assert listed_pairs(view.engine)


def test_a_zombie_cannot_commit_over_the_new_owner(view: ViewStore) -> None:
    log = _log(_history(participants=5, days=30))
    zombie = _projector(view, log, batch_size=5)
    zombie.run_once()
    owner = _projector(view, log, batch_size=5)
    owner.run_once()
    assert zombie.counters.fenced == 0
    zombie.run_once()  # its tracking rows are stale: fenced, nothing written
    assert zombie.counters.fenced == 1
    store = ProjectionStore(view)
    with pytest.raises(TrackingConflict), view.engine.begin() as connection:
        store.advance_tracking(connection, TOPICS.events, {0: (0, 1)})


def test_records_polled_before_their_partition_is_resynced_are_read_again(
        view: ViewStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A fenced batch rewinds every partition to its tracking row; when reading the tracking
    rows fails then, the next poll still reads from where the consumer was, past the fenced
    batch. Those records are dropped and read again from the tracking row: projected, they
    would have moved the tracking row past the fenced batch's records, never to be read."""
    log = _log(_history(participants=15, days=150))
    advance, tracked = ProjectionStore.advance_tracking, ProjectionStore.tracked_offsets
    calls = {"advance": 0, "fail_reads": 0}

    def fenced_once(self: ProjectionStore, *args: Any) -> None:
        calls["advance"] += 1
        if calls["advance"] == 3:
            calls["fail_reads"] = 1
            raise TrackingConflict("another writer moved the tracking row")
        advance(self, *args)

    def failing_once(self: ProjectionStore, *args: Any) -> dict[int, int]:
        if calls["fail_reads"]:
            calls["fail_reads"] -= 1
            raise SQLAlchemyError("the database went away")
        return tracked(self, *args)

    monkeypatch.setattr(ProjectionStore, "advance_tracking", fenced_once)
    monkeypatch.setattr(ProjectionStore, "tracked_offsets", failing_once)
    projector = _projector(view, log)
    _drain(projector, log)
    monkeypatch.undo()
    assert projector.counters.fenced == 1
    assert digest_rows(ordered_rows(view)) == _replayed_digest(log, tmp_path)


def test_an_event_id_reused_with_other_content_is_dead_lettered(view: ViewStore) -> None:
    person = participant_id("reuse")
    first = Event(str(uuid.uuid4()), "ContactLogged", person, START,
                  {"contact_method": "OUTREACH", "successful": True}, "harbor-cm")
    again = replace(first)  # a redelivery: same content, no dead letter
    other = replace(first, payload={"contact_method": "PHONE", "successful": False})
    log = FakeLog()
    for n, event in enumerate((first, again, other)):
        record = CanonicalRecord("EVENT", START + timedelta(minutes=n), "harbor-cm", "in", 0, n,
                                 encode(event, CATALOG))
        log.append(_partition(event.participant_id), event.participant_id.encode(),
                   encode_canonical(record))
    producer = FakeProducer()
    _drain(_projector(view, log, producer), log)
    assert producer.reasons() == ["EVENT_ID_REUSED"]
    assert len(view.rows_for("harbor-cm", person)) == 1


def test_a_state_cached_by_its_head_still_finds_the_events_it_does_not_hold(
        view: ViewStore, tmp_path: Path) -> None:
    """A fresh instance reads a participant back by its head and caches it so; a later batch
    that repeats an older event_id with other content must still find the event it reuses."""
    person = participant_id("head")
    contact = Event(str(uuid.uuid4()), "ContactLogged", person, START,
                    {"contact_method": "OUTREACH", "successful": True}, "harbor-cm")
    later = replace(contact, event_id=str(uuid.uuid4()), occurred_at=START + timedelta(days=1))
    newer = replace(contact, event_id=str(uuid.uuid4()), occurred_at=START + timedelta(days=2))
    reused = replace(contact, occurred_at=START - timedelta(hours=1),
                     payload={"contact_method": "PHONE", "successful": False})
    log = FakeLog()

    def append(*events: Event) -> None:
        for event in events:
            offset = len(log.partitions[_partition(person)])
            record = CanonicalRecord("EVENT", START + timedelta(days=3, minutes=offset),
                                     "harbor-cm", "in", 0, offset, encode(event, CATALOG))
            log.append(_partition(person), person.encode(), encode_canonical(record))

    append(contact, later)
    _drain(_projector(view, log), log)
    append(newer, reused)
    producer = FakeProducer()
    fresh = _projector(view, log, producer, batch_size=1)
    _drain(fresh, log)
    assert producer.reasons() == ["EVENT_ID_REUSED"]
    assert digest_rows(ordered_rows(view)) == _replayed_digest(log, tmp_path)


def test_a_record_that_is_not_canonical_is_dead_lettered_and_passed(view: ViewStore) -> None:
    log = _log(_history(participants=3, days=20))
    log.partitions[1].insert(0, FakeRecord(1, 0, b"x", b"not a canonical record"))
    log.partitions[1] = [FakeRecord(1, n, r.key, r.value) for n, r in enumerate(log.partitions[1])]
    producer = FakeProducer()
    _drain(_projector(view, log, producer), log)
    assert producer.reasons() == ["NOT_CANONICAL"]
    assert view.committed_offsets(TOPICS.events)[1] == len(log.partitions[1])


def test_a_record_that_keeps_failing_goes_to_the_dlq_never_silently(
        view: ViewStore, monkeypatch: pytest.MonkeyPatch) -> None:
    log = _log(_history(participants=4, days=30))
    poison_offset = 3
    original = Projector.project

    def project(self: Projector, state: Any, event: Event, now: datetime) -> Any:
        if event.event_id == _event_at(log, 0, poison_offset):
            raise RuntimeError("a bug in the core")
        return original(self, state, event, now)

    monkeypatch.setattr(Projector, "project", project)
    monkeypatch.setattr("consumers.live_projector.time.sleep", lambda s: None)
    producer = FakeProducer()
    projector = _projector(view, log, producer)
    _drain(projector, log)
    assert producer.reasons() == ["PROCESSING_FAILED"]
    assert dict(producer.sent[0][3])["lead.source.offset"] == str(poison_offset).encode()
    assert view.committed_offsets(TOPICS.events)[0] == len(log.partitions[0])


def _event_at(log: FakeLog, partition: int, offset: int) -> str | None:
    from schemas.canonical import decode_canonical
    from schemas.codec import decode

    record = decode_canonical(log.partitions[partition][offset].value)
    return decode(record.event, CATALOG).event_id if record.kind == "EVENT" else None


def test_batches_start_small_after_an_assignment_and_then_double(view: ViewStore) -> None:
    log = _log(_history(participants=25, days=200))
    assert sum(len(r) for r in log.partitions.values()) > 800
    projector = _projector(view, log, batch_size=4 * FIRST_BATCH)
    sizes = [projector.run_once() for _ in range(5)]
    assert sizes == [FIRST_BATCH, 2 * FIRST_BATCH, 4 * FIRST_BATCH, 4 * FIRST_BATCH,
                     4 * FIRST_BATCH]
    projector.consumer.listener.assigned([(TOPICS.events, 0)])  # a rebalance
    assert projector.run_once() <= FIRST_BATCH


def _stored(events: int = 9, rows: int = 10) -> Any:
    state = SimpleNamespace(events=dict.fromkeys(range(events)),
                            rows={"police": dict.fromkeys(range(rows))}, complete=True)
    return SimpleNamespace(state=state)


#: What ``_stored()`` weighs: its head, 9 events and 10 rows.
UNIT = HEAD_WEIGHT + 9 + 10


def test_the_cache_makes_room_for_what_a_batch_reads_back() -> None:
    cache = StateCache(capacity=5 * UNIT - 1)
    for n in range(4):
        cache.put(f"p{n}", 0, _stored())
    assert cache.weight == 4 * UNIT and len(cache) == 4
    cache.get("p0")  # p1 is now the least recently used
    cache.make_room(2 * UNIT)
    assert cache.weight + 2 * UNIT <= cache.capacity
    assert cache.get("p1") is None and cache.get("p2") is None
    assert cache.get("p0") is not None and cache.get("p3") is not None


def test_a_batch_reads_states_back_in_chunks_and_makes_room_for_each() -> None:
    """What a batch reads back never sits beside a full cache: at most one chunk of it does."""
    capacity = 500 * UNIT
    cache = StateCache(capacity)
    for n in range(500):
        cache.put(f"cached{n}", 0, _stored())  # the cache is full
    assert cache.weight == capacity
    held_when_read: list[int] = []

    class CountingStore:
        def load(self, _connection: Any, ids: list[str]) -> dict[str, Any]:
            read_back_so_far = UNIT * sum(pid.startswith("new") for pid in states.before)
            held_when_read.append(cache.weight + read_back_so_far)
            assert len(ids) <= READ_BACK_CHUNK
            return {pid: _stored() for pid in ids}

    states = BatchStates(CountingStore(), None, cache)  # type: ignore[arg-type]
    wanted = [f"new{n}" for n in range(2 * READ_BACK_CHUNK + 7)]
    states.prefetch(wanted[:-30])
    states.prefetch(wanted[-30:])  # later in the batch: the participants a CLOCK found due
    assert len(held_when_read) == 3  # chunks of 100 and 77, then 30
    assert max(held_when_read) <= capacity
    assert cache.weight + UNIT * len(wanted) <= capacity
    assert all(states.state(pid) is not None for pid in wanted)
