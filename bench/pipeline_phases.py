"""The pipeline benchmark's phases: warm-up, sustained, paced latency, revocation, baselines.

Each phase publishes through :class:`pipeline_harness.Publishers`, waits on the
:class:`pipeline_tracker.CommitTracker` within the run's :class:`pipeline_harness.Budget`, and
returns its figures as a dict (see :class:`pipeline_report.Results`). The baselines run after
the hub is stopped, over what the run left in Kafka: a raw ``KafkaConsumer`` over the inbound
topics, the pure projection step over the sustained phase's ``lead.events`` records, and the
projector alone on the whole ``lead.events`` backlog into a fresh view (in the bench process:
the hub, its projector children included, is stopped by then).
"""

from __future__ import annotations

import contextlib
import math
import os
import resource
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from kafka import KafkaConsumer, TopicPartition

from consumers.audit.replay import MemoryStates
from consumers.live_projector import LiveProjector
from consumers.store import ViewStore
from processors.projection_step import ProjectionStep
from processors.projector import Projector
from processors.site import SitePolicy
from schemas.catalog import Catalog
from schemas.event import Event, mint_participant_id
from schemas.kafka_connection import KafkaConnection
from schemas.topics import TopicNames

# isort: split
# Siblings in bench/: run as a file, the script's folder is first on sys.path.
from pipeline_harness import BenchError, Budget, Children, Publishers, make_event, progress
from pipeline_report import summary
from pipeline_stages import LogRecord
from pipeline_tracker import READERS_CPU, CommitTracker, own_cpu
from pressure import PressureSampler

#: Raises BenchError if a part of the hub under test has died.
AliveCheck = Callable[[], None]


def wait_ready(publishers: Publishers, tracker: CommitTracker, alive: AliveCheck,
               all_projecting: Callable[[], bool], children: Children, budget: Budget,
               timeout_s: float) -> float:
    """Publish probes for a few participants and wait for their rows, a new round until every
    projector has committed a batch: the hub is up, every projector has joined the group (no
    rebalance left to come) and every partition is assigned."""
    started = time.monotonic()
    deadline = started + budget.cap(timeout_s)
    while time.monotonic() < deadline:
        now = datetime.now(UTC).replace(microsecond=0)
        probes = [make_event("ContactLogged", mint_participant_id(), now,
                             "harbor-cm", contact_method="OUTREACH", successful=True,
                             duration_minutes=None)
                  for _ in range(16)]
        tracker.expect(e.event_id for e in probes)
        for probe in probes:
            publishers.send(probe)
        publishers.flush()
        visible = False
        while not visible and time.monotonic() < deadline:
            alive()
            visible = tracker.wait_all_visible(min(5.0, deadline - time.monotonic()),
                                               "warm-up")
        if visible and all_projecting():
            return time.monotonic() - started
        time.sleep(0.5)
    tails = "\n".join(f"--- {name}\n{children.log_tail(name)}" for name in children.procs)
    raise BenchError(f"the hub did not become ready within {timeout_s:.0f}s; logs:\n{tails}")


def _machine_busy() -> tuple[float, float]:
    """(busy, total) jiffies of all CPUs since boot, from /proc/stat."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        idle = values[3] + values[4]
        return float(sum(values) - idle), float(sum(values))
    return math.nan, math.nan


def cpu_by_process(children: Children) -> dict[str, float]:
    """CPU seconds so far of every process the run counts: the children (validators,
    projectors), the watched ones (broker, PostgreSQL) and the bench process, split into the
    SDK publishers with the main thread and the threads reading the projectors' output
    (:data:`pipeline_tracker.READERS_CPU`, measurement only)."""
    used = children.cpu_seconds()
    own = own_cpu()
    used["bench process: SDK publishers + main thread"] = own["total"] - own["readers"]
    used[READERS_CPU] = own["readers"]
    return used


def sustained_phase(events: list[Event], publishers: Publishers, tracker: CommitTracker,
                    children: Children, budget: Budget, timeout_s: float,
                    label: str = "sustained") -> dict[str, Any]:
    """Publish ``events`` as fast as possible; events/s until the last own row commits.
    ``label`` names the phase in the progress lines (the warm-up runs it too)."""
    tracker.expect(e.event_id for e in events)
    cpu_before = cpu_by_process(children)
    busy_before = _machine_busy()
    first_send = time.time()
    for event in events:
        publishers.send(event)
    sent = time.time()
    publishers.flush()
    flushed = time.time()
    progress(f"{label}: {len(events):,} events sent in {sent - first_send:.1f}s "
             f"(acknowledged after {flushed - first_send:.1f}s); waiting for their rows")
    done = tracker.wait_all_visible(budget.cap(timeout_s), label)
    visible = [tracker.visible[e.event_id] for e in events if e.event_id in tracker.visible]
    last = max(visible) if visible else math.nan
    elapsed = last - first_send
    cpu_after = cpu_by_process(children)
    busy_after = _machine_busy()
    cpu = {k: cpu_after.get(k, math.nan) - v for k, v in cpu_before.items()}
    batches = sum(1 for at in list(tracker.commits) if first_send <= at <= last)
    return {
        "events": len(events),
        "complete": done,
        "batches": batches,
        "visible": len(visible),
        "first_send": first_send,
        "publish_s": flushed - first_send,
        "publish_events_per_s": len(events) / (flushed - first_send),
        "elapsed_s": elapsed,
        "events_per_s": len(visible) / elapsed if visible else math.nan,
        "cpu_s": cpu,
        "cpu_total_s": sum(v for k, v in cpu.items() if k != READERS_CPU
                           and not math.isnan(v)),
        "machine_busy": (busy_after[0] - busy_before[0]) / (busy_after[1] - busy_before[1]),
        "machine_cpu_s": (busy_after[0] - busy_before[0]) / os.sysconf("SC_CLK_TCK"),
    }


def paced_phase(events: list[Event], rate: float, publishers: Publishers,
                tracker: CommitTracker, budget: Budget, timeout_s: float
                ) -> tuple[dict[str, Any], dict[str, float]]:
    """Send ``events`` at ``rate`` events/s; latency of send -> own row committed, with the
    machine's stalls meanwhile (:mod:`pressure`).

    The machine's dirty pages are written out first (``os.sync``, its seconds reported): the
    kernel writes a page back about 30 s after it was dirtied, so the sustained phase's burst of
    writes (the view's pages, the broker's log) would otherwise be written back during this
    phase, and on this VM's disk that held the database's writes for up to half a second
    (decision 0012). The phase's own writes are written back as a steady load would write them.
    """
    synced = time.monotonic()
    os.sync()
    sync_s = time.monotonic() - synced
    progress(f"paced: dirty pages written out first in {sync_s:.1f}s")
    tracker.expect(e.event_id for e in events)
    sent_at: dict[str, float] = {}
    pressure = PressureSampler().start()
    started = time.monotonic()
    last_report = started
    for index, event in enumerate(events):
        ahead = started + index / rate - time.monotonic()
        if ahead > 0:
            time.sleep(ahead)
        sent_at[event.event_id] = time.time()
        publishers.send(event)
        if time.monotonic() - last_report >= 5:
            last_report = time.monotonic()
            progress(f"paced: {index + 1:,} sent, {tracker.missing():,} not yet visible")
    publishers.flush()
    duration = time.monotonic() - started
    done = tracker.wait_all_visible(budget.cap(timeout_s), "paced")
    stalls = pressure.stop()
    latencies = [tracker.visible[e] - t for e, t in sent_at.items() if e in tracker.visible]
    result = {"rate_asked": rate, "rate_achieved": len(events) / duration,
              "duration_s": duration, "complete": done, "sync_before_s": sync_s,
              **summary(latencies), **stalls}
    return result, sent_at


def revocation_phase(count: int, publishers: Publishers, tracker: CommitTracker,
                     budget: Budget, timeout_s: float
                     ) -> tuple[dict[str, Any], dict[tuple[str, str], tuple[float, str]]]:
    """Share HOUSING rows with defender-assoc by consent, then revoke them one at a time.

    Returns the figures and, per retracted row (recipient, event_id), the send time and the
    event_id of the ``ConsentRevoked`` that retracted it.
    """
    base = (datetime.now(UTC) - timedelta(hours=3)).replace(microsecond=0)
    housings: list[Event] = []
    grants: list[Event] = []
    for _ in range(count):
        participant = mint_participant_id()
        housings.append(make_event("HousingStatusChanged", participant, base,
                                   "cedar-housing", status="TRANSITIONAL",
                                   provider="Cedar Commons"))
        grants.append(make_event(
            "ConsentGranted", participant, base + timedelta(hours=1), "harbor-cm",
            consent_id=f"{participant}-housing", recipients=["defender-assoc"],
            categories=["HOUSING"], purposes=["legal_defense"], valid_from=base,
            expires_at=base + timedelta(days=3650), exceptions=[], part2=False,
            form_sha256="0" * 64))
    shared = [("defender-assoc", h.event_id) for h in housings]
    tracker.watch(shared)
    tracker.expect(e.event_id for e in housings + grants)
    for event in housings:
        publishers.send(event)
    publishers.flush()
    for event in grants:
        publishers.send(event)
    publishers.flush()
    if not tracker.wait_all_visible(budget.cap(timeout_s), "revocation setup"):
        raise BenchError("revocation setup: the housing rows and grants did not all commit")
    if not tracker.wait_upserted(shared, budget.cap(timeout_s)):
        raise BenchError("revocation setup: the consents did not share the housing rows "
                         "with defender-assoc")
    progress(f"revocation: {count} housing rows shared with defender-assoc; revoking")
    latencies: list[float] = []
    sent_at: dict[tuple[str, str], tuple[float, str]] = {}
    for index, (housing, grant) in enumerate(zip(housings, grants, strict=True)):
        revoke = make_event("ConsentRevoked", housing.participant_id,
                            base + timedelta(hours=2), "harbor-cm",
                            consent_id=grant.payload["consent_id"])
        key = ("defender-assoc", housing.event_id)
        sent = time.time()
        sent_at[key] = (sent, revoke.event_id)
        publishers.send(revoke)
        publishers.flush()
        committed = tracker.wait_retracted(key, budget.cap(10.0))
        if committed is None:
            progress(f"revocation {index + 1}: no retraction within 10s")
            continue
        latencies.append(committed - sent)
    return {"revocations": count, **summary(latencies)}, sent_at


def raw_ceiling(kafka: KafkaConnection, topics: TopicNames, site: SitePolicy, expected: int,
                budget: Budget, timeout_s: float
                ) -> tuple[dict[str, Any], dict[tuple[str, int, int], float]]:
    """Messages/s of a bare KafkaConsumer over every inbound topic, from the beginning.

    Also returns each inbound record's timestamp (the SDK's CreateTime) by (topic, partition,
    offset), for the per-stage breakdown; collecting it is inside the timed loop (one dict
    store per record).
    """
    consumer = KafkaConsumer(**kafka.client_options(), group_id=None,
                             enable_auto_commit=False, client_id="leadhub-bench-raw")
    stamps: dict[tuple[str, int, int], float] = {}
    try:
        assignment = [TopicPartition(topics.inbound(p), partition)
                      for p in site.partner_ids()
                      for partition in sorted(consumer.partitions_for_topic(topics.inbound(p))
                                              or ())]
        consumer.assign(assignment)
        consumer.seek_to_beginning(*assignment)
        count = 0
        payload_bytes = 0
        started = time.perf_counter()
        deadline = time.monotonic() + budget.cap(timeout_s)
        while count < expected and time.monotonic() < deadline:
            for tp, records in consumer.poll(timeout_ms=500, max_records=5000).items():
                count += len(records)
                for record in records:
                    payload_bytes += len(record.value)
                    stamps[(tp.topic, tp.partition, record.offset)] = record.timestamp / 1000
        elapsed = time.perf_counter() - started
    finally:
        consumer.close()
    figures = {"messages": count, "expected": expected, "elapsed_s": elapsed,
               "messages_per_s": count / elapsed if elapsed else math.nan,
               "mean_value_bytes": payload_bytes / count if count else math.nan}
    return figures, stamps


def core_alone(log: list[LogRecord], sustained_ids: set[str], site: SitePolicy,
               catalog: Catalog, runs: int) -> dict[str, Any]:
    """The pure projection step over the sustained phase's ``lead.events`` records.

    :class:`~processors.projection_step.ProjectionStep` (Avro decode of each event body, the
    policy core, timers) over in-memory states (:class:`~consumers.audit.replay.MemoryStates`,
    as the auditor's replay): the sustained events and the CLOCK ticks that came between them,
    in log order per partition, canonical envelopes decoded beforehand (not timed). Best of
    ``runs`` runs, each from empty states.
    """
    last_offset: dict[int, int] = {}
    for record in log:
        if record.event_id in sustained_ids:
            last_offset[record.partition] = max(last_offset.get(record.partition, -1),
                                                record.offset)
    first_offset = {p: min(r.offset for r in log if r.partition == p and r.event_id
                           in sustained_ids) for p in last_offset}
    chosen = [r for r in log if r.partition in last_offset
              and first_offset[r.partition] <= r.offset <= last_offset[r.partition]
              and (r.canonical.kind == "CLOCK" or r.event_id in sustained_ids)]
    events = sum(1 for r in chosen if r.canonical.kind == "EVENT")
    timings: list[float] = []
    changes = 0
    for _ in range(runs):
        step = ProjectionStep(Projector(site, catalog), catalog)
        states = MemoryStates()
        changes = 0
        started = time.perf_counter()
        for record in chosen:
            changes += len(step.apply(states, record.partition, record.canonical).changes)
        timings.append(time.perf_counter() - started)
    best = min(timings) if timings else math.nan
    return {"events": events, "clock_records": len(chosen) - events, "changes": changes,
            "runs_s": timings, "best_s": best,
            "events_per_s": events / best if best else math.nan}


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def projector_alone(kafka: KafkaConnection, topics: TopicNames, database_url: str, site: SitePolicy,
                    catalog: Catalog, records: int, budget: Budget,
                    timeout_s: float) -> dict[str, Any]:
    """The projector over the whole ``lead.events`` of the run, as a backlog, into a fresh view.

    In the live run the projectors only ever see what the validators have committed; here one
    works in full batches as after an outage. It runs in this thread of the bench process, not
    in a child: the hub is stopped by now, so nothing else works in the process (the SDK
    publishers sit idle), and its CPU is the process's own over the timed calls. Same consumer
    group as the live ones (stopped by now), which it leaves at the end; a fresh view has no
    tracking rows, so it starts from offset 0.
    """
    store = ViewStore(database_url)
    store.create_schema()
    projector = LiveProjector(kafka, topics, store, Projector(site, catalog), catalog,
                              client_id="leadhub-bench-projector-alone")
    count = 0
    started = cpu_before = math.nan
    try:
        deadline = time.monotonic() + budget.cap(timeout_s)
        while count < records and time.monotonic() < deadline:
            # The clock starts with the first call that returned records: joining the group
            # and reading the tracking rows are not part of the rate.
            at, cpu_at = time.perf_counter(), _cpu()
            done = projector.run_once()
            if done and count == 0:
                started, cpu_before = at, cpu_at
            count += done
        elapsed = time.perf_counter() - started
        cpu = _cpu() - cpu_before
    finally:
        projector.close()
        store.close()
    return {"records": count, "expected": records, "elapsed_s": elapsed, "cpu_s": cpu,
            "batches": projector.counters.batches,
            "records_per_s": count / elapsed if elapsed else math.nan}
