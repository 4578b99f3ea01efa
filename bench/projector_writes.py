"""Benchmark: the live projector's SQL writes alone, without Kafka (decision 0004).

The simulated example site's events (``--participants``, ``--days``, seed 1, in time order) are
made canonical ``lead.events`` records in memory, four partitions keyed by participant, a CLOCK
record on every partition each 2,000 events, and fed to
:class:`consumers.live_projector.LiveProjector` (the class ``leadhub run projector`` runs) by an
in-process consumer handing out at most ``--batch`` records per poll, into a fresh SQLite file,
with the cyclic collector tuned as ``LiveProjector.run`` tunes it (``GC_THRESHOLDS``; before
2026-12-02 the bench left Python's defaults: collections took 18 % of the projecting samples in
one py-spy profile).
Nothing else runs, so what varies between runs is the machine, not the pipeline around the
projector. Reported, over the projected records: CPU per record of the process, records/s, the
batches' wall time (p50, p99, max), bytes the process wrote to disk per record
(``/proc/self/io`` ``write_bytes``: the write-ahead log and its checkpoints), read system calls
and bytes read per record (pages the writer's cache did not hold), and how many batches ran a
checkpoint of the log in their commit (the log's checkpoint sequence number, in its header,
changed in the next batch) with those batches' wall times; with the background thread the
log's restarts are its own, so that count then says how often a batch followed one.

``--background-checkpoints`` runs the view's :class:`consumers.sqlite_wal.WalCheckpointer`
meanwhile, as ``LiveProjector.run`` does; ``--default-cache`` keeps SQLite's 2 MB page cache
instead of the writer's (``ViewStore.tune_for_writing``). To compare two settings on this
machine, whose speed varies by up to half between minutes, run them at the same time, one per
core (``taskset -c 0 ... & taskset -c 1 ...``).

    .venv/bin/python bench/projector_writes.py [--records 20000] [--batch 40]
                                               [--background-checkpoints] [--default-cache]

Progress goes to stderr; ``--json`` prints the figures as JSON. Exit codes: 0 figures printed,
1 the run failed.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import event as sqlalchemy_event

from consumers.live_projector import GC_THRESHOLDS, LiveProjector
from consumers.sqlite_wal import configure_writer_cache
from consumers.store import ViewStore
from processors.projector import Projector
from processors.site import load_site
from producers.simulator import simulate
from schemas.canonical import CanonicalRecord, encode_canonical
from schemas.catalog import load_catalog
from schemas.codec import encode
from schemas.kafka_connection import KafkaConnection
from schemas.topics import TopicNames

SITE_FILE = Path(__file__).resolve().parent.parent / "config" / "site.example.yaml"
TOPICS = TopicNames("benchwrites.")
PARTITIONS = 4
START = datetime(2025, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Record:
    """What the projector reads of a Kafka record."""

    partition: int
    offset: int
    key: bytes | None
    value: bytes


class MemoryConsumer:
    """The ``GroupConsumer`` methods the projector uses, over in-memory partitions it all owns."""

    def __init__(self, partitions: dict[int, list[Record]], batch: int) -> None:
        self.partitions = partitions
        self.batch = batch
        self.position = dict.fromkeys(partitions, 0)
        self.listener: Any = None

    def subscribe(self, listener: Any) -> None:
        self.listener = listener
        listener.assigned([(TOPICS.events, p) for p in self.partitions])

    def assignment(self) -> list[Any]:
        return [_Partition(p) for p in self.partitions]

    def poll(self, max_records: int, timeout_s: float) -> list[Record]:
        out: list[Record] = []
        limit = min(max_records, self.batch)
        for p, records in self.partitions.items():  # round robin, as fetches come
            at = self.position[p]
            share = max(1, limit // len(self.partitions))
            taken = records[at:at + min(share, limit - len(out))]
            out.extend(taken)
            self.position[p] = at + len(taken)
        return out

    def seek(self, topic: str, partition: int, offset: int) -> None:
        self.position[partition] = offset

    def commit_async(self, topic: str, offsets: dict[int, int]) -> None:
        pass

    def close(self) -> None:
        pass


@dataclass(frozen=True)
class _Partition:
    partition: int


class NoDeadLetters:
    """The dead-letter producer: this bench's records are all valid, so any is a failure."""

    def send(self, topic: str, key: bytes | None, value: bytes, headers: Any) -> None:
        raise RuntimeError("a dead letter in the writes bench")

    def flush(self, timeout: float) -> None:
        pass

    def close(self, timeout: float) -> None:
        pass


def _io() -> dict[str, int]:
    with open("/proc/self/io", encoding="ascii") as handle:
        return {k: int(v) for k, v in (line.split(": ") for line in handle.read().splitlines())}


def _log_sequence(wal: Path) -> bytes:
    """The write-ahead log's checkpoint sequence number (bytes 12-15 of its header)."""
    try:
        with wal.open("rb") as handle:
            return handle.read(16)[12:16]
    except FileNotFoundError:
        return b""


def build_log(participants: int, days: int, records: int) -> dict[int, list[Record]]:
    """The site's first ``records`` events as canonical records, CLOCKs every 2,000 events."""
    site, catalog = load_site(SITE_FILE), load_catalog()
    events = sorted(simulate(site, catalog, participants, days, 1, START),
                    key=lambda e: (e.occurred_at, e.event_id))[:records]

    partitions: dict[int, list[Record]] = {p: [] for p in range(PARTITIONS)}

    def append(partition: int, key: bytes | None, value: bytes) -> None:
        log = partitions[partition]
        log.append(Record(partition, len(log), key, value))

    for n, event in enumerate(events):
        received = event.occurred_at + timedelta(minutes=5)
        record = CanonicalRecord("EVENT", received, event.source_partner or "", "in", 0, n,
                                 encode(event, catalog))
        key = event.participant_id.encode()
        append(sum(key) % PARTITIONS, key, encode_canonical(record))
        if n % 2000 == 1999:
            clock = encode_canonical(CanonicalRecord("CLOCK", received, "hub", "", -1, -1, b""))
            for p in range(PARTITIONS):
                append(p, None, clock)
    return partitions


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Project the log and return the figures."""
    partitions = build_log(args.participants, args.days, args.records)
    total = sum(len(records) for records in partitions.values())
    site, catalog = load_site(SITE_FILE), load_catalog()
    with tempfile.TemporaryDirectory(prefix="leadhub-writes-") as scratch:
        path = Path(scratch) / "view.sqlite"
        store = ViewStore(f"sqlite:///{path}")
        store.create_schema()
        projector = LiveProjector(
            KafkaConnection("unused:0"), TOPICS, store, Projector(site, catalog), catalog,
            batch_size=args.batch, consumer=MemoryConsumer(partitions, args.batch),
            dlq=NoDeadLetters())
        if args.default_cache:
            sqlalchemy_event.remove(store.engine, "connect", configure_writer_cache)
            store.engine.pool.dispose()
        gc.set_threshold(*GC_THRESHOLDS)  # as LiveProjector.run does
        checkpointer = store.wal_checkpointer() if args.background_checkpoints else None
        if checkpointer is not None:
            checkpointer.start()
        wal = Path(f"{path}-wal")
        walls: list[float] = []
        sequences: list[bytes] = []  # the log's sequence number after each batch
        before, cpu, started = _io(), time.process_time(), time.perf_counter()
        done, last_report = 0, started
        while done < total:
            t0 = time.perf_counter()
            count = projector.run_once()
            if count == 0:
                break
            walls.append(time.perf_counter() - t0)
            sequences.append(_log_sequence(wal))
            done += count
            if time.perf_counter() - last_report > 5:
                last_report = time.perf_counter()
                print(f"[writes] {done:,} of {total:,} records", file=sys.stderr)
        cpu, wall, after = time.process_time() - cpu, time.perf_counter() - started, _io()
        if checkpointer is not None:
            checkpointer.stop()
        store.close()
    if done < total:
        raise RuntimeError(f"projected {done} of {total} records")
    # The log starts over in the first write after a checkpoint copied it whole: without the
    # background thread, the checkpoint ran in the commit of the batch before.
    checkpointed = sorted(round(walls[n - 1] * 1e3) for n in range(2, len(walls))
                          if sequences[n] != sequences[n - 1])
    walls.sort()
    return {
        "records": done, "batch": args.batch, "batches": len(walls),
        "background_checkpoints": bool(args.background_checkpoints),
        "writer_cache": not args.default_cache,
        "cpu_ms_per_record": cpu / done * 1e3, "records_per_s": done / wall,
        "batch_ms": {"p50": walls[len(walls) // 2] * 1e3,
                     "p99": walls[int(len(walls) * 0.99)] * 1e3, "max": walls[-1] * 1e3},
        "written_kib_per_record": (after["write_bytes"] - before["write_bytes"]) / done / 1024,
        "read_syscalls_per_record": (after["syscr"] - before["syscr"]) / done,
        "read_kib_per_record": (after["rchar"] - before["rchar"]) / done / 1024,
        "checkpointing_batches": len(checkpointed), "checkpointing_batch_ms": checkpointed,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("--participants", type=int, default=1000,
                        help="simulated participants (%(default)s)")
    parser.add_argument("--days", type=int, default=180, help="simulated days (%(default)s)")
    parser.add_argument("--records", type=int, default=20000,
                        help="events projected, from the start of the site (%(default)s)")
    parser.add_argument("--batch", type=int, default=40,
                        help="records per poll, about a batch at 500 events/s (%(default)s)")
    parser.add_argument("--background-checkpoints", action="store_true",
                        help="run the WalCheckpointer thread, as LiveProjector.run does")
    parser.add_argument("--default-cache", action="store_true",
                        help="SQLite's default page cache instead of the writer's")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    try:
        figures = run(args)
    except Exception as exc:  # a benchmark reports, it does not trace back
        print(f"writes bench failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(figures, indent=2))
        return 0
    print(f"{figures['records']:,} records in batches of {figures['batch']} "
          f"(background checkpoints: {figures['background_checkpoints']}, writer cache: "
          f"{figures['writer_cache']})")
    print(f"  CPU {figures['cpu_ms_per_record']:.3f} ms per record, "
          f"{figures['records_per_s']:,.0f} records/s")
    batch = figures["batch_ms"]
    print(f"  batch wall p50 {batch['p50']:.1f} / p99 {batch['p99']:.1f} / max "
          f"{batch['max']:.1f} ms")
    print(f"  written {figures['written_kib_per_record']:.1f} KiB, read "
          f"{figures['read_kib_per_record']:.1f} KiB in "
          f"{figures['read_syscalls_per_record']:.1f} calls, per record")
    print(f"  batches whose commit checkpointed the log: {figures['checkpointing_batches']} "
          f"({figures['checkpointing_batch_ms']} ms)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
