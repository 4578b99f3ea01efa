"""Chaos harness: the hub's processes SIGKILLed at random while a site publishes, on busy cores.

Used by ``tests/test_chaos.py``; nothing here asserts. :func:`run_chaos` runs one chaos run
against a test's ``hub`` (``HubProcesses``), topics and ``live_view`` and returns a
:class:`ChaosOutcome`: the counts of every stage, the kill log, the recovery times, the audit
commands' results, a list of failures (empty when the run lost and doubled nothing) and a
printable report.

The pieces:

- :class:`CpuBurner`: busy-loop subprocesses, one per core, at normal priority.
- :class:`Killer`: a thread that SIGKILLs a random hub process every 2-5 s (the first one
  0.8-2 s after the start) and restarts it at once; it also restarts any process that exited by
  itself (as the supervisor of ``leadhub run all`` would) and logs that separately. Seeded: the
  same seed gives the same sequence of victims and pauses.
- :class:`ProgressMonitor`: a thread sampling, about three times a second, both consumer groups
  (state, members, assignments), the validator group's committed offsets against the inbound
  topics' end offsets, and the projectors' tracking rows against ``lead.events``' last stable
  offsets and high watermarks; it names the producer of any transaction that holds a
  ``lead.events`` partition's last stable offset still. :func:`recoveries`, :func:`max_stalls`,
  :func:`rebalancing` and :func:`lso_hangs` turn the samples into recovery times.
- :func:`wait_settled`: no validator lag, no open transaction hiding records of ``lead.events``,
  the projectors' tracking rows at its end.
- :func:`count_stages` and :func:`check`: published -> inbound -> ``lead.events`` ->
  ``lead.dlq`` -> view rows, per partner, with the coordinates of anything missing or doubled.
"""

from __future__ import annotations

import json
import random
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from consumers.audit.compare import wait_caught_up
from consumers.audit.kafka_log import TopicReader
from consumers.live_projector import projector_group
from consumers.store import ViewStore
from processors.kafka_validator import group_id as validator_group
from processors.offline import project_events, rows_for
from processors.projector import Projector
from processors.site import SitePolicy, load_site
from producers.sdk import publish_by_source
from producers.simulator import simulate
from schemas.canonical import decode_canonical
from schemas.catalog import Catalog, load_catalog
from schemas.codec import decode
from schemas.event import Event
from schemas.topics import TopicNames

CATALOG: Catalog = load_catalog()
START = datetime(2025, 3, 1, tzinfo=UTC)
#: The simulator never has the coordinator publish; it takes over these events' screening.
COORDINATOR = "lead-coordinator"
COORDINATOR_TYPES = frozenset({"ReferralScreened"})
#: The issue's bound: a dead member's partitions are processed again within this long.
RECOVERY_BOUND_S = 15.0


@dataclass(frozen=True, slots=True)
class Regime:
    """How much a chaos run publishes and how fast."""

    name: str
    participants: int
    days: int
    rate: float  # events/s


LOW = Regime("low", participants=60, days=120, rate=40.0)
HIGH = Regime("high", participants=200, days=180, rate=300.0)


# -- events ----------------------------------------------------------------------------------

def site_events(site: SitePolicy, participants: int, days: int, seed: int) -> list[Event]:
    """A simulated site's history in which every partner of the site publishes.

    The simulator has no coordinator events; every second ``ReferralScreened`` is published by
    the coordinator instead of case management (its role may emit that type).
    """
    events = list(simulate(site, CATALOG, participants, days, seed, START))
    if COORDINATOR not in site.partner_ids():
        return events
    taken = 0
    out: list[Event] = []
    for event in events:
        if event.type in COORDINATOR_TYPES:
            taken += 1
            if taken % 2 == 0:
                event = replace(event, source_partner=COORDINATOR)
        out.append(event)
    return out


def expected_view(site: SitePolicy, events: Sequence[Event]) -> dict[str, list[dict[str, Any]]]:
    """What the pure core shows each partner after ``events`` (rows as the view stores them)."""
    view = project_events(iter(events), Projector(site, CATALOG), at=datetime.now(UTC))
    return {partner: [row.to_json() for row in rows_for(view, partner)]
            for partner in site.partner_ids()}


# -- load ------------------------------------------------------------------------------------

class CpuBurner:
    """``cores`` busy-looping Python subprocesses at normal priority, until :meth:`stop`."""

    def __init__(self, cores: int = 2) -> None:
        self.cores = cores
        self.children: list[subprocess.Popen[bytes]] = []

    def start(self) -> None:
        self.children = [subprocess.Popen([sys.executable, "-c", "while True: pass"])
                         for _ in range(self.cores)]

    def stop(self) -> None:
        for child in self.children:
            if child.poll() is None:
                child.kill()
        for child in self.children:
            child.wait(timeout=30)
        self.children = []

    def __enter__(self) -> CpuBurner:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


# -- kills -----------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Kill:
    """One SIGKILL: seconds after the start, which process, its pid and its successor's."""

    at_s: float
    name: str
    step: str
    pid: int
    new_pid: int
    committed: str  # what the monitor had last seen committed, at the kill

    def describe(self) -> str:
        return (f"+{self.at_s:6.2f}s kill -9 {self.name} (pid {self.pid} -> {self.new_pid}); "
                f"committed then: {self.committed}")


@dataclass(frozen=True, slots=True)
class Exit:
    """A process that exited by itself (not killed by the harness), and was restarted."""

    at_s: float
    name: str
    pid: int
    returncode: int
    new_pid: int

    def describe(self) -> str:
        return (f"+{self.at_s:6.2f}s {self.name} (pid {self.pid}) EXITED BY ITSELF with "
                f"{self.returncode}; restarted as pid {self.new_pid}")


class Killer(threading.Thread):
    """SIGKILL a random member of ``members`` (name -> step) at random intervals; restart it.

    The first kill comes ``first_kill_s`` (drawn from ``first_kill_range_s``) after ``started``
    (a monotonic instant), the next ones ``interval_s`` apart (drawn uniformly). Each draw comes
    from ``rng`` in a fixed order (victim, then pause), so a seed fixes the schedule. Between
    kills it restarts any member that exited by itself. :meth:`stop_killing` ends the kills and
    keeps supervising; :meth:`stop` ends the thread.
    """

    def __init__(self, hub: Any, members: Mapping[str, str], rng: random.Random,
                 started: float, *, first_kill_range_s: tuple[float, float] = (0.8, 2.0),
                 interval_s: tuple[float, float] = (2.0, 5.0),
                 committed: Callable[[], str] = lambda: "?") -> None:
        super().__init__(name="chaos-killer", daemon=True)
        self.hub = hub
        self.members = dict(members)
        self.rng = rng
        self.started = started
        self.first_kill_range_s = first_kill_range_s
        self.interval_s = interval_s
        self.committed = committed
        self.kills: list[Kill] = []
        self.exits: list[Exit] = []
        #: Every pid a member had (name), for naming the owners of open transactions.
        self.pids: dict[int, str] = {c.pid: n for n, c in hub.children.items() if n in members}
        self.errors: list[str] = []
        self._killing = threading.Event()
        self._killing.set()
        self._halt = threading.Event()
        self._lock = threading.Lock()

    def run(self) -> None:
        next_at = self.started + self.rng.uniform(*self.first_kill_range_s)
        while not self._halt.is_set():
            try:
                self._restart_exited()
                if self._killing.is_set() and time.monotonic() >= next_at:
                    self._kill(self.rng.choice(sorted(self.members)))
                    next_at = time.monotonic() + self.rng.uniform(*self.interval_s)
            except Exception as exc:  # reported, never silently lost
                self.errors.append(f"+{self._now():.2f}s {type(exc).__name__}: {exc}")
            self._halt.wait(0.05)

    def _now(self) -> float:
        return time.monotonic() - self.started

    def _kill(self, name: str) -> None:
        with self._lock:
            child = self.hub.children[name]
            committed = self.committed()
            at = self._now()
            self.hub.kill(name, signal.SIGKILL)
            self.hub.start(self.members[name], name=name)
            self.pids[self.hub.children[name].pid] = name
            self.kills.append(Kill(at, name, self.members[name], child.pid,
                                   self.hub.children[name].pid, committed))

    def _restart_exited(self) -> None:
        with self._lock:
            for name, step in self.members.items():
                child = self.hub.children.get(name)
                if child is None or child.poll() is None:
                    continue
                at = self._now()
                self.hub.children.pop(name)
                self.hub.start(step, name=name)
                self.pids[self.hub.children[name].pid] = name
                self.exits.append(Exit(at, name, child.pid, int(child.returncode),
                                       self.hub.children[name].pid))

    def owner(self, pid: int) -> str:
        """The member a pid was (and when it was killed, if it was)."""
        name = self.pids.get(pid)
        if name is None:
            return f"pid {pid} (not a hub process of this run)"
        killed = next((k for k in self.kills if k.pid == pid), None)
        return f"{name} pid {pid}" + (f", killed at +{killed.at_s:.2f}s" if killed else "")

    def stop_killing(self) -> None:
        self._killing.clear()

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=60)


# -- progress --------------------------------------------------------------------------------

#: A partition of one group: ("validator", "<inbound topic>[p]") or ("projector", "<events>[p]").
Key = tuple[str, str]


@dataclass(frozen=True, slots=True)
class Progress:
    """One partition at one instant: the group's committed offset (the projector's tracking
    row), the end offset readers see (the last stable offset: read_committed), the high
    watermark (open transactions included), and whether committed records are waiting."""

    committed: int
    end: int
    high: int
    pending: bool


@dataclass(frozen=True, slots=True)
class Member:
    """A consumer group member as the group coordinator describes it."""

    member_id: str
    client_id: str
    partitions: frozenset[str]  # "<topic>[<partition>]"


@dataclass(frozen=True, slots=True)
class GroupView:
    """A consumer group's state (Stable, PreparingRebalance, ...) and members."""

    state: str
    members: tuple[Member, ...]

    def ids(self) -> set[str]:
        return {m.member_id for m in self.members}


@dataclass(frozen=True, slots=True)
class Sample:
    """One look at both groups: partitions' progress, and each group's state and members
    (keyed "validator" / "projector"; absent when the description failed)."""

    at_s: float
    offsets: dict[Key, Progress]
    groups: dict[str, GroupView] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Hang:
    """An open transaction that held a lead.events partition's last stable offset still:
    read_committed readers (the projectors) see nothing past ``offset`` while it lasts."""

    partition: int
    offset: int
    seen_at_s: float
    producer_id: int | None
    transactional_id: str | None
    owner: str  # the hub process whose producer it was, when the pid tells


TRANSACTIONAL_PID = re.compile(r"-(\d+)-[0-9a-f]{8}$")


class ProgressMonitor(threading.Thread):
    """Samples both groups' progress every ``interval_s`` until :meth:`stop`.

    ``owners(pid)`` names the hub process of a pid (for the open transactions it describes).
    """

    def __init__(self, bootstrap: str, topics: TopicNames, partners: Iterable[str],
                 database_url: str, started: float, interval_s: float = 0.3,
                 owners: Callable[[int], str] = str) -> None:
        super().__init__(name="chaos-monitor", daemon=True)
        self.bootstrap = bootstrap
        self.topics = topics
        self.inbound = [topics.inbound(p) for p in partners]
        self.database_url = database_url
        self.started = started
        self.interval_s = interval_s
        self.owners = owners
        self.samples: list[Sample] = []
        self.hangs: list[Hang] = []
        self.errors: Counter[str] = Counter()
        self._halt = threading.Event()
        self._lock = threading.Lock()
        self._stuck: dict[int, tuple[int, float]] = {}  # partition -> (LSO, since)

    def run(self) -> None:
        from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition

        admin = KafkaAdminClient(bootstrap_servers=self.bootstrap, client_id="chaos-monitor")
        committed_view = KafkaConsumer(bootstrap_servers=self.bootstrap, group_id=None,
                                       enable_auto_commit=False, client_id="chaos-monitor",
                                       isolation_level="read_committed")
        raw_view = KafkaConsumer(bootstrap_servers=self.bootstrap, group_id=None,
                                 enable_auto_commit=False, client_id="chaos-monitor-raw",
                                 isolation_level="read_uncommitted")
        probe = TopicReader(self.bootstrap, self.topics.events, client_id="chaos-probe")
        store = ViewStore(self.database_url)
        group = validator_group(self.topics)
        try:
            inbound = [TopicPartition(t, p) for t in self.inbound
                       for p in sorted(committed_view.partitions_for_topic(t) or ())]
            events = [TopicPartition(self.topics.events, p) for p in
                      sorted(committed_view.partitions_for_topic(self.topics.events) or ())]
            while not self._halt.is_set():
                began = time.monotonic()
                try:
                    sample = self._sample(admin, committed_view, raw_view, probe, store, group,
                                          inbound, events)
                except Exception as exc:  # a busy broker or database: skip this sample
                    self.errors[type(exc).__name__] += 1
                else:
                    with self._lock:
                        self.samples.append(sample)
                    try:
                        self._look_at_hangs(admin, sample, events)
                    except Exception as exc:
                        self.errors[f"hang lookup: {type(exc).__name__}"] += 1
                self._halt.wait(max(0.0, self.interval_s - (time.monotonic() - began)))
        finally:
            admin.close()
            committed_view.close()
            raw_view.close()
            probe.close()
            store.close()

    def _sample(self, admin: Any, committed_view: Any, raw_view: Any, probe: TopicReader,
                store: ViewStore, group: str, inbound: list[Any], events: list[Any]) -> Sample:
        at = time.monotonic() - self.started
        found = admin.list_group_offsets(group).get(group, {})
        committed = {tp: int(meta.offset) for tp, meta in found.items() if meta.offset >= 0}
        ends = committed_view.end_offsets(inbound + events)
        highs = raw_view.end_offsets(events)
        tracked = store.committed_offsets(self.topics.events)
        offsets: dict[Key, Progress] = {}
        for tp in inbound:
            done, end = committed.get(tp, 0), int(ends[tp])
            offsets[("validator", f"{tp.topic}[{tp.partition}]")] = Progress(
                done, end, end, end > done)
        # on lead.events offsets are not records (commit markers, aborted transactions): one
        # offset past the tracking row is the last commit marker; beyond that, look
        gaps = {tp.partition: (tracked.get(tp.partition, 0), int(ends[tp])) for tp in events
                if int(ends[tp]) - tracked.get(tp.partition, 0) > 1}
        waiting: set[int] = set()
        if gaps:
            for partition, *_ in probe.read_raw({p: e for p, (_, e) in gaps.items()},
                                               {p: s for p, (s, _) in gaps.items()}):
                waiting.add(partition)
                probe.finish(partition)
        for tp in events:
            p = tp.partition
            offsets[("projector", f"{tp.topic}[{p}]")] = Progress(
                tracked.get(p, 0), int(ends[tp]), int(highs[tp]), p in waiting)
        return Sample(at, offsets, self._groups(admin, group))

    def _groups(self, admin: Any, validators: str) -> dict[str, GroupView]:
        names = {validators: "validator", projector_group(self.topics): "projector"}
        try:
            described = admin.describe_groups(list(names))
        except Exception as exc:
            self.errors[f"describe groups: {type(exc).__name__}"] += 1
            return {}
        views: dict[str, GroupView] = {}
        for name, group in names.items():
            found = described.get(name)
            if not found:
                continue
            members = []
            for member in found.get("members") or ():
                assignment = member.get("member_assignment") or {}
                members.append(Member(
                    str(member.get("member_id")), str(member.get("client_id")),
                    frozenset(f"{a['topic']}[{p}]"
                              for a in assignment.get("assigned_partitions") or ()
                              for p in a.get("partitions") or ())))
            views[group] = GroupView(str(found.get("group_state")), tuple(members))
        return views

    def _look_at_hangs(self, admin: Any, sample: Sample, events: list[Any]) -> None:
        """Name the open transaction of a lead.events partition whose last stable offset has
        not moved for 2 s while records lie past it."""
        for tp in events:
            progress = sample.offsets[("projector", f"{tp.topic}[{tp.partition}]")]
            if progress.high <= progress.end:
                self._stuck.pop(tp.partition, None)
                continue
            held, since = self._stuck.get(tp.partition, (-1, sample.at_s))
            if held != progress.end:
                self._stuck[tp.partition] = (progress.end, sample.at_s)
                continue
            if sample.at_s - since < 2.0 or any(
                    h.partition == tp.partition and h.offset == held for h in self.hangs):
                continue
            producers = admin.describe_producers([tp]).get(tp)
            producer_id = next((p.producer_id for p in (producers.active_producers
                                                        if producers else [])
                                if p.current_transaction_start_offset == held), None)
            transactional_id = None
            if producer_id is not None:
                for listings in admin.list_transactions().values():
                    for listing in listings:
                        if listing.producer_id == producer_id:
                            transactional_id = listing.transactional_id
            owner = "?"
            match = TRANSACTIONAL_PID.search(transactional_id or "")
            if match:
                owner = self.owners(int(match.group(1)))
            self.hangs.append(Hang(tp.partition, held, since, producer_id, transactional_id,
                                   owner))

    def latest(self) -> str:
        """What was committed at the last sample (for the kill log)."""
        with self._lock:
            if not self.samples:
                return "no sample yet"
            sample = self.samples[-1]
        validated = sum(x.committed for (g, _), x in sample.offsets.items() if g == "validator")
        tracked = sum(x.committed for (g, _), x in sample.offsets.items() if g == "projector")
        return (f"validator offsets {validated}, projector tracking {tracked} "
                f"(sample at +{sample.at_s:.2f}s)")

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=60)


@dataclass(frozen=True, slots=True)
class Recovery:
    """What became of the killed process's partitions.

    ``member``: its member id in the group at the kill (None: it had not joined yet, so it
    held nothing). ``partitions``: what it held (the whole group's when the group was
    rebalancing at the kill: every partition then waits for the dead member to expire).
    ``rebalanced_s``: kill -> the group Stable again without it. ``seconds``: kill -> every
    one of those partitions with committed records waiting has advanced (None: none had
    work). ``overlapped_by``: later kills in the same group before that.
    """

    kill: Kill
    member: str | None
    partitions: frozenset[str]
    rebalanced_s: float | None
    seconds: float | None
    slowest: str
    resumed: bool  # False: some partition never advanced while monitored
    overlapped_by: tuple[float, ...] = ()

    @property
    def effective_s(self) -> float | None:
        """The recovery counted from the last kill of the group before it recovered (a kill
        cannot be recovered from before the group's later kills are)."""
        if self.seconds is None or not self.overlapped_by:
            return self.seconds
        return self.kill.at_s + self.seconds - self.overlapped_by[-1]

    def describe(self) -> str:
        head = f"{self.kill.name:12} +{self.kill.at_s:6.2f}s:"
        if self.member is None:
            return f"{head} had not joined its group (held no partitions)"
        held = f"held {len(self.partitions)} partitions"
        rebalanced = ("group not Stable without it while monitored" if self.rebalanced_s is None
                      else f"group Stable without it after {self.rebalanced_s:4.1f}s")
        if self.seconds is None:
            return f"{head} {held}, {rebalanced}; none had records waiting"
        text = (f"{head} {held}, {rebalanced}; processed again after {self.seconds:4.1f}s "
                f"(slowest {self.slowest})")
        if not self.resumed:
            text += " NOT RESUMED while monitored"
        if self.overlapped_by:
            text += (f"; overlapped by kills in its group at "
                     f"{', '.join(f'+{t:.1f}s' for t in self.overlapped_by)}: "
                     f"{self.effective_s:.1f}s after the last")
        return text


def _series(samples: Sequence[Sample], key: Key) -> list[tuple[float, Progress]]:
    return [(s.at_s, s.offsets[key]) for s in samples if key in s.offsets]


def _keys(samples: Sequence[Sample]) -> list[Key]:
    return sorted({k for s in samples for k in s.offsets})


def _dead_member(samples: Sequence[Sample], kill: Kill, taken: set[str]) -> Member | None:
    """The killed process's member at the kill: for a validator the one whose client id names
    its pid; for a projector (all share one client id) the member present at the kill, not
    taken by an earlier kill, that vanished from the group first afterwards."""
    before = [s for s in samples if s.at_s <= kill.at_s and kill.step in s.groups]
    if not before:
        return None
    members = before[-1].groups[kill.step].members
    if kill.step == "validator":
        return next((m for m in members if m.client_id == f"leadhub-validator-{kill.pid}"), None)
    after = [s for s in samples if s.at_s > kill.at_s and kill.step in s.groups]
    vanished: list[tuple[float, Member]] = []
    for member in members:
        if member.member_id in taken:
            continue
        gone = next((s.at_s for s in after if member.member_id not in
                     s.groups[kill.step].ids()), None)
        if gone is not None:
            vanished.append((gone, member))
    return min(vanished, key=lambda v: v[0])[1] if vanished else None


def recoveries(samples: Sequence[Sample], kills: Sequence[Kill],
               window_s: float = 5.0) -> list[Recovery]:
    """For each kill: the killed member's partitions, when its group was Stable again without
    it, and when each of those partitions that had committed records waiting at the kill (or
    within ``window_s`` after it) advanced past the offset it held when they were first seen
    waiting after the kill."""
    keys = _keys(samples)
    taken: set[str] = set()
    result = []
    for kill in sorted(kills, key=lambda k: k.at_s):
        dead = _dead_member(samples, kill, taken)
        if dead is None:
            result.append(Recovery(kill, None, frozenset(), None, None, "", True))
            continue
        taken.add(dead.member_id)
        before = [s for s in samples if s.at_s <= kill.at_s and kill.step in s.groups][-1]
        group_keys = [k for k in keys if k[0] == kill.step]
        held = dead.partitions
        if before.groups[kill.step].state != "Stable" or not held:
            held = frozenset(k[1] for k in group_keys)
        rebalanced = next((s.at_s - kill.at_s for s in samples if s.at_s > kill.at_s
                           and kill.step in s.groups and s.groups[kill.step].state == "Stable"
                           and dead.member_id not in s.groups[kill.step].ids()), None)
        worst: tuple[float, str] | None = None
        resumed = True
        for key in (k for k in group_keys if k[1] in held):
            series = [x for x in _series(samples, key) if x[0] >= kill.at_s]
            first = next(((t, x.committed) for t, x in series
                          if t <= kill.at_s + window_s and x.pending), None)
            if first is None:
                continue
            seen_at, base = first
            advanced = next((t for t, x in series if t > seen_at and x.committed > base), None)
            if advanced is None:
                resumed = False
                advanced = series[-1][0]
            took = advanced - kill.at_s
            if worst is None or took > worst[0]:
                worst = (took, key[1])
        overlapped: tuple[float, ...] = ()
        if worst is not None:
            overlapped = tuple(k.at_s for k in kills if k.step == kill.step
                               and kill.at_s < k.at_s < kill.at_s + worst[0])
        result.append(Recovery(kill, dead.member_id, held, rebalanced,
                               worst[0] if worst else None, worst[1] if worst else "",
                               resumed, overlapped))
    return result


def group_timeline(samples: Sequence[Sample], group: str) -> str:
    """The group's state changes: ``+t state/members`` at each change of either."""
    changes = []
    last: tuple[str, int] | None = None
    for sample in samples:
        view = sample.groups.get(group)
        if view is None:
            continue
        now = (view.state, len(view.members))
        if now != last:
            changes.append(f"+{sample.at_s:.1f} {now[0]}/{now[1]}")
            last = now
    return ", ".join(changes)


def rebalancing(samples: Sequence[Sample]) -> dict[str, tuple[float, float, float]]:
    """Per group: (seconds not Stable in all, the longest such stretch, when it began)."""
    out: dict[str, tuple[float, float, float]] = {}
    for group in ("validator", "projector"):
        seen = [(s.at_s, s.groups[group].state) for s in samples if group in s.groups]
        total = longest = begun = 0.0
        since: float | None = None
        for (t, state), (t_next, _) in zip(seen, [*seen[1:], seen[-1]] if seen else [],
                                           strict=True):
            if state != "Stable":
                total += t_next - t
                since = t if since is None else since
            elif since is not None:
                if t - since > longest:
                    longest, begun = t - since, since
                since = None
        if since is not None and seen and seen[-1][0] - since > longest:
            longest, begun = seen[-1][0] - since, since
        out[group] = (total, longest, begun)
    return out


def max_stalls(samples: Sequence[Sample]) -> dict[str, tuple[float, str, float]]:
    """Per group: the longest time any partition had committed records waiting without
    advancing (seconds, partition, when that stall began)."""
    worst: dict[str, tuple[float, str, float]] = {}

    def note(group: str, stall: float, label: str, since: float) -> None:
        if stall > worst.get(group, (0.0, "", 0.0))[0]:
            worst[group] = (stall, label, since)

    for key in _keys(samples):
        series = _series(samples, key)
        since: float | None = None
        held = -1
        for t, x in series:
            if x.committed != held:
                if since is not None:
                    note(key[0], t - since, key[1], since)
                held = x.committed
                since = None
            if since is None and x.pending:
                since = t
        if since is not None:
            note(key[0], series[-1][0] - since, key[1] + " (unresolved)", since)
    return worst


def lso_hangs(samples: Sequence[Sample], min_s: float = 5.0) -> list[tuple[str, int, float, float]]:
    """Periods in which a lead.events partition's last stable offset did not move while an
    open transaction held records past it: (partition, offset, from, seconds), >= ``min_s``."""
    found = []
    for key in (k for k in _keys(samples) if k[0] == "projector"):
        since: float | None = None
        held = -1
        last = 0.0
        for t, x in _series(samples, key):
            last = t
            if since is not None and (x.end != held or x.high <= x.end):
                if t - since >= min_s:
                    found.append((key[1], held, since, t - since))
                since = None
            if since is None and x.high > x.end:
                since, held = t, x.end
        if since is not None and last - since >= min_s:
            found.append((key[1] + " (unresolved)", held, since, last - since))
    return sorted(found, key=lambda h: h[2])


# -- settling --------------------------------------------------------------------------------

def inbound_end_offsets(bootstrap: str, topics: TopicNames,
                        partners: Iterable[str]) -> dict[tuple[str, int], int]:
    ends: dict[tuple[str, int], int] = {}
    for partner in partners:
        with TopicReader(bootstrap, topics.inbound(partner), client_id="chaos-ends") as reader:
            ends.update({(reader.topic, p): e for p, e in reader.end_offsets().items()})
    return ends


def validator_lag(bootstrap: str, topics: TopicNames,
                  ends: Mapping[tuple[str, int], int]) -> dict[tuple[str, int], int]:
    """Records of the inbound topics past the validator group's committed offsets (non-zero
    entries only)."""
    from kafka import KafkaAdminClient

    group = validator_group(topics)
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="chaos-lag")
    try:
        found = admin.list_group_offsets(group).get(group, {})
    finally:
        admin.close()
    committed = {(tp.topic, tp.partition): int(m.offset) for tp, m in found.items()}
    return {tp: end - committed.get(tp, 0) for tp, end in ends.items()
            if end - committed.get(tp, 0) > 0}


def stable_lag(bootstrap: str, topic: str, high: Mapping[int, int]) -> dict[int, int]:
    """Per partition of ``topic``, how far its last stable offset is short of ``high`` (an
    open transaction hides everything after its first record from read_committed readers)."""
    with TopicReader(bootstrap, topic, client_id="chaos-lso") as reader:
        stable = reader.end_offsets()
    return {p: h - stable.get(p, 0) for p, h in high.items() if stable.get(p, 0) < h}


def high_watermarks(bootstrap: str, topic: str) -> dict[int, int]:
    with TopicReader(bootstrap, topic, client_id="chaos-hw",
                     isolation_level="read_uncommitted") as reader:
        return reader.end_offsets()


def wait_settled(bootstrap: str, topics: TopicNames, partners: Sequence[str], store: ViewStore,
                 timeout_s: float) -> tuple[bool, str, dict[str, float]]:
    """Wait until (1) the validators have no lag on the inbound topics, (2) no transaction
    open at that moment hides records of lead.events (its last stable offsets reach the high
    watermarks of that moment) and (3) the projectors' tracking rows reach the end of
    lead.events. Returns (settled, what was still pending, seconds each phase took)."""
    began = time.monotonic()
    deadline = began + timeout_s
    phases: dict[str, float] = {}
    ends = inbound_end_offsets(bootstrap, topics, partners)
    lag: dict[tuple[str, int], int] = {}
    while time.monotonic() < deadline:
        try:
            lag = validator_lag(bootstrap, topics, ends)
        except Exception as exc:
            lag = {("?", -1): -1}
            print(f"chaos: reading the validator group's offsets failed ({exc})")
        if not lag:
            break
        time.sleep(0.5)
    phases["validators"] = time.monotonic() - began
    if lag:
        return False, f"validator lag {lag}", phases
    high = high_watermarks(bootstrap, topics.events)
    hidden = stable_lag(bootstrap, topics.events, high)
    while hidden and time.monotonic() < deadline:
        time.sleep(0.5)
        hidden = stable_lag(bootstrap, topics.events, high)
    phases["open transactions"] = time.monotonic() - began - phases["validators"]
    if hidden:
        return False, (f"{topics.events}: open transactions still hide offsets below the high "
                       f"watermarks {high}: {hidden}"), phases
    caught_up = wait_caught_up(bootstrap, topics.events, store,
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


def _read_topic(bootstrap: str, topic: str) -> list[tuple[int, int, bytes | None, bytes,
                                                           list[tuple[str, bytes | None]]]]:
    with TopicReader(bootstrap, topic, client_id="chaos-count") as reader:
        return list(reader.read_headed(reader.end_offsets()))


def count_stages(bootstrap: str, topics: TopicNames, partners: Sequence[str],
                 events: Sequence[Event], live_view: Any) -> StageCounts:
    """Read every stage: inbound topics, lead.events, lead.dlq (read_committed) and the view."""
    published: dict[str, set[str]] = {p: set() for p in partners}
    for event in events:
        published.setdefault(str(event.source_partner), set()).add(event.event_id)
    counts = StageCounts(list(partners), published)
    for partner in partners:
        topic = topics.inbound(partner)
        records = _read_topic(bootstrap, topic)
        counts.inbound[partner] = len(records)
        for partition, offset, _, value, _ in records:
            try:
                event_id = decode(value, CATALOG).event_id
            except Exception:
                counts.undecodable.append(f"{topic}[{partition}]@{offset}")
                continue
            counts.inbound_at.setdefault(event_id, []).append((topic, partition, offset))
    for partition, offset, _, value, _ in _read_topic(bootstrap, topics.events):
        where = f"{topics.events}[{partition}]@{offset}"
        try:
            canonical = decode_canonical(value)
            if canonical.kind == "CLOCK":
                counts.clocks += 1
                continue
            event = decode(canonical.event, CATALOG)
        except Exception:
            counts.undecodable.append(where)
            continue
        source = canonical.source_partner
        if source not in published:
            counts.derived += 1
        counts.events_by_partner[source] += 1
        counts.event_ids_by_partner.setdefault(source, set()).add(event.event_id)
        counts.events_at.setdefault(event.event_id, []).append(
            (f"{canonical.ingest_topic}[{canonical.ingest_partition}]@"
             f"{canonical.ingest_offset}", partition, offset))
    for partition, offset, _, _, headers in _read_topic(bootstrap, topics.dlq):
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


def _where(counts: StageCounts, event_id: str) -> str:
    """Where an event is along the pipeline (for the report of a lost event)."""
    inbound = counts.inbound_at.get(event_id, [])
    events = counts.events_at.get(event_id, [])
    dead = [d["at"] for d in counts.dlq if any(
        f"{t}" == d.get("lead.source.topic") and str(p) == d.get("lead.source.partition")
        and str(o) == d.get("lead.source.offset") for t, p, o in inbound)]
    return (f"{event_id}: inbound {[f'{t}[{p}]@{o}' for t, p, o in inbound] or 'NONE'}, "
            f"lead.events {[f'[{p}]@{o} from {src}' for src, p, o in events] or 'NONE'}, "
            f"dlq {dead or 'none'}")


# -- the run ---------------------------------------------------------------------------------

@dataclass
class ChaosOutcome:
    """Everything a chaos run measured; ``failures`` is empty when it lost and doubled nothing."""

    regime: Regime
    database: str
    seed: int
    events: int
    durations: dict[str, float]
    kills: list[Kill]
    exits: list[Exit]
    recoveries: list[Recovery]
    stalls: dict[str, tuple[float, str, float]]
    hangs: list[tuple[str, int, float, float]]
    owners: list[Hang]
    rebalancing: dict[str, tuple[float, float, float]]
    timelines: dict[str, str]
    counts: StageCounts | None
    audits: dict[str, str]
    failures: list[str]
    notes: list[str]
    logs: dict[str, str]
    log_summary: dict[str, list[str]] = field(default_factory=dict)

    @property
    def max_recovery_s(self) -> float | None:
        found = [r.effective_s for r in self.recoveries if r.effective_s is not None]
        return max(found) if found else None

    def report(self, with_logs: bool = False) -> str:
        d = self.durations
        lines = [
            f"== chaos run: regime {self.regime.name} ({self.regime.participants} participants, "
            f"{self.events} events at {self.regime.rate:.0f}/s), database {self.database}, "
            f"seed {self.seed} ==",
            "durations: " + ", ".join(f"{k} {v:.1f}s" for k, v in d.items()),
        ]
        if self.counts is not None:
            lines += ["counts per stage (read_committed):", self.counts.table()]
        lines.append(f"kills ({len(self.kills)}):")
        lines += [f"  {k.describe()}" for k in self.kills]
        if self.exits:
            lines.append(f"processes that exited by themselves ({len(self.exits)}):")
            lines += [f"  {e.describe()}" for e in self.exits]
        if any(self.log_summary.values()):
            lines.append("what the processes logged (count x line, all their lives):")
            for name, summary in self.log_summary.items():
                lines += [f"  {name}: {line}" for line in summary]
        best = self.max_recovery_s
        lines.append("recovery after each kill (until every partition the killed process held "
                     "that had committed records waiting had advanced again; max "
                     f"{'n/a' if best is None else f'{best:.1f}s'} counted from the last "
                     f"overlapping kill, bound {RECOVERY_BOUND_S:.0f}s):")
        lines += [f"  {r.describe()}" for r in self.recoveries]
        for group, (total, longest, begun) in sorted(self.rebalancing.items()):
            lines.append(f"{group} group not Stable for {total:.1f}s in all; longest "
                         f"{longest:.1f}s from +{begun:.1f}s; state/members: "
                         f"{self.timelines.get(group, '')}")
        for group, (stall, key, since) in sorted(self.stalls.items()):
            lines.append(f"longest stall of a {group} partition with work pending: {stall:.1f}s "
                         f"({key}, from +{since:.1f}s)")
        if self.hangs:
            lines.append("lead.events partitions held by an open transaction (last stable offset "
                         "not moving, records behind it) for 5s or more:")
        for label, offset, since, took in self.hangs:
            part = int(label.split("[", 1)[1].split("]", 1)[0])
            owner = next((h for h in self.owners if h.partition == part and h.offset == offset),
                         None)
            who = (f"transaction of {owner.transactional_id} (producer {owner.producer_id}): "
                   f"{owner.owner}" if owner else "owner not looked up")
            lines.append(f"  {label} at offset {offset}: {took:.1f}s from +{since:.1f}s; {who}")
        for name, result in self.audits.items():
            lines.append(f"audit {name}: {result}")
        lines += [f"note: {n}" for n in self.notes]
        if self.failures:
            lines.append(f"FAILURES ({len(self.failures)}):")
            lines += [f"  - {f}" for f in self.failures]
        else:
            lines.append("OK: nothing lost, nothing doubled")
        if with_logs or self.failures or self.exits:
            for name, tail in self.logs.items():
                lines.append(f"--- log tail of {name} ---")
                lines.append(tail)
        return "\n".join(lines)


def stop_members(hub: Any, members: Iterable[str]) -> dict[str, int | None]:
    """SIGTERM the members (before the fixture drops the database under them) and return
    their exit codes (None: it did not exit within a minute and was killed)."""
    codes: dict[str, int | None] = {}
    for name in members:
        child = hub.children.get(name)
        if child is not None and child.poll() is None:
            child.send_signal(signal.SIGTERM)
    for name in members:
        child = hub.children.pop(name, None)
        if child is None:
            continue
        try:
            codes[name] = child.wait(timeout=60)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait(timeout=30)
            codes[name] = None
    return codes


def summarize_log(path: Path, limit: int = 8) -> list[str]:
    """A process log's distinct lines, most frequent first (tracebacks' last lines kept whole:
    they say where it failed)."""
    if not path.exists():
        return []
    lines = path.read_text(errors="replace").splitlines()
    counted = Counter(line.strip() for line in lines
                      if line.strip() and not line.startswith((" ", "Traceback")))
    out = [f"{n} x {line[:220]}" for line, n in counted.most_common(limit)]
    for index, line in enumerate(lines):
        if line.startswith("Traceback"):
            end = next((j for j in range(index + 1, len(lines))
                        if not lines[j].startswith(" ")), len(lines) - 1)
            out.append("traceback: " + " | ".join(
                x.strip() for x in lines[max(index + 1, end - 6):end + 1])[:900])
    return out


def _audit(hub: Any, *args: str) -> tuple[int, str]:
    result = hub.leadhub("audit", *args, timeout=240)
    out = (result.stdout or "").strip()
    if result.returncode == 2 and "invalid choice" in (result.stderr or ""):
        return -1, "command not available"
    try:
        body = json.loads(out) if out else {}
    except json.JSONDecodeError:
        body = {}
    summary = out if len(out) < 400 else out[:400] + "..."
    if isinstance(body, dict) and "totals" in body:  # reconcile
        summary = f"ok={body.get('ok')} totals={body.get('totals')} " \
                  f"unaccounted={body.get('unaccounted', [])[:10]} " \
                  f"duplicates={body.get('duplicates', [])[:10]}"
    elif isinstance(body, dict) and "match" in body:
        summary = json.dumps({k: v for k, v in body.items()
                              if k in ("match", "caught_up", "live", "replay", "end_offsets",
                                       "differences")})[:600]
    if result.returncode != 0:
        summary += f" | stderr: {(result.stderr or '').strip()[-600:]}"
    return result.returncode, summary


def check(counts: StageCounts, expected: Mapping[str, list[dict[str, Any]]],
          live_view: Any) -> list[str]:
    """The invariants: nothing lost, nothing doubled, the view equals the pure core's."""
    failures: list[str] = []
    all_published = set().union(*counts.published.values())
    missing_in_events = sorted(all_published - set(counts.events_at))
    if missing_in_events:
        failures.append(f"{len(missing_in_events)} published events missing from lead.events: "
                        + "; ".join(_where(counts, e) for e in missing_in_events[:10]))
    doubled = {e: w for e, w in counts.events_at.items() if len(w) > 1}
    if doubled:
        failures.append(f"{len(doubled)} event_ids more than once in lead.events: " + "; ".join(
            f"{e} at {[f'[{p}]@{o} from {src}' for src, p, o in w]}"
            for e, w in sorted(doubled.items())[:10]))
    missing_inbound = sorted(all_published - set(counts.inbound_at))
    if missing_inbound:
        failures.append(f"{len(missing_inbound)} published events not in their inbound topic "
                        f"(the publisher lost them): {missing_inbound[:10]}")
    if counts.dlq:
        failures.append(f"{len(counts.dlq)} dead letters for valid input: " + "; ".join(
            f"{d['at']} {d.get('lead.step')} {d.get('lead.reason')} from "
            f"{d.get('lead.source.topic')}[{d.get('lead.source.partition')}]@"
            f"{d.get('lead.source.offset')}" for d in counts.dlq[:10]))
    if counts.undecodable:
        failures.append(f"undecodable records: {counts.undecodable[:10]}")
    for partner in counts.partners:
        own = counts.published.get(partner, set())
        expected_ids = {str(r["event_id"]) for r in expected.get(partner, [])}
        lost = sorted(own - counts.view_ids.get(partner, set()))
        if lost:
            in_core = len([e for e in lost if e not in expected_ids])
            failures.append(
                f"{partner} does not see {len(lost)} of its own {len(own)} events "
                f"({in_core} of them not in the pure core's view either): "
                + "; ".join(_where(counts, e) for e in lost[:5]))
        if counts.view_duplicates.get(partner):
            failures.append(f"{partner} has event_ids twice in its rows: "
                            f"{counts.view_duplicates[partner][:10]}")
        live = live_view.rows(partner)
        want = expected.get(partner, [])
        if live != want:
            live_ids = {str(r["event_id"]) for r in live}
            want_ids = {str(r["event_id"]) for r in want}
            differing = [str(r["event_id"]) for r in want
                         if str(r["event_id"]) in live_ids and r not in live]
            failures.append(
                f"{partner}: view differs from the pure core: live {len(live)} rows, core "
                f"{len(want)}; missing {sorted(want_ids - live_ids)[:5]} "
                f"({len(want_ids - live_ids)}), extra {sorted(live_ids - want_ids)[:5]} "
                f"({len(live_ids - want_ids)}), differing {differing[:5]} ({len(differing)})")
    return failures


def run_chaos(*, hub: Any, topics: TopicNames, bootstrap: str, database_url: str,
              live_view: Any, regime: Regime, seed: int, validators: int = 2,
              projectors: int = 2, burn_cores: int = 2, settle_timeout_s: float = 150.0,
              assert_recovery: bool = False) -> ChaosOutcome:
    """One chaos run (see the module doc). ``hub`` has its topics created; ``live_view`` sets
    the processes' database. Every process started here is left to the ``hub`` fixture to stop.

    ``assert_recovery``: a kill whose recovery (counted from the last overlapping kill in its
    group) exceeds :data:`RECOVERY_BOUND_S` is a failure; otherwise it is a note of the report.
    """
    rng = random.Random(seed)
    site = load_site(Path(hub.env["LEADHUB_SITE_FILE"]))
    partners = list(site.partner_ids())
    events = site_events(site, regime.participants, regime.days, seed)
    database = database_url.split(":", 1)[0].split("+", 1)[0]
    members = {f"validator-{i + 1}": "validator" for i in range(validators)}
    members.update({f"projector-{i + 1}": "projector" for i in range(projectors)})
    durations: dict[str, float] = {}
    notes: list[str] = []
    failures: list[str] = []
    began = time.monotonic()
    hub.env["LEADHUB_DEBUG"] = "1"  # an unexpected error's traceback goes to the process log
    burner = CpuBurner(burn_cores)
    burner.start()
    try:
        for name, step in members.items():
            hub.start(step, name=name)
        started = time.monotonic()
        owners: dict[str, Callable[[int], str]] = {}
        monitor = ProgressMonitor(bootstrap, topics, partners, database_url, started,
                                  owners=lambda pid: owners["killer"](pid))
        killer = Killer(hub, members, rng, started, committed=monitor.latest)
        owners["killer"] = killer.owner
        monitor.start()
        killer.start()
        try:
            publish_by_source(events, bootstrap, catalog=CATALOG, topics=topics,
                              rate=regime.rate)
            durations["publish"] = time.monotonic() - started
            killer.stop_killing()
            store = live_view.store
            settled, pending, phases = wait_settled(bootstrap, topics, partners, store,
                                                    settle_timeout_s)
            durations["settle"] = time.monotonic() - started - durations["publish"]
            notes.append("settling took " + ", ".join(f"{k} {v:.1f}s" for k, v in phases.items()))
        finally:
            killer.stop()
            monitor.stop()
    finally:
        burner.stop()
    if not settled:
        failures.append(f"not settled within {settle_timeout_s:.0f}s after publishing: {pending}")
    if killer.errors:
        failures.append(f"the killer failed: {killer.errors}")
    if monitor.errors:
        notes.append(f"monitor samples skipped: {dict(monitor.errors)} "
                     f"(of {len(monitor.samples)} taken)")
    checking = time.monotonic()
    counts = count_stages(bootstrap, topics, partners, events, live_view)
    expected = expected_view(site, events)
    failures += check(counts, expected, live_view)
    audits: dict[str, str] = {}
    with ThreadPoolExecutor(max_workers=2) as pool:  # two subprocesses, side by side
        runs = {name: pool.submit(_audit, hub, name, "--json")
                for name in ("compare", "reconcile")}
    for name, run in runs.items():
        code, summary = run.result()
        audits[name] = f"exit {code}: {summary}"
        if code not in (0, -1):
            failures.append(f"leadhub audit {name} exited {code}")
    durations["checks"] = time.monotonic() - checking
    found = recoveries(monitor.samples, killer.kills)
    slow = [r for r in found if r.effective_s is not None
            and (r.effective_s > RECOVERY_BOUND_S or not r.resumed)]
    if slow:
        message = (f"{len(slow)} kills took longer than {RECOVERY_BOUND_S:.0f}s to recover: "
                   + "; ".join(r.describe() for r in slow))
        (failures if assert_recovery else notes).append(message)
    if killer.kills and killer.kills[0].at_s > 2.5:
        notes.append(f"the first kill came at +{killer.kills[0].at_s:.1f}s")
    stopped = stop_members(hub, members)
    unclean = {name: code for name, code in stopped.items() if code != 0}
    if unclean:
        notes.append(f"exit codes on SIGTERM at the end (0 expected): {unclean}")
    durations["total"] = time.monotonic() - began
    return ChaosOutcome(
        regime=regime, database=database, seed=seed, events=len(events), durations=durations,
        kills=killer.kills, exits=killer.exits, recoveries=found,
        stalls=max_stalls(monitor.samples), hangs=lso_hangs(monitor.samples),
        owners=monitor.hangs, rebalancing=rebalancing(monitor.samples),
        timelines={g: group_timeline(monitor.samples, g) for g in ("validator", "projector")},
        counts=counts,
        audits=audits, failures=failures, notes=notes,
        logs={name: hub.log_tail(name, 40) for name in members},
        log_summary={name: summarize_log(hub.logs / f"{name}.log") for name in members})
