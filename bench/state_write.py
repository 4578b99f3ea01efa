"""Benchmark: what the projector writes per event as a participant's history grows.

One participant receives ``ContactLogged`` events from their case manager, one per hour,
through the real projector and the example site. At each size asked for, it prints the bytes
and the encode time (JSON + orjson, mean of ``--repeat`` runs) of one write in each layout:

- whole state (state layout 2 and before): :meth:`ParticipantState.to_json`, the participant's
  whole history, written on every batch that touches the participant;
- split (state layout 3, ``leadhub run projector``): the head (timers and event ids) plus the
  one entry of the new event.

Memory is that of one participant's state.

    .venv/bin/python bench/state_write.py [--sizes 30,300,1000] [--repeat 20]
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from processors.projector import Projector  # noqa: E402
from processors.site import load_site  # noqa: E402
from processors.state import ParticipantState, entry_to_json, head_to_json  # noqa: E402
from schemas.catalog import load_catalog  # noqa: E402
from schemas.event import Event  # noqa: E402

# isort: split
# A sibling in bench/: run as a file, the script's folder is first on sys.path.
from machine import machine_info  # noqa: E402

START = datetime(2025, 1, 1, tzinfo=UTC)


def measure(state: ParticipantState, event_id: str, repeat: int) -> tuple[int, float, int, float]:
    """(bytes, mean seconds) of one write of ``state`` whole, then split (head + the entry of
    ``event_id``)."""
    def whole() -> bytes:
        return orjson.dumps(state.to_json())

    def split() -> bytes:
        return orjson.dumps(head_to_json(state)) + orjson.dumps(entry_to_json(state, event_id))

    timings = []
    for write in (whole, split):
        started = time.perf_counter()
        for _ in range(repeat):
            write()
        timings.append((len(write()), (time.perf_counter() - started) / repeat))
    (whole_bytes, whole_s), (split_bytes, split_s) = timings
    return whole_bytes, whole_s, split_bytes, split_s


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="30,300,1000",
                        help="history lengths to measure at, comma-separated (default 30,300,1000)")
    parser.add_argument("--repeat", type=int, default=20,
                        help="encodes timed per size and layout (default 20)")
    args = parser.parse_args()
    sizes = sorted({int(size) for size in args.sizes.split(",")})
    info = machine_info()
    print(f"machine: {info['nproc']} cores, {info['cpu']}, Python {info['python']}, "
          f"load {info['load_before'][0]:.2f}")
    projector = Projector(load_site(ROOT / "config" / "site.example.yaml"), load_catalog())
    state: ParticipantState | None = None
    print(f"{'events':>7}{'whole state':>14}{'encode':>11}{'head + entry':>15}{'encode':>11}")
    for count in range(1, sizes[-1] + 1):
        at = START + timedelta(hours=count)
        event = Event(event_id=str(uuid.uuid4()), type="ContactLogged", participant_id="p-bench",
                      occurred_at=at, payload={"contact_method": "OUTREACH", "successful": True},
                      source_partner="harbor-cm")
        state, _ = projector.project(state, event, at)
        if count not in sizes:
            continue
        whole_bytes, whole_s, split_bytes, split_s = measure(state, event.event_id, args.repeat)
        print(f"{count:>7,}{whole_bytes:>12,} B{whole_s * 1e6:>8,.0f} µs"
              f"{split_bytes:>13,} B{split_s * 1e6:>8,.0f} µs")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS {peak:.0f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
