"""Benchmark: how many of the view rows the pure core emits per event are the same row.

The view shows one row per recipient and event (the ``view_rows`` SQL view), and most recipients
of an event see the same fields of it; since projection version 9 the view stores such a row
once, naming its recipients (``shared_rows``, decision 0013; weighed in decision 0011). This
simulates the example site's history (the pipeline bench's sustained phase by default: 1,000
participants, 180 days, seed 1), projects every event through the pure core at its own
``occurred_at`` as the live projector does, and counts, over the upserts of each event: the
rows, the distinct rows (equal JSON, which names no recipient: what ``shared_rows`` stores),
their bytes, and the rows of the types the view indexes by recipient
(``consumers.store.INDEXED_TYPES``: the entries of ``indexed_rows``).

    .venv/bin/python bench/row_sharing.py [--participants 1000] [--days 180] [--seed 1] [--json]

Nothing is timed. Exit code 0 when the figures are printed.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from consumers.store import INDEXED_TYPES, encode_row_json
from processors.projector import ParticipantState, Projector
from processors.site import load_site
from processors.view import ViewChange
from producers.simulator import simulate
from schemas.catalog import load_catalog

ROOT = Path(__file__).resolve().parent.parent
START = datetime(2025, 1, 1, tzinfo=UTC)


def count_sharing(changes_of_events: Sequence[list[ViewChange]]) -> dict[str, float]:
    """Figures per event over ``changes_of_events`` (the changes each event's projection emitted):
    upserted rows, distinct rows among each (event, participant)'s upserts, their JSON bytes,
    retractions, rows of the indexed types, and events touched besides the projected one."""
    rows = distinct = row_bytes = distinct_bytes = retracts = indexed = touched = 0
    for changes in changes_of_events:
        texts: dict[tuple[str, str], list[str]] = defaultdict(list)
        for change in changes:
            if change.row is None:
                retracts += 1
                continue
            texts[(change.participant_id, change.event_id)].append(
                encode_row_json(change.row.to_json()))
            indexed += change.row.type in INDEXED_TYPES
        touched += len(texts)
        for of_event in texts.values():
            rows += len(of_event)
            row_bytes += sum(len(text) for text in of_event)
            unique = set(of_event)
            distinct += len(unique)
            distinct_bytes += sum(len(text) for text in unique)
    events = len(changes_of_events) or 1
    return {"events": len(changes_of_events), "rows_per_event": rows / events,
            "distinct_rows_per_event": distinct / events,
            "row_bytes_per_event": row_bytes / events,
            "distinct_row_bytes_per_event": distinct_bytes / events,
            "retracts_per_event": retracts / events,
            "indexed_type_rows_per_event": indexed / events,
            "events_with_rows_touched_per_event": touched / events}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--participants", type=int, default=1000,
                        help="simulated participants (%(default)s)")
    parser.add_argument("--days", type=int, default=180, help="simulated days (%(default)s)")
    parser.add_argument("--seed", type=int, default=1, help="simulation seed (%(default)s)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    site = load_site(ROOT / "config" / "site.example.yaml")
    catalog = load_catalog()
    projector = Projector(site, catalog)
    states: dict[str, ParticipantState] = {}
    emitted: list[list[ViewChange]] = []
    for event in simulate(site, catalog, args.participants, args.days, args.seed, START):
        states[event.participant_id], changes = projector.project(
            states.get(event.participant_id), event, event.occurred_at)
        emitted.append(changes)
    config = {name: value for name, value in vars(args).items() if name != "json"}
    figures: dict[str, Any] = {"config": config, **count_sharing(emitted)}
    if args.json:
        print(json.dumps(figures, indent=2))
        return 0
    print(f"{figures['events']:,} events, {args.participants:,} participants, {args.days} days, "
          f"seed {args.seed}; per event:")
    for name in ("rows_per_event", "distinct_rows_per_event", "row_bytes_per_event",
                 "distinct_row_bytes_per_event", "retracts_per_event",
                 "indexed_type_rows_per_event", "events_with_rows_touched_per_event"):
        print(f"  {name.removesuffix('_per_event').replace('_', ' ')}: {figures[name]:,.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
