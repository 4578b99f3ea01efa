"""Benchmark: audit replay and offline verification on the real broker.

Writes a simulated site's history straight into a fresh ``lead.events`` (canonical records,
keyed by participant, with a CLOCK record per partition every simulated hour; not timed), then
in the same run times:

1. raw kafka-python consumption of the topic (the ceiling: records/s with no decoding);
2. ``audit replay`` into a new SQLite view (decode, the live core's dispatch, SQL writes),
   and the same replay without the SQL writes;
3. checkpointing (leaf hashing into per-partition RFC 6962 trees, one signature);
4. export of the whole log to a bundle (not timed), then offline verification (records/s).

Peak memory is the process's max RSS after each phase (ru_maxrss, monotone). Prints the
figures; with --write, replaces the "Audit (issue 7)" section of BENCHMARKS.md.

    .venv/bin/python bench/replay.py [--participants 1000] [--days 365] [--seed 1] [--write]
"""

from __future__ import annotations

import argparse
import platform
import re
import resource
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from consumers.audit.bundle import export_bundle, read_bundle_and_verify
from consumers.audit.checkpoints import Checkpointer, public_bytes
from consumers.audit.kafka_log import TopicReader
from consumers.audit.replay import LogReplay, Replayer, ViewWriter, open_fresh_store
from leadhub.settings import load_settings
from leadhub.topics_admin import create_topics
from processors.projector import Projector
from processors.site import load_site
from producers.simulator import simulate
from schemas.canonical import CanonicalRecord, encode_canonical
from schemas.catalog import load_catalog
from schemas.codec import encode
from schemas.topics import TopicNames

ROOT = Path(__file__).resolve().parents[1]
SECTION = "## Audit (issue 7)"
PARTITIONS = 4


def rss_mib() -> float:
    """Peak resident set size of this process so far, MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def fill(bootstrap: str, topics: TopicNames, participants: int, days: int, seed: int) -> int:
    """Write the history into lead.events; return how many records were written."""
    site = load_site(ROOT / "config" / "site.example.yaml")
    catalog = load_catalog()
    start = datetime(2025, 1, 1, tzinfo=UTC)
    events = sorted(simulate(site, catalog, participants, days, seed, start),
                    key=lambda e: (e.occurred_at, e.event_id))
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks=1, linger_ms=20,
                             batch_size=512 * 1024)
    count = 0
    next_tick = start + timedelta(hours=1)
    for event in events:
        while next_tick <= event.occurred_at:
            tick = encode_canonical(CanonicalRecord("CLOCK", next_tick, "hub", "", -1, -1, b""))
            for p in range(PARTITIONS):
                producer.send(topics.events, value=tick, partition=p)
                count += 1
            next_tick += timedelta(hours=1)
        record = CanonicalRecord("EVENT", event.occurred_at, event.source_partner or "",
                                 topics.inbound(event.source_partner or "x"), 0, count,
                                 encode(event, catalog))
        producer.send(topics.events, key=event.participant_id.encode(),
                      value=encode_canonical(record))
        count += 1
    producer.flush()
    producer.close()
    return count


def raw_consume(bootstrap: str, topic: str) -> tuple[int, float]:
    """Read every record with a plain kafka-python consumer; (records, seconds)."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None,
                             enable_auto_commit=False, max_poll_records=5000,
                             max_partition_fetch_bytes=8 * 1024 * 1024,
                             fetch_max_bytes=64 * 1024 * 1024)
    parts = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic))]
    end = consumer.end_offsets(parts)
    consumer.assign(parts)
    consumer.seek_to_beginning(*parts)
    total, wanted = 0, sum(end.values())
    started = time.perf_counter()
    while total < wanted:
        for records in consumer.poll(timeout_ms=500).values():
            total += len(records)
    elapsed = time.perf_counter() - started
    consumer.close()
    return total, elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--participants", type=int, default=1000)
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--write", action="store_true", help="update BENCHMARKS.md")
    args = parser.parse_args()

    settings = load_settings()
    bootstrap = settings.effective_kafka_bootstrap
    topics = TopicNames(prefix=f"bench{uuid.uuid4().hex[:8]}.")
    site = load_site(ROOT / "config" / "site.example.yaml")
    catalog = load_catalog()
    create_topics(bootstrap, topics, site, PARTITIONS)
    records = fill(bootstrap, topics, args.participants, args.days, args.seed)
    print(f"wrote {records:,} records to {topics.events}")
    base_rss = rss_mib()

    raw_n, raw_s = raw_consume(bootstrap, topics.events)
    print(f"raw consume: {raw_n / raw_s:,.0f} records/s ({raw_s:.2f}s)")

    with tempfile.TemporaryDirectory(prefix="leadhub-bench-") as tmp:
        store = open_fresh_store(str(Path(tmp) / "replay.sqlite"))
        with TopicReader(bootstrap, topics.events) as reader:
            writer = ViewWriter(store)
            replayer = Replayer(Projector(site, catalog), catalog)
            replay = LogReplay(reader, replayer, writer)
            started = time.perf_counter()
            replay.run_to(reader.end_offsets())
            writer.flush()
            replay_s = time.perf_counter() - started
        store.close()
        replay_rss = rss_mib()
        print(f"replay into SQLite: {replay.records / replay_s:,.0f} records/s "
              f"({replay_s:.2f}s, {len(replayer.states):,} participants), "
              f"max RSS {replay_rss:.0f} MiB")

        with TopicReader(bootstrap, topics.events) as reader:
            bare = LogReplay(reader, Replayer(Projector(site, catalog), catalog),
                             lambda partition, at, changes: None)
            started = time.perf_counter()
            bare.run_to(reader.end_offsets())
            core_s = time.perf_counter() - started
        print(f"replay without SQL (Kafka + decode + core): {bare.records / core_s:,.0f} "
              f"records/s ({core_s:.2f}s)")

        key = Ed25519PrivateKey.generate()
        checkpointer = Checkpointer(bootstrap, topics.events, topics.audit_checkpoints, key)
        started = time.perf_counter()
        checkpointer.checkpoint()
        checkpoint_s = time.perf_counter() - started
        checkpointer.close()
        print(f"checkpoint (hash + sign): {records / checkpoint_s:,.0f} records/s")

        bundle = Path(tmp) / "bundle"
        export_bundle(bootstrap, topics.events, topics.audit_checkpoints,
                      public_bytes(key.public_key()), datetime(2000, 1, 1, tzinfo=UTC),
                      datetime.now(UTC), bundle, ROOT / "schemas" / "avro")
        size_mib = sum(f.stat().st_size for f in bundle.rglob("*") if f.is_file()) / 2**20
        started = time.perf_counter()
        report = read_bundle_and_verify(bundle)
        verify_s = time.perf_counter() - started
        assert report.ok, report.first
        verify_rss = rss_mib()
        print(f"verify bundle: {report.records / verify_s:,.0f} records/s ({verify_s:.2f}s, "
              f"bundle {size_mib:.0f} MiB), max RSS {verify_rss:.0f} MiB")

    if args.write:
        cpu = "unknown"
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        command = (f".venv/bin/python bench/replay.py --participants {args.participants} "
                   f"--days {args.days} --seed {args.seed} --write")
        phases = [
            ("raw kafka-python consume (ceiling)", raw_n / raw_s, raw_s),
            ("`audit replay` into SQLite (decode + core + SQL)", replay.records / replay_s,
             replay_s),
            ("replay without the SQL writes (Kafka + decode + core)", bare.records / core_s,
             core_s),
            ("`audit checkpoint` (leaf hashing + one Ed25519 signature)",
             records / checkpoint_s, checkpoint_s),
            (f"`audit verify` of the full bundle ({size_mib:.0f} MiB, a proof per record)",
             report.records / verify_s, verify_s),
        ]
        table = "\n".join(f"| {name} | {rate:,.0f} | {secs:.2f} |" for name, rate, secs in phases)
        section = f"""{SECTION}

Replay of `lead.events` through the live core into a fresh SQLite view, and offline
verification of an exported bundle, against raw kafka-python consumption of the same topic in
the same run (the ceiling). History: the simulated example site, {args.participants:,}
participants over {args.days} days (seed {args.seed}), written straight to a 4-partition
`lead.events` as canonical records with a CLOCK record per partition per simulated hour:
{records:,} records.

Command: `{command}`
(local broker from `leadhub services start`)

Machine: {len(__import__('os').sched_getaffinity(0))} cores (shared with other work), `{cpu}`,
Python {platform.python_version()}.

| phase | records/s | seconds |
| --- | ---: | ---: |
{table}

Peak memory (process max RSS): {base_rss:.0f} MiB after writing the history, {replay_rss:.0f}
MiB after the replay ({len(replayer.states):,} participant states held; the log is streamed),
{verify_rss:.0f} MiB after export and verification (the exporter holds every leaf hash).

Target replay >= 20,000 events/s: **{'met' if replay.records / replay_s >= 20000 else 'not met'}**.
Where the time goes: reading, decoding and projecting (the replay without SQL) is about 30%
of the wall time; writing the resulting rows to SQLite (~5 rows per event: one JSON
serialisation and one INSERT each) about 70%. Kafka is not the limit (raw consume is ~10x
faster than the core).
Ways forward, not done: raw `sqlite3` executemany with prebuilt tuples instead of SQLAlchemy
Core, building the participant index after the load, and replaying partitions in parallel
processes (states are per participant, so partitions are independent).
"""
        path = ROOT / "BENCHMARKS.md"
        text = path.read_text()
        pattern = re.compile(rf"{re.escape(SECTION)}\n.*?(?=\n## |\Z)", re.S)
        text = (pattern.sub(section.rstrip("\n") + "\n", text) if pattern.search(text)
                else text.rstrip("\n") + "\n\n" + section)
        path.write_text(text)
        print("BENCHMARKS.md updated")


if __name__ == "__main__":
    main()
