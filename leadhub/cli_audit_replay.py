"""``leadhub audit replay|compare|as-of|disclosures``: the commands that replay lead.events.

Each runs the log through the projector's pure core to rebuild what it made of it: a whole
view (``replay``, ``compare``), the rows a partner saw at an instant (``as-of``), who was shown
a participant's data (``disclosures``). Also the helpers every ``audit`` command shares
(:func:`instant`, :func:`print_json`, :data:`EMPTY_HELP`). The group is :mod:`leadhub.cli_audit`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

from leadhub.cli import EXIT_EMPTY, EXIT_FAILURE, EXIT_OK, EXIT_USAGE
from leadhub.kafka_credentials import kafka_connection
from leadhub.settings import Settings, load_settings

EMPTY_HELP = ("Instants are received_at (the hub's clock when a record arrived), not the "
              "events' occurred_at.")


def register_replay(actions: Any) -> None:
    """Add ``audit replay``, ``compare`` and ``as-of``."""
    replay = actions.add_parser(
        "replay", help="rebuild the view from lead.events and print its digest",
        description="Read lead.events from the start (every partition, up to the end offsets "
                    "of the moment, or each partition up to its first record received after "
                    "--until) through the projector's pure core, exactly as the live projector "
                    "applies it, into a fresh SQL view; print the view's digest (SHA-256 over "
                    "the rows in (recipient, event_id) order, canonical JSON). Progress on "
                    f"stderr. {EMPTY_HELP} Exit 0 with rows; exit {EXIT_EMPTY} if the view is "
                    "empty (e.g. --until before the first event), with a note on stderr "
                    "giving when the log's records and events were received.")
    replay.add_argument("--until", help="ISO 8601 instant (received_at, the hub's clock) "
                                        "to stop at")
    replay.add_argument("--out", help="new SQLite file (or SQLAlchemy URL) to keep the view in "
                                      "(default: a temporary file, removed)")
    replay.add_argument("--workers", type=int, default=None,
                        help="processes replaying partitions in parallel into a SQLite file "
                             "(default: 2, at most the CPUs and partitions; 1: this process)")
    replay.add_argument("--json", action="store_true", help="print the result as JSON")
    replay.set_defaults(handler=_replay)

    compare = actions.add_parser(
        "compare", help="compare the live SQL view with a replay (exit 1 on a mismatch)",
        description="Digest the live view (LEADHUB_DATABASE_URL) and a replay of lead.events up "
                    "to exactly the offsets that produced it (the projector's tracking rows, "
                    "read in the same snapshot as the rows), and compare. The hub may keep "
                    "running. It first waits up to --settle seconds for the projector to reach "
                    "the end of lead.events. On a mismatch it prints the first differing rows "
                    "(ids and categories only) and exits 1. It checks the projection only: "
                    "`leadhub audit reconcile` checks that every inbound record reached "
                    "lead.events or lead.dlq.")
    compare.add_argument("--settle", type=float, default=30.0,
                         help="seconds to wait for the projector to catch up (default 30)")
    compare.add_argument("--json", action="store_true", help="print the result as JSON")
    compare.set_defaults(handler=_compare)

    as_of = actions.add_parser(
        "as-of", help="what a partner could see, by receipt time (--at) or occurrence time "
                      "(--occurred-by)",
        description="Print the rows PARTNER's view held, going back in time by one of two "
                    "clocks. --at R (receipt time): replay lead.events as the hub had received "
                    "it by R (each partition up to its first record received later), exactly "
                    "as the live projector applied it: the rows the live view showed at R; an "
                    "event or a revocation reported after R is not there. --occurred-by T "
                    "(occurrence time): take every event the hub holds now whose occurred_at "
                    "is at or before T, whenever it was received, and evaluate the policy at "
                    "T: the rows PARTNER would have seen at T had every event been reported as "
                    "it occurred. Consents granted by T count; a revocation that occurred by T "
                    "applies (however late it was received), one that occurred after T does "
                    "not; consents not yet valid or already expired at T do not count; intake "
                    "deadlines due by T with no intake by T are missed. Give at least one "
                    "(neither: exit 2); "
                    "with both, the events received by R that occurred by T, evaluated at T "
                    "(what the hub knew at R about what had happened by T).")
    as_of.add_argument("--at", metavar="R",
                       help="receipt time, ISO 8601: the view as the hub had received the log "
                            "by then")
    as_of.add_argument("--occurred-by", metavar="T",
                       help="occurrence time, ISO 8601: events that occurred by then, as the "
                            "hub knows them now (or by --at), evaluated at T")
    as_of.add_argument("--as", dest="partner", required=True, help="partner id")
    as_of.add_argument("--participant", help="only this participant (faster: only their "
                                             "events are replayed)")
    as_of.add_argument("--json", action="store_true", help="print the rows as JSON")
    as_of.set_defaults(handler=_as_of)


def register_disclosures(actions: Any) -> None:
    """Add ``audit disclosures``."""
    disclosures = actions.add_parser(
        "disclosures", help="list every disclosure of a participant's data (42 CFR 2.24)",
        description="Every disclosure of one participant's data: rows the hub materialized for "
                    "a recipient other than the data's source (replayed from lead.events: "
                    "recipient, when, event, type, categories, consents) and staff reads "
                    "recorded on lead.audit.access (user, partner, purpose, when, events, "
                    "consents), oldest first.")
    disclosures.add_argument("--participant", required=True, help="hub participant id")
    disclosures.add_argument("--since", help="ISO 8601 instant")
    disclosures.add_argument("--json", action="store_true", help="print JSON")
    disclosures.set_defaults(handler=_disclosures)


# -- shared ---------------------------------------------------------------------------------

def instant(text: str | None) -> datetime | None:
    """``text`` parsed as an ISO 8601 instant; None for None (an option not given)."""
    from processors.timefmt import parse_instant

    return parse_instant(text) if text is not None else None


def _projector(settings: Settings) -> Any:
    from processors.projector import Projector
    from processors.site import load_site
    from schemas.catalog import load_catalog

    catalog = load_catalog()
    return Projector(load_site(settings.site_file), catalog), catalog


@contextlib.contextmanager
def _scratch_store(out: str | None) -> Iterator[Any]:
    """A fresh view store: ``out`` if given (kept), else a temporary SQLite file (removed)."""
    from consumers.audit.replay import open_fresh_store

    if out is not None:
        store = open_fresh_store(out)
        try:
            yield store
        finally:
            store.close()
        return
    with tempfile.TemporaryDirectory(prefix="leadhub-replay-") as tmp:
        store = open_fresh_store(str(Path(tmp) / "view.sqlite"))
        try:
            yield store
        finally:
            store.close()


def print_json(value: Any) -> None:
    """Print ``value`` as indented JSON with sorted keys, and a newline."""
    json.dump(value, sys.stdout, indent=2, sort_keys=True)
    sys.stdout.write("\n")


# -- replay, compare, as-of ---------------------------------------------------------------

def _replay(args: argparse.Namespace) -> int:
    from consumers.audit.kafka_log import TopicReader
    from consumers.audit.rebuild import CoreSpec, rebuild_view_file
    from consumers.audit.view_file import digest_view_file
    from schemas.topics import TopicNames

    settings = load_settings()
    topics = TopicNames(settings.topic_prefix)
    kafka = kafka_connection(settings, "audit")
    if args.out is not None and "://" in args.out:
        return _replay_into_database(args, settings, topics)
    workers = args.workers if args.workers is not None else min(2, os.cpu_count() or 1)
    with _replay_file(args.out) as target:
        with TopicReader(kafka, topics.events, client_id="leadhub-audit-replay") as reader:
            end = reader.end_offsets()
        # the reader is closed first: a forked worker inherits no Kafka client
        replayed = rebuild_view_file(kafka, topics.events, end, CoreSpec(settings.site_file),
                                     target, until=instant(args.until), workers=workers,
                                     progress=True)
        digest = digest_view_file(target)
    return _print_replay(args, topics.events, digest, replayed.records, replayed.skipped,
                         replayed.participants, end)


@contextlib.contextmanager
def _replay_file(out: str | None) -> Iterator[Path]:
    """The SQLite file to replay into: ``out`` (kept), else one in a temporary directory."""
    if out is not None:
        yield Path(out)
        return
    with tempfile.TemporaryDirectory(prefix="leadhub-replay-") as tmp:
        yield Path(tmp) / "view.sqlite"


def _replay_into_database(args: argparse.Namespace, settings: Settings, topics: Any) -> int:
    """``audit replay --out URL``: replay change by change into a fresh SQL database."""
    from consumers.audit.digest import digest_rows
    from consumers.audit.kafka_log import TopicReader
    from consumers.audit.replay import LogReplay, Replayer, ViewWriter, ordered_rows

    projector, catalog = _projector(settings)
    with _scratch_store(args.out) as store, TopicReader(
            kafka_connection(settings, "audit"), topics.events,
            client_id="leadhub-audit-replay") as reader:
        writer = ViewWriter(store)
        replayer = Replayer(projector, catalog)
        replay = LogReplay(reader, replayer, writer, until=instant(args.until),
                           progress=True)
        end = reader.end_offsets()
        replay.run_to(end)
        writer.flush()
        digest = digest_rows(ordered_rows(store))
    return _print_replay(args, topics.events, digest, replay.records, replayer.skipped,
                         len(replayer.states), end)


def _print_replay(args: argparse.Namespace, topic: str, digest: Any, records: int, skipped: int,
                  participants: int, end: dict[int, int]) -> int:
    note = _empty_replay_note(topic, instant(args.until), records) if not digest.rows else None
    result = {"digest": digest.sha256, "rows": digest.rows, "records": records,
              "skipped_not_canonical": skipped, "participants": participants,
              "end_offsets": {str(p): e for p, e in sorted(end.items())},
              "until": args.until, "out": args.out, "empty": note}
    if args.json:
        print_json(result)
    else:
        print(f"view digest sha256:{digest.sha256} ({digest.rows} rows from "
              f"{records} records of {topic})")
    if note is not None:
        print(f"leadhub: {note}", file=sys.stderr)
        return EXIT_EMPTY
    return EXIT_OK


def _empty_replay_note(topic: str, until: datetime | None, records: int) -> str:
    """Why the replay gave no row, with when ``topic``'s records were received."""
    from consumers.audit.kafka_log import TopicReader
    from consumers.audit.window import empty_replay_message, read_log_times

    settings = load_settings()
    with TopicReader(kafka_connection(settings, "audit"), topic,
                     client_id="leadhub-audit-span") as reader:
        times = read_log_times(reader)
    return empty_replay_message(topic, until, records, times)


def _compare(args: argparse.Namespace) -> int:
    from consumers.audit.compare import compare_live
    from consumers.store import ViewStore
    from schemas.topics import TopicNames

    settings = load_settings()
    projector, catalog = _projector(settings)
    topics = TopicNames(settings.topic_prefix)
    live = ViewStore(settings.view_database_url)
    try:
        with _scratch_store(None) as scratch:
            result = compare_live(
                kafka=kafka_connection(settings, "audit"), topics=topics,
                projector=projector, catalog=catalog, live=live, replay_store=scratch,
                settle_s=args.settle, progress=True)
    finally:
        live.close()
    if args.json:
        print_json({
            "match": result.match, "live": result.live.sha256, "live_rows": result.live.rows,
            "replay": result.replay.sha256, "replay_rows": result.replay.rows,
            "caught_up": result.caught_up, "attempts": result.attempts,
            "end_offsets": {str(p): e for p, e in sorted(result.end_offsets.items())},
            "differences": [d.describe() for d in result.differences]})
    else:
        print(f"live   sha256:{result.live.sha256} ({result.live.rows} rows)")
        print(f"replay sha256:{result.replay.sha256} ({result.replay.rows} rows)")
        if result.match:
            print("match: the live view equals the replay of lead.events")
        else:
            print("MISMATCH: first differing rows:")
            for difference in result.differences:
                print(f"  {difference.describe()}")
            if not result.caught_up:
                print("note: the pipeline did not catch up in time; rerun when it has",
                      file=sys.stderr)
    return EXIT_OK if result.match else EXIT_FAILURE


def _as_of(args: argparse.Namespace) -> int:
    from consumers.audit.as_of import rows_occurred_by, rows_received_by
    from consumers.audit.kafka_log import TopicReader
    from schemas.topics import TopicNames

    if args.at is None and args.occurred_by is None:
        print("leadhub audit as-of: error: give --at (receipt time), --occurred-by (occurrence "
              "time) or both", file=sys.stderr)
        return EXIT_USAGE
    at, occurred_by = instant(args.at), instant(args.occurred_by)
    settings = load_settings()
    projector, catalog = _projector(settings)
    topics = TopicNames(settings.topic_prefix)
    with TopicReader(kafka_connection(settings, "audit"), topics.events,
                     client_id="leadhub-audit-asof") as reader:
        if occurred_by is None:
            assert at is not None
            seen = rows_received_by(reader, projector, catalog, args.partner, at,
                                    participant=args.participant, progress=True)
            when = f"at {args.at} (records received by then)"
        else:
            seen = rows_occurred_by(reader, projector, catalog, args.partner, occurred_by,
                                    received_by=at, participant=args.participant,
                                    progress=True)
            when = (f"for events that occurred by {args.occurred_by}, as the hub "
                    + (f"had received them by {args.at}" if at is not None else "knows them now"))
    if args.json:
        print_json([row.to_json() for row in seen])
    else:
        for row in seen:
            print(f"{row.to_json()['occurred_at']}  {row.participant_id}  {row.type:24} "
                  f"{','.join(row.categories)}")
        print(f"{len(seen)} rows visible to {args.partner} {when}", file=sys.stderr)
    return EXIT_OK


# -- disclosures -----------------------------------------------------------------------------

def _disclosures(args: argparse.Namespace) -> int:
    from consumers.audit.disclosures import list_disclosures
    from processors.timefmt import format_instant
    from schemas.topics import TopicNames

    settings = load_settings()
    projector, catalog = _projector(settings)
    result = list_disclosures(kafka_connection(settings, "audit"),
                              TopicNames(settings.topic_prefix), projector, catalog,
                              args.participant, instant(args.since))
    if args.json:
        print_json({"participant_id": result.participant,
                    "disclosures": [d.to_json() for d in result.disclosures],
                    "access_log_found": result.access_topic_found,
                    "unreadable_access_records": result.unreadable_access_records})
        return EXIT_OK
    site = projector.site
    for d in result.disclosures:
        partner = site.partner(d.recipient)
        name = f"{d.recipient} ({partner.name})" if partner is not None else d.recipient
        what = (f"{','.join(d.types)} [{','.join(d.categories)}]" if d.kind == "materialized"
                else f"read by {d.user or '?'} for {d.purpose or '?'}")
        print(f"{format_instant(d.at)}  {d.kind:12} {name}: {what} events "
              f"{','.join(d.event_ids)} consents {','.join(d.consent_ids) or '-'}")
    print(f"{len(result.disclosures)} disclosures of {result.participant}"
          + ("" if result.access_topic_found else "; no staff access log yet"), file=sys.stderr)
    if result.unreadable_access_records:
        print(f"warning: {result.unreadable_access_records} access records could not be read",
              file=sys.stderr)
    return EXIT_OK
