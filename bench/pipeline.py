"""Benchmark: the whole running pipeline on the real local broker (issue 5).

One run, under a topic prefix of its own (``bench<random>.``) and a fresh SQLite view (or a
fresh database on the PostgreSQL server given by ``--database-url``):

1. starts ``--validators`` ``leadhub run validator`` **child processes** (Kafka transactions,
   tick 1 s) and ``--projectors`` projector **child processes** (``pipeline_projector_child``,
   one consumer group: they split ``lead.events``' partitions), each running
   :class:`consumers.live_projector.LiveProjector` (the class ``leadhub run projector`` runs)
   in a process of its own, as deployed. Each child's ``on_commit`` hook, called after each
   batch's database transaction committed, writes one line to its stdout with the moment the
   batch's own rows (the row of each event's source partner) and retractions became visible;
   a thread of this process per child reads them. This process holds only the SDK publishers
   (and those reader threads). The warm-up waits until every projector has committed a batch
   (all have joined the group), then sends ``--warmup-events`` events of other participants
   through the whole hub unmeasured but for a cold figure of their own (``warmup``): the
   broker's JVM compiles its hot paths in its first minutes of traffic (a run right after
   the broker started billed it 0.34 ms per event against 0.05 warm), which a broker that
   runs for months pays once, not per event;
2. **sustained throughput**: publishes a simulated site as fast as the SDK goes (one
   :class:`producers.sdk.PartnerPublisher` per partner, ``send`` then ``flush``) and measures
   events/s from the first send until the last event's own row is committed, and the CPU
   seconds every process spent meanwhile (validators, projectors, the local broker, this
   process's SDK publishers and main thread, PostgreSQL's backends for the view database; the
   threads reading the projectors' lines are shown apart and not counted in the total);
3. **latency at a fixed rate** (default 500 events/s for 20 s, other participants): p50, p99
   and max of send -> own row committed, after the machine's dirty pages are written out
   (``os.sync``), with the machine's I/O and CPU stalls meanwhile;
4. **revocation latency**: consents sharing HOUSING rows with ``defender-assoc`` are revoked
   one at a time: send -> retraction committed;
5. stops the hub, then the baselines over what the run left in Kafka: a raw kafka-python
   ``KafkaConsumer`` over every inbound message (no decoding); the **pure core** (the
   projection step over in-memory states, as the auditor's replay) over the sustained phase's
   ``lead.events`` records, best of ``--core-runs``, and the ratio end-to-end / core; the
   projector alone over the whole ``lead.events`` as a backlog into a fresh view (one
   ``LiveProjector`` in this process's main thread: nothing else runs by then);
6. **peak memory** of every process (``VmHWM``; ``ru_maxrss`` for this one), the per-stage
   breakdown (inbound record timestamp -> ``lead.events`` record timestamp -> projector poll
   -> row committed) and a table (``--json`` for JSON).

On the secured broker (SASL/SCRAM, ACLs) the bench sets up, publishes and reads back as the
admin principal; the validators and the projectors connect as their own roles
(``kafka_setup``).

Progress goes to stderr. Every wait has a timeout and the whole run a budget (``--budget``).
Exit codes: 0 figures printed (targets met or not), 1 the run failed, 2 setup error (e.g. the
broker is not running).

    .venv/bin/python bench/pipeline.py [--participants 1000] [--days 180] [--rate 500]
        [--validators 1] [--projectors 1]

This file is the entry point (flags and the run's order); the parts live beside it:
``pipeline_harness`` (child processes, publishers, broker, view database, topics, /proc),
``pipeline_tracker`` (the projector children, their output, what they committed when),
``pipeline_projector_child`` (one projector child process), ``pipeline_phases``
(the phases and baselines), ``pipeline_stages`` (reading ``lead.events`` back, per-stage
breakdown), ``pipeline_report`` (the figures, targets, the table, the profiles) and
``machine`` (what machine the run was on), ``kafka_setup`` (the principals).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import resource
import sys
import tempfile
import time
import traceback
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

from kafka.errors import KafkaError
from sqlalchemy.engine import make_url

from consumers.store import ViewStore
from leadhub.services import ServiceError
from leadhub.topics_admin import create_topics
from processors.site import load_site
from producers.simulator import simulate
from schemas.catalog import load_catalog
from schemas.errors import HubError
from schemas.event import Event
from schemas.topics import TopicNames

# isort: split
# Siblings in bench/: run as a file, the script's folder is first on sys.path.
from kafka_setup import add_bootstrap_argument, bench_connection, child_credentials_env
from machine import machine_info
from pipeline_harness import (
    SITE_FILE,
    BenchError,
    Budget,
    Children,
    Publishers,
    check_broker,
    delete_prefix_topics,
    local_broker_pid,
    postgres_backend_pids,
    progress,
    topic_sizes_mib,
    view_database,
)
from pipeline_phases import (
    core_alone,
    paced_phase,
    projector_alone,
    raw_ceiling,
    revocation_phase,
    sustained_phase,
    wait_ready,
)
from pipeline_report import Results, print_profiles, render, targets
from pipeline_stages import read_events_log, stage_breakdown
from pipeline_tracker import CommitTracker, ProjectorChildren


def run(args: argparse.Namespace) -> Results:
    """The whole benchmark; returns its figures (children stopped, temp files gone)."""
    budget = Budget(args.budget)
    admin = bench_connection(args.bootstrap)
    check_broker(admin)
    results = Results(machine=machine_info())
    site = load_site(SITE_FILE)
    catalog = load_catalog()
    prefix = f"bench{uuid.uuid4().hex[:10]}."
    topics = TopicNames(prefix)
    progress(f"topic prefix {prefix}; load average {results.machine['load_before']}")
    try:
        created = create_topics(admin, topics, site, args.partitions)
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
        warmup_events = list(itertools.islice(
            simulate(site, catalog, args.participants, args.days, args.seed + 2, start),
            args.warmup_events))
        progress(f"simulated {len(sustained_events):,} + {len(paced_events):,} events "
                 f"(and {len(warmup_events):,} to warm up)")

        with tempfile.TemporaryDirectory(prefix="leadhub-bench-") as tmp, \
                view_database(args.database_url, Path(tmp)) as database_url:
            state_dir = Path(tmp)
            backend = make_url(database_url).get_backend_name()
            results.config = {"backend": backend, "validators": args.validators,
                              "projectors": args.projectors,
                              "partitions": args.partitions, "tick_s": 1,
                              "participants": args.participants, "days": args.days,
                              "seed": args.seed, "rate": args.rate}
            env = dict(os.environ, LEADHUB_KAFKA_BOOTSTRAP=args.bootstrap,
                       LEADHUB_TOPIC_PREFIX=prefix, LEADHUB_SITE_FILE=str(SITE_FILE),
                       LEADHUB_STATE_DIR=str(state_dir), LEADHUB_TICK_SECONDS="1",
                       LEADHUB_PARTITIONS=str(args.partitions),
                       LEADHUB_DATABASE_URL=database_url, **child_credentials_env())
            env.pop("LEADHUB_METRICS_PORT", None)  # several validators: no shared port
            children = Children(env, state_dir, profile=args.profile)
            broker = local_broker_pid()
            if broker is not None:
                children.watched["broker"] = broker
            store = ViewStore(database_url)
            store.create_schema()  # before the projectors start, not by them at once
            store.close()
            tracker = CommitTracker()
            projectors = ProjectorChildren(children, args.projectors, tracker)
            # Throughput, not isolation: the publishers write as the admin principal.
            publishers = Publishers(admin, topics, site, catalog)
            validators = [f"validator-{n + 1}" for n in range(args.validators)]
            stopped = False

            alive = projectors.check_alive  # every child: the validators too

            try:
                for name in validators:
                    children.start("validator", name)
                projectors.start()
                progress(f"started {len(validators)} validator(s) and "
                         f"{len(projectors.names)} projector(s); waiting for the hub")
                ready = wait_ready(publishers, tracker, alive, projectors.all_projecting,
                                   children, budget, 120.0)
                progress(f"hub ready after {ready:.1f}s")
                if backend == "postgresql":
                    database = make_url(database_url).database or ""
                    for n, pid in enumerate(postgres_backend_pids(database)):
                        children.watched[f"postgres backend {n + 1}"] = pid
                if warmup_events:
                    results.warmup = sustained_phase(warmup_events, publishers, tracker,
                                                     children, budget, 180.0, "warm-up")
                    progress(f"warm-up: {len(warmup_events):,} events, "
                             f"{results.cpu_ms_per_event('warmup'):.3f} ms CPU per event "
                             "(not counted)")

                results.sustained = sustained_phase(sustained_events, publishers, tracker,
                                                    children, budget, 180.0)
                progress(f"sustained: {results.sustained['events_per_s']:,.0f} events/s")
                alive()

                time.sleep(2.0)  # let the ticks and the tail settle
                progress(f"paced: {len(paced_events):,} events at {args.rate:,.0f}/s")
                results.latency, paced_sent = paced_phase(paced_events, args.rate, publishers,
                                                          tracker, budget, 60.0)
                progress(f"paced: p50 {results.latency['p50_s'] * 1000:.0f} ms, "
                         f"p99 {results.latency['p99_s'] * 1000:.0f} ms")
                alive()

                progress(f"revocation: {args.revocations} consents")
                results.revocation, revoke_sent = revocation_phase(args.revocations, publishers,
                                                                   tracker, budget, 60.0)
                progress(f"revocation: p50 {results.revocation['p50_s'] * 1000:.0f} ms, "
                         f"p99 {results.revocation['p99_s'] * 1000:.0f} ms")
                alive()

                results.memory_mib = {f"{k} (VmHWM)": v for k, v in children.vm_hwm_mib().items()}
                results.thread_cpu_s = children.thread_cpu_seconds()
                results.memory_mib["bench process: SDK publishers (ru_maxrss)"] = (
                    resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
                codes = children.stop_all()
                projectors.close()
                stopped = True
                progress(f"children stopped: {codes}")
                results.projector = projectors.totals(codes)
                unclean = {n: codes.get(n) for n in projectors.names if codes.get(n) != 0}
                for name, code in unclean.items():
                    progress(f"{name} exited with {code}:\n{children.log_tail(name, 15)}")

                progress("baseline: raw KafkaConsumer over the inbound topics")
                results.ceiling, inbound_sent = raw_ceiling(admin, topics, site,
                                                            publishers.sent, budget, 60.0)
                progress("reading lead.events back")
                log = read_events_log(admin, topics, catalog, budget)
                sustained_ids = {e.event_id for e in sustained_events}
                progress(f"baseline: the pure core over the sustained phase's records, best of "
                         f"{args.core_runs}")
                results.core = core_alone(log, sustained_ids, site, catalog, args.core_runs)
                progress(f"core: {results.core['events_per_s']:,.0f} events/s")
                results.stages = stage_breakdown(
                    log, inbound_sent, projectors.clock,
                    {"sustained": sustained_ids, "paced": set(paced_sent)}, revoke_sent,
                    tracker.visible, tracker.retracted, results.sustained["first_send"],
                    sustained_ids)
                results.topics_mib = topic_sizes_mib(admin, prefix)
                if not args.skip_projector_alone:
                    progress(f"baseline: the projector alone over {len(log):,} lead.events "
                             "records into a fresh view (in this process)")
                    replay_dir = state_dir / "alone"
                    replay_dir.mkdir()
                    with view_database(args.database_url, replay_dir) as alone_url:
                        results.projector_alone = projector_alone(
                            bench_connection(args.bootstrap, "projector"), topics, alone_url,
                            site, catalog, len(log), budget, 120.0)
                results.machine["load_after"] = os.getloadavg()
                results.targets = targets(results)
                if args.profile:
                    print_profiles(state_dir, [*projectors.names, *validators],
                                   args.profile_lines, args.profile_out)
            finally:
                if not stopped:
                    children.stop_all()
                    projectors.close()
                publishers.close()
    finally:
        if not args.keep_topics:
            delete_prefix_topics(admin, prefix)
    return results


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Benchmark the running leadhub pipeline (validator and live projector "
                    "child processes) on the local Kafka broker: sustained "
                    "events/s, the pure core's events/s on the same events, CPU per event of "
                    "every process, latency at a fixed rate, revocation latency, a raw-consumer "
                    "baseline and peak memory.")
    add_bootstrap_argument(parser)
    parser.add_argument("--database-url", default=None,
                        help="PostgreSQL server URL: the view goes to a fresh database there "
                             "(default: a fresh SQLite file)")
    parser.add_argument("--participants", type=int, default=1000,
                        help="simulated participants of the sustained phase (%(default)s)")
    parser.add_argument("--days", type=int, default=180,
                        help="simulated days of history (%(default)s)")
    parser.add_argument("--seed", type=int, default=1, help="simulation seed (%(default)s)")
    parser.add_argument("--warmup-events", type=int, default=30_000,
                        help="events of other participants sent through the hub before the "
                             "sustained phase and not counted in it (%(default)s; 0: none)")
    parser.add_argument("--rate", type=float, default=500.0,
                        help="events/s of the latency phase (%(default)s)")
    parser.add_argument("--paced-seconds", type=float, default=20.0,
                        help="duration of the latency phase (%(default)s)")
    parser.add_argument("--revocations", type=int, default=50,
                        help="consents revoked one at a time (%(default)s)")
    parser.add_argument("--partitions", type=int, default=4,
                        help="partitions of every topic (%(default)s)")
    parser.add_argument("--validators", type=int, default=1,
                        help="validator child processes (%(default)s)")
    parser.add_argument("--projectors", type=int, default=1,
                        help="live projector child processes, one consumer group "
                             "(%(default)s)")
    parser.add_argument("--core-runs", type=int, default=3,
                        help="runs of the pure-core baseline, best kept (%(default)s)")
    parser.add_argument("--skip-projector-alone", action="store_true",
                        help="skip the projector-alone backlog baseline")
    parser.add_argument("--budget", type=float, default=420.0,
                        help="upper bound of the whole run in seconds (%(default)s)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument("--profile", action="store_true",
                        help="cProfile the projectors and the validators (slower; "
                             "figures are then not representative) and print the top functions")
    parser.add_argument("--profile-lines", type=int, default=25,
                        help="functions listed per profile (%(default)s)")
    parser.add_argument("--profile-out", type=Path, default=None,
                        help="with --profile: also keep the .prof files in this directory")
    parser.add_argument("--keep-topics", action="store_true",
                        help="do not delete the bench's topics at the end")
    args = parser.parse_args(argv)
    if not 1 <= args.projectors <= args.partitions:
        parser.error("--projectors must be between 1 and --partitions (a projector without "
                     "a partition never commits)")
    return args


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
    except Exception:  # any other failure of the run: say what, exit 1
        traceback.print_exc()
        print("bench/pipeline.py: the run failed", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(results.as_json(), indent=2, default=str))
    else:
        print(render(results, args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
