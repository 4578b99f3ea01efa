"""The bulk SQLite replay: the same file as the change-by-change replay, and nothing half-done.

Pure part: rows written once from the final participant states equal, column for column, the
rows the change-by-change writer leaves, with the same schema. Integration part (real Kafka):
the partition-parallel replay gives the same digest as a one-process replay, also with
``until`` and when a participant's records sit in two partitions.
"""

from __future__ import annotations

import sqlite3
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from kafka import KafkaProducer

from consumers.audit.digest import digest_rows
from consumers.audit.errors import ReplayError, SetupError
from consumers.audit.kafka_log import TopicReader
from consumers.audit.rebuild import CoreSpec, rebuild_view_file, split_partitions
from consumers.audit.replay import (
    LogReplay,
    Replayer,
    ViewWriter,
    open_fresh_store,
    ordered_rows,
)
from consumers.audit.view_file import ViewFileWriter, digest_view_file, temporary_path
from consumers.store import PROJECTION_VERSION, ViewStore
from leadhub.topics_admin import create_topics
from processors.projector import Projector
from processors.site import load_site
from producers.simulator import simulate
from schemas.canonical import CanonicalRecord, encode_canonical
from schemas.catalog import load_catalog
from schemas.codec import encode
from schemas.event import Event
from schemas.kafka_connection import KafkaConnection
from schemas.topics import TopicNames
from tests.factories import SITE_FILE, participant_id

SITE = load_site(SITE_FILE)
CATALOG = load_catalog()
START = datetime(2026, 1, 5, tzinfo=UTC)


def _history(participants: int = 30, days: int = 150) -> list[Event]:
    events = sorted(simulate(SITE, CATALOG, participants, days, 11, START),
                    key=lambda e: (e.occurred_at, e.event_id))
    odd = Event(event_id=str(uuid.uuid4()), type="HousingStatusChanged",
                participant_id=events[0].participant_id, occurred_at=START + timedelta(days=3),
                payload={"status": "TRANSITIONAL", "provider": "Maison Cèdre — été"},
                source_partner="cedar-housing")
    return sorted([*events, odd], key=lambda e: (e.occurred_at, e.event_id))


def _record(event: Event, offset: int) -> CanonicalRecord:
    return CanonicalRecord("EVENT", event.occurred_at, event.source_partner or "", "in", 0,
                           offset, encode(event, CATALOG))


def _table(path: Path, query: str) -> list[tuple[object, ...]]:
    connection = sqlite3.connect(path)
    try:
        return connection.execute(query).fetchall()
    finally:
        connection.close()


def test_rows_from_states_equal_the_change_by_change_view(tmp_path: Path) -> None:
    events = _history()
    replayer = Replayer(Projector(SITE, CATALOG), CATALOG)
    reference = open_fresh_store(str(tmp_path / "reference.sqlite"))
    writer = ViewWriter(reference, batch=500)  # several batches: rows rewritten across them
    for offset, event in enumerate(events):
        writer(0, event.occurred_at,
               replayer.apply(0, offset, event.participant_id.encode(), _record(event, offset)))
    tick = CanonicalRecord("CLOCK", events[-1].occurred_at + timedelta(days=60), "hub", "", -1,
                           -1, b"")
    writer(0, tick.received_at, replayer.apply(0, len(events), None, tick))
    writer.flush()
    reference.close()

    target = tmp_path / "bulk.sqlite"
    bulk = ViewFileWriter(temporary_path(target))
    assert bulk.insert_states(replayer.states.values()) > len(events)
    bulk.complete(target)

    every_row = "SELECT * FROM view_rows ORDER BY recipient, event_id"
    assert _table(target, every_row) == _table(tmp_path / "reference.sqlite", every_row)
    schema = "SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY type, name"
    assert _table(target, schema) == _table(tmp_path / "reference.sqlite", schema)
    pairs = "SELECT * FROM recipient_participants ORDER BY recipient, participant_id"
    assert _table(target, pairs) == _table(tmp_path / "reference.sqlite", pairs) != []
    assert _table(target, "SELECT * FROM view_meta") == [("projection_version", PROJECTION_VERSION)]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bulk.sqlite", "reference.sqlite"]
    store = ViewStore(f"sqlite:///{target}")
    try:
        store.create_schema()  # the live store accepts the file as a view of its version
        assert digest_view_file(target) == digest_rows(ordered_rows(store))
    finally:
        store.close()
    stored = "".join(str(r[0]) for r in _table(target, "SELECT row_json FROM view_rows"))
    assert "Maison Cèdre — été" in stored  # UTF-8 as it is: the digest hashes it unparsed


def test_a_view_file_is_never_left_half_written(tmp_path: Path) -> None:
    target = tmp_path / "view.sqlite"
    target.write_text("someone else's file")
    writer = ViewFileWriter(temporary_path(target))
    row = (participant_id(1), "e1", 0, ",a,", "ContactLogged", "2026-01-01 00:00:00.000000", "x",
           "{}")
    writer.insert([row])
    with pytest.raises(ReplayError):
        writer.insert([row])  # the same key twice
    with pytest.raises(SetupError):
        writer.complete(target)
    assert [p.name for p in tmp_path.iterdir()] == ["view.sqlite"]
    assert target.read_text() == "someone else's file"


def test_partitions_split_into_balanced_shares() -> None:
    end = {0: 100, 1: 10, 2: 90, 3: 0, 4: 20}
    shares = split_partitions(end, 2)
    assert shares == split_partitions(dict(reversed(end.items())), 2)
    assert sorted(p for share in shares for p in share) == [0, 1, 2, 4]
    assert [sum(s.values()) for s in shares] == [110, 110]
    assert split_partitions({0: 5}, 4) == [{0: 5}]
    assert split_partitions({}, 2) == [{}]


# -- on the real broker -------------------------------------------------------------------------

def _fill(kafka: KafkaConnection, topics: TopicNames, events: list[Event],
          stray: bool = False) -> None:
    """Write canonical records (daily CLOCKs on every partition) straight into lead.events.

    ``stray``: also write an event of the first participant to every partition, so that
    participant's records sit in partitions other than its key's.
    """
    producer = KafkaProducer(**kafka.client_options(), acks="all", linger_ms=5)
    next_tick = events[0].occurred_at + timedelta(hours=1)
    for offset, event in enumerate(events):
        while next_tick <= event.occurred_at:
            tick = encode_canonical(CanonicalRecord("CLOCK", next_tick, "hub", "", -1, -1, b""))
            for partition in range(4):
                producer.send(topics.events, value=tick, partition=partition)
            next_tick += timedelta(days=1)
        producer.send(topics.events, key=event.participant_id.encode(),
                      value=encode_canonical(_record(event, offset)))
    for partition in range(4 if stray else 0):
        first = events[0]
        contact = Event(event_id=str(uuid.uuid4()), type="ContactLogged",
                        participant_id=first.participant_id,
                        occurred_at=events[-1].occurred_at, source_partner="harbor-cm",
                        payload={"contact_method": "OUTREACH", "successful": True})
        producer.send(topics.events, key=first.participant_id.encode(),
                      value=encode_canonical(_record(contact, len(events) + partition)),
                      partition=partition)
    producer.flush()
    producer.close()


def _one_process_digest(kafka: KafkaConnection, topics: TopicNames, tmp_path: Path,
                        until: datetime | None = None) -> tuple[str, int]:
    """The digest of the change-by-change replay (the reference), and records read."""
    store = open_fresh_store(str(tmp_path / f"reference-{uuid.uuid4().hex[:6]}.sqlite"))
    try:
        with TopicReader(kafka, topics.events) as reader:
            writer = ViewWriter(store)
            replay = LogReplay(reader, Replayer(Projector(SITE, CATALOG), CATALOG), writer,
                               until=until)
            replay.run_to(reader.end_offsets())
            writer.flush()
        return digest_rows(ordered_rows(store)).sha256, replay.records
    finally:
        store.close()


def _file_digest(path: Path) -> str:
    store = ViewStore(f"sqlite:///{path}")
    try:
        digest = digest_rows(ordered_rows(store))
    finally:
        store.close()
    assert digest_view_file(path) == digest
    return digest.sha256


def _end(kafka: KafkaConnection, topics: TopicNames) -> dict[int, int]:
    with TopicReader(kafka, topics.events) as reader:
        return reader.end_offsets()


@pytest.mark.integration
def test_parallel_replay_equals_the_one_process_replay(
    kafka: KafkaConnection, topics: TopicNames, tmp_path: Path
) -> None:
    create_topics(kafka, topics, SITE, 4)
    events = _history(40, 200)
    _fill(kafka, topics, events)
    expected, records = _one_process_digest(kafka, topics, tmp_path)
    end = _end(kafka, topics)
    core = CoreSpec(SITE_FILE)
    for workers in (2, 1):
        target = tmp_path / f"w{workers}.sqlite"
        result = rebuild_view_file(kafka, topics.events, end, core, target,
                                   workers=workers)
        assert (result.workers, result.records, result.skipped) == (workers, records, 0)
        assert result.participants == len({e.participant_id for e in events})
        assert _file_digest(target) == expected
    with pytest.raises(SetupError):
        rebuild_view_file(kafka, topics.events, end, core, tmp_path / "w2.sqlite")

    until = events[len(events) // 2].occurred_at
    expected_then, _ = _one_process_digest(kafka, topics, tmp_path, until)
    assert expected_then != expected
    rebuild_view_file(kafka, topics.events, end, core, tmp_path / "then.sqlite",
                      until=until, workers=2)
    assert _file_digest(tmp_path / "then.sqlite") == expected_then
    assert not [p.name for p in tmp_path.iterdir() if p.name.endswith(".partial")]


@pytest.mark.integration
def test_a_participant_in_two_partitions_falls_back_to_one_process(
    kafka: KafkaConnection, topics: TopicNames, tmp_path: Path
) -> None:
    create_topics(kafka, topics, SITE, 4)
    events = _history(12, 60)
    _fill(kafka, topics, events, stray=True)
    expected, _ = _one_process_digest(kafka, topics, tmp_path)
    result = rebuild_view_file(kafka, topics.events, _end(kafka, topics),
                               CoreSpec(SITE_FILE), tmp_path / "v.sqlite", workers=2)
    assert result.workers == 1
    assert _file_digest(tmp_path / "v.sqlite") == expected

