"""``leadhub audit ...``: replay and time travel, tamper evidence, accounting of disclosures.

Thin: parses arguments, builds the adapters from the settings, prints. The work is in
``consumers.audit``.
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

from leadhub.kafka_credentials import kafka_connection
from leadhub.settings import Settings, load_settings

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
#: ``audit replay`` gave an empty view, or ``audit export`` found no record in its window.
EXIT_EMPTY = 3
EMPTY_HELP = ("Instants are received_at (the hub's clock when a record arrived), not the "
              "events' occurred_at.")
#: ``audit reconcile`` prints at most this many records of each list (``--json``: all).
RECONCILE_LISTED = 100


def register(subparsers: Any) -> None:
    """Add ``leadhub audit`` and its actions."""
    audit = subparsers.add_parser(
        "audit", help="replay, verify and account for the hub's log",
        description="Auditor's tools: rebuild the view from lead.events and compare it with the "
                    "live one, see what a partner could see at a past instant, sign and verify "
                    "Merkle tree heads over lead.events, export self-contained bundles and "
                    "verify them offline, and list every disclosure of a participant's data.")
    actions = audit.add_subparsers(dest="action", metavar="ACTION", required=True)

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

    reconcile = actions.add_parser(
        "reconcile", help="account for every inbound record (exit 1 if any is not)",
        description="Prove that nothing was lost between the partners' inbound topics and "
                    "lead.events: every record of each site partner's lead.in.<partner> "
                    "(read_committed, up to the end offsets of the moment) must be named by "
                    "an event of lead.events (accepted) or by the lead.source.* headers of a "
                    "lead.dlq record (dead-lettered), or lie at or past the validator's "
                    "committed offset (pending). Prints per topic: records, accepted, "
                    "dead-lettered, pending, UNACCOUNTED, duplicates (records named more than "
                    "once), then the coordinates of the unaccounted records (at most "
                    f"{RECONCILE_LISTED}; --json lists all); never event content. Progress on "
                    "stderr. Exit 0 if every record is accounted for, 1 if any is not (or, "
                    "with --strict, on duplicates or references to no record), 2 if the "
                    "reconciliation could not run.")
    reconcile.add_argument("--validator-group",
                           help="consumer group of the validator (default: the one "
                                "`leadhub run validator` joins)")
    reconcile.add_argument("--strict", action="store_true",
                           help="also exit 1 on duplicates and on references naming no "
                                "inbound record")
    reconcile.add_argument("--json", action="store_true", help="print the result as JSON")
    reconcile.set_defaults(handler=_reconcile)

    register_tamper_evidence(actions)
    register_disclosures(actions)


# -- shared ---------------------------------------------------------------------------------

def _instant(text: str | None) -> datetime | None:
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


def _print_json(value: Any) -> None:
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
                                     target, until=_instant(args.until), workers=workers,
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
        replay = LogReplay(reader, replayer, writer, until=_instant(args.until),
                           progress=True)
        end = reader.end_offsets()
        replay.run_to(end)
        writer.flush()
        digest = digest_rows(ordered_rows(store))
    return _print_replay(args, topics.events, digest, replay.records, replayer.skipped,
                         len(replayer.states), end)


def _print_replay(args: argparse.Namespace, topic: str, digest: Any, records: int, skipped: int,
                  participants: int, end: dict[int, int]) -> int:
    note = _empty_replay_note(topic, _instant(args.until), records) if not digest.rows else None
    result = {"digest": digest.sha256, "rows": digest.rows, "records": records,
              "skipped_not_canonical": skipped, "participants": participants,
              "end_offsets": {str(p): e for p, e in sorted(end.items())},
              "until": args.until, "out": args.out, "empty": note}
    if args.json:
        _print_json(result)
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
        _print_json({
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
    at, occurred_by = _instant(args.at), _instant(args.occurred_by)
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
        _print_json([row.to_json() for row in seen])
    else:
        for row in seen:
            print(f"{row.to_json()['occurred_at']}  {row.participant_id}  {row.type:24} "
                  f"{','.join(row.categories)}")
        print(f"{len(seen)} rows visible to {args.partner} {when}", file=sys.stderr)
    return EXIT_OK


# -- reconcile -----------------------------------------------------------------------------

def _reconcile(args: argparse.Namespace) -> int:
    from consumers.audit.reconcile import reconcile
    from processors.site import load_site
    from schemas.topics import TopicNames

    settings = load_settings()
    site = load_site(settings.site_file)
    topics = TopicNames(settings.topic_prefix)
    result = reconcile(kafka_connection(settings, "audit"), topics, site.partner_ids(),
                       progress=True, validator_group=args.validator_group)
    ok = result.ok(strict=args.strict)
    if args.json:
        _print_reconciliation_json(result, args.strict, ok)
    else:
        _print_reconciliation(result, topics)
    return EXIT_OK if ok else EXIT_FAILURE


def _print_reconciliation_json(result: Any, strict: bool, ok: bool) -> None:
    def offsets(by_topic: dict[str, dict[int, int]]) -> dict[str, dict[str, int]]:
        return {t: {str(p): o for p, o in sorted(parts.items())}
                for t, parts in by_topic.items()}

    _print_json({
        "ok": ok, "strict": strict, "complete": result.complete,
        "topics": [tally.to_json() for tally in result.topics.values()],
        "totals": result.totals.to_json(),
        "unaccounted": [{"topic": r.topic, "partition": r.partition, "offset": r.offset}
                        for r in result.unaccounted_records()],
        "duplicates": [{"topic": d.record.topic, "partition": d.record.partition,
                        "offset": d.record.offset, "event_refs": d.event_refs,
                        "dead_letter_refs": d.dead_letter_refs} for d in result.duplicates],
        "references_without_record": [
            {"source": o.kind, "topic": o.record.topic, "partition": o.record.partition,
             "offset": o.record.offset, "refs": o.refs} for o in result.orphans],
        "references_after_end": result.references_after_end,
        "references_before_start": result.references_before_start,
        "foreign_references": result.foreign_references,
        "late_references": result.late_references,
        "undecodable_events": result.undecodable_events,
        "unattributed_dead_letters": result.unattributed_dead_letters,
        "missing_topics": result.missing_topics,
        "inbound_start_offsets": offsets(result.inbound_start),
        "inbound_end_offsets": offsets(result.inbound_end),
        "validator_committed": offsets(result.validator_committed),
        "events_end_offsets": {str(p): e for p, e in sorted(result.events_end.items())},
        "dlq_end_offsets": {str(p): e for p, e in sorted(result.dlq_end.items())},
        "reference_set_bytes": result.reference_bytes,
    })


def _print_reconciliation(result: Any, topics: Any) -> None:
    width = max([len("inbound topic"), *(len(t) for t in result.topics)])
    columns = ("records", "accepted", "dead-lettered", "pending", "UNACCOUNTED", "duplicates")
    print(f"{'inbound topic':{width}}  " + "  ".join(f"{c:>13}" for c in columns))
    for tally in [*result.topics.values(), result.totals]:
        name = "all partners" if tally.topic == "*" else tally.topic
        counts = (tally.records, tally.accepted, tally.dead_lettered, tally.pending,
                  tally.unaccounted, tally.duplicates)
        print(f"{name:{width}}  " + "  ".join(f"{n:>13,}" for n in counts))
    total = result.totals
    _print_listed("unaccounted inbound records (topic partition offset):",
                  (r.describe() for r in result.unaccounted_records()), total.unaccounted)
    _print_listed(f"duplicates (named more than once by {topics.events} / {topics.dlq}):",
                  (d.describe() for d in result.duplicates), len(result.duplicates))
    _print_listed("references naming no inbound record:",
                  (o.describe() for o in result.orphans), len(result.orphans))
    notes = [
        (result.missing_topics, f"inbound topics missing: {', '.join(result.missing_topics)}"),
        (result.undecodable_events,
         f"{result.undecodable_events:,} records of {topics.events} are not canonical"),
        (result.unattributed_dead_letters,
         f"{result.unattributed_dead_letters:,} records of {topics.dlq} name no source"),
        (result.references_after_end, f"{result.references_after_end:,} references to "
                                      "inbound records written after the start (not checked)"),
        (result.references_before_start, f"{result.references_before_start:,} references to "
                                         "inbound records no longer in the log"),
        (result.late_references, f"{result.late_references:,} records accounted for by "
                                 "references written during the reconciliation"),
    ]
    for present, note in notes:
        if present:
            print(f"note: {note}")
    if result.complete:
        print(f"accounted: all {total.records:,} inbound records are accepted, dead-lettered "
              f"or pending ({total.pending:,} pending)")
    else:
        print(f"UNACCOUNTED: {total.unaccounted:,} of {total.records:,} inbound records are "
              f"neither in {topics.events} nor in {topics.dlq}")


def _print_listed(title: str, lines: Iterator[str], count: int) -> None:
    if not count:
        return
    print(title)
    for shown, line in enumerate(lines):
        if shown == RECONCILE_LISTED:
            print(f"  ... and {count - RECONCILE_LISTED:,} more (--json lists them all)")
            break
        print(f"  {line}")


# -- tamper evidence --------------------------------------------------------------------------

def register_tamper_evidence(actions: Any) -> None:
    """Add keygen, checkpoint, export and verify."""
    keygen = actions.add_parser(
        "keygen", help="create the Ed25519 checkpoint signing key (once)",
        description="Create the Ed25519 key that signs checkpoints, in "
                    "LEADHUB_STATE_DIR/audit/ (private key mode 0600, public key PEM). Prints "
                    "the key id to publish to auditors.")
    keygen.add_argument("--force", action="store_true",
                        help="replace an existing key (old checkpoints then need the old key)")
    keygen.set_defaults(handler=_keygen)

    checkpoint = actions.add_parser(
        "checkpoint", help="sign Merkle tree heads over lead.events and publish them",
        description="Hash every record of lead.events into one RFC 6962 tree per partition, "
                    "sign the tree heads (Ed25519) and publish them to lead.audit.checkpoints; "
                    "with --every, keep doing so until SIGTERM. On start it checks the log "
                    "still has the roots of its last checkpoint.")
    checkpoint.add_argument("--every", type=float, default=60.0,
                            help="seconds between checkpoints (default 60)")
    checkpoint.add_argument("--once", action="store_true", help="one checkpoint, then exit")
    checkpoint.set_defaults(handler=_checkpoint)

    export = actions.add_parser(
        "export", help="write a self-contained, offline-verifiable bundle of a time window",
        description="Export the records of lead.events received in [--from, --to], extended "
                    "to the signed checkpoints around them, with inclusion proofs, the "
                    "checkpoints, the public key and the Avro schemas, into a new directory, "
                    "and seal it: seal.json, signed with the checkpoint signing key (in "
                    "LEADHUB_STATE_DIR/audit/; run it where that key is), holds the SHA-256 of "
                    "every other file and of every manifest field. "
                    f"{EMPTY_HELP} Exit {EXIT_EMPTY}, writing nothing, if no record was "
                    "received in the window; the message gives when the log's records and "
                    "events were received.")
    export.add_argument("--from", dest="window_from", required=True, help="ISO 8601 instant")
    export.add_argument("--to", dest="window_to", required=True, help="ISO 8601 instant")
    export.add_argument("directory", help="new (or empty) directory")
    export.set_defaults(handler=_export)

    verify = actions.add_parser(
        "verify", help="verify a bundle offline (exit 1 naming the first failure)",
        description="Check a bundle without Kafka, byte for byte: checkpoint signatures, "
                    "consistency between successive checkpoints, the prefix hashes against the "
                    "anchor, every record's inclusion proof, leaf indices without a hole and "
                    "increasing offsets (commit markers and aborted transactions leave offset "
                    "gaps), the recomputed roots; then the seal (seal.json, signed with the "
                    "same key): every file's SHA-256 and every manifest field (the time "
                    "window included) as exported, no file missing, none added. Exit 0 if all "
                    "hold. Exit 1 otherwise, naming the first failure: the record (partition, "
                    "leaf index and offset) or checkpoint that fails, or the file that is "
                    "missing, unexpected or changed (`schemas/X.avsc: ...`), or the manifest "
                    "field that changed (`manifest.json field 'window.to': ...`); up to 20 more "
                    "are listed. Bundles of format 2 (unsealed) fail: export them again. Exit 1 "
                    "too if DIRECTORY is not a directory; 2 on a usage error.")
    verify.add_argument("directory")
    verify.add_argument("--key-id", help="the hub's published key id (pins the key)")
    verify.add_argument("--public-key", help="PEM file of the hub's key (instead of the "
                                             "bundle's)")
    verify.add_argument("--json", action="store_true", help="print the report as JSON")
    verify.set_defaults(handler=_verify)


def _keygen(args: argparse.Namespace) -> int:
    from consumers.audit.checkpoints import generate_key, key_paths

    settings = load_settings()
    kid = generate_key(settings.state_dir, force=args.force)
    print(f"key id {kid}")
    print(f"public key {key_paths(settings.state_dir)[1]}")
    return EXIT_OK


def _checkpoint(args: argparse.Namespace) -> int:
    from consumers.audit.checkpoints import Checkpointer, load_private_key
    from leadhub.runner import stop_on_signals
    from schemas.topics import TopicNames

    settings = load_settings()
    topics = TopicNames(settings.topic_prefix)
    key = load_private_key(settings.state_dir)
    checkpointer = Checkpointer(kafka_connection(settings, "audit"), topics.events,
                                topics.audit_checkpoints, key)
    try:
        if args.once:
            checkpoint = checkpointer.checkpoint()
            sizes = " ".join(f"p{h.partition}={h.size}" for h in checkpoint.heads)
            print(f"checkpoint {checkpoint.timestamp} key {checkpoint.key_id}: {sizes}")
        else:
            checkpointer.run(args.every, stop_on_signals())
    finally:
        checkpointer.close()
    return EXIT_OK


def _export(args: argparse.Namespace) -> int:
    from consumers.audit.bundle import export_bundle
    from consumers.audit.checkpoints import load_private_key
    from consumers.audit.errors import EmptyWindowError
    from schemas.topics import TopicNames

    settings = load_settings()
    topics = TopicNames(settings.topic_prefix)
    key = load_private_key(settings.state_dir)  # seals the bundle; SetupError if missing
    window_from, window_to = _instant(args.window_from), _instant(args.window_to)
    assert window_from is not None and window_to is not None
    schemas_dir = Path(__file__).resolve().parent.parent / "schemas" / "avro"
    try:
        manifest = export_bundle(kafka_connection(settings, "audit"), topics.events,
                                 topics.audit_checkpoints, key, window_from, window_to,
                                 Path(args.directory), schemas_dir)
    except EmptyWindowError as exc:
        print(f"leadhub: {exc}", file=sys.stderr)
        return EXIT_EMPTY
    count = sum(s["end"] - s["start"] for s in manifest["partitions"].values())
    print(f"exported {count} records of {topics.events} to {args.directory} "
          f"(key id {manifest['key_id']})")
    return EXIT_OK


def _verify(args: argparse.Namespace) -> int:
    from consumers.audit.bundle import read_bundle_and_verify

    report = read_bundle_and_verify(
        Path(args.directory), expected_key_id=args.key_id,
        public_key_file=Path(args.public_key) if args.public_key else None)
    if args.json:
        _print_json({"ok": report.ok, "records": report.records,
                     "checkpoints": report.checkpoints, "key_id": report.key_id,
                     "failures": [f.describe() for f in report.failures],
                     "first_failure": {"partition": report.first.partition,
                                       "offset": report.first.offset,
                                       "leaf": report.first.leaf,
                                       "checkpoint": report.first.checkpoint,
                                       "file": report.first.file,
                                       "field": report.first.field,
                                       "reason": report.first.reason}
                     if report.first else None})
    elif report.ok:
        print(f"verified: {report.records} records, {report.checkpoints} signed checkpoints, "
              f"every file as sealed, key id {report.key_id}" + ("" if args.key_id else
                                           " (compare it with the hub's published key id)"))
    else:
        assert report.first is not None
        print(f"FAILED: {report.first.describe()}")
        for failure in report.failures[1:20]:
            print(f"  also: {failure.describe()}")
    return EXIT_OK if report.ok else EXIT_FAILURE


# -- disclosures -----------------------------------------------------------------------------

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


def _disclosures(args: argparse.Namespace) -> int:
    from consumers.audit.disclosures import list_disclosures
    from processors.timefmt import format_instant
    from schemas.topics import TopicNames

    settings = load_settings()
    projector, catalog = _projector(settings)
    result = list_disclosures(kafka_connection(settings, "audit"),
                              TopicNames(settings.topic_prefix), projector, catalog,
                              args.participant, _instant(args.since))
    if args.json:
        _print_json({"participant_id": result.participant,
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
