"""The pipeline benchmark's per-stage latency breakdown, read back from Kafka record timestamps."""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Iterator
from typing import Any

from kafka import KafkaConsumer, TopicPartition

from consumers.sink import changes_from_message
from schemas.canonical import decode_canonical
from schemas.catalog import Catalog
from schemas.codec import decode
from schemas.errors import HubError
from schemas.topics import TopicNames

# isort: split
# Siblings in bench/: run as a file, the script's folder is first on sys.path.
from pipeline_harness import Budget
from pipeline_report import summary


def stage_breakdown(bootstrap: str, topics: TopicNames, catalog: Catalog,
                    sources: dict[str, str], phases: dict[str, dict[str, float]],
                    revocations: dict[tuple[str, str], float],
                    visible: dict[str, float], retracted: dict[tuple[str, str], float],
                    sustained_start: float, sustained_ids: set[str],
                    budget: Budget) -> dict[str, Any]:
    """Where the latency goes, from Kafka record timestamps (CreateTime, same host clock).

    For each event: send -> validator's lead.events record -> projector's own-row
    lead.view.changes record -> sink commit. For the sustained phase: when each stage wrote its
    last record, relative to the first send.
    """
    validated: dict[str, float] = {}
    for record in _read_all(bootstrap, topics.events, budget):
        if record.key is None:
            continue
        with contextlib.suppress(HubError):
            canonical = decode_canonical(record.value)
            if canonical.kind == "EVENT":
                event_id = decode(canonical.event, catalog).event_id
                validated.setdefault(event_id, record.timestamp / 1000)
    projected: dict[str, float] = {}
    retract_projected: dict[tuple[str, str], float] = {}
    for record in _read_all(bootstrap, topics.view_changes, budget):
        for change in changes_from_message(record.value):
            recipient, event_id = change.recipient, change.event_id
            if sources.get(event_id) == recipient:
                projected.setdefault(event_id, record.timestamp / 1000)
            elif (recipient, event_id) in revocations and change.row is None:
                retract_projected.setdefault((recipient, event_id), record.timestamp / 1000)

    def segments(sent: dict[str, float]) -> dict[str, dict[str, float]]:
        parts: dict[str, list[float]] = {"send->validated": [], "validated->projected": [],
                                         "projected->committed": []}
        for event_id, t0 in sent.items():
            if event_id in validated and event_id in projected and event_id in visible:
                parts["send->validated"].append(validated[event_id] - t0)
                parts["validated->projected"].append(projected[event_id] - validated[event_id])
                parts["projected->committed"].append(visible[event_id] - projected[event_id])
        return {name: summary(values) for name, values in parts.items()}

    out: dict[str, Any] = {name: segments(sent) for name, sent in phases.items()}
    rev: dict[str, list[float]] = {"send->projected": [], "projected->committed": []}
    for key, t0 in revocations.items():
        if key in retract_projected and key in retracted:
            rev["send->projected"].append(retract_projected[key] - t0)
            rev["projected->committed"].append(retracted[key] - retract_projected[key])
    out["revocation"] = {name: summary(values) for name, values in rev.items()}

    def last(times: dict[str, float]) -> float:
        found = [times[e] for e in sustained_ids if e in times]
        return max(found) - sustained_start if found else math.nan

    out["sustained_last_record_s"] = {"validator": last(validated),
                                      "projector": last(projected), "sink": last(visible)}
    return out


def _read_all(bootstrap: str, topic: str, budget: Budget) -> Iterator[Any]:
    """Every record of ``topic`` up to its current end (bounded by the budget)."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None,
                             enable_auto_commit=False, client_id="leadhub-bench-read")
    try:
        partitions = [TopicPartition(topic, p)
                      for p in sorted(consumer.partitions_for_topic(topic) or ())]
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        ends = consumer.end_offsets(partitions)
        deadline = time.monotonic() + budget.cap(60.0)
        while time.monotonic() < deadline and any(
                consumer.position(tp) < ends[tp] for tp in partitions):
            for records in consumer.poll(timeout_ms=500, max_records=5000).values():
                yield from records
    finally:
        consumer.close()
