"""The pipeline benchmark's phases: warm-up, sustained, paced latency, revocation, ceiling, sink.

Each phase publishes through :class:`pipeline_harness.Publishers`, waits on the
:class:`pipeline_tracker.CommitTracker` within the run's :class:`pipeline_harness.Budget`, and
returns its figures as a dict (see :class:`pipeline_report.Results`).
"""

from __future__ import annotations

import contextlib
import math
import os
import resource
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from kafka import KafkaConsumer, TopicPartition

from consumers.sink import ViewSink
from consumers.store import ViewStore
from processors.site import SitePolicy
from schemas.event import Event
from schemas.topics import TopicNames

# isort: split
# Siblings in bench/: run as a file, the script's folder is first on sys.path.
from pipeline_harness import BenchError, Budget, Children, Publishers, make_event, progress
from pipeline_report import summary
from pipeline_tracker import CommitTracker


def wait_ready(publishers: Publishers, tracker: CommitTracker, children: Children,
               budget: Budget, timeout_s: float) -> float:
    """Publish one probe per partition-ish and wait for its rows: the hub is up and assigned."""
    now = datetime.now(UTC).replace(microsecond=0)
    probes = [make_event("ContactLogged", f"warmup-{i}-{uuid.uuid4().hex[:8]}", now,
                         "harbor-cm", contact_method="OUTREACH", successful=True)
              for i in range(16)]
    tracker.expect(e.event_id for e in probes)
    started = time.monotonic()
    for probe in probes:
        publishers.send(probe)
    publishers.flush()
    deadline = time.monotonic() + budget.cap(timeout_s)
    while time.monotonic() < deadline:
        children.check_alive()
        if tracker.wait_all_visible(min(5.0, deadline - time.monotonic()), "warm-up"):
            return time.monotonic() - started
    raise BenchError(f"the hub did not become ready within {timeout_s:.0f}s; logs:\n"
                     f"--- validator\n{children.log_tail('validator')}\n"
                     f"--- projector\n{children.log_tail('projector')}")


def _machine_busy() -> tuple[float, float]:
    """(busy, total) jiffies of all CPUs since boot, from /proc/stat."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        idle = values[3] + values[4]
        return float(sum(values) - idle), float(sum(values))
    return math.nan, math.nan


def _self_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def sustained_phase(events: list[Event], publishers: Publishers, tracker: CommitTracker,
                    children: Children, budget: Budget, timeout_s: float) -> dict[str, Any]:
    """Publish ``events`` as fast as possible; events/s until the last own row commits."""
    tracker.expect(e.event_id for e in events)
    cpu_before = children.cpu_seconds()
    self_before, busy_before = _self_cpu(), _machine_busy()
    first_send = time.time()
    for event in events:
        publishers.send(event)
    sent = time.time()
    publishers.flush()
    flushed = time.time()
    progress(f"sustained: {len(events):,} events sent in {sent - first_send:.1f}s "
             f"(acknowledged after {flushed - first_send:.1f}s); waiting for their rows")
    done = tracker.wait_all_visible(budget.cap(timeout_s), "sustained")
    visible = [tracker.visible[e.event_id] for e in events if e.event_id in tracker.visible]
    last = max(visible) if visible else math.nan
    elapsed = last - first_send
    cpu_after = children.cpu_seconds()
    self_after, busy_after = _self_cpu(), _machine_busy()
    child_cpu = {k: cpu_after.get(k, math.nan) - v for k, v in cpu_before.items()}
    child_cpu["bench process (SDK + sink)"] = self_after - self_before
    return {
        "events": len(events),
        "complete": done,
        "visible": len(visible),
        "first_send": first_send,
        "publish_s": flushed - first_send,
        "publish_events_per_s": len(events) / (flushed - first_send),
        "elapsed_s": elapsed,
        "events_per_s": len(visible) / elapsed if visible else math.nan,
        "child_cpu_s": child_cpu,
        "machine_busy": (busy_after[0] - busy_before[0]) / (busy_after[1] - busy_before[1]),
        "machine_cpu_s": (busy_after[0] - busy_before[0]) / os.sysconf("SC_CLK_TCK"),
    }


def paced_phase(events: list[Event], rate: float, publishers: Publishers,
                tracker: CommitTracker, budget: Budget, timeout_s: float
                ) -> tuple[dict[str, Any], dict[str, float]]:
    """Send ``events`` at ``rate`` events/s; latency of send -> own row committed."""
    tracker.expect(e.event_id for e in events)
    sent_at: dict[str, float] = {}
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
    latencies = [tracker.visible[e] - t for e, t in sent_at.items() if e in tracker.visible]
    result = {"rate_asked": rate, "rate_achieved": len(events) / duration,
              "duration_s": duration, "complete": done, **summary(latencies)}
    return result, sent_at


def revocation_phase(count: int, publishers: Publishers, tracker: CommitTracker,
                     budget: Budget, timeout_s: float
                     ) -> tuple[dict[str, Any], dict[tuple[str, str], float]]:
    """Share HOUSING rows with defender-assoc by consent, then revoke them one at a time."""
    base = (datetime.now(UTC) - timedelta(hours=3)).replace(microsecond=0)
    housings: list[Event] = []
    grants: list[Event] = []
    for i in range(count):
        participant = f"rev-{i}-{uuid.uuid4().hex[:8]}"
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
    sent_at: dict[tuple[str, str], float] = {}
    for index, (housing, grant) in enumerate(zip(housings, grants, strict=True)):
        revoke = make_event("ConsentRevoked", housing.participant_id,
                            base + timedelta(hours=2), "harbor-cm",
                            consent_id=grant.payload["consent_id"])
        key = ("defender-assoc", housing.event_id)
        sent = time.time()
        sent_at[key] = sent
        publishers.send(revoke)
        publishers.flush()
        committed = tracker.wait_retracted(key, budget.cap(10.0))
        if committed is None:
            progress(f"revocation {index + 1}: no retraction within 10s")
            continue
        latencies.append(committed - sent)
    return {"revocations": count, **summary(latencies)}, sent_at


def raw_ceiling(bootstrap: str, topics: TopicNames, site: SitePolicy, expected: int,
                budget: Budget, timeout_s: float) -> dict[str, Any]:
    """Messages/s of a bare KafkaConsumer over every inbound topic, from the beginning."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None,
                             enable_auto_commit=False, client_id="leadhub-bench-raw")
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
            for records in consumer.poll(timeout_ms=500, max_records=5000).values():
                count += len(records)
                payload_bytes += sum(len(r.value) for r in records)
        elapsed = time.perf_counter() - started
    finally:
        consumer.close()
    return {"messages": count, "expected": expected, "elapsed_s": elapsed,
            "messages_per_s": count / elapsed if elapsed else math.nan,
            "mean_value_bytes": payload_bytes / count if count else math.nan}


def sink_alone(bootstrap: str, topic: str, database_url: str, limit: int, budget: Budget,
               timeout_s: float) -> dict[str, Any]:
    """Replay the first ``limit`` view changes into a fresh view: the sink's own rate.

    In the live run the sink only ever sees what the projector has produced; here it has a
    backlog, so it works in full batches (2,000 changes) as it would after an outage.
    """
    store = ViewStore(database_url)
    store.create_schema()
    sink = ViewSink(bootstrap, topic, store)
    count = 0
    try:
        started = time.perf_counter()
        deadline = time.monotonic() + budget.cap(timeout_s)
        while count < limit and time.monotonic() < deadline:
            count += sink.run_once()
        elapsed = time.perf_counter() - started
    finally:
        sink.close()
        store.close()
    return {"changes": count, "elapsed_s": elapsed,
            "changes_per_s": count / elapsed if elapsed else math.nan}
