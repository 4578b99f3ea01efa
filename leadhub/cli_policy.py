"""``leadhub simulate`` and ``leadhub project``: synthetic history and offline projection."""

from __future__ import annotations

import argparse
import json
import os
import sys
from datetime import datetime
from typing import Any

from processors.errors import PolicyError
from processors.timefmt import parse_instant

PROGRESS_EVERY = 100_000
DEFAULT_START = "2025-01-01T00:00:00Z"


def register(subparsers: Any) -> None:
    """Add the ``simulate`` and ``project`` commands."""
    simulate = subparsers.add_parser(
        "simulate", help="write a synthetic LEAD site history as JSON Lines",
        description="Write a deterministic synthetic history of a LEAD site (three doors, "
                    "intakes, services, legal events, consents) as JSON Lines events, in "
                    "occurred_at order. Same arguments, same file. Names are invented.")
    simulate.add_argument("--site", required=True, help="site policy YAML file")
    simulate.add_argument("--participants", type=_count, required=True, help="people referred")
    simulate.add_argument("--days", type=_positive, required=True, help="length of the period")
    simulate.add_argument("--seed", type=int, required=True, help="random seed")
    simulate.add_argument("--out", help="output .jsonl file (- for stdout)")
    simulate.add_argument("--publish", action="store_true",
                          help="also publish every event through its partner's SDK publisher "
                               "to the hub's inbound topics (LEADHUB_KAFKA_BOOTSTRAP)")
    simulate.add_argument("--rate", type=float, default=None,
                          help="with --publish: events per second (default: as fast as "
                               "possible)")
    simulate.add_argument("--start", type=_instant, default=parse_instant(DEFAULT_START),
                          help=f"start of the period, ISO 8601 UTC (default {DEFAULT_START})")
    simulate.set_defaults(handler=_simulate)

    project = subparsers.add_parser(
        "project", help="replay a JSON Lines event log and print what one partner sees",
        description="Run an event log through the policy core (each event at its own "
                    "occurred_at) and print the rows one partner sees, sorted by occurred_at "
                    "and event_id. With --at, events after that instant are ignored and "
                    "consent expiry and deadlines are applied as of it.")
    project.add_argument("--site", required=True, help="site policy YAML file")
    project.add_argument("--events", required=True, help="JSON Lines event file")
    project.add_argument("--as", dest="partner", required=True, help="recipient partner id")
    project.add_argument("--at", type=_instant, default=None, help="view as of, ISO 8601 UTC")
    project.add_argument("--json", action="store_true", help="print a JSON array of rows")
    project.set_defaults(handler=_project)


def _simulate(args: argparse.Namespace) -> int:
    from processors.site import load_site
    from producers.simulator import simulate
    from schemas.catalog import load_catalog
    from schemas.event import write_jsonl

    if not args.out and not args.publish:
        raise PolicyError("simulate: say where the events go: --out FILE, --publish, or both")
    site = load_site(args.site)
    catalog = load_catalog()
    events = simulate(site, catalog, args.participants, args.days, args.seed, args.start)
    counted = _with_progress(events)
    if args.publish:
        return _simulate_publish(args, counted, catalog)
    if args.out == "-":
        try:
            written = write_jsonl(counted, sys.stdout)
            sys.stdout.flush()
        except BrokenPipeError:  # `leadhub simulate --out - | head`: the reader has had enough
            return _reader_gone()
    else:
        try:
            with open(args.out, "w", encoding="utf-8") as handle:
                written = write_jsonl(counted, handle)
        except OSError as exc:
            raise PolicyError(f"cannot write {args.out!r}: {exc.strerror}") from exc
    print(f"simulate: wrote {written} events for {args.participants} participants",
          file=sys.stderr)
    return 0


def _simulate_publish(args: argparse.Namespace, events: Any, catalog: Any) -> int:
    """Publish the simulated events (and write them to --out too, if given)."""
    from leadhub.kafka_admin import SimulatedPartners
    from leadhub.kafka_credentials import kafka_connection
    from leadhub.settings import load_settings
    from producers.sdk import publish_by_source
    from schemas.event import event_to_json
    from schemas.topics import TopicNames

    settings = load_settings()
    topics = TopicNames(settings.topic_prefix)
    sink = None if not args.out else (sys.stdout if args.out == "-" else
                                      open(args.out, "w", encoding="utf-8"))  # noqa: SIM115

    def tee(stream: Any) -> Any:
        for event in stream:
            if sink is not None:
                sink.write(json.dumps(event_to_json(event), separators=(",", ":")) + "\n")
            yield event

    try:
        count = publish_by_source(
            tee(events), SimulatedPartners(kafka_connection(settings, "admin"), topics),
            catalog=catalog, topics=topics, rate=args.rate,
            on_progress=lambda n, s: print(f"simulate: published {n} ({n / s:.0f}/s)",
                                           file=sys.stderr),
        )
    finally:
        if sink is not None and sink is not sys.stdout:
            sink.close()
    print(f"simulate: published {count} events for {args.participants} participants",
          file=sys.stderr)
    return 0


def _with_progress(events: Any) -> Any:
    for count, event in enumerate(events, start=1):
        if count % PROGRESS_EVERY == 0:
            print(f"simulate: {count} events, at {event.occurred_at:%Y-%m-%d}", file=sys.stderr)
        yield event


def _project(args: argparse.Namespace) -> int:
    from processors.errors import SiteError
    from processors.offline import project_events, rows_for
    from processors.projector import Projector
    from processors.site import load_site
    from schemas.catalog import load_catalog
    from schemas.event import read_jsonl

    site = load_site(args.site)
    if site.partner(args.partner) is None:
        raise SiteError("--as", "not a partner of this site; partners are "
                        + ", ".join(site.partner_ids()))
    catalog = load_catalog()
    try:
        events = read_jsonl(args.events, catalog)
        view = project_events(events, Projector(site, catalog), args.at, recipient=args.partner)
    except OSError as exc:
        raise PolicyError(f"cannot read {args.events!r}: {exc.strerror}") from exc
    rows = rows_for(view, args.partner)
    try:
        if args.json:
            json.dump([row.to_json() for row in rows], sys.stdout, indent=1, ensure_ascii=False)
            sys.stdout.write("\n")
            sys.stdout.flush()
            return 0
        for row in rows:
            shown = ", ".join(sorted(row.fields))
            print(f"{row.to_json()['occurred_at']}  {row.participant_id}  {row.type:<24} "
                  f"[{', '.join(row.categories)}] {shown}")
        sys.stdout.flush()
    except BrokenPipeError:  # `leadhub project ... | head`: the reader has had enough
        return _reader_gone()
    print(f"{len(rows)} rows for {args.partner}", file=sys.stderr)
    return 0


def _reader_gone() -> int:
    """Stop writing quietly when stdout's reader has closed the pipe; return exit code 0.

    What is still buffered for stdout would fail again when the interpreter flushes it at exit
    (an "Exception ignored" trace), so stdout is pointed at /dev/null first.
    """
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):  # no real file descriptor behind stdout: nothing to flush
        pass
    return 0


def _instant(text: str) -> datetime:
    try:
        return parse_instant(text)
    except PolicyError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def _count(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must be 0 or more")
    return value


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be 1 or more")
    return value

