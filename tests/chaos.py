"""Chaos harness: the hub's processes SIGKILLed at random while a site publishes, on busy cores.

Used by ``tests/e2e/test_chaos.py``; nothing here asserts. :func:`run_chaos` runs one chaos run
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

from processors.offline import project_events, rows_for
from processors.projector import Projector
from processors.site import SitePolicy, load_site
from producers.sdk import publish_by_source
from producers.simulator import simulate
from schemas.event import Event
from schemas.kafka_connection import KafkaConnection
from schemas.topics import TopicNames
from tests.chaos_counts import CATALOG, StageCounts, count_stages, wait_settled, where_is
from tests.chaos_monitor import (
    RECOVERY_BOUND_S,
    Exit,
    Hang,
    Kill,
    ProgressMonitor,
    Recovery,
    group_timeline,
    lso_hangs,
    max_stalls,
    rebalancing,
    recoveries,
)

START = datetime(2025, 3, 1, tzinfo=UTC)
#: The simulator never has the coordinator publish; it takes over these events' screening.
COORDINATOR = "lead-coordinator"
COORDINATOR_TYPES = frozenset({"ReferralScreened"})
#: The issue's bound: a dead member's partitions are processed again within this long.


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
                        + "; ".join(where_is(counts, e) for e in missing_in_events[:10]))
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
                + "; ".join(where_is(counts, e) for e in lost[:5]))
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


def run_chaos(*, hub: Any, topics: TopicNames, kafka: KafkaConnection, database_url: str,
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
        monitor = ProgressMonitor(kafka, topics, partners, database_url, started,
                                  owners=lambda pid: owners["killer"](pid))
        killer = Killer(hub, members, rng, started, committed=monitor.latest)
        owners["killer"] = killer.owner
        monitor.start()
        killer.start()
        try:
            publish_by_source(events, lambda _partner: kafka, catalog=CATALOG, topics=topics,
                              rate=regime.rate)
            durations["publish"] = time.monotonic() - started
            killer.stop_killing()
            store = live_view.store
            settled, pending, phases = wait_settled(kafka, topics, partners, store,
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
    counts = count_stages(kafka, topics, partners, events, live_view)
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

