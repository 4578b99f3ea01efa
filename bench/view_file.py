"""Benchmark: writing an audit replay's view file from participant states.

The simulated example site (``--participants``, default 1,000, over 365 days, seed 1) is
replayed in process through the audit :class:`consumers.audit.replay.Replayer` (no Kafka) into
participant states; then, ``--rounds`` times, a fresh view file is written from those states
with :class:`consumers.audit.view_file.ViewFileWriter` (``insert_states``, then ``complete``:
the secondary indexes, the projection version, the rename). Printed per round: rows, seconds
inserting, seconds building the indexes and closing, CPU seconds; then the process's peak RSS.
Only the writing is timed, not the replay.

    .venv/bin/python bench/view_file.py [--participants 1000] [--rounds 3] [--json]
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from projector_writes import SITE_FILE, build_log

from consumers.audit.replay import Replayer
from consumers.audit.view_file import ViewFileWriter, temporary_path
from processors.projector import Projector
from processors.site import load_site
from processors.state import ParticipantState
from schemas.canonical import decode_canonical
from schemas.catalog import load_catalog


def replayed_states(participants: int) -> list[ParticipantState]:
    """The states of the simulated site after a year, replayed in process."""
    site, catalog = load_site(SITE_FILE), load_catalog()
    replayer = Replayer(Projector(site, catalog), catalog)
    for partition, records in build_log(participants, 365, 10**9).items():
        for record in records:
            replayer.apply(partition, record.offset, record.key, decode_canonical(record.value))
    return list(replayer.states.values())


def write_round(states: list[ParticipantState], target: Path) -> dict[str, float]:
    """Write one view file from ``states``; its figures."""
    started, cpu = time.perf_counter(), time.process_time()
    writer = ViewFileWriter(temporary_path(target))
    rows = writer.insert_states(states)
    inserted = time.perf_counter()
    writer.complete(target)
    return {"rows": rows, "insert_s": inserted - started,
            "indexes_s": time.perf_counter() - inserted, "cpu_s": time.process_time() - cpu}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--participants", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    print(f"replaying {args.participants:,} participants x 365 days in process", file=sys.stderr)
    states = replayed_states(args.participants)
    rounds: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="leadhub-bench-viewfile-") as tmp:
        for n in range(args.rounds):
            figures = write_round(states, Path(tmp) / f"view-{n}.sqlite")
            rounds.append(figures)
            print(f"round {n + 1}: {figures['rows']:,} rows, insert {figures['insert_s']:.2f} s, "
                  f"indexes and close {figures['indexes_s']:.2f} s, CPU {figures['cpu_s']:.2f} s",
                  file=sys.stderr)
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS {peak_mib:.0f} MiB (the states included)", file=sys.stderr)
    if args.json:
        print(json.dumps({"participants": args.participants, "rounds": rounds,
                          "peak_rss_mib": round(peak_mib)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
