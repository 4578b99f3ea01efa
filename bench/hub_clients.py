"""Benchmark: CPU per event of the hub's two Kafka producers on their own, the partner SDK and
the validator, on the local broker (issue 13, decision 0012).

One partner's events of the simulated site (``--partner``, default harbor-cm, the busiest) under
a topic prefix of the run's own (deleted at the end), as the bench's admin principal:

1. **SDK**: one :class:`producers.sdk.PartnerPublisher` sends them (``send`` each, then
   ``flush``) ``--passes`` times; the CPU of this process (``getrusage``: every thread,
   librdkafka's too) per event, best pass;
2. **validator**: one :class:`processors.kafka_validator.TransactionalValidator` (as the
   validator principal, no CLOCK ticks) handles every record the passes sent, one transaction
   per poll, until all are committed; the CPU of this process per record, from the first poll
   (the group join included).

The broker's CPU is not counted: it is shared with whatever else runs. To compare two versions
of the code on this machine, whose speed varies by up to half between minutes, run them at the
same time, one per core, with each checkout first on ``PYTHONPATH`` (``taskset -c 0 ... &
taskset -c 1 ...``), and swap the cores.

    .venv/bin/python bench/hub_clients.py [--participants 1000] [--days 180] [--passes 4] [--json]

Exit codes: 0 figures printed, 1 the validator did not handle every record in time, 2 setup
error (e.g. no broker).
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from leadhub.services import ServiceError
from leadhub.topics_admin import create_topics
from processors.kafka_validator import TransactionalValidator
from processors.site import load_site
from producers.sdk import PartnerPublisher
from producers.simulator import simulate
from schemas.catalog import load_catalog
from schemas.topics import TopicNames

# isort: split
# Siblings in bench/: run as a file, the script's folder is first on sys.path.
from kafka_setup import add_bootstrap_argument, bench_connection
from machine import cpu_model, python_version
from pipeline_harness import delete_prefix_topics

SITE_FILE = Path(__file__).resolve().parent.parent / "config" / "site.example.yaml"
START = datetime(2026, 1, 5, tzinfo=UTC)
#: How long the validator may take to handle every record.
VALIDATOR_TIMEOUT_S = 300.0


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--participants", type=int, default=1000,
                        help="simulated participants (%(default)s)")
    parser.add_argument("--days", type=int, default=180, help="simulated days (%(default)s)")
    parser.add_argument("--partner", default="harbor-cm",
                        help="whose events are sent (%(default)s)")
    parser.add_argument("--passes", type=int, default=4,
                        help="SDK passes over the events, best kept (%(default)s)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    add_bootstrap_argument(parser)
    args = parser.parse_args(argv)
    site, catalog = load_site(SITE_FILE), load_catalog()
    events = [event for event in simulate(site, catalog, args.participants, args.days, 1, START)
              if event.source_partner == args.partner]
    prefix = f"bench{uuid.uuid4().hex[:10]}."
    topics = TopicNames(prefix)
    admin = bench_connection(args.bootstrap)
    try:
        create_topics(admin, topics, site, 4)
    except ServiceError as exc:
        print(f"hub_clients: {exc}; is the broker running? (`.venv/bin/leadhub services "
              "start`)", file=sys.stderr)
        return 2
    try:
        figures = _measure(args, events, topics, admin, site, catalog)
    finally:
        delete_prefix_topics(admin, prefix)
    if args.json:
        print(json.dumps(figures, indent=2))
    else:
        print(f"{figures['events']:,} events of {args.partner}; {figures['machine']}")
        print(f"SDK send + flush: {figures['sdk_us_per_event']:.1f} µs of CPU per event (best "
              f"of {args.passes}: {' / '.join(f'{p:.1f}' for p in figures['sdk_passes_us'])})")
        print(f"validator: {figures['validator_us_per_record']:.1f} µs of CPU per record ("
              f"{figures['validator_handled']:,} of {figures['validator_records']:,} handled in "
              f"{figures['validator_s']:.1f} s)")
    return 0 if figures["validator_handled"] == figures["validator_records"] else 1


def _measure(args: argparse.Namespace, events: list[Any], topics: TopicNames, admin: Any,
             site: Any, catalog: Any) -> dict[str, Any]:
    passes: list[float] = []
    with PartnerPublisher(args.partner, admin, catalog=catalog, topics=topics) as publisher:
        for _ in range(args.passes):
            began = _cpu_s()
            for event in events:
                publisher.send(event)
            publisher.flush()
            passes.append((_cpu_s() - began) / len(events) * 1e6)
            print(f"hub_clients: SDK pass {len(passes)}: {passes[-1]:.1f} µs per event",
                  file=sys.stderr)
    validator = TransactionalValidator(bench_connection(args.bootstrap, "validator"), topics,
                                       site, catalog, tick_interval_s=3600)
    wanted = len(events) * args.passes
    handled = 0
    try:
        began, started = _cpu_s(), time.monotonic()
        while handled < wanted and time.monotonic() - started < VALIDATOR_TIMEOUT_S:
            handled += validator.run_once()
        cpu, elapsed = _cpu_s() - began, time.monotonic() - started
    finally:
        validator.close()
    return {
        "machine": f"{cpu_model()}, Python {python_version()}",
        "events": len(events),
        "sdk_passes_us": passes,
        "sdk_us_per_event": min(passes),
        "validator_records": wanted,
        "validator_handled": handled,
        "validator_s": elapsed,
        "validator_us_per_record": cpu / max(handled, 1) * 1e6,
    }


if __name__ == "__main__":
    sys.exit(main())
