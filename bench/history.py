"""Benchmark: the live projector's cost per event as participants' histories grow.

For each history size H (default 10, 100, 1,000 and 10,000 events per participant), under a
fresh topic prefix (``benchhist<random>.``, one partition) and a fresh view database (SQLite
file, or a fresh database on the PostgreSQL server given by ``--database-url``):

1. **build**: ``--participants`` participants each get H events: a referral, an intake and a
   consent sharing HOUSING, PROGRAM_STATUS, EMPLOYMENT and CONTACT with the defender and
   housing roles, then a repeating mix of contacts, housing / SUD / mental-health service
   encounters, housing and employment changes from five partners. They are written as
   ``lead.events`` records (canonical envelopes, as the validator writes them; the validator
   is not part of this bench) to a **real Kafka topic**, interleaved by time, and projected by
   :class:`consumers.live_projector.LiveProjector` (the class ``leadhub run projector`` runs,
   its real ``KafkaConsumer``, the real view database) in this process's main thread; the
   build's events/s is reported;
2. **measure**: ``--waves`` waves, each one new event for every participant (a wave is one
   batch of the projector: ``--participants`` events of as many participants), produced and
   flushed, then projected and committed before the next wave. Per event: the process's CPU
   time while the projector polled and committed the wave, and the batches' own wall time
   (``LiveProjector.counters.batch_seconds``: decode, core, SQL, commit; not the poll).
   States stay in the projector's cache, as in steady operation;
3. **reload**: one participant's state read back from SQL in a fresh connection, best of 3:
   whole (:meth:`consumers.projection_store.ProjectionStore.load`: what a cache miss costs
   before a consent change, or a CLOCK tick that changes something), and by its head with one
   event id looked up (``load_heads``: what an ordinary event's cache miss costs);
4. **consent change**: one ``ConsentRevoked`` for one participant, which re-projects that
   participant's whole history (retracting the rows the consent shared): the batch's wall time.

Then one participant with ``--big`` events (default 100,000) is built, measured (waves of one
event), reloaded and its consent revoked the same way.

The target: the cost per event at 1,000 events of history at most 1.5 times the cost at 10.
What is flat by construction: the core keeps events and rows in persistent maps (immutables),
so adding an event does not copy the history. What this bench watches is the SQL side.

    .venv/bin/python bench/history.py [--sizes 10 100 1000 10000] [--participants 20]
                                      [--waves 10] [--big 100000] [--database-url URL]

Progress goes to stderr; ``--json`` prints the figures as JSON. Exit codes: 0 figures printed
(target met or not), 1 the run failed, 2 setup error (no broker, no database server).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import statistics
import sys
import tempfile
import time
import traceback
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from kafka import KafkaProducer
from kafka.errors import KafkaError
from sqlalchemy import select
from sqlalchemy.engine import make_url

from consumers.live_projector import CACHE_WEIGHT, LiveProjector
from consumers.projection_store import ProjectionStore, participant_heads
from consumers.store import ViewStore
from leadhub.services import ServiceError
from leadhub.topics_admin import create_topics
from processors.projector import Projector
from processors.site import SitePolicy, load_site
from schemas.canonical import CanonicalRecord, encode_canonical
from schemas.catalog import Catalog, load_catalog
from schemas.codec import encode
from schemas.errors import HubError
from schemas.event import Event, mint_participant_id
from schemas.kafka_connection import KafkaConnection
from schemas.topics import TopicNames

# isort: split
# Siblings in bench/: run as a file, the script's folder is first on sys.path.
from kafka_setup import add_bootstrap_argument, bench_connection
from machine import machine_info
from pipeline_harness import (
    SITE_FILE,
    BenchError,
    Budget,
    check_broker,
    cpu_seconds_of,
    delete_prefix_topics,
    postgres_backend_pids,
    progress,
    view_database,
)

TARGET_RATIO = 1.5
START = datetime(2024, 1, 1, tzinfo=UTC)
#: Time between one participant's consecutive events (100,000 events span about a year).
STEP = timedelta(minutes=5)

#: The repeating part of every history: (type, source partner, payload).
CYCLE: list[tuple[str, str, dict[str, Any]]] = [
    ("ContactLogged", "harbor-cm",
     {"contact_method": "OUTREACH", "successful": True, "duration_minutes": 20}),
    ("ServiceEncounter", "cedar-housing",
     {"service_type": "HOUSING", "provider": "cedar-housing", "duration_minutes": 60,
      "notes": None}),
    ("ContactLogged", "harbor-cm",
     {"contact_method": "PHONE", "successful": False, "duration_minutes": None}),
    ("ServiceEncounter", "riverbend-sud",
     {"service_type": "SUD_TREATMENT", "provider": "riverbend-sud", "duration_minutes": 30,
      "notes": None}),
    ("HousingStatusChanged", "cedar-housing", {"status": "TRANSITIONAL",
                                               "provider": "cedar-housing"}),
    ("ServiceEncounter", "northside-mh",
     {"service_type": "MENTAL_HEALTH", "provider": "northside-mh", "duration_minutes": 50,
      "notes": None}),
    ("ContactLogged", "harbor-cm",
     {"contact_method": "IN_PERSON", "successful": True, "duration_minutes": 45}),
    ("EmploymentStatusChanged", "harbor-cm", {"status": "IN_TRAINING", "employer": None}),
]


@dataclass
class Participant:
    """One participant of the bench and how many events it has been given."""

    participant_id: str
    offset_s: int
    sent: int = 0
    consent_id: str = ""


def event_of(participant: Participant, index: int) -> Event:
    """The participant's ``index``-th event (0, 1, 2: referral, intake, consent)."""
    at = START + STEP * index + timedelta(seconds=participant.offset_s)
    pid = participant.participant_id
    # Deterministic, and a random-looking version 4 UUID as the hub requires of partners.
    referral_id = str(uuid.UUID(bytes=uuid.uuid5(uuid.NAMESPACE_URL,
                                                 f"leadhub-bench:{pid}:referral").bytes,
                                version=4))
    if index == 0:
        return Event(referral_id, "ReferralMade", pid, at, {
            "door": "SOCIAL_CONTACT", "offense_category": None, "charges_held": False,
            "referring_officer": "badge 7412", "area": "South Precinct",
            "warm_handoff_at": None}, "evergreen-pd")
    if index == 1:
        return Event(str(uuid.uuid4()), "IntakeCompleted", pid, at, {
            "referral_event_id": referral_id, "intake_site": "Harbor drop-in",
            "preferred_name": "Jessie Brambleton", "date_of_birth": date(1970, 4, 17),
            "phone": "555-0173"}, "harbor-cm")
    if index == 2:
        participant.consent_id = f"{pid}-c1"
        return Event(str(uuid.uuid4()), "ConsentGranted", pid, at, {
            "consent_id": participant.consent_id,
            "recipients": ["role:defender", "role:housing"],
            "categories": ["HOUSING", "PROGRAM_STATUS", "EMPLOYMENT", "CONTACT"],
            "purposes": ["legal_defense", "care_coordination"],
            "valid_from": START, "expires_at": START + timedelta(days=365 * 30),
            "exceptions": [], "part2": False, "form_sha256": "0" * 64}, "harbor-cm")
    type_, source, payload = CYCLE[(index - 3) % len(CYCLE)]
    return Event(str(uuid.uuid4()), type_, pid, at, dict(payload), source)


def revocation_of(participant: Participant) -> Event:
    """A ``ConsentRevoked`` of the participant's consent, after its last event."""
    at = START + STEP * participant.sent + timedelta(seconds=participant.offset_s)
    return Event(str(uuid.uuid4()), "ConsentRevoked", participant.participant_id, at,
                 {"consent_id": participant.consent_id}, "harbor-cm")


class Log:
    """A fresh single-partition ``lead.events`` under the bench's prefix, and its writer.

    The hub's topics and its principals' ACLs are created as ``admin``, who also writes the
    records (as the validator would); the projector reads as its own principal.
    """

    def __init__(self, admin: KafkaConnection, topics: TopicNames, site: SitePolicy,
                 catalog: Catalog) -> None:
        self.topics = topics
        self.catalog = catalog
        create_topics(admin, topics, site, 1)
        self.producer = KafkaProducer(**admin.client_options(), acks="all", linger_ms=20,
                                      batch_size=512 * 1024, compression_type="lz4",
                                      client_id="leadhub-bench-hist-writer")
        self.written = 0

    def write(self, events: Sequence[Event]) -> None:
        """Append ``events`` as canonical EVENT records (received a second after they
        occurred) and wait for Kafka's acknowledgement."""
        for event in events:
            source = event.source_partner or ""
            record = CanonicalRecord("EVENT", event.occurred_at + timedelta(seconds=1), source,
                                     self.topics.inbound(source), 0, self.written,
                                     encode(event, self.catalog))
            self.producer.send(self.topics.events, key=event.participant_id.encode(),
                               value=encode_canonical(record), partition=0)
            self.written += 1
        self.producer.flush(timeout=120)

    def close(self) -> None:
        self.producer.close(timeout=10)


def cpu_now() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


@dataclass
class Drain:
    """What projecting up to the end of the log took."""

    records: int = 0
    wall_s: float = 0.0
    cpu_s: float = 0.0
    batch_s: float = 0.0
    batches: int = 0
    server_cpu_s: float = 0.0


def batch_seconds(projector: LiveProjector) -> float:
    """The projector's total wall time inside committed batches so far (nan if not counted)."""
    return float(getattr(projector.counters, "batch_seconds", math.nan))


def server_cpu(pids: Sequence[int]) -> float:
    """CPU seconds so far of the database server's backends ``pids`` (PostgreSQL)."""
    return sum(cpu_seconds_of(pid) or 0.0 for pid in pids)


def drain(projector: LiveProjector, end: int, budget: Budget, what: str,
          server: Sequence[int] = ()) -> Drain:
    """Run the projector until its tracking row reaches offset ``end`` of partition 0
    (``server``: the PostgreSQL backends whose CPU is counted too)."""
    out = Drain()
    started, cpu, in_batches = time.perf_counter(), cpu_now(), batch_seconds(projector)
    server_before = server_cpu(server)
    deadline = time.monotonic() + budget.cap(3600.0)
    last_report = time.monotonic()
    while projector.expected.get(0, -1) < end:
        if time.monotonic() > deadline:
            raise BenchError(f"{what}: the projector did not reach offset {end} within the "
                             "budget")
        count = projector.run_once()
        if count:
            out.records += count
            out.batches += 1
        if time.monotonic() - last_report >= 10:
            last_report = time.monotonic()
            progress(f"{what}: {projector.expected.get(0, 0):,} of {end:,} records")
    out.wall_s = time.perf_counter() - started
    out.cpu_s = cpu_now() - cpu
    out.batch_s = batch_seconds(projector) - in_batches
    out.server_cpu_s = server_cpu(server) - server_before
    return out


def reload_seconds(store: ViewStore, participant_id: str, runs: int = 3, *,
                   head: bool = False) -> float:
    """Best time to load the participant's committed state from SQL in a fresh connection:
    whole, or (``head``) by its head and one event id looked up, as an ordinary event's cache
    miss reads it (``ProjectionStore.load_heads``)."""
    sql = ProjectionStore(store)
    best = math.inf
    for _ in range(runs):
        store.engine.dispose()  # a fresh connection: no page cache of its own
        with store.engine.connect() as connection:
            connection.execute(select(participant_heads.c.partition).limit(1)).all()  # schema
            started = time.perf_counter()
            loaded = (sql.load_heads(connection, {participant_id: [str(uuid.uuid4())]}) if head
                      else sql.load(connection, [participant_id]))
            best = min(best, time.perf_counter() - started)
        if participant_id not in loaded:
            raise BenchError(f"participant {participant_id} has no committed state")
    return best


def run_size(args: argparse.Namespace, size: int, count: int, waves: int, site: SitePolicy,
             catalog: Catalog, budget: Budget, tmp: Path) -> dict[str, Any]:
    """Build, measure, reload and revoke at one history size; return its figures."""
    prefix = f"benchhist{uuid.uuid4().hex[:10]}."
    topics = TopicNames(prefix)
    people = [Participant(mint_participant_id(), n) for n in range(count)]
    admin = bench_connection(args.bootstrap)
    try:
        log = Log(admin, topics, site, catalog)
    except (KafkaError, ServiceError) as exc:
        if not args.keep_topics:
            delete_prefix_topics(admin, prefix)
        raise BenchError(f"cannot create topics under {prefix}: {exc}", exit_code=2) from exc
    try:
        with view_database(args.database_url, tmp) as url:
            store = ViewStore(url)
            store.create_schema()
            projector = LiveProjector(bench_connection(args.bootstrap, "projector"), topics,
                                      store, Projector(site, catalog), catalog,
                                      client_id="leadhub-bench-history",
                                      cache_weight=args.cache_weight)
            try:
                database = (make_url(url).database or "") if url.startswith("postgresql") else ""
                return _measure_size(projector, store, log, people, size, waves, budget,
                                     database)
            finally:
                projector.close()
                store.close()
    finally:
        log.close()
        if not args.keep_topics:
            delete_prefix_topics(admin, prefix)


def _chunks(people: list[Participant], upto: int, chunk: int) -> Iterator[list[Event]]:
    """Every participant's events up to ``upto``, interleaved by time, ``chunk`` at a time."""
    batch: list[Event] = []
    for index in range(upto):
        for person in people:
            if person.sent <= index:
                batch.append(event_of(person, index))
                person.sent = index + 1
        if len(batch) >= chunk:
            yield batch
            batch = []
    if batch:
        yield batch


def _measure_size(projector: LiveProjector, store: ViewStore, log: Log,
                  people: list[Participant], size: int, waves: int,
                  budget: Budget, database: str) -> dict[str, Any]:
    what = f"history {size:,} x {len(people)}"
    deadline = time.monotonic() + budget.cap(120.0)
    while 0 not in projector.expected:  # join the group and sync first: not part of the build
        if time.monotonic() > deadline:
            raise BenchError(f"{what}: the projector got no partition within 120 s")
        projector.run_once()
    progress(f"{what}: building {size * len(people):,} events")
    build = Drain()
    for chunk in _chunks(people, size, 50_000):
        log.write(chunk)
        part = drain(projector, log.written, budget, f"{what} build")
        build.records += part.records
        build.wall_s += part.wall_s
        build.cpu_s += part.cpu_s
        build.batches += part.batches
    progress(f"{what}: built at {build.records / build.wall_s:,.0f} events/s; "
             f"{waves} waves of {len(people)} events")
    per_wave_cpu: list[float] = []
    per_wave_batch: list[float] = []
    per_wave_server: list[float] = []
    wave_batches = 0
    server = postgres_backend_pids(database) if database else []
    for _ in range(waves):
        log.write([event_of(p, p.sent) for p in people])
        for person in people:
            person.sent += 1
        part = drain(projector, log.written, budget, f"{what} wave", server)
        per_wave_cpu.append(part.cpu_s / len(people))
        per_wave_batch.append(part.batch_s / len(people))
        per_wave_server.append(part.server_cpu_s / len(people))
        wave_batches += part.batches
    reload_s = reload_seconds(store, people[0].participant_id)
    reload_head_s = reload_seconds(store, people[0].participant_id, head=True)
    log.write([revocation_of(people[0])])
    people[0].sent += 1
    rows_before = projector.counters.rows_changed
    revoke = drain(projector, log.written, budget, f"{what} revocation")
    revoke_rows = projector.counters.rows_changed - rows_before
    figures = {
        "history": size, "participants": len(people), "waves": waves,
        "history_during_measure": [size, size + waves],
        "build_events": build.records, "build_s": build.wall_s,
        "build_events_per_s": build.records / build.wall_s if build.wall_s else math.nan,
        "build_cpu_us_per_event": build.cpu_s / max(1, build.records) * 1e6,
        "measured_events": waves * len(people), "measured_batches": wave_batches,
        "cpu_us_per_event_median": statistics.median(per_wave_cpu) * 1e6,
        "cpu_us_per_event_mean": statistics.fmean(per_wave_cpu) * 1e6,
        "batch_us_per_event_median": statistics.median(per_wave_batch) * 1e6,
        "batch_us_per_event_mean": statistics.fmean(per_wave_batch) * 1e6,
        # /proc counts CPU in 10 ms ticks: the server's share over all waves, not per wave.
        "db_server_cpu_us_per_event": (statistics.fmean(per_wave_server) * 1e6
                                       if server else math.nan),
        "reload_s": reload_s,
        "reload_head_s": reload_head_s,
        "revocation_batch_s": revoke.batch_s,
        "revocation_rows_changed": revoke_rows,
        "rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    progress(f"{what}: {figures['cpu_us_per_event_median']:,.0f} us CPU per event (median "
             f"wave), batch work {figures['batch_us_per_event_median']:,.0f} us; reload "
             f"{reload_s * 1000:,.1f} ms whole, {reload_head_s * 1000:,.2f} ms by its head; "
             f"consent change {revoke.batch_s * 1000:,.0f} ms")
    return figures


@dataclass
class Results:
    machine: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    sizes: list[dict[str, Any]] = field(default_factory=list)
    big: dict[str, Any] = field(default_factory=dict)
    target: dict[str, Any] = field(default_factory=dict)


def run(args: argparse.Namespace) -> Results:
    budget = Budget(args.budget)
    check_broker(bench_connection(args.bootstrap))
    site = load_site(SITE_FILE)
    catalog = load_catalog()
    results = Results(machine=machine_info())
    with tempfile.TemporaryDirectory(prefix="leadhub-bench-hist-") as tmp:
        backend = ("sqlite" if not args.database_url
                   else make_url(args.database_url).get_backend_name())
        results.config = {"backend": backend, "sizes": args.sizes,
                          "participants": args.participants, "waves": args.waves,
                          "big": args.big, "consumer": "real Kafka topic, 1 partition",
                          "cache_weight": args.cache_weight}
        progress(f"view: {backend}; load average {results.machine['load_before']}")
        for n, size in enumerate(args.sizes):
            folder = Path(tmp) / f"size-{n}"
            folder.mkdir()
            results.sizes.append(run_size(args, size, args.participants, args.waves, site,
                                          catalog, budget, folder))
        if args.big:
            folder = Path(tmp) / "big"
            folder.mkdir()
            results.big = run_size(args, args.big, 1, args.waves, site, catalog, budget,
                                   folder)
    by_size = {f["history"]: f for f in results.sizes}
    if 10 in by_size and 1000 in by_size:
        ratio = (by_size[1000]["cpu_us_per_event_median"]
                 / by_size[10]["cpu_us_per_event_median"])
        results.target = {"ratio_1000_over_10": ratio, "limit": TARGET_RATIO,
                          "met": ratio <= TARGET_RATIO}
    results.machine["load_after"] = os.getloadavg()
    return results


def render(results: Results) -> str:
    m, cfg = results.machine, results.config
    lines = [f"leadhub projector cost vs history - {m['nproc']} cores ({m['cpu']}), Python "
             f"{m['python']}, load {m['load_before'][0]:.2f} before / "
             f"{m['load_after'][0]:.2f} after",
             f"view: {cfg['backend']}; LiveProjector (state cache {cfg['cache_weight']:,} "
             f"events + rows) over a {cfg['consumer']}; "
             f"{cfg['participants']} participants per size, {cfg['waves']} waves of one event "
             "each", "",
             "| events of history | build events/s | CPU µs/event (median wave / mean) | "
             "batch work µs/event (median / mean) | reload one participant, whole / by its head "
             "| consent change "
             "(re-projects the history) |",
             "| ---: | ---: | ---: | ---: | ---: | ---: |"]
    rows = [*results.sizes, *([results.big] if results.big else [])]
    server = [f.get("db_server_cpu_us_per_event", math.nan) for f in rows]
    with_server = any(not math.isnan(v) for v in server)
    if with_server:
        lines[-2] += " PostgreSQL backends' CPU µs/event (all waves) |"
        lines[-1] += " ---: |"
    for f, server_us in zip(rows, server, strict=True):
        label = f"{f['history']:,}" + (" (1 participant, waves of 1)"
                                        if f is results.big else "")
        lines.append(
            f"| {label} | {f['build_events_per_s']:,.0f} | "
            f"{f['cpu_us_per_event_median']:,.0f} / {f['cpu_us_per_event_mean']:,.0f} | "
            f"{f['batch_us_per_event_median']:,.0f} / {f['batch_us_per_event_mean']:,.0f} | "
            f"{f['reload_s'] * 1000:,.1f} / {f['reload_head_s'] * 1000:,.2f} ms | "
            f"{f['revocation_batch_s'] * 1000:,.0f} ms "
            f"({f['revocation_rows_changed']:,} row changes) |")
        if with_server:
            lines[-1] += f" {server_us:,.0f} |"
    if results.big:
        b = results.big
        lines += ["", f"{b['history']:,}-event participant: built in {b['build_s']:.1f} s "
                      f"({b['build_events_per_s']:,.0f} events/s), reloaded from SQL in "
                      f"{b['reload_s']:.2f} s, peak RSS of the bench process "
                      f"{b['rss_mib']:,.0f} MiB"]
    t = results.target
    if t:
        lines += ["", f"CPU per event at 1,000 / at 10: {t['ratio_1000_over_10']:.2f} "
                      f"(target <= {t['limit']}): {'met' if t['met'] else 'NOT met'}"]
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Benchmark the live projector's cost per event at growing per-participant "
                    "histories (real Kafka topic, real SQLite or PostgreSQL), the reload of a "
                    "state from SQL, and a 100,000-event participant.")
    add_bootstrap_argument(parser)
    parser.add_argument("--database-url", default=None,
                        help="PostgreSQL server URL: each size gets a fresh database there "
                             "(default: fresh SQLite files)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[10, 100, 1000, 10000],
                        help="events of history per participant (%(default)s)")
    parser.add_argument("--participants", type=int, default=20,
                        help="participants per size, = events per wave (%(default)s)")
    parser.add_argument("--waves", type=int, default=10,
                        help="measured waves of one event per participant (%(default)s)")
    parser.add_argument("--big", type=int, default=100_000,
                        help="events of the one big participant, 0 to skip (%(default)s)")
    parser.add_argument("--cache-weight", type=int, default=CACHE_WEIGHT,
                        help="the projector's state-cache capacity in events + rows "
                             "(LEADHUB_PROJECTOR_CACHE; %(default)s)")
    parser.add_argument("--budget", type=float, default=3600.0,
                        help="upper bound of the whole run in seconds (%(default)s)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument("--keep-topics", action="store_true",
                        help="do not delete the bench's topics at the end")
    args = parser.parse_args(argv)
    if args.participants < 1 or args.waves < 1 or any(s < 3 for s in args.sizes) or (
            args.big and args.big < 3):
        parser.error("--participants and --waves must be >= 1, sizes >= 3")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        results = run(args)
    except BenchError as exc:
        print(f"bench/history.py: {exc}", file=sys.stderr)
        return exc.exit_code
    except (HubError, KafkaError) as exc:
        print(f"bench/history.py: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("bench/history.py: interrupted", file=sys.stderr)
        return 1
    except Exception:
        traceback.print_exc()
        print("bench/history.py: the run failed", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(results.__dict__, indent=2, default=str))
    else:
        print(render(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
