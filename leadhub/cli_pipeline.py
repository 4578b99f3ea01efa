"""``leadhub topics create``, ``leadhub run``, ``leadhub publish``, ``leadhub view``."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from leadhub.settings import load_settings


def register(subparsers: Any) -> None:
    """Add the pipeline commands."""
    topics = subparsers.add_parser(
        "topics", help="manage the hub's Kafka topics",
        description="Manage the hub's Kafka topics (see docs/architecture.md, 'Topics').")
    topic_actions = topics.add_subparsers(dest="action", metavar="ACTION", required=True)
    create = topic_actions.add_parser(
        "create", help="create every topic of the site (idempotent)",
        description="Create one inbound topic per partner of the site file, lead.events, "
                    "lead.dlq and the audit topics, all with "
                    "LEADHUB_PARTITIONS partitions and unlimited retention. Existing topics are "
                    "kept; a partition-count mismatch is an error.")
    create.add_argument("--site", help="site policy file (default: LEADHUB_SITE_FILE)")
    create.set_defaults(handler=_topics_create)

    run = subparsers.add_parser(
        "run", help="run a hub process until SIGTERM",
        description="Run one of the hub's processes in the foreground: 'validator' (inbound "
                    "topics -> lead.events / lead.dlq, in Kafka transactions), 'projector' "
                    "(lead.events -> the SQL view at LEADHUB_DATABASE_URL, one database "
                    "transaction per batch), or 'all' (both, supervised and restarted if they "
                    "die). Run more of either on more machines to scale out: Kafka's consumer "
                    "groups share the partitions. Missing topics are created first. SIGTERM or "
                    "Ctrl-C shuts down cleanly.")
    run.add_argument("step", choices=("validator", "projector", "all"))
    run.set_defaults(handler=_run)

    status = subparsers.add_parser(
        "status", help="how far behind the validator and the projector are",
        description="Per partner inbound topic: records not yet validated (end offset minus "
                    "the validator group's committed offset). For lead.events: records not yet "
                    "projected into the view database (LEADHUB_DATABASE_URL), counted from the "
                    "projector's tracking rows, which commit with the rows. Exit 0; 1 if the "
                    "broker or the database cannot be read.")
    status.add_argument("--json", action="store_true", help="print the result as JSON")
    status.set_defaults(handler=_status)

    publish = subparsers.add_parser(
        "publish", help="publish JSON Lines events as a partner",
        description="Publish events (the JSON Lines envelope, one event per line) to the "
                    "partner's inbound topic through the SDK, authenticated as the partner "
                    "(LEADHUB_KAFKA_USERNAME and LEADHUB_KAFKA_PASSWORD, from `leadhub partners "
                    "credentials create PARTNER`; refused without them). Each event is "
                    "validated first.")
    publish.add_argument("--as", dest="partner",
                         help="partner id (default and only allowed value: "
                              "LEADHUB_KAFKA_USERNAME)")
    publish.add_argument("events", help="JSON Lines file, or - for standard input")
    publish.set_defaults(handler=_publish)

    demo = subparsers.add_parser(
        "demo", help="run the hub with a simulated LEAD site streaming through it",
        description="Start the services, create the topics, run validator, projector "
                    "and the HTTP API (leadhub serve), issue demo credentials, and stream a "
                    "simulated site through the partner SDK and the HTTP gateway at a steady "
                    "pace, printing progress, the API's address, the credentials and curl "
                    "queries that show one participant as police, prosecutor, case manager and "
                    "SUD program see it. Runs until Ctrl-C, then stops what it started.")
    demo.add_argument("--participants", type=int, default=150, help="people (default 150)")
    demo.add_argument("--days", type=int, default=120, help="length of history (default 120)")
    demo.add_argument("--rate", type=float, default=200.0,
                      help="events published per second (default 200)")
    demo.add_argument("--seed", type=int, default=2011, help="simulation seed")
    demo.add_argument("--duration", type=float, default=None,
                      help="stop after this many seconds once published (default: Ctrl-C)")
    demo.add_argument("--host", default="127.0.0.1",
                      help="address of the demo's API (default 127.0.0.1)")
    demo.add_argument("--port", type=int, default=8080, help="port of the API (default 8080)")
    demo.set_defaults(handler=_demo)

    view = subparsers.add_parser(
        "view", help="print the SQL view rows a partner sees",
        description="Print the rows of the SQL view for one partner, in the same format as "
                    "'leadhub project --json'. Every read is accounted like a staff API read: "
                    "before anything is printed, a record (operator, partner, purpose, the "
                    "participants and events shown, the consents behind them) is written to "
                    "lead.audit.access; if it cannot be written, nothing is printed and the "
                    "exit code is 1. With --api the API reads and accounts instead.")
    view.add_argument("--as", dest="partner", required=True, help="partner id")
    view.add_argument("--purpose",
                      help="purpose of use of this read: the partner's purpose in the site file "
                           "(required without --api; the API takes the partner's own)")
    view.add_argument("--operator", default=None,
                      help="who reads (default: the login name of this account)")
    view.add_argument("--participant", help="only this participant")
    view.add_argument("--json", action="store_true", help="JSON array (default: a table)")
    view.add_argument("--api", help="read through the staff API at this URL (needs --token)")
    view.add_argument("--token", help="staff token of the partner, for --api")
    view.set_defaults(handler=_view)


def _topics_create(args: argparse.Namespace) -> int:
    from leadhub.kafka_credentials import kafka_connection
    from leadhub.topics_admin import create_topics
    from processors.site import load_site
    from schemas.topics import TopicNames

    settings = load_settings()
    site = load_site(args.site or settings.site_file)
    created = create_topics(kafka_connection(settings, "admin"),
                            TopicNames(settings.topic_prefix), site, settings.partitions)
    print(f"created {len(created)} topics" + (": " + ", ".join(created) if created else
                                              " (all existed)"))
    return 0


def _run(args: argparse.Namespace) -> int:
    from leadhub import runner
    from leadhub.kafka_access import principal
    from leadhub.kafka_credentials import kafka_connection
    from leadhub.topics_admin import create_topics
    from processors.site import load_site
    from schemas.topics import TopicNames

    settings = load_settings()
    runner.configure_logging(settings.log_level)
    admin = kafka_connection(settings, "admin")
    if admin.username in (None, principal("admin")):
        # Only where this machine holds the admin principal (or the broker is unsecured); a
        # deployment's processes run with least rights and the operator creates the topics.
        create_topics(admin, TopicNames(settings.topic_prefix), load_site(settings.site_file),
                      settings.partitions)
    if args.step == "validator":
        return runner.run_validator(settings)
    if args.step == "projector":
        return runner.run_projector(settings)
    return runner.run_all(settings)


def _status(args: argparse.Namespace) -> int:
    from consumers.audit.compare import pending_records
    from consumers.audit.kafka_log import TopicReader, committed_offsets
    from consumers.live_projector import projector_group
    from consumers.store import ViewStore
    from leadhub.kafka_credentials import kafka_connection
    from processors.kafka_validator import group_id
    from processors.site import load_site
    from schemas.topics import TopicNames

    settings = load_settings()
    kafka = kafka_connection(settings, "audit")
    topics = TopicNames(settings.topic_prefix)
    lags: list[dict[str, Any]] = []
    for partner in load_site(settings.site_file).partner_ids():
        topic = topics.inbound(partner)
        with TopicReader(kafka, topic, client_id="leadhub-status") as reader:
            end = reader.end_offsets()
        done = committed_offsets(kafka, group_id(topics), topic, sorted(end))
        lags.append({"step": "validate", "group": group_id(topics), "topic": topic,
                     "end": sum(end.values()),
                     "behind": sum(e - done.get(p, 0) for p, e in end.items())})
    store = ViewStore(settings.view_database_url)
    try:
        tracked = store.committed_offsets(topics.events)
    finally:
        store.close()
    with TopicReader(kafka, topics.events, client_id="leadhub-status") as reader:
        end = reader.end_offsets()
        behind = pending_records(reader, tracked, end)
    lags.append({"step": "project", "group": projector_group(topics), "topic": topics.events,
                 "end": sum(end.values()), "behind": behind})
    if args.json:
        print(json.dumps({"lag": lags}, indent=2))
        return 0
    print(f"{'step':<9} {'topic':<40} {'end offset':>10} {'behind':>8}")
    for lag in lags:
        print(f"{lag['step']:<9} {lag['topic']:<40} {lag['end']:>10,} {lag['behind']:>8,}")
    return 0


def _publish(args: argparse.Namespace) -> int:
    from leadhub.errors import UsageError
    from leadhub.kafka_credentials import explicit_connection
    from producers.sdk import PartnerPublisher
    from schemas.catalog import load_catalog
    from schemas.event import read_jsonl
    from schemas.topics import TopicNames

    settings = load_settings()
    kafka = explicit_connection(settings)
    partner = str(args.partner or kafka.username)
    if partner != kafka.username:
        raise UsageError(f"LEADHUB_KAFKA_USERNAME is {kafka.username}, not {partner}: "
                         "publish with that partner's own credential")
    catalog = load_catalog()
    source = sys.stdin if args.events == "-" else args.events
    with PartnerPublisher(partner, kafka, catalog=catalog,
                          topics=TopicNames(settings.topic_prefix)) as publisher:
        count = publisher.publish_many(read_jsonl(source, catalog))
    print(f"published {count} events to {TopicNames(settings.topic_prefix).inbound(partner)}",
          file=sys.stderr)
    return 0


def _demo(args: argparse.Namespace) -> int:
    from leadhub.demo import DemoOptions, default_now, run_demo

    options = DemoOptions(args.participants, args.days, args.rate, args.seed, args.duration,
                          host=args.host, port=args.port)
    return run_demo(load_settings(), options, default_now())


def _view(args: argparse.Namespace) -> int:
    from consumers.store import ViewStore

    settings = load_settings()
    if args.api:
        from consumers.api.client import StaffClient

        if not args.token:
            print("leadhub: error: --api needs --token (a staff token)", file=sys.stderr)
            return 2
        with StaffClient(args.api, args.token) as client:
            rows = client.view_rows(args.partner, args.participant)
    else:
        if not args.purpose:
            print("leadhub: error: leadhub view reads the view database directly: give "
                  "--purpose (every read is recorded on lead.audit.access), or read through "
                  "--api", file=sys.stderr)
            return 2
        purpose = _view_purpose(settings, args.partner, args.purpose)
        store = ViewStore(settings.view_database_url)
        try:
            rows = store.rows_for(args.partner, args.participant)
        finally:
            store.close()
        _account_view_read(settings, args, purpose, rows)
    if args.json:
        json.dump(rows, sys.stdout, indent=2, sort_keys=True)
        sys.stdout.write("\n")
    else:
        for row in rows:
            print(f"{row['occurred_at']}  {row['participant_id']}  {row['type']:24} "
                  f"{','.join(row['categories'])}")
        print(f"{len(rows)} rows", file=sys.stderr)
    return 0


def _view_purpose(settings: Any, partner_id: str, purpose: str) -> str:
    """The declared purpose if ``partner_id`` acts under it; UsageError otherwise."""
    from leadhub.errors import UsageError
    from processors.site import load_site

    partner = load_site(settings.site_file).partner(partner_id)
    if partner is None:
        raise UsageError(f"{partner_id!r} is not a partner of the site file")
    if purpose != partner.purpose:
        raise UsageError(f"partner {partner_id} acts under the purpose {partner.purpose!r}, "
                         f"not {purpose!r}")
    return purpose


def _account_view_read(settings: Any, args: argparse.Namespace, purpose: str,
                       rows: list[dict[str, Any]]) -> None:
    """Record the read on lead.audit.access before anything is shown (fail closed)."""
    import getpass
    from datetime import UTC, datetime

    from consumers.api.access_log import AccessRecord, KafkaAccessLog, disclosures_of
    from leadhub.kafka_credentials import kafka_connection
    from schemas.topics import TopicNames

    disclosures = disclosures_of(rows)
    record = AccessRecord(
        user=f"operator:{args.operator or getpass.getuser()}", partner=args.partner,
        purpose=purpose, at=datetime.now(UTC), endpoint="cli:leadhub view",
        participant_ids=tuple(dict.fromkeys(d.participant_id for d in disclosures)),
        disclosures=tuple(disclosures), key_id="cli")
    log = KafkaAccessLog(kafka_connection(settings, "api"),
                         TopicNames(settings.topic_prefix).audit_access)
    try:
        log.record(record)
    finally:
        log.close()
