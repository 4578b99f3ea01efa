"""Chaos harness, part 2: what the consumer groups and offsets did while processes died.

A :class:`ProgressMonitor` samples both groups (members, state) and both offset sets (the
validator's committed offsets, the projector's tracking rows) a few times a second; the
functions after it turn the samples and the kill log into recovery times, rebalance
timelines, stalls and transactions that held back read_committed readers.
"""

from __future__ import annotations

import re
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from consumers.audit.kafka_log import TopicReader
from consumers.live_projector import projector_group
from consumers.store import ViewStore
from processors.kafka_validator import group_id as validator_group
from schemas.kafka_connection import KafkaConnection
from schemas.topics import TopicNames

RECOVERY_BOUND_S = 15.0

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

    def __init__(self, kafka: KafkaConnection, topics: TopicNames, partners: Iterable[str],
                 database_url: str, started: float, interval_s: float = 0.3,
                 owners: Callable[[int], str] = str) -> None:
        super().__init__(name="chaos-monitor", daemon=True)
        self.bootstrap = kafka
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

        admin = KafkaAdminClient(**self.bootstrap.client_options(), client_id="chaos-monitor")
        committed_view = KafkaConsumer(**self.bootstrap.client_options(), group_id=None,
                                       enable_auto_commit=False, client_id="chaos-monitor",
                                       isolation_level="read_committed")
        raw_view = KafkaConsumer(**self.bootstrap.client_options(), group_id=None,
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
    its instance (``leadhub run`` with ``LEADHUB_INSTANCE_ID``, as the harness starts it) or its
    pid; for a projector (all share one client id) the member present at the kill, not
    taken by an earlier kill, that vanished from the group first afterwards."""
    before = [s for s in samples if s.at_s <= kill.at_s and kill.step in s.groups]
    if not before:
        return None
    members = before[-1].groups[kill.step].members
    if kill.step == "validator":  # a static member's client id names its instance
        names = {f"leadhub-validator-{kill.pid}", f"{socket.gethostname()}-validator-{kill.name}"}
        return next((m for m in members if m.client_id in names), None)
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

