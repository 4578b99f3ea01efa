"""Benchmark: the validator's decision alone, ``processors.validate.validate_inbound``, per message.

The simulated example site's events (``--participants``, ``--days``, seed 1) encoded as a partner
sends them (single-object Avro, latest version, no source) are decided one by one as the
validator decides them: size, partner, strict decode (the body re-encoded and compared), key,
source, emitter and content rules, the source stamped in, the canonical ``lead.events`` record
encoded. No Kafka and no transaction: that is ``bench/pipeline.py``'s. Reported: CPU µs per
message, best of ``--rounds`` passes over the same messages, and how many were accepted (all of
them, or the bench measures something else).

To compare two versions of the code on this machine, whose speed varies by up to half between
minutes, run them at the same time, one per core, with each checkout first on ``PYTHONPATH``
(``taskset -c 0 ... & taskset -c 1 ...``), and swap the cores.

    .venv/bin/python bench/validate.py [--participants 300] [--days 180] [--rounds 5] [--json]

Exit codes: 0 figures printed, 1 a message was not accepted.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from processors.site import load_site
from processors.validate import Accepted, validate_inbound
from producers.simulator import simulate
from schemas.catalog import load_catalog
from schemas.codec import encode
from schemas.topics import TopicNames

SITE_FILE = Path(__file__).resolve().parent.parent / "config" / "site.example.yaml"
START = datetime(2026, 1, 5, tzinfo=UTC)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--participants", type=int, default=300,
                        help="simulated participants (%(default)s)")
    parser.add_argument("--days", type=int, default=180, help="simulated days (%(default)s)")
    parser.add_argument("--rounds", type=int, default=5,
                        help="passes over the messages, best kept (%(default)s)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    site, catalog, topics = load_site(SITE_FILE), load_catalog(), TopicNames()
    messages = [(topics.inbound(event.source_partner or ""), event.participant_id.encode(),
                 encode(event, catalog, unsourced=True))
                for event in simulate(site, catalog, args.participants, args.days, 1, START)]
    received_at = datetime.now(UTC)
    passes: list[float] = []
    accepted = 0
    for _ in range(args.rounds):
        accepted = 0
        started = time.process_time()
        for offset, (topic, key, value) in enumerate(messages):
            outcome = validate_inbound(topic=topic, partition=0, offset=offset, key=key,
                                       value=value, received_at=received_at, topics=topics,
                                       site=site, catalog=catalog)
            accepted += isinstance(outcome, Accepted)
        passes.append((time.process_time() - started) / len(messages) * 1e6)
    figures = {"messages": len(messages), "accepted": accepted,
               "us_per_message_best": min(passes), "us_per_message": passes}
    if args.json:
        print(json.dumps(figures, indent=2))
    else:
        print(f"{len(messages):,} messages, {accepted:,} accepted: "
              f"{min(passes):.1f} µs of CPU per message (best of {args.rounds})")
    return 0 if accepted == len(messages) else 1


if __name__ == "__main__":
    sys.exit(main())
