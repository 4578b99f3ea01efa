"""Benchmark: the memory of participant states read back from SQL, per cached event or row.

The live projector's state cache counts its capacity (``LEADHUB_PROJECTOR_CACHE``) in events
plus view rows held; this measures what one such unit costs in memory. The simulated example
site's first ``--records`` events (``--participants``, ``--days``, seed 1) are projected by
:class:`consumers.live_projector.LiveProjector` over an in-process consumer into a fresh SQLite
file (as ``bench/projector_writes.py``); then every participant's state is read back with
:meth:`consumers.projection_store.ProjectionStore.load` (``--heads``: by their heads, as
``load_heads`` reads them for an ordinary event), in chunks of 200 as a batch would, with
``tracemalloc`` counting the bytes the loaded states hold (what a cache miss or a restart
brings into the process).
"""

from __future__ import annotations

import argparse
import gc
import json
import tempfile
import tracemalloc
from pathlib import Path
from typing import Any

from projector_writes import SITE_FILE, TOPICS, MemoryConsumer, NoDeadLetters, build_log

from consumers.batch_states import HEAD_WEIGHT
from consumers.live_projector import LiveProjector
from consumers.projection_store import ProjectionStore, StoredParticipant
from consumers.store import ViewStore
from processors.projector import Projector
from processors.site import load_site
from schemas.catalog import load_catalog
from schemas.kafka_connection import KafkaConnection


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Project, read every state back, and return the figures."""
    partitions = build_log(args.participants, args.days, args.records)
    site, catalog = load_site(SITE_FILE), load_catalog()
    with tempfile.TemporaryDirectory(prefix="leadhub-state-memory-") as scratch:
        store = ViewStore(f"sqlite:///{Path(scratch) / 'view.sqlite'}")
        store.create_schema()
        projector = LiveProjector(
            KafkaConnection("unused:0"), TOPICS, store, Projector(site, catalog), catalog,
            consumer=MemoryConsumer(partitions, 2000), dlq=NoDeadLetters())
        while projector.run_once():
            pass
        participants = sorted({record.key.decode() for records in partitions.values()
                               for record in records if record.key})
        del projector
        gc.collect()
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        loaded: dict[str, StoredParticipant] = {}
        states = ProjectionStore(store)
        with store.engine.connect() as connection:
            for start in range(0, len(participants), 200):
                chunk = participants[start:start + 200]
                loaded.update(states.load_heads(connection, {pid: [f"new-{pid}"] for pid in chunk})
                              if args.heads else states.load(connection, chunk))
        gc.collect()
        held = tracemalloc.get_traced_memory()[0] - before
        tracemalloc.stop()
        store.close()
    events = sum(len(stored.state.events) for stored in loaded.values())
    rows = sum(len(shapes) for stored in loaded.values()
               for shapes in stored.state.rows.values())
    units = HEAD_WEIGHT * len(loaded) + events + rows  # what the cache counts (state_weight)
    return {"participants": len(loaded), "events": events, "rows": rows,
            "units": units, "loaded_mib": held / 2**20, "bytes_per_unit": held / units,
            "kib_per_participant": held / len(loaded) / 1024}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     epilog=__doc__.split("\n\n", 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--participants", type=int, default=1000,
                        help="simulated participants (%(default)s)")
    parser.add_argument("--days", type=int, default=365, help="simulated days (%(default)s)")
    parser.add_argument("--records", type=int, default=60000,
                        help="events projected, from the start of the site (%(default)s)")
    parser.add_argument("--heads", action="store_true",
                        help="read the states back by their heads (as an ordinary event's cache "
                             "miss does: ProjectionStore.load_heads), not whole")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()
    figures = run(args)
    if args.json:
        print(json.dumps(figures, indent=2))
        return
    print(f"{figures['participants']:,} participants read back: {figures['events']:,} events + "
          f"{figures['rows']:,} view rows ({figures['units']:,} cache units)")
    print(f"  held {figures['loaded_mib']:.1f} MiB: {figures['bytes_per_unit']:.0f} bytes per "
          f"unit, {figures['kib_per_participant']:.1f} KiB per participant")


if __name__ == "__main__":
    main()
