"""``audit reconcile``: every inbound record accepted, dead-lettered, pending or reported.

Unit tests of the pure accounting core (offset sets, reference parsing, the ledger), then one
integration test against the real broker: two partners' inbound topics (one written by a
transactional producer, with an aborted transaction), hand-written lead.events and lead.dlq
records, the validator group's committed offsets, and the CLI's exit codes.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from consumers.audit.offset_set import CHUNK_SIZE, OffsetSet
from consumers.audit.reconcile import reconcile
from consumers.audit.reconcile_ledger import (
    DEAD_LETTER,
    EVENT,
    Ledger,
    RecordRef,
    dead_letter_source,
    event_reference,
)
from schemas.canonical import CanonicalRecord, encode_canonical
from schemas.errors import HubError
from schemas.kafka_connection import KafkaConnection
from schemas.topics import TopicNames
from tests.factories import SITE_FILE

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def _canonical(topic: str, partition: int, offset: int, kind: str = "EVENT") -> bytes:
    return encode_canonical(CanonicalRecord(
        kind=kind,  # type: ignore[arg-type]
        received_at=T0, source_partner="harbor-cm" if kind == "EVENT" else "hub",
        ingest_topic=topic if kind == "EVENT" else "",
        ingest_partition=partition if kind == "EVENT" else -1,
        ingest_offset=offset if kind == "EVENT" else -1,
        event=b"\xc3\x01not-read-by-reconcile" if kind == "EVENT" else b""))


def _dlq_headers(topic: str, partition: int, offset: int) -> list[tuple[str, bytes]]:
    return [("lead.step", b"validate"), ("lead.reason", b"MALFORMED_BODY"),
            ("lead.source.topic", topic.encode()),
            ("lead.source.partition", str(partition).encode()),
            ("lead.source.offset", str(offset).encode())]


# -- offset sets -----------------------------------------------------------------------------

def test_offset_set_behaves_like_a_set_in_runs_and_bitmap_chunks() -> None:
    rng = random.Random(2011)
    for span in (40, 3000, CHUNK_SIZE + 5000, 3 * CHUNK_SIZE):
        compact, model = OffsetSet(), set()
        for _ in range(6000):
            offset = rng.randrange(span)
            if rng.random() < 0.7:
                assert compact.add(offset) == (offset not in model)
                model.add(offset)
            else:
                assert compact.discard(offset) == (offset in model)
                model.discard(offset)
        assert len(compact) == len(model)
        assert list(compact) == sorted(model)
        assert all((o in compact) == (o in model) for o in range(0, span, 7))


def test_offset_set_runs_span_chunk_borders() -> None:
    offsets = OffsetSet(range(CHUNK_SIZE - 3, CHUNK_SIZE + 3))
    offsets.add(5)
    assert list(offsets.runs()) == [(5, 5), (CHUNK_SIZE - 3, CHUNK_SIZE + 2)]
    assert offsets.discard(CHUNK_SIZE) and list(offsets.runs()) == [
        (5, 5), (CHUNK_SIZE - 3, CHUNK_SIZE - 1), (CHUNK_SIZE + 1, CHUNK_SIZE + 2)]
    assert -1 not in offsets and "5" not in offsets
    with pytest.raises(ValueError):
        offsets.add(-1)


def test_offset_set_memory_follows_gaps_and_never_exceeds_a_bit_per_offset() -> None:
    contiguous = OffsetSet(range(300_000))
    assert list(contiguous.runs()) == [(0, 299_999)]
    assert contiguous.nbytes() < 2_000  # 5 chunks of one run each
    alternate = OffsetSet(range(0, 300_000, 2))  # a gap after every record
    assert alternate.nbytes() < 300_000 // 8 + 5 * 1024
    for offset in range(0, 300_000, 2):
        assert alternate.discard(offset)
    assert len(alternate) == 0 and alternate.nbytes() == 0  # empty chunks are freed


# -- parsing references ------------------------------------------------------------------------

def test_event_reference_names_the_ingest_coordinates_and_skips_ticks() -> None:
    assert event_reference(_canonical("lead.in.harbor-cm", 2, 41)) == RecordRef(
        "lead.in.harbor-cm", 2, 41)
    assert event_reference(_canonical("", -1, -1, kind="CLOCK")) is None
    with pytest.raises(HubError):
        event_reference(b"\x00not canonical")


def test_dead_letter_source_reads_the_three_headers() -> None:
    assert dead_letter_source(_dlq_headers("lead.in.x", 1, 7)) == RecordRef("lead.in.x", 1, 7)
    assert dead_letter_source(_dlq_headers("lead.in.x", 1, 7)[:-1]) is None
    assert dead_letter_source([("lead.source.topic", b"t"), ("lead.source.partition", b"one"),
                               ("lead.source.offset", b"3")]) is None
    assert dead_letter_source([("lead.source.topic", None), ("lead.source.partition", b"1"),
                               ("lead.source.offset", b"3")]) is None


# -- the ledger --------------------------------------------------------------------------------

A, B = "lead.in.a", "lead.in.b"


def _ledger() -> Ledger:
    # a[0]: offsets 0..9 exist except 3 and 7 (transaction markers); validator committed 8
    # a[1]: offsets 5..7 (0..4 deleted); b[0]: 0..1, validator never committed
    return Ledger({A: ("a", {0: (0, 10), 1: (5, 8)}), B: ("b", {0: (0, 2)})},
                  {A: {0: 8, 1: 8}})


def _account_all(ledger: Ledger) -> None:
    for offset in (0, 1, 2, 4, 5, 6, 8, 9):
        ledger.account(A, 0, offset)
    for offset in (5, 6, 7):
        ledger.account(A, 1, offset)
    for offset in (0, 1):
        ledger.account(B, 0, offset)


def test_ledger_classifies_every_record_exactly_once() -> None:
    ledger = _ledger()
    for offset in (0, 1, 2, 4):
        ledger.refer(EVENT, RecordRef(A, 0, offset))
    ledger.refer(EVENT, RecordRef(A, 0, 2))  # accepted twice: duplicate
    ledger.refer(DEAD_LETTER, RecordRef(A, 0, 4))  # accepted and dead-lettered: duplicate
    ledger.refer(DEAD_LETTER, RecordRef(A, 0, 5))
    ledger.refer(EVENT, RecordRef(A, 0, 7))  # a marker's offset: no such record
    ledger.refer(EVENT, RecordRef(A, 0, 10))  # written after the scope was fixed
    ledger.refer(EVENT, RecordRef(A, 1, 2))  # deleted from the log
    ledger.refer(EVENT, RecordRef(A, 1, 5))
    ledger.refer(EVENT, RecordRef(A, 9, 0))  # no such partition
    ledger.refer(DEAD_LETTER, RecordRef("lead.events", 0, 3))  # not an inbound topic
    _account_all(ledger)
    result = ledger.finish()

    a, b = result.topics[A], result.topics[B]
    assert (a.records, a.accepted, a.dead_lettered, a.pending, a.unaccounted, a.duplicates) == (
        11, 5, 1, 2, 3, 2)
    assert (b.records, b.pending, b.unaccounted) == (2, 2, 0)  # never processed: pending
    assert list(result.unaccounted_records()) == [
        RecordRef(A, 0, 6), RecordRef(A, 1, 6), RecordRef(A, 1, 7)]
    assert [(d.record.offset, d.event_refs, d.dead_letter_refs) for d in result.duplicates] == [
        (2, 2, 0), (4, 1, 1)]
    assert sorted((o.kind, o.record) for o in result.orphans) == [
        (EVENT, RecordRef(A, 0, 7)), (EVENT, RecordRef(A, 9, 0))]
    assert (result.references_after_end, result.references_before_start,
            result.foreign_references) == (1, 1, 1)
    totals = result.totals
    assert totals.records == totals.accepted + totals.dead_lettered + totals.pending + (
        totals.unaccounted) == 13
    assert not result.complete and not result.ok()


def test_duplicates_and_orphans_fail_only_a_strict_check() -> None:
    ledger = Ledger({A: ("a", {0: (0, 3)})}, {A: {0: 3}})
    for offset in (0, 1, 1, 2, 2):
        ledger.refer(EVENT, RecordRef(A, 0, offset))
    for offset in (0, 1, 2):
        ledger.account(A, 0, offset)
    result = ledger.finish()
    assert result.complete and result.ok() and not result.ok(strict=True)
    assert result.topics[A].duplicates == 2

    ledger = Ledger({A: ("a", {0: (0, 3)})}, {A: {0: 3}})
    for offset in (0, 1, 2):
        ledger.refer(EVENT, RecordRef(A, 0, offset))
    for offset in (0, 2):  # offset 1 is not a record (aborted)
        ledger.account(A, 0, offset)
    result = ledger.finish()
    assert result.ok() and not result.ok(strict=True)
    assert [o.record for o in result.orphans] == [RecordRef(A, 0, 1)]


def test_late_references_account_only_unaccounted_records() -> None:
    ledger = Ledger({A: ("a", {0: (0, 4)})}, {A: {0: 4}})
    ledger.refer(EVENT, RecordRef(A, 0, 0))
    for offset in range(4):
        ledger.account(A, 0, offset)
    assert ledger.has_unaccounted
    assert ledger.resolve_late(DEAD_LETTER, RecordRef(A, 0, 2))
    assert not ledger.resolve_late(EVENT, RecordRef(A, 0, 0))  # accounted already
    assert not ledger.resolve_late(EVENT, RecordRef(B, 0, 1))
    result = ledger.finish()
    tally = result.topics[A]
    assert (tally.accepted, tally.dead_lettered, tally.unaccounted) == (1, 1, 2)
    assert result.late_references == 1
    assert [r.offset for r in result.unaccounted_records()] == [1, 3]


def test_a_record_outside_the_scope_is_a_caller_error() -> None:
    ledger = Ledger({A: ("a", {0: (2, 4)})}, {})
    with pytest.raises(ValueError):
        ledger.account(A, 0, 4)
    with pytest.raises(KeyError):
        ledger.account(A, 1, 0)


# -- against the broker ------------------------------------------------------------------------

PARTITIONS = 2


def _run_cli(kafka: KafkaConnection, topics: TopicNames, tmp: Path, *args: str) -> Any:
    env = dict(os.environ, LEADHUB_KAFKA_BOOTSTRAP=kafka.bootstrap,
               LEADHUB_TOPIC_PREFIX=topics.prefix,
               LEADHUB_SITE_FILE=str(SITE_FILE), LEADHUB_STATE_DIR=str(tmp),
               LEADHUB_PARTITIONS=str(PARTITIONS))
    return subprocess.run([sys.executable, "-m", "leadhub.cli", "audit", "reconcile", *args],
                          env=env, capture_output=True, text=True, timeout=120, check=False)


@pytest.mark.integration
def test_reconcile_names_exactly_the_lost_record(kafka: KafkaConnection, topics: TopicNames,
                                                 tmp_path: Path) -> None:
    from kafka import KafkaConsumer, KafkaProducer, TopicPartition
    from kafka.structs import OffsetAndMetadata

    from leadhub.topics_admin import create_topics
    from processors.site import load_site

    site = load_site(SITE_FILE)
    create_topics(kafka, topics, site, PARTITIONS)
    cm, pd = topics.inbound("harbor-cm"), topics.inbound("evergreen-pd")

    # harbor-cm: a plain producer, three records on each partition
    plain = KafkaProducer(**kafka.client_options())
    written: list[RecordRef] = []
    for partition in range(PARTITIONS):
        for _ in range(3):
            meta = plain.send(cm, key=b"p", value=b"inbound bytes", partition=partition).get(30)
            written.append(RecordRef(cm, meta.partition, meta.offset))
    # evergreen-pd: a transactional producer; a committed transaction of two records on
    # partition 0, an aborted one (not readable), then one more committed record
    txn = KafkaProducer(**kafka.client_options(),
                        transactional_id=f"{topics.prefix}reconcile-test")
    txn.init_transactions()
    txn.begin_transaction()
    futures = [txn.send(pd, key=b"p", value=b"inbound bytes", partition=0) for _ in range(2)]
    txn.commit_transaction()
    written += [RecordRef(pd, f.get(30).partition, f.get(30).offset) for f in futures]
    txn.begin_transaction()
    aborted = txn.send(pd, key=b"p", value=b"aborted", partition=0).get(30)
    txn.abort_transaction()
    txn.begin_transaction()
    last = txn.send(pd, key=b"p", value=b"inbound bytes", partition=0)
    txn.commit_transaction()
    written.append(RecordRef(pd, last.get(30).partition, last.get(30).offset))
    txn.close()
    assert [r.offset for r in written if r.topic == pd] == [0, 1, 5]  # markers at 2, 4, 6

    lost, dead, pending = written[1], written[4], written[-1]
    for ref in written:
        if ref not in (lost, dead, pending):
            plain.send(topics.events, key=b"p", value=_canonical(ref.topic, ref.partition,
                                                                 ref.offset))
    plain.send(topics.events, key=b"p", value=_canonical(cm, 0, written[0].offset))  # again
    plain.send(topics.events, key=b"p", value=_canonical(pd, 0, aborted.offset))  # orphan
    plain.send(topics.events, value=_canonical("", -1, -1, kind="CLOCK"))
    plain.send(topics.dlq, key=cm.encode(), value=b"raw",
               headers=_dlq_headers(dead.topic, dead.partition, dead.offset))
    plain.flush()

    # the validator group has processed everything but evergreen-pd's last record
    group = KafkaConsumer(**kafka.client_options(),
                          group_id=f"{topics.prefix}leadhub-validator",
                          enable_auto_commit=False)
    group.commit({TopicPartition(cm, p): OffsetAndMetadata(3, "", -1)
                  for p in range(PARTITIONS)} | {
                  TopicPartition(pd, 0): OffsetAndMetadata(pending.offset, "", -1)})
    group.close()

    done = _run_cli(kafka, topics, tmp_path, "--json")
    assert done.returncode == 1 and done.stdout, done.stderr
    report = json.loads(done.stdout)
    assert report["unaccounted"] == [
        {"topic": lost.topic, "partition": lost.partition, "offset": lost.offset}]
    by_topic = {t["topic"]: t for t in report["topics"]}
    assert (by_topic[cm]["records"], by_topic[cm]["accepted"], by_topic[cm]["dead_lettered"],
            by_topic[cm]["unaccounted"], by_topic[cm]["duplicates"]) == (6, 4, 1, 1, 1)
    assert (by_topic[pd]["records"], by_topic[pd]["accepted"],
            by_topic[pd]["pending"]) == (3, 2, 1)
    assert report["references_without_record"] == [
        {"source": "event", "topic": pd, "partition": 0, "offset": aborted.offset, "refs": 1}]
    assert report["duplicates"][0]["offset"] == written[0].offset

    text = _run_cli(kafka, topics, tmp_path)
    assert text.returncode == 1
    assert f"  {lost.topic} {lost.partition} {lost.offset}\n" in text.stdout
    assert "UNACCOUNTED: 1 of 9 inbound records" in text.stdout
    assert "inbound bytes" not in text.stdout + text.stderr

    plain.send(topics.dlq, key=cm.encode(), value=b"raw",
               headers=_dlq_headers(lost.topic, lost.partition, lost.offset)).get(30)
    plain.close()
    result = reconcile(kafka, topics, ["harbor-cm", "evergreen-pd"])
    assert result.complete and list(result.unaccounted_records()) == []
    assert result.totals.records == 9 and result.totals.dead_lettered == 2
    assert not result.ok(strict=True)  # the duplicate and the orphan remain findings
    done = _run_cli(kafka, topics, tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "accounted: all 9 inbound records" in done.stdout
    assert _run_cli(kafka, topics, tmp_path, "--strict").returncode == 1


@pytest.mark.integration
def test_reconcile_without_the_hub_topics_is_a_setup_error(kafka: KafkaConnection,
                                                           topics: TopicNames,
                                                           tmp_path: Path) -> None:
    done = _run_cli(kafka, topics, tmp_path)
    assert done.returncode == 2
    assert "does not exist" in done.stderr
