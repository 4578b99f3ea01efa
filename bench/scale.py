"""Benchmark: a site-sized year through the live projector: peak memory and restart time.

Under a topic prefix of its own (``benchscale<random>.``) and a fresh view database (SQLite
file, or a fresh database on the PostgreSQL server given by ``--database-url``):

1. the simulated example site, ``--participants`` people (default 100,000) over ``--days``
   (default 365), is written **straight to** ``lead.events`` as canonical records, as the
   validator writes them (the validator is not part of this bench), keyed by participant, with a
   CLOCK record per partition every simulated hour (``--tick-hours``). The history is streamed:
   simulated, encoded and produced as it goes, never held in memory;
2. the projector runs as a **child process**, ``leadhub run projector`` (defaults: its state
   cache, batch size and group as deployed), from the start of the log, while the first half
   of the year is written; the bench waits until its tracking rows reach the end of the log;
3. **restart after half the log**: the projector is stopped (SIGTERM, or SIGKILL with
   ``--restart-signal kill``), the next ``--probe`` events of the year are written, and a new
   projector process is started: the time from starting it to its first committed batch (the
   bench polls the view's tracking rows every 10 ms) and to having projected the probe;
4. the rest of the year is written, except its last ``--probe`` events, while the restarted
   projector runs; once it has caught up it is stopped, the last events are written and a third
   projector is started: **restart after the whole log**, timed the same way; it must not grow
   with the log's length;
5. **peak memory** (``VmHWM``) of each projector process, its RSS sampled every second, its
   CPU seconds; the view database's size.

``--cache-weight N`` runs the projectors with ``LEADHUB_PROJECTOR_CACHE=N`` (the state cache's
capacity in events plus rows), to see what the cache's capacity does to memory and speed.

``--run-dir DIR`` keeps the run in ``DIR`` (the view, the projectors' state and logs, and
``run.json``) and its topics on the broker, so that a run stopped once its whole log is written
(SIGTERM or Ctrl-C to the bench: it stops its projector cleanly and exits 3) goes on later with
``--resume DIR``, the broker and ``DIR`` as they were. The resumed run starts a new projector,
timed as a restart after the log it finds ("after an interruption"), which projects the rest
of the second half; then steps 4 and 5 as usual, over every projector of the run. A run
stopped before its log is written cannot be resumed.

Target: peak RSS of the projector process <= 512 MiB; restart-to-first-commit after the whole
log not longer than after half of it (the bench says "met" when it is within 1.5x).

Full size (100,000 participants x 365 days: about 4.5 million events plus 35,000 CLOCK records)
takes long: the projector's rate on this machine decides (see BENCHMARKS.md). Scale it down
with ``--participants`` and ``--days``.

    .venv/bin/python bench/scale.py [--participants 100000] [--days 365] [--database-url URL]

Progress goes to stderr; ``--json`` prints the figures as JSON. Exit codes: 0 figures printed
(targets met or not), 1 the run failed, 2 setup error (no broker, no database server), 3
stopped and resumable (``--run-dir``).
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import dataclasses
import itertools
import json
import math
import os
import resource
import signal
import sys
import tempfile
import time
import traceback
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from kafka.errors import KafkaError
from sqlalchemy.engine import make_url

from leadhub.services import ServiceError
from leadhub.topics_admin import create_topics
from processors.site import SitePolicy, load_site
from producers.simulator import simulate
from schemas.catalog import Catalog, load_catalog
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
    check_broker,
    delete_prefix_topics,
    progress,
    view_database,
)
from scale_parts import (
    START,
    Instance,
    Interrupted,
    LogWriter,
    RunDir,
    Scale,
    Watcher,
    all_but_last,
    take,
    until,
)

TARGET_RSS_MIB = 512.0
TARGET_RESTART_GROWTH = 1.5


@dataclass
class Results:
    machine: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    log: dict[str, Any] = field(default_factory=dict)
    instances: list[dict[str, Any]] = field(default_factory=list)
    restarts: list[dict[str, Any]] = field(default_factory=list)
    view: dict[str, Any] = field(default_factory=dict)
    targets: dict[str, Any] = field(default_factory=dict)
    wall_s: float = 0.0


def _interrupt(_signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt


RESUMED_ARGS = ("participants", "days", "seed", "partitions", "probe", "tick_hours",
                "restart_signal", "cache_weight")


def run(args: argparse.Namespace) -> Results:
    began = time.monotonic()
    budget = Budget(args.budget)
    admin = bench_connection(args.bootstrap)
    check_broker(admin)
    results = Results(machine=machine_info())
    site = load_site(SITE_FILE)
    catalog = load_catalog()
    run_dir = RunDir(Path(args.resume or args.run_dir)) if (args.resume or args.run_dir) else None
    saved = run_dir.load() if args.resume and run_dir else None
    if saved is not None:
        vars(args).update({name: saved["args"][name] for name in RESUMED_ARGS})
        prefix = saved["prefix"]
    else:
        prefix = f"benchscale{uuid.uuid4().hex[:10]}."
        if run_dir is not None:
            run_dir.path.mkdir(parents=True, exist_ok=True)
            if any(run_dir.path.iterdir()):
                raise BenchError(f"{run_dir.path} is not empty; --resume it or choose another",
                                 exit_code=2)
    topics = TopicNames(prefix)
    progress(f"topic prefix {prefix}; load average {results.machine['load_before']}")
    if saved is None:
        try:
            create_topics(admin, topics, site, args.partitions)
        except ServiceError as exc:
            raise BenchError(f"{exc}; is the broker running? (`.venv/bin/leadhub services "
                             "start`)", exit_code=2) from exc
    keep_topics = args.keep_topics
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        with (contextlib.nullcontext(str(run_dir.path)) if run_dir else
              tempfile.TemporaryDirectory(prefix="leadhub-bench-scale-")) as tmp, \
                view_database(args.database_url, Path(tmp)) as database_url:
            backend = make_url(database_url).get_backend_name()
            projector = "child process `leadhub run projector`" + (
                "" if args.cache_weight is None else
                f", LEADHUB_PROJECTOR_CACHE={args.cache_weight:,} events + rows")
            results.config = {"backend": backend, "participants": args.participants,
                              "days": args.days, "seed": args.seed,
                              "partitions": args.partitions, "probe": args.probe,
                              "tick_hours": args.tick_hours,
                              "restart_signal": args.restart_signal,
                              "cache_weight": args.cache_weight,
                              "projector": projector}
            env = dict(os.environ, LEADHUB_KAFKA_BOOTSTRAP=args.bootstrap,
                       LEADHUB_TOPIC_PREFIX=prefix, LEADHUB_SITE_FILE=str(SITE_FILE),
                       LEADHUB_STATE_DIR=tmp, LEADHUB_PARTITIONS=str(args.partitions),
                       LEADHUB_DATABASE_URL=database_url, **child_credentials_env())
            env.pop("LEADHUB_METRICS_PORT", None)
            children = Children(env, Path(tmp), profile=False)
            writer = LogWriter(admin, topics, catalog, args.partitions,
                               timedelta(hours=args.tick_hours))
            watcher = Watcher(database_url, topics.events)
            scale = Scale(args, admin, children, writer, watcher, budget)
            try:
                if saved is None or run_dir is None:
                    _run_year(args, scale, site, catalog, results, run_dir, prefix)
                else:
                    _resume_year(args, scale, results, run_dir, saved)
                if backend == "sqlite":
                    path = Path(make_url(database_url).database or "")
                    results.view["sqlite_mib"] = sum(
                        p.stat().st_size for p in path.parent.glob(path.name + "*")) / 2**20
                results.view.update(watcher.counts())
            except Interrupted as exc:
                keep_topics = keep_topics or exc.resumable
                raise
            finally:
                children.stop_all()
                writer.close()
                watcher.close()
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        if not keep_topics:
            delete_prefix_topics(admin, prefix)
    peak = max((i["vm_hwm_mib"] for i in results.instances), default=math.nan)
    by_label = {r["after"]: r["first_commit_s"] for r in results.restarts}
    first, second = by_label["half the log"], by_label["the whole log"]
    results.targets = {
        f"projector peak RSS <= {TARGET_RSS_MIB:.0f} MiB": peak <= TARGET_RSS_MIB,
        "restart-to-first-commit does not grow with the log "
        f"(whole log <= {TARGET_RESTART_GROWTH}x half)": second <= TARGET_RESTART_GROWTH * first,
    }
    results.machine["load_after"] = os.getloadavg()
    results.machine["bench_process_max_rss_mib"] = (
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    results.wall_s = time.monotonic() - began + (saved or {}).get("wall_s", 0.0)
    return results


def _run_year(args: argparse.Namespace, scale: Scale, site: SitePolicy, catalog: Catalog,
              results: Results, run_dir: RunDir | None, prefix: str) -> None:
    writer = scale.writer
    events = simulate(site, catalog, args.participants, args.days, args.seed, START)
    middle = START + timedelta(days=args.days / 2)
    progress(f"simulating {args.participants:,} participants x {args.days} days; the first "
             "projector runs while the first half is written")
    began = time.monotonic()
    try:
        scale.start()
        held: list[Event] = []
        writer.write(until(events, middle, held), "first half")
        rest = itertools.chain(held, events)
        progress(f"first half written: {writer.events:,} events, {writer.ticks:,} CLOCK "
                 f"records in {writer.seconds:.0f} s; waiting for the projector")
        scale.wait_caught_up("first half")
        halves = [writer.events + writer.ticks]
        scale.stop()
        writer.write(take(rest, args.probe), "probe")
        _restart(scale, results, "half the log", probe=True)
        tail: collections.deque[Event] = collections.deque(maxlen=args.probe)
        writer.write(all_but_last(rest, args.probe, tail), "second half")
    except KeyboardInterrupt:
        raise Interrupted("stopped before the log was written: the run cannot be resumed",
                          exit_code=1) from None
    progress(f"second half written: {writer.events:,} events in total; waiting for the "
             "projector")
    _finish_year(args, scale, results, run_dir, {
        "prefix": prefix, "args": {name: getattr(args, name) for name in RESUMED_ARGS},
        "halves": halves, "tail": list(tail), "began": began})


def _resume_year(args: argparse.Namespace, scale: Scale, results: Results, run_dir: RunDir,
                 saved: dict[str, Any]) -> None:
    """Restore the writer and the projectors so far; restart; finish the year."""
    writer = scale.writer
    writer.events, writer.ticks = saved["writer"]["events"], saved["writer"]["ticks"]
    writer.seconds = saved["writer"]["seconds"]
    writer.next_tick = datetime.fromisoformat(saved["writer"]["next_tick"])
    scale.instances = [Instance(**i) for i in saved["instances"]]
    results.restarts = saved["restarts"]
    try:
        _restart(scale, results, "an interruption", probe=False)
    except KeyboardInterrupt:
        saved["restarts"] = results.restarts
        _save_interrupted(scale, run_dir, saved)
    _finish_year(args, scale, results, run_dir, {**saved, "tail": run_dir.tail(),
                                                 "began": time.monotonic()})


def _finish_year(args: argparse.Namespace, scale: Scale, results: Results,
                 run_dir: RunDir | None, state: dict[str, Any]) -> None:
    """Project the rest of the second half; restart after the whole log; fill ``results``."""
    writer, halves = scale.writer, state["halves"]
    try:
        scale.wait_caught_up("second half")
    except KeyboardInterrupt:
        if run_dir is None:
            raise Interrupted("stopped (no --run-dir: the run cannot be resumed)",
                              exit_code=1) from None
        wall = state.get("wall_s", 0.0) + time.monotonic() - state["began"]
        _save_interrupted(scale, run_dir, {
            **{k: v for k, v in state.items() if k not in ("tail", "began")},
            "wall_s": wall, "restarts": results.restarts}, state["tail"])
    halves.append(writer.events + writer.ticks)
    scale.stop()
    writer.write(iter(state["tail"]), "probe")
    _restart(scale, results, "the whole log", probe=True)
    scale.stop()
    results.log = {"events": writer.events, "clock_records": writer.ticks,
                   "records": writer.events + writer.ticks, "write_s": writer.seconds,
                   "records_at_half": halves[0]}
    for instance in scale.instances:
        samples = [s for s in instance.rss_samples_mib if not math.isnan(s)]
        results.instances.append({
            "name": instance.name, "vm_hwm_mib": instance.vm_hwm_mib, "cpu_s": instance.cpu_s,
            "first_commit_s": instance.first_commit_s, "caught_up_s": instance.caught_up_s,
            "rss_last_mib": samples[-1] if samples else math.nan,
            "rss_samples": len(samples),
            "records_projected": instance.records_at_stop - instance.records_at_start})


def _save_interrupted(scale: Scale, run_dir: RunDir, state: dict[str, Any],
                      tail: Sequence[Event] | None = None) -> None:
    """Stop the running projector, keep the run in ``run_dir``; raise :class:`Interrupted`."""
    if scale.current is not None:
        scale.stop()
    writer = scale.writer
    state = {**state, "writer": {"events": writer.events, "ticks": writer.ticks,
                                 "seconds": writer.seconds,
                                 "next_tick": writer.next_tick.isoformat()},
             "instances": [dataclasses.asdict(i) for i in scale.instances]}
    run_dir.save(state, run_dir.tail() if tail is None else tail)
    error = Interrupted(f"stopped; {sum(scale.watcher.tracked().values()):,} of "
                        f"{writer.events + writer.ticks:,} records projected. "
                        f"Go on with: bench/scale.py --resume {run_dir.path}", exit_code=3)
    error.resumable = True
    raise error from None


def _restart(scale: Scale, results: Results, label: str, *, probe: bool) -> None:
    """Start a projector after ``label``: the time to its first commit and, with ``probe``,
    to having projected the log's end (the probe)."""
    length = scale.writer.events + scale.writer.ticks
    progress(f"restart after {label} ({length:,} records): starting a new projector")
    instance = scale.start()
    first = scale.wait_first_commit(300.0)
    progress(f"restart after {label}: first commit {first:.2f} s after the start")
    caught = scale.wait_caught_up(f"probe after {label}") if probe else math.nan
    results.restarts.append({"after": label, "log_records": length,
                             "first_commit_s": first, "probe_projected_s": caught,
                             "first_batch_records": instance.first_batch_records,
                             "rss_after_probe_mib": instance.rss_samples_mib[-1]
                             if probe and instance.rss_samples_mib else math.nan,
                             "instance": instance.name})


def render(results: Results) -> str:
    m, cfg, log = results.machine, results.config, results.log

    def num(value: float, unit: str = "", digits: int = 1) -> str:
        return "n/a" if math.isnan(value) else f"{value:,.{digits}f}{unit}"

    lines = [f"leadhub projector at scale - {m['nproc']} cores ({m['cpu']}), Python "
             f"{m['python']}, load {m['load_before'][0]:.2f} before / "
             f"{m['load_after'][0]:.2f} after",
             f"{cfg['participants']:,} participants x {cfg['days']} days, seed {cfg['seed']}, "
             f"{cfg['partitions']} partitions, view: {cfg['backend']}; projector: "
             f"{cfg['projector']}; restarts by SIG{cfg['restart_signal'].upper()}",
             f"log: {log['events']:,} events + {log['clock_records']:,} CLOCK records "
             f"(written in {log['write_s']:.0f} s); whole run {results.wall_s / 60:.1f} min",
             "", "| projector process | projected | records | CPU s | CPU ms/record | peak RSS "
             "(VmHWM) | RSS at its end |", "| --- | --- | ---: | ---: | ---: | ---: | ---: |"]
    after = {"half the log": "probe 1, then the second half while it was written",
             "an interruption": "the rest of the second half",
             "the whole log": "probe 2"}
    spans = {"projector-1": "the first half, while it was written",
             **{r["instance"]: after[r["after"]] for r in results.restarts}}
    for inst in results.instances:
        what, records = spans.get(inst["name"], ""), inst["records_projected"]
        per = inst["cpu_s"] / records * 1000 if records else math.nan
        lines.append(f"| {inst['name']} | {what} | {records:,} | {num(inst['cpu_s'])} | "
                     f"{num(per, digits=3)} | "
                     f"{num(inst['vm_hwm_mib'], ' MiB')} | {num(inst['rss_last_mib'], ' MiB')} |")
    lines += ["", "| restart after | log records | start -> first commit (its records) | "
              "start -> probe projected |", "| --- | ---: | ---: | ---: |"]
    for r in results.restarts:
        lines.append(f"| {r['after']} | {r['log_records']:,} | {r['first_commit_s']:.2f} s "
                     f"({r.get('first_batch_records', 0):,}) | "
                     f"{num(r['probe_projected_s'], ' s', 2)} |")
    view = results.view
    lines += ["", "view: " + ", ".join(f"{k} {v:,.0f}" if isinstance(v, int) else
                                      f"{k} {v:,.1f}" for k, v in view.items())]
    lines += [f"{name}: {'met' if ok else 'NOT met'}" for name, ok in results.targets.items()]
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Benchmark the live projector (a `leadhub run projector` child process) "
                    "over a simulated site's year written straight to lead.events: its peak "
                    "memory, and the time from a restart to its first committed batch after "
                    "half the log and after all of it.")
    add_bootstrap_argument(parser)
    parser.add_argument("--database-url", default=None,
                        help="PostgreSQL server URL: the view goes to a fresh database there "
                             "(default: a fresh SQLite file)")
    parser.add_argument("--participants", type=int, default=100_000,
                        help="simulated participants (%(default)s)")
    parser.add_argument("--days", type=int, default=365, help="simulated days (%(default)s)")
    parser.add_argument("--seed", type=int, default=1, help="simulation seed (%(default)s)")
    parser.add_argument("--partitions", type=int, default=4,
                        help="partitions of every topic (%(default)s)")
    parser.add_argument("--probe", type=int, default=2000,
                        help="events written before each restart (%(default)s)")
    parser.add_argument("--tick-hours", type=float, default=1.0,
                        help="simulated hours between CLOCK records (%(default)s)")
    parser.add_argument("--restart-signal", choices=("term", "kill"), default="term",
                        help="how the projector is stopped before a restart: SIGTERM (leaves "
                             "the group at once) or SIGKILL (the group waits for its session "
                             "to expire, 10 s) (%(default)s)")
    parser.add_argument("--cache-weight", type=int, default=None,
                        help="the projectors' state-cache capacity in events + rows "
                             "(LEADHUB_PROJECTOR_CACHE; default: the projector's own)")
    parser.add_argument("--budget", type=float, default=6 * 3600.0,
                        help="upper bound of the whole run in seconds (%(default)s)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument("--keep-topics", action="store_true",
                        help="do not delete the bench's topics at the end")
    kept = parser.add_mutually_exclusive_group()
    kept.add_argument("--run-dir", metavar="DIR",
                      help="keep the run in DIR (SQLite view) and its topics, so that once "
                           "its log is written it can be stopped and resumed")
    kept.add_argument("--resume", metavar="DIR",
                      help="go on with the run kept in DIR (its arguments are the run's own)")
    args = parser.parse_args(argv)
    if (args.run_dir or args.resume) and args.database_url:
        parser.error("--run-dir and --resume keep a SQLite view; drop --database-url")
    if args.participants < 1 or args.days < 2 or args.probe < 1:
        parser.error("--participants and --probe must be >= 1, --days >= 2")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        results = run(args)
    except BenchError as exc:
        print(f"bench/scale.py: {exc}", file=sys.stderr)
        return exc.exit_code
    except (HubError, KafkaError) as exc:
        print(f"bench/scale.py: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("bench/scale.py: interrupted", file=sys.stderr)
        return 1
    except Exception:
        traceback.print_exc()
        print("bench/scale.py: the run failed", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(results.__dict__, indent=2, default=str))
    else:
        print(render(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
