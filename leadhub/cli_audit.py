"""``leadhub audit ...``: replay and time travel, tamper evidence, accounting of disclosures.

Thin: parses arguments, builds the adapters from the settings, prints. The work is in
``consumers.audit``. This module holds the ``audit`` group, ``reconcile`` (nothing lost between
the inbound topics and lead.events) and the tamper evidence (``keygen``, ``checkpoint``,
``export``, ``verify``: nothing changed); :mod:`leadhub.cli_audit_replay` holds the commands
that replay lead.events (``replay``, ``compare``, ``as-of``, ``disclosures``).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from leadhub.cli import EXIT_EMPTY, EXIT_FAILURE, EXIT_OK
from leadhub.cli_audit_replay import (
    EMPTY_HELP,
    instant,
    print_json,
    register_disclosures,
    register_replay,
)
from leadhub.kafka_credentials import kafka_connection
from leadhub.settings import load_settings

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

    register_replay(actions)

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
                                "`leadhub run validator` joins, leadhub-validator after "
                                "LEADHUB_TOPIC_PREFIX)")
    reconcile.add_argument("--strict", action="store_true",
                           help="also exit 1 on duplicates and on references naming no "
                                "inbound record")
    reconcile.add_argument("--json", action="store_true", help="print the result as JSON")
    reconcile.set_defaults(handler=_reconcile)

    register_tamper_evidence(actions)
    register_disclosures(actions)


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

    print_json({
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
    window_from, window_to = instant(args.window_from), instant(args.window_to)
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
        print_json({"ok": report.ok, "records": report.records,
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
