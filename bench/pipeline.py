"""Benchmark: the whole running pipeline on the real local broker (issue 5).

One run, under a topic prefix of its own (``bench<random>.``) and a fresh SQLite view (or a
fresh database on the PostgreSQL server given by ``--database-url``):

1. starts ``leadhub run validator`` and ``leadhub run projector`` as child processes and runs
   the SQL sink (:class:`consumers.sink.ViewSink`) in a thread of this process; its
   ``on_commit`` hook timestamps the moment each event's own row (the row of its source
   partner) and each retraction became visible;
2. **sustained throughput**: publishes a simulated site as fast as the SDK goes (one
   :class:`producers.sdk.PartnerPublisher` per partner, ``send`` then ``flush``) and measures
   events/s from the first send until the last event's own row is committed;
3. **latency at a fixed rate** (default 500 events/s for 20 s, other participants): p50, p99
   and max of send -> own row committed;
4. **revocation latency**: consents sharing HOUSING rows with ``defender-assoc`` are revoked
   one at a time: send -> retraction committed;
5. **ceiling**: a raw kafka-python ``KafkaConsumer`` reads every inbound message of the prefix
   (no decoding): messages/s, and the ratio pipeline / raw;
6. **peak memory** of this process (``ru_maxrss``) and of each child (``VmHWM``);
7. stops the children with SIGTERM and prints a table (``--json`` for JSON), with a per-stage
   breakdown of the latencies read back from the Kafka record timestamps of ``lead.events``
   (validator output) and ``lead.view.changes`` (projector output).

Progress goes to stderr. Every wait has a timeout and the whole run a budget (``--budget``).
Exit codes: 0 figures printed (targets met or not), 1 the run failed, 2 setup error (e.g. the
broker is not running).

    .venv/bin/python bench/pipeline.py [--participants 1000] [--days 180] [--rate 500]
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import io
import json
import math
import os
import pstats
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition
from kafka.errors import KafkaError

from consumers.sink import ViewSink
from consumers.store import RowChange, ViewStore
from leadhub.services import ServiceError
from leadhub.topics_admin import create_topics
from processors.site import SitePolicy, load_site
from producers.sdk import PartnerPublisher
from producers.simulator import simulate
from schemas.canonical import decode_canonical
from schemas.catalog import Catalog, load_catalog
from schemas.codec import decode
from schemas.errors import HubError
from schemas.event import Event
from schemas.topics import TopicNames

ROOT = Path(__file__).resolve().parents[1]
SITE_FILE = ROOT / "config" / "site.example.yaml"
DEFAULT_BOOTSTRAP = "127.0.0.1:39092"
TARGET_EVENTS_PER_S = 5000.0
TARGET_P99_S = 1.0


class BenchError(Exception):
    """The benchmark cannot go on; ``exit_code`` 2 for setup problems, 1 otherwise."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def progress(message: str) -> None:
    """One progress line on stderr, prefixed with the wall-clock time."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


class Budget:
    """The run's total time budget; every wait asks it how long it may still take."""

    def __init__(self, seconds: float) -> None:
        self.deadline = time.monotonic() + seconds

    def cap(self, seconds: float) -> float:
        """``seconds``, or less if the budget ends sooner (never negative)."""
        return max(0.0, min(seconds, self.deadline - time.monotonic()))


# --------------------------------------------------------------------------------------------
# What became visible when


class CommitTracker:
    """Fed by the sink's ``on_commit``: when each own row and each retraction was committed.

    Times are wall-clock (``time.time()``) so they compare with Kafka record timestamps.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self.visible: dict[str, float] = {}
        self.retracted: dict[tuple[str, str], float] = {}
        self._missing: set[str] = set()
        self._watched: set[tuple[str, str]] = set()
        self.upserted: dict[tuple[str, str], float] = {}
        self.batches = 0
        self.changes = 0

    def on_commit(self, changes: Sequence[RowChange]) -> None:
        """Record the commit time of the batch's own rows and retractions (first one wins)."""
        now = time.time()
        with self._cond:
            self.batches += 1
            self.changes += len(changes)
            for change in changes:
                key = (change.recipient, change.event_id)
                if change.row is None:
                    self.retracted.setdefault(key, now)
                    continue
                if key in self._watched:
                    self.upserted.setdefault(key, now)
                if (change.row.get("source_partner") == change.recipient
                        and change.event_id not in self.visible):
                        self.visible[change.event_id] = now
                        self._missing.discard(change.event_id)
            self._cond.notify_all()

    def expect(self, event_ids: Iterable[str]) -> None:
        """Start waiting for the own rows of ``event_ids`` (before they are sent)."""
        with self._cond:
            self._missing = {e for e in event_ids if e not in self.visible}

    def watch(self, keys: Iterable[tuple[str, str]]) -> None:
        """Also record upserts of these (recipient, event_id) rows, whoever the source."""
        with self._cond:
            self._watched.update(keys)

    def wait_upserted(self, keys: Sequence[tuple[str, str]], timeout_s: float) -> bool:
        """Wait until every one of ``keys`` has been upserted."""
        with self._cond:
            return self._cond.wait_for(lambda: all(k in self.upserted for k in keys),
                                       timeout=timeout_s)

    def missing(self) -> int:
        with self._cond:
            return len(self._missing)

    def wait_all_visible(self, timeout_s: float, what: str) -> bool:
        """Wait until every expected own row is committed; progress every 5 s."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while self._missing:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                if not self._cond.wait_for(lambda: not self._missing, timeout=min(left, 5.0)):
                    progress(f"{what}: {len(self._missing):,} rows still to commit")
            return True

    def wait_retracted(self, key: tuple[str, str], timeout_s: float) -> float | None:
        """The commit time of the retraction of (recipient, event_id), or None on timeout."""
        with self._cond:
            self._cond.wait_for(lambda: key in self.retracted, timeout=timeout_s)
            return self.retracted.get(key)


class SinkThread:
    """The in-process :class:`ViewSink`, in a thread, optionally under cProfile."""

    def __init__(self, bootstrap: str, topic: str, store: ViewStore, tracker: CommitTracker,
                 *, profile: bool) -> None:
        self.sink = ViewSink(bootstrap, topic, store, on_commit=tracker.on_commit)
        self.stop = threading.Event()
        self.profiler = cProfile.Profile() if profile else None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="view-sink", daemon=True)

    def _run(self) -> None:
        try:
            if self.profiler is not None:
                self.profiler.runcall(self.sink.run, self.stop)
            else:
                self.sink.run(self.stop)
        except BaseException as exc:  # reported by the main thread
            self.error = exc

    def start(self) -> None:
        self.thread.start()

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=30)
        self.sink.close()


# --------------------------------------------------------------------------------------------
# The hub's child processes


class Children:
    """``leadhub run validator|projector`` under the bench's prefix, logs in the state dir."""

    def __init__(self, env: dict[str, str], state_dir: Path, *, profile: bool) -> None:
        self.env = env
        self.logs = state_dir / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.profile_dir = state_dir if profile else None
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, step: str) -> None:
        command = [sys.executable]
        if self.profile_dir is not None:
            command += ["-m", "cProfile", "-o", str(self.profile_dir / f"{step}.prof")]
        command += ["-m", "leadhub.cli", "run", step]
        with (self.logs / f"{step}.log").open("ab") as log:
            self.procs[step] = subprocess.Popen(command, env=self.env, cwd=ROOT, stdout=log,
                                                stderr=subprocess.STDOUT)

    def check_alive(self) -> None:
        """Raise BenchError (with the log tail) if a child has exited."""
        for step, proc in self.procs.items():
            if proc.poll() is not None:
                raise BenchError(f"leadhub run {step} exited with {proc.returncode}:\n"
                                 + self.log_tail(step))

    def vm_hwm_mib(self) -> dict[str, float]:
        """Peak resident set (VmHWM) of each running child, in MiB."""
        peaks: dict[str, float] = {}
        for step, proc in self.procs.items():
            with contextlib.suppress(OSError):
                for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines():
                    if line.startswith("VmHWM:"):
                        peaks[step] = int(line.split()[1]) / 1024
        return peaks

    def cpu_seconds(self) -> dict[str, float]:
        """User + system CPU seconds used so far by each running child."""
        ticks = os.sysconf("SC_CLK_TCK")
        used: dict[str, float] = {}
        for step, proc in self.procs.items():
            with contextlib.suppress(OSError, IndexError, ValueError):
                stat = Path(f"/proc/{proc.pid}/stat").read_text()
                fields = stat.rsplit(")", 1)[1].split()
                used[step] = (int(fields[11]) + int(fields[12])) / ticks
        return used

    def thread_cpu_seconds(self) -> dict[str, list[float]]:
        """CPU seconds of each thread of each child, main thread first, busiest next."""
        ticks = os.sysconf("SC_CLK_TCK")
        out: dict[str, list[float]] = {}
        for step, proc in self.procs.items():
            main, others = 0.0, []
            with contextlib.suppress(OSError):
                for task in Path(f"/proc/{proc.pid}/task").iterdir():
                    with contextlib.suppress(OSError, IndexError, ValueError):
                        fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
                        used = (int(fields[11]) + int(fields[12])) / ticks
                        if task.name == str(proc.pid):
                            main = used
                        else:
                            others.append(used)
            out[step] = [main, *sorted(others, reverse=True)[:3]]
        return out

    def stop_all(self, timeout_s: float = 30.0) -> dict[str, int | None]:
        """SIGTERM every child, wait, SIGKILL stragglers; return each exit code."""
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        codes: dict[str, int | None] = {}
        for step, proc in self.procs.items():
            try:
                codes[step] = proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                progress(f"{step} ignored SIGTERM for {timeout_s:.0f}s; killing it")
                proc.kill()
                codes[step] = proc.wait(timeout=10)
        return codes

    def log_tail(self, step: str, lines: int = 30) -> str:
        path = self.logs / f"{step}.log"
        if not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


# --------------------------------------------------------------------------------------------
# Publishing


class Publishers:
    """One SDK publisher per partner, created up front (connections warm before timing)."""

    def __init__(self, bootstrap: str, topics: TopicNames, site: SitePolicy,
                 catalog: Catalog) -> None:
        self.by_partner: dict[str, PartnerPublisher] = {}
        for partner_id in site.partner_ids():
            self.by_partner[partner_id] = PartnerPublisher(partner_id, bootstrap,
                                                           catalog=catalog, topics=topics)
        self.sent = 0

    def send(self, event: Event) -> None:
        assert event.source_partner is not None
        self.by_partner[event.source_partner].send(event)
        self.sent += 1

    def flush(self) -> None:
        for publisher in self.by_partner.values():
            publisher.flush()

    def close(self) -> None:
        for publisher in self.by_partner.values():
            publisher.close()


def _event(type_: str, participant: str, at: datetime, source: str, **payload: Any) -> Event:
    return Event(event_id=str(uuid.uuid4()), type=type_, participant_id=participant,
                 occurred_at=at, payload=payload, source_partner=source)


# --------------------------------------------------------------------------------------------
# Figures


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile of ``values`` (nan if empty)."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def summary(values: Sequence[float]) -> dict[str, float]:
    """count, p50, p99, max (seconds) of latencies."""
    return {"count": len(values), "p50_s": percentile(values, 50),
            "p99_s": percentile(values, 99), "max_s": max(values) if values else math.nan}


@dataclass
class Results:
    """Everything the run measured (JSON-ready through :meth:`as_json`)."""

    machine: dict[str, Any] = field(default_factory=dict)
    sustained: dict[str, Any] = field(default_factory=dict)
    latency: dict[str, Any] = field(default_factory=dict)
    revocation: dict[str, Any] = field(default_factory=dict)
    ceiling: dict[str, Any] = field(default_factory=dict)
    memory_mib: dict[str, float] = field(default_factory=dict)
    topics_mib: dict[str, float] = field(default_factory=dict)
    cpu_s: dict[str, float] = field(default_factory=dict)
    thread_cpu_s: dict[str, list[float]] = field(default_factory=dict)
    sink: dict[str, Any] = field(default_factory=dict)
    stages: dict[str, Any] = field(default_factory=dict)
    targets: dict[str, bool] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        def clean(value: Any) -> Any:
            if isinstance(value, float):
                return None if math.isnan(value) else round(value, 4)
            if isinstance(value, dict):
                return {k: clean(v) for k, v in value.items()}
            return value

        return {k: clean(v) for k, v in self.__dict__.items()}


# --------------------------------------------------------------------------------------------
# Phases


def wait_ready(publishers: Publishers, tracker: CommitTracker, children: Children,
               budget: Budget, timeout_s: float) -> float:
    """Publish one probe per partition-ish and wait for its rows: the hub is up and assigned."""
    now = datetime.now(UTC).replace(microsecond=0)
    probes = [_event("ContactLogged", f"warmup-{i}-{uuid.uuid4().hex[:8]}", now, "harbor-cm",
                     contact_method="OUTREACH", successful=True) for i in range(16)]
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
        housings.append(_event("HousingStatusChanged", participant, base, "cedar-housing",
                               status="TRANSITIONAL", provider="Cedar Commons"))
        grants.append(_event(
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
        revoke = _event("ConsentRevoked", housing.participant_id,
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
        recipient, _, event_id = record.key.decode().partition("|")
        if sources.get(event_id) == recipient:
            projected.setdefault(event_id, record.timestamp / 1000)
        elif (recipient, event_id) in revocations and json.loads(record.value)["kind"] == (
                "retract"):
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


# --------------------------------------------------------------------------------------------
# Setup and the run


def check_broker(bootstrap: str) -> None:
    """Raise BenchError(exit 2) unless something accepts TCP connections at ``bootstrap``."""
    host, _, port = bootstrap.split(",")[0].rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=3):
            pass
    except (OSError, ValueError) as exc:
        raise BenchError(
            f"no Kafka broker at {bootstrap} ({exc}); start it with "
            "`.venv/bin/leadhub services start`", exit_code=2) from exc


@contextlib.contextmanager
def view_database(database_url: str | None, state_dir: Path) -> Iterator[str]:
    """A fresh SQLite file, or a fresh database on the given PostgreSQL server (dropped after)."""
    if not database_url:
        yield f"sqlite:///{state_dir / 'view.sqlite'}"
        return
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    url = make_url(database_url)
    if url.get_backend_name() != "postgresql":
        yield database_url
        return
    name = f"leadhub_bench_{uuid.uuid4().hex[:12]}"
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:
        raise BenchError(f"cannot create a database on {url.render_as_string()}: {exc}",
                         exit_code=2) from exc
    try:
        yield url.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def topic_sizes_mib(bootstrap: str, prefix: str) -> dict[str, float]:
    """On-disk size of each topic of the bench's prefix (MiB), largest first, prefix removed.

    Shows the write amplification: inbound bytes vs lead.events, lead.view.changes and the
    faust changelogs (the tables' full values, written on every change).
    """
    sizes: dict[str, float] = {}
    with contextlib.suppress(KafkaError, OSError):
        admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="leadhub-bench-sizes")
        try:
            mine = [t for t in admin.list_topics() if t.startswith(prefix)]
            for broker in admin.describe_log_dirs(mine):
                for log_dir in broker["log_dirs"]:
                    for topic in log_dir["topics"]:
                        name = topic["name"][len(prefix):]
                        total = sum(p["partition_size"] for p in topic["partitions"])
                        sizes[name] = sizes.get(name, 0.0) + total / 2**20
        finally:
            admin.close()
    return dict(sorted(sizes.items(), key=lambda item: -item[1]))


def delete_prefix_topics(bootstrap: str, prefix: str) -> None:
    """Delete every topic of the bench's own prefix (inbound, hub and faust changelogs)."""
    try:
        admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="leadhub-bench-clean")
    except (KafkaError, OSError):
        return
    try:
        mine = [t for t in admin.list_topics() if t.startswith(prefix)]
        if mine:
            admin.delete_topics(mine)
    except KafkaError as exc:
        progress(f"could not delete the bench topics: {exc}")
    finally:
        admin.close()


def machine() -> dict[str, Any]:
    cpu = "unknown CPU"
    with contextlib.suppress(OSError):
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                cpu = line.split(":", 1)[1].strip()
    return {"nproc": os.cpu_count(), "cpu": cpu, "python": sys.version.split()[0],
            "load_before": os.getloadavg()}


def run(args: argparse.Namespace) -> Results:
    """The whole benchmark; returns its figures (children stopped, temp files gone)."""
    budget = Budget(args.budget)
    check_broker(args.bootstrap)
    results = Results(machine=machine())
    site = load_site(SITE_FILE)
    catalog = load_catalog()
    prefix = f"bench{uuid.uuid4().hex[:10]}."
    topics = TopicNames(prefix)
    progress(f"topic prefix {prefix}; load average {results.machine['load_before']}")
    try:
        created = create_topics(args.bootstrap, topics, site, args.partitions)
    except ServiceError as exc:
        raise BenchError(f"{exc}; is the broker running? (`.venv/bin/leadhub services "
                         "start`)", exit_code=2) from exc
    progress(f"created {len(created)} topics")

    try:
        now = datetime.now(UTC).replace(microsecond=0)
        start = now - timedelta(days=args.days + 1)
        sustained_events = list(simulate(site, catalog, args.participants, args.days, args.seed,
                                         start))
        paced_count = int(args.rate * args.paced_seconds)
        paced_events: list[Event] = []
        for event in simulate(site, catalog, max(50, paced_count // 20), args.days,
                              args.seed + 1, start):
            paced_events.append(event)
            if len(paced_events) >= paced_count:
                break
        progress(f"simulated {len(sustained_events):,} + {len(paced_events):,} events")

        with tempfile.TemporaryDirectory(prefix="leadhub-bench-") as tmp, \
                view_database(args.database_url, Path(tmp)) as database_url:
            state_dir = Path(tmp)
            env = dict(os.environ, LEADHUB_KAFKA_BOOTSTRAP=args.bootstrap,
                       LEADHUB_TOPIC_PREFIX=prefix, LEADHUB_SITE_FILE=str(SITE_FILE),
                       LEADHUB_STATE_DIR=str(state_dir), LEADHUB_TICK_SECONDS="1",
                       LEADHUB_PARTITIONS=str(args.partitions))
            children = Children(env, state_dir, profile=args.profile)
            store = ViewStore(database_url)
            store.create_schema()
            tracker = CommitTracker()
            sink = SinkThread(args.bootstrap, topics.view_changes, store, tracker,
                              profile=args.profile)
            publishers = Publishers(args.bootstrap, topics, site, catalog)
            stopped = False
            try:
                children.start("validator")
                children.start("projector")
                sink.start()
                progress("started validator, projector and the sink; waiting for the hub")
                ready = wait_ready(publishers, tracker, children, budget, 120.0)
                progress(f"hub ready after {ready:.1f}s")

                results.sustained = sustained_phase(sustained_events, publishers, tracker,
                                                    children, budget, 180.0)
                progress(f"sustained: {results.sustained['events_per_s']:,.0f} events/s")
                children.check_alive()

                time.sleep(2.0)  # let the ticks and the tail settle
                progress(f"paced: {len(paced_events):,} events at {args.rate:,.0f}/s")
                results.latency, paced_sent = paced_phase(paced_events, args.rate, publishers,
                                                          tracker, budget, 60.0)
                progress(f"paced: p50 {results.latency['p50_s'] * 1000:.0f} ms, "
                         f"p99 {results.latency['p99_s'] * 1000:.0f} ms")
                children.check_alive()

                progress(f"revocation: {args.revocations} consents")
                results.revocation, revoke_sent = revocation_phase(args.revocations, publishers,
                                                                   tracker, budget, 60.0)
                progress(f"revocation: p50 {results.revocation['p50_s'] * 1000:.0f} ms, "
                         f"p99 {results.revocation['p99_s'] * 1000:.0f} ms")
                children.check_alive()

                results.memory_mib = {f"{k} (VmHWM)": v for k, v in children.vm_hwm_mib().items()}
                results.cpu_s = children.cpu_seconds()
                results.thread_cpu_s = children.thread_cpu_seconds()
                codes = children.stop_all()
                stopped = True
                progress(f"children stopped: {codes}")
                sink.close()
                if sink.error is not None:
                    raise BenchError(f"the sink failed: {sink.error!r}")
                results.sink = {"backend": database_url.split(":", 1)[0].split("+", 1)[0],
                                "batches": tracker.batches, "changes": tracker.changes,
                                "changes_per_batch": tracker.changes / max(1, tracker.batches)}

                progress("ceiling: raw KafkaConsumer over the inbound topics")
                results.ceiling = raw_ceiling(args.bootstrap, topics, site, publishers.sent,
                                              budget, 60.0)
                pipeline = results.sustained["events_per_s"]
                results.ceiling["pipeline_over_raw"] = pipeline / results.ceiling["messages_per_s"]

                progress("stage breakdown from the record timestamps")
                sources = {e.event_id: str(e.source_partner)
                           for e in sustained_events + paced_events}
                results.stages = stage_breakdown(
                    args.bootstrap, topics, catalog, sources, {"paced": paced_sent},
                    revoke_sent, tracker.visible, tracker.retracted,
                    results.sustained["first_send"], {e.event_id for e in sustained_events},
                    budget)
                results.topics_mib = topic_sizes_mib(args.bootstrap, prefix)
                progress("sink alone: replaying view changes into a fresh view database")
                replay_dir = state_dir / "replay"
                replay_dir.mkdir()
                with view_database(args.database_url, replay_dir) as replay_url:
                    results.sink["alone"] = sink_alone(args.bootstrap, topics.view_changes,
                                                       replay_url, min(tracker.changes, 100_000),
                                                       budget, 60.0)
                results.memory_mib["bench process (ru_maxrss)"] = (
                    resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
                results.machine["load_after"] = os.getloadavg()
                results.targets = {
                    "sustained >= 5000 events/s": pipeline >= TARGET_EVENTS_PER_S,
                    "p99 <= 1 s at the fixed rate": results.latency["p99_s"] <= TARGET_P99_S,
                    "revocation p99 <= 1 s": results.revocation["p99_s"] <= TARGET_P99_S,
                }
                if args.profile:
                    _print_profiles(sink.profiler, state_dir, args.profile_lines,
                                    args.profile_out)
            finally:
                if not stopped:
                    children.stop_all()
                    sink.close()
                publishers.close()
                store.close()
    finally:
        if not args.keep_topics:
            delete_prefix_topics(args.bootstrap, prefix)
    return results


def _print_profiles(sink_profiler: cProfile.Profile | None, state_dir: Path,
                    lines: int, keep_in: Path | None) -> None:
    """Top functions by own time of the sink thread and of each child, on stderr.

    The children's profiles cover their main thread (the faust agents); the aiokafka consumer
    runs in a thread of its own (see the per-thread CPU figures).
    """
    sources: list[tuple[str, cProfile.Profile | str]] = []
    if sink_profiler is not None:
        sink_profiler.dump_stats(str(state_dir / "sink.prof"))
        sources.append(("sink thread", sink_profiler))
    if keep_in is not None:
        keep_in.mkdir(parents=True, exist_ok=True)
        for name in ("sink", "validator", "projector"):
            with contextlib.suppress(OSError):
                (keep_in / f"{name}.prof").write_bytes(
                    (state_dir / f"{name}.prof").read_bytes())
    for step in ("validator", "projector"):
        path = state_dir / f"{step}.prof"
        if path.exists():
            sources.append((step, str(path)))
    for name, source in sources:
        buffer = io.StringIO()
        pstats.Stats(source, stream=buffer).sort_stats("tottime").print_stats(lines)
        print(f"\n===== profile: {name} (by own time) =====", file=sys.stderr)
        print(buffer.getvalue(), file=sys.stderr)


def render(results: Results, args: argparse.Namespace) -> str:
    """The human-readable table."""
    s, lat, rev, ceil = results.sustained, results.latency, results.revocation, results.ceiling

    def ms(value: float) -> str:
        return "n/a" if math.isnan(value) else f"{value * 1000:,.0f} ms"

    def met(name: str) -> str:
        return "met" if results.targets.get(name) else "NOT met"

    rows = [
        ("sustained events/s (first send -> last own row committed)",
         f"{s['events_per_s']:,.0f}", f">= 5,000: {met('sustained >= 5000 events/s')}"),
        ("  events, elapsed", f"{s['events']:,} in {s['elapsed_s']:.1f} s"
         + ("" if s["complete"] else f" (only {s['visible']:,} visible)"), ""),
        ("  SDK publish alone (send + flush)", f"{s['publish_events_per_s']:,.0f}/s", ""),
        (f"latency at {lat['rate_asked']:,.0f}/s (achieved {lat['rate_achieved']:,.0f}/s, "
         f"{lat['duration_s']:.0f} s, {lat['count']:,} events) p50",
         ms(lat["p50_s"]), ""),
        ("  p99", ms(lat["p99_s"]), f"<= 1 s: {met('p99 <= 1 s at the fixed rate')}"),
        ("  max", ms(lat["max_s"]), ""),
        (f"revocation -> retraction committed ({rev['count']} of {rev['revocations']}) p50",
         ms(rev["p50_s"]), ""),
        ("  p99", ms(rev["p99_s"]), f"<= 1 s: {met('revocation p99 <= 1 s')}"),
        ("  max", ms(rev["max_s"]), ""),
        ("raw KafkaConsumer, inbound topics, no decoding",
         f"{ceil['messages_per_s']:,.0f} msg/s", f"{ceil['messages']:,} messages"),
        ("pipeline / raw", f"{ceil['pipeline_over_raw']:.1%}", ""),
    ]
    rows += [(f"peak memory, {k}", f"{v:,.0f} MiB", "") for k, v in results.memory_mib.items()]
    rows += [(f"CPU during sustained phase, {k}", f"{v:.1f} s", "")
             for k, v in s["child_cpu_s"].items()]
    rows += [(f"CPU by thread at the end, {k} (main, then busiest others)",
              " / ".join(f"{x:.0f}" for x in v) + " s", "")
             for k, v in results.thread_cpu_s.items()]
    rows.append(("sink batches / changes", f"{results.sink['batches']:,} / "
                 f"{results.sink['changes']:,}",
                 f"{results.sink['changes_per_batch']:,.0f} per batch"))
    rows.append(("machine CPU busy during sustained phase (2 cores = 100%)",
                 f"{s['machine_busy']:.0%}", ""))
    alone = results.sink.get("alone", {})
    if alone:
        per_event = results.sink["changes"] / max(1, publishers_total(results))
        rows.append((f"sink alone, replaying a backlog into a fresh {results.sink['backend']}",
                     f"{alone['changes_per_s']:,.0f} changes/s",
                     f"~{alone['changes_per_s'] / per_event:,.0f} events/s "
                     f"at {per_event:.1f} changes/event"))
    last = results.stages.get("sustained_last_record_s", {})
    rows += [(f"sustained: last record of {k} at", f"{v:.1f} s",
              f"{s['events'] / v:,.0f} events/s" if v else "") for k, v in last.items()]
    inbound = sum(v for k, v in results.topics_mib.items() if k.startswith("lead.in."))
    rows.append(("bytes on disk, all inbound topics", f"{inbound:,.1f} MiB", ""))
    rows += [(f"bytes on disk, {k}", f"{v:,.1f} MiB", f"{v / inbound:,.0f}x inbound"
              if inbound else "") for k, v in results.topics_mib.items()
             if not k.startswith("lead.in.") and v >= 0.1]
    for phase in ("paced", "revocation"):
        for name, stats in results.stages.get(phase, {}).items():
            rows.append((f"{phase}: {name} p50 / p99",
                         f"{ms(stats['p50_s'])} / {ms(stats['p99_s'])}", ""))
    width = max(len(r[0]) for r in rows)
    lines = [f"leadhub pipeline benchmark - {results.machine['nproc']} cores "
             f"({results.machine['cpu']}), Python {results.machine['python']}, "
             f"load {results.machine['load_before'][0]:.2f} before / "
             f"{results.machine.get('load_after', (math.nan,))[0]:.2f} after",
             f"{'figure':<{width}}  {'value':>18}  note", "-" * (width + 40)]
    lines += [f"{a:<{width}}  {b:>18}  {c}" for a, b, c in rows]
    return "\n".join(lines)


def publishers_total(results: Results) -> int:
    """Events sent through the SDK in the run (the raw consumer's expected count)."""
    return int(results.ceiling.get("expected", 0))


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Benchmark the running leadhub pipeline (validator, projector, sink) on "
                    "the local Kafka broker: sustained events/s, latency at a fixed rate, "
                    "revocation latency, raw-consumer ceiling and peak memory.")
    parser.add_argument("--bootstrap", default=os.environ.get("LEADHUB_KAFKA_BOOTSTRAP")
                        or DEFAULT_BOOTSTRAP, help="Kafka bootstrap (default %(default)s)")
    parser.add_argument("--database-url", default=None,
                        help="PostgreSQL server URL: the view goes to a fresh database there "
                             "(default: a fresh SQLite file)")
    parser.add_argument("--participants", type=int, default=1000,
                        help="simulated participants of the sustained phase (%(default)s)")
    parser.add_argument("--days", type=int, default=180,
                        help="simulated days of history (%(default)s)")
    parser.add_argument("--seed", type=int, default=1, help="simulation seed (%(default)s)")
    parser.add_argument("--rate", type=float, default=500.0,
                        help="events/s of the latency phase (%(default)s)")
    parser.add_argument("--paced-seconds", type=float, default=20.0,
                        help="duration of the latency phase (%(default)s)")
    parser.add_argument("--revocations", type=int, default=50,
                        help="consents revoked one at a time (%(default)s)")
    parser.add_argument("--partitions", type=int, default=4,
                        help="partitions of every topic (%(default)s)")
    parser.add_argument("--budget", type=float, default=420.0,
                        help="upper bound of the whole run in seconds (%(default)s)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument("--profile", action="store_true",
                        help="cProfile the sink thread and both children (slower; figures "
                             "are then not representative) and print the top functions")
    parser.add_argument("--profile-lines", type=int, default=25,
                        help="functions listed per profile (%(default)s)")
    parser.add_argument("--profile-out", type=Path, default=None,
                        help="with --profile: also keep the .prof files in this directory")
    parser.add_argument("--keep-topics", action="store_true",
                        help="do not delete the bench's topics at the end")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        results = run(args)
    except BenchError as exc:
        print(f"bench/pipeline.py: {exc}", file=sys.stderr)
        return exc.exit_code
    except (HubError, KafkaError) as exc:
        print(f"bench/pipeline.py: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("bench/pipeline.py: interrupted", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(results.as_json(), indent=2, default=str))
    else:
        print(render(results, args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
