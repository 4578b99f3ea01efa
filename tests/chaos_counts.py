"""Chaos harness, part 3: waiting until the hub settled, and counting every event per stage
(published, inbound, lead.events, lead.dlq, view rows) to say where one went missing."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from consumers.audit.compare import wait_caught_up
from consumers.audit.kafka_log import TopicReader
from consumers.store import ViewStore
from processors.kafka_validator import group_id as validator_group
from schemas.canonical import decode_canonical
from schemas.catalog import load_catalog
from schemas.codec import decode
from schemas.event import Event
from schemas.kafka_connection import KafkaConnection
from schemas.topics import TopicNames

CATALOG = load_catalog()


def inbound_end_offsets(kafka: KafkaConnection, topics: TopicNames,
                        partners: Iterable[str]) -> dict[tuple[str, int], int]:
    ends: dict[tuple[str, int], int] = {}
    for partner in partners:
        with TopicReader(kafka, topics.inbound(partner), client_id="chaos-ends") as reader:
            ends.update({(reader.topic, p): e for p, e in reader.end_offsets().items()})
    return ends


def validator_lag(kafka: KafkaConnection, topics: TopicNames,
                  ends: Mapping[tuple[str, int], int]) -> dict[tuple[str, int], int]:
    """Records of the inbound topics past the validator group's committed offsets (non-zero
    entries only)."""
    from kafka import KafkaAdminClient

    group = validator_group(topics)
    admin = KafkaAdminClient(**kafka.client_options(), client_id="chaos-lag")
    try:
        found = admin.list_group_offsets(group).get(group, {})
    finally:
        admin.close()
    committed = {(tp.topic, tp.partition): int(m.offset) for tp, m in found.items()}
    return {tp: end - committed.get(tp, 0) for tp, end in ends.items()
            if end - committed.get(tp, 0) > 0}


def stable_lag(kafka: KafkaConnection, topic: str, high: Mapping[int, int]) -> dict[int, int]:
    """Per partition of ``topic``, how far its last stable offset is short of ``high`` (an
    open transaction hides everything after its first record from read_committed readers)."""
    with TopicReader(kafka, topic, client_id="chaos-lso") as reader:
        stable = reader.end_offsets()
    return {p: h - stable.get(p, 0) for p, h in high.items() if stable.get(p, 0) < h}


def high_watermarks(kafka: KafkaConnection, topic: str) -> dict[int, int]:
    with TopicReader(kafka, topic, client_id="chaos-hw",
                     isolation_level="read_uncommitted") as reader:
        ends: dict[int, int] = reader.end_offsets()
        return ends


def wait_settled(kafka: KafkaConnection, topics: TopicNames, partners: Sequence[str],
                 store: ViewStore, timeout_s: float) -> tuple[bool, str, dict[str, float]]:
    """Wait until (1) the validators have no lag on the inbound topics, (2) no transaction
    open at that moment hides records of lead.events (its last stable offsets reach the high
    watermarks of that moment) and (3) the projectors' tracking rows reach the end of
    lead.events. Returns (settled, what was still pending, seconds each phase took)."""
    began = time.monotonic()
    deadline = began + timeout_s
    phases: dict[str, float] = {}
    ends = inbound_end_offsets(kafka, topics, partners)
    lag: dict[tuple[str, int], int] = {}
    while time.monotonic() < deadline:
        try:
            lag = validator_lag(kafka, topics, ends)
        except Exception as exc:
            lag = {("?", -1): -1}
            print(f"chaos: reading the validator group's offsets failed ({exc})")
        if not lag:
            break
        time.sleep(0.5)
    phases["validators"] = time.monotonic() - began
    if lag:
        return False, f"validator lag {lag}", phases
    high = high_watermarks(kafka, topics.events)
    hidden = stable_lag(kafka, topics.events, high)
    while hidden and time.monotonic() < deadline:
        time.sleep(0.5)
        hidden = stable_lag(kafka, topics.events, high)
    phases["open transactions"] = time.monotonic() - began - phases["validators"]
    if hidden:
        return False, (f"{topics.events}: open transactions still hide offsets below the high "
                       f"watermarks {high}: {hidden}"), phases
    caught_up = wait_caught_up(kafka, topics.events, store,
                               max(1.0, deadline - time.monotonic()))
    phases["projectors"] = (time.monotonic() - began - phases["validators"]
                            - phases["open transactions"])
    if not caught_up:
        return False, (f"projector tracking rows {store.committed_offsets(topics.events)} "
                       f"short of the end of {topics.events}"), phases
    return True, "", phases


# -- stages ----------------------------------------------------------------------------------

Coordinates = tuple[str, int, int]  # topic, partition, offset


@dataclass
class StageCounts:
    """Per partner: what was published and what each stage holds of it."""

    partners: list[str]
    published: dict[str, set[str]]
    inbound: dict[str, int] = field(default_factory=dict)  # records per partner topic
    inbound_at: dict[str, list[Coordinates]] = field(default_factory=dict)  # event_id -> where
    events_at: dict[str, list[Coordinates]] = field(default_factory=dict)  # event_id -> where
    events_by_partner: Counter[str] = field(default_factory=Counter)  # EVENT records
    event_ids_by_partner: dict[str, set[str]] = field(default_factory=dict)
    clocks: int = 0
    derived: int = 0  # EVENT records of the hub itself (none expected from the validator)
    undecodable: list[str] = field(default_factory=list)
    dlq: list[dict[str, str]] = field(default_factory=list)
    view_rows: dict[str, int] = field(default_factory=dict)
    view_ids: dict[str, set[str]] = field(default_factory=dict)
    view_duplicates: dict[str, list[str]] = field(default_factory=dict)

    def table(self) -> str:
        head = (f"{'partner':18} {'published':>9} {'inbound':>8} {'events':>7} {'distinct':>8} "
                f"{'dlq':>4} {'view rows':>9} {'own seen':>9}")
        lines = [head]
        dlq_by_topic = Counter(d.get("lead.source.topic", "?") for d in self.dlq)
        totals = Counter[str]()
        for partner in self.partners:
            published = self.published.get(partner, set())
            inbound_topic = next((t for t in dlq_by_topic if t.endswith(f"lead.in.{partner}")),
                                 None)
            row = {
                "published": len(published),
                "inbound": self.inbound.get(partner, 0),
                "events": self.events_by_partner.get(partner, 0),
                "distinct": len(self.event_ids_by_partner.get(partner, set())),
                "dlq": dlq_by_topic.get(inbound_topic, 0) if inbound_topic else 0,
                "view": self.view_rows.get(partner, 0),
                "own": len(published & self.view_ids.get(partner, set())),
            }
            totals.update(row)
            lines.append(f"{partner:18} {row['published']:>9} {row['inbound']:>8} "
                         f"{row['events']:>7} {row['distinct']:>8} {row['dlq']:>4} "
                         f"{row['view']:>9} {row['own']:>9}")
        lines.append(f"{'total':18} {totals['published']:>9} {totals['inbound']:>8} "
                     f"{totals['events']:>7} {totals['distinct']:>8} {len(self.dlq):>4} "
                     f"{totals['view']:>9} {totals['own']:>9}")
        lines.append(f"lead.events also holds {self.clocks} CLOCK records and {self.derived} hub "
                     f"events; {len(self.undecodable)} undecodable records")
        return "\n".join(lines)


def _read_topic(kafka: KafkaConnection, topic: str) -> list[tuple[int, int, bytes | None, bytes,
                                                           list[tuple[str, bytes | None]]]]:
    with TopicReader(kafka, topic, client_id="chaos-count") as reader:
        return list(reader.read_headed(reader.end_offsets()))


def count_stages(kafka: KafkaConnection, topics: TopicNames, partners: Sequence[str],
                 events: Sequence[Event], live_view: Any) -> StageCounts:
    """Read every stage: inbound topics, lead.events, lead.dlq (read_committed) and the view."""
    published: dict[str, set[str]] = {p: set() for p in partners}
    for event in events:
        published.setdefault(str(event.source_partner), set()).add(event.event_id)
    counts = StageCounts(list(partners), published)
    for partner in partners:
        topic = topics.inbound(partner)
        records = _read_topic(kafka, topic)
        counts.inbound[partner] = len(records)
        for partition, offset, _, value, _ in records:
            try:
                event_id = decode(value, CATALOG).event_id
            except Exception:
                counts.undecodable.append(f"{topic}[{partition}]@{offset}")
                continue
            counts.inbound_at.setdefault(event_id, []).append((topic, partition, offset))
    for partition, offset, _, value, _ in _read_topic(kafka, topics.events):
        at = f"{topics.events}[{partition}]@{offset}"
        try:
            canonical = decode_canonical(value)
            if canonical.kind == "CLOCK":
                counts.clocks += 1
                continue
            event = decode(canonical.event, CATALOG)
        except Exception:
            counts.undecodable.append(at)
            continue
        source = canonical.source_partner
        if source not in published:
            counts.derived += 1
        counts.events_by_partner[source] += 1
        counts.event_ids_by_partner.setdefault(source, set()).add(event.event_id)
        counts.events_at.setdefault(event.event_id, []).append(
            (f"{canonical.ingest_topic}[{canonical.ingest_partition}]@"
             f"{canonical.ingest_offset}", partition, offset))
    for partition, offset, _, _, headers in _read_topic(kafka, topics.dlq):
        letter = {k: (v or b"").decode(errors="replace") for k, v in headers}
        letter["at"] = f"{topics.dlq}[{partition}]@{offset}"
        counts.dlq.append(letter)
    for partner in partners:
        rows = live_view.rows(partner)
        ids = Counter(str(r["event_id"]) for r in rows)
        counts.view_rows[partner] = len(rows)
        counts.view_ids[partner] = set(ids)
        doubled = sorted(i for i, n in ids.items() if n > 1)
        if doubled:
            counts.view_duplicates[partner] = doubled
    return counts


def where_is(counts: StageCounts, event_id: str) -> str:
    """Where an event is along the pipeline (for the report of a lost event)."""
    inbound = counts.inbound_at.get(event_id, [])
    events = counts.events_at.get(event_id, [])
    dead = [d["at"] for d in counts.dlq if any(
        f"{t}" == d.get("lead.source.topic") and str(p) == d.get("lead.source.partition")
        and str(o) == d.get("lead.source.offset") for t, p, o in inbound)]
    return (f"{event_id}: inbound {[f'{t}[{p}]@{o}' for t, p, o in inbound] or 'NONE'}, "
            f"lead.events {[f'[{p}]@{o} from {src}' for src, p, o in events] or 'NONE'}, "
            f"dlq {dead or 'none'}")
