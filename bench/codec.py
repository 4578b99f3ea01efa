"""Benchmark: encode+decode round trips per second, leadhub codec vs the pure-Python ``avro``.

Both run in one process over the same records (one pinned golden event per event type, latest
version), each round trip being: validate + single-object encode, then fingerprint lookup +
decode. Prints round trips/s for each, the ratio, per-type extremes for ours, and peak memory.

    .venv/bin/python bench/codec.py [--rounds N]
"""

from __future__ import annotations

import argparse
import io
import json
import resource
import sys
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import avro.io
import avro.schema
from fastavro import schemaless_reader, schemaless_writer

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from schemas.catalog import Catalog, load_catalog  # noqa: E402
from schemas.codec import decode, encode  # noqa: E402
from schemas.event import Event, event_from_json  # noqa: E402

# isort: split
# A sibling in bench/: run as a file, the script's folder is first on sys.path.
from machine import python_version  # noqa: E402

GOLDEN = ROOT / "tests" / "golden" / "schemas_golden.json"


def load_events(catalog: Catalog) -> list[Event]:
    """One event per type (latest version) from the golden file."""
    cases = json.loads(GOLDEN.read_text(encoding="utf-8"))["cases"]
    latest = [c for c in cases if c["version"] == catalog.latest(c["type"]).version]
    return [event_from_json(c["event"], catalog) for c in latest]


class AvroCodec:
    """The same single-object format built on the official pure-Python ``avro`` package."""

    def __init__(self, catalog: Catalog) -> None:
        self.by_type: dict[str, tuple[bytes, Any, Any]] = {}
        self.by_fingerprint: dict[bytes, tuple[str, Any, Any]] = {}
        for name in catalog.types():
            event_type = catalog.latest(name)
            schema = avro.schema.parse(event_type.path.read_text(encoding="utf-8"))
            header = b"\xc3\x01" + bytes.fromhex(event_type.fingerprint)
            writer, reader = avro.io.DatumWriter(schema), avro.io.DatumReader(schema, schema)
            self.by_type[name] = (header, writer, reader)
            self.by_fingerprint[header[2:]] = (name, writer, reader)

    def encode(self, event: Event) -> bytes:
        header, writer, _ = self.by_type[event.type]
        buffer = io.BytesIO()
        buffer.write(header)
        record = {
            "event_id": event.event_id,
            "participant_id": event.participant_id,
            "occurred_at": event.occurred_at,
            "source_partner": event.source_partner,
            "payload": event.payload,
        }
        writer.write(record, avro.io.BinaryEncoder(buffer))
        return buffer.getvalue()

    def decode(self, data: bytes) -> Event:
        name, _, reader = self.by_fingerprint[data[2:10]]
        record = reader.read(avro.io.BinaryDecoder(io.BytesIO(data[10:])))
        return Event(
            record["event_id"], name, record["participant_id"], record["occurred_at"],
            record["payload"], record["source_partner"],
        )


def round_trips_per_second(
    events: list[Event], roundtrip: Callable[[Event], Event], rounds: int, repeats: int = 3
) -> float:
    """Best of ``repeats`` runs of ``rounds`` passes over ``events``."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(rounds):
            for event in events:
                roundtrip(event)
        best = min(best, time.perf_counter() - start)
    return rounds * len(events) / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2000, help="passes over the records (ours)")
    args = parser.parse_args()
    catalog = load_catalog()
    events = load_events(catalog)
    theirs = AvroCodec(catalog)
    for event in events:  # both agree before we time anything
        assert decode(encode(event, catalog), catalog) == event
        assert theirs.encode(event) == encode(event, catalog)
        assert theirs.decode(theirs.encode(event)) == event

    def ours(event: Event) -> Event:
        return decode(encode(event, catalog), catalog)

    def pure(event: Event) -> Event:
        return theirs.decode(theirs.encode(event))

    schemas = {event.type: catalog.latest(event.type).schema for event in events}

    def fastavro_only(event: Event) -> Event:
        """The floor: fastavro write + read of the same record, no validation, no Event."""
        buffer = io.BytesIO()
        schema = schemas[event.type]
        record = {
            "event_id": event.event_id,
            "participant_id": event.participant_id,
            "occurred_at": event.occurred_at,
            "source_partner": event.source_partner,
            "payload": event.payload,
        }
        schemaless_writer(buffer, schema, record)
        buffer.seek(0)
        schemaless_reader(buffer, schema, None)
        return event

    ours_rate = round_trips_per_second(events, ours, args.rounds)
    floor_rate = round_trips_per_second(events, fastavro_only, args.rounds)
    pure_rate = round_trips_per_second(events, pure, max(1, args.rounds // 20))
    per_type = {
        event.type: round_trips_per_second([event], ours, args.rounds // 4, repeats=2)
        for event in events
    }
    slowest, fastest = min(per_type, key=per_type.get), max(per_type, key=per_type.get)  # type: ignore[arg-type]
    sizes = [len(encode(event, catalog)) for event in events]

    tracemalloc.start()
    for _ in range(200):
        for event in events:
            ours(event)
    _, traced_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    max_rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    print(f"python {python_version()}, {len(events)} event types, "
          f"encoded size {min(sizes)}-{max(sizes)} bytes (mean {sum(sizes) / len(sizes):.0f})")
    print(f"leadhub codec (fastavro):  {ours_rate:>10,.0f} round trips/s "
          f"({1e6 / ours_rate:.1f} us each)")
    print(f"fastavro alone (floor):    {floor_rate:>10,.0f} round trips/s "
          f"({1e6 / floor_rate:.1f} us each; no validation, no Event)")
    print(f"pure-Python avro:          {pure_rate:>10,.0f} round trips/s "
          f"({1e6 / pure_rate:.1f} us each)")
    print(f"ratio:                     {ours_rate / pure_rate:>10.1f}x")
    print(f"ours per type: slowest {slowest} {per_type[slowest]:,.0f}/s, "
          f"fastest {fastest} {per_type[fastest]:,.0f}/s")
    print(f"peak traced Python allocations during 200 passes of ours: {traced_peak / 1024:.0f} KiB")
    print(f"process max RSS: {max_rss_mib:.0f} MiB")


if __name__ == "__main__":
    main()
