"""The pipeline benchmark's per-stage latency breakdown.

Every event's way through the hub, all on one host clock:

1. **sent**: the inbound record's Kafka timestamp (CreateTime, set by the SDK's producer at
   ``send``), found through the ``lead.events`` record's ingest topic, partition and offset;
2. **validated**: the ``lead.events`` record's timestamp (CreateTime, set by the validator's
   transactional producer; readers see the record only once the transaction commits);
3. **polled**: when a projector child's ``poll`` returned the record (its poll lines,
   ``PollIndex``; the first poll if several projectors read it, e.g. across a rebalance);
4. **committed**: when the projector's database transaction holding the event's own row (or
   the retraction) committed (its commit lines, ``CommitTracker``).
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from kafka import KafkaConsumer, TopicPartition

from schemas.canonical import CanonicalRecord, decode_canonical
from schemas.catalog import Catalog
from schemas.codec import decode
from schemas.errors import HubError
from schemas.kafka_connection import KafkaConnection
from schemas.topics import TopicNames

# isort: split
# Siblings in bench/: run as a file, the script's folder is first on sys.path.
from pipeline_harness import Budget
from pipeline_report import summary
from pipeline_tracker import PollIndex


@dataclass(frozen=True, slots=True)
class LogRecord:
    """One ``lead.events`` record as the run left it (decoded once, used twice)."""

    partition: int
    offset: int
    timestamp: float
    canonical: CanonicalRecord
    event_id: str | None


def read_events_log(kafka: KafkaConnection, topics: TopicNames, catalog: Catalog,
                    budget: Budget) -> list[LogRecord]:
    """Every committed record of ``lead.events``, decoded, in partition then offset order."""
    out: list[LogRecord] = []
    for partition, record in _read_all(kafka, topics.events, budget):
        with contextlib.suppress(HubError):
            canonical = decode_canonical(record.value)
            event_id = (decode(canonical.event, catalog).event_id
                        if canonical.kind == "EVENT" else None)
            out.append(LogRecord(partition, record.offset, record.timestamp / 1000, canonical,
                                 event_id))
    out.sort(key=lambda r: (r.partition, r.offset))
    return out


def stage_breakdown(log: list[LogRecord], inbound_sent: dict[tuple[str, int, int], float],
                    polled: PollIndex, phases: dict[str, set[str]],
                    revocations: dict[tuple[str, str], tuple[float, str]],
                    visible: dict[str, float], retracted: dict[tuple[str, str], float],
                    sustained_start: float, sustained_ids: set[str]) -> dict[str, Any]:
    """Latency per stage for each phase's events, and when each stage finished the sustained
    phase (its last record, relative to the first send)."""
    sent: dict[str, float] = {}
    validated: dict[str, float] = {}
    reached: dict[str, float] = {}
    for record in log:
        if record.event_id is None or record.event_id in validated:
            continue
        c = record.canonical
        stamp = inbound_sent.get((c.ingest_topic, c.ingest_partition, c.ingest_offset))
        if stamp is not None:
            sent[record.event_id] = stamp
        validated[record.event_id] = record.timestamp
        at = polled.polled_at(record.partition, record.offset)
        if at is not None:
            reached[record.event_id] = at

    def segments(ids: set[str], done: dict[str, float]) -> dict[str, dict[str, float]]:
        parts: dict[str, list[float]] = {"sent -> validated": [], "validated -> polled": [],
                                         "polled -> committed": [], "sent -> committed": []}
        for event_id, done_at in done.items():
            if event_id in ids and event_id in sent and event_id in reached:
                parts["sent -> validated"].append(validated[event_id] - sent[event_id])
                parts["validated -> polled"].append(reached[event_id] - validated[event_id])
                parts["polled -> committed"].append(done_at - reached[event_id])
                parts["sent -> committed"].append(done_at - sent[event_id])
        return {name: summary(values) for name, values in parts.items()}

    out: dict[str, Any] = {name: segments(ids, visible) for name, ids in phases.items()}
    by_revoke = {revoke_id: key for key, (_, revoke_id) in revocations.items()}
    retraction_done = {revoke_id: retracted[key] for revoke_id, key in by_revoke.items()
                       if key in retracted}
    out["revocation"] = segments(set(retraction_done), retraction_done)

    def last(times: dict[str, float]) -> float:
        found = [times[e] for e in sustained_ids if e in times]
        return max(found) - sustained_start if found else math.nan

    out["sustained_last_record_s"] = {"SDK (inbound record)": last(sent),
                                      "validator (lead.events record)": last(validated),
                                      "projector poll": last(reached),
                                      "projector commit": last(visible)}
    return out


def _read_all(kafka: KafkaConnection, topic: str, budget: Budget) -> Iterator[tuple[int, Any]]:
    """(partition, record) for every committed record of ``topic`` up to its current end."""
    consumer = KafkaConsumer(**kafka.client_options(), group_id=None,
                             enable_auto_commit=False, client_id="leadhub-bench-read",
                             isolation_level="read_committed")
    try:
        partitions = [TopicPartition(topic, p)
                      for p in sorted(consumer.partitions_for_topic(topic) or ())]
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        ends = consumer.end_offsets(partitions)
        deadline = time.monotonic() + budget.cap(60.0)
        idle_since = time.monotonic()
        # Transaction markers take offsets too; stop after 2 s without records at the end.
        while time.monotonic() < deadline and time.monotonic() - idle_since < 2.0 and any(
                consumer.position(tp) < ends[tp] for tp in partitions):
            for tp, records in consumer.poll(timeout_ms=500, max_records=5000).items():
                if records:
                    idle_since = time.monotonic()
                for record in records:
                    yield tp.partition, record
    finally:
        consumer.close()
