"""Benchmark: what one faust agent costs per message before any leadhub code runs.

Prefills a topic with N messages (500 bytes, keyed as the inbound topics are), then, each in a
fresh process over the same messages:

- ``raw``: a bare kafka-python consumer (the ceiling, as in ``bench/pipeline.py``);
- ``faust``: a no-op faust agent (``take_events`` batches, as the hub's steps consume), stock
  aiokafka transport on asyncio's loop;
- ``faust+uvloop``: the same agent on uvloop (what ``leadhub run`` uses);
- ``... produce``: the agent also produces one message per message consumed and awaits the
  acknowledgements per batch (the minimum a hub step does).

Prints messages/s, CPU microseconds per message and peak RSS for each, and the ratio to raw.
Every leadhub step pays this floor per message; the pipeline has two such steps per event.

    .venv/bin/python bench/faust_floor.py [--messages N] [--bootstrap HOST:PORT]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent

# isort: split
# A sibling in bench/: run as a file, the script's folder is first on sys.path.
from machine import load_average, machine_info  # noqa: E402

PARTITIONS = 6
VALUE_BYTES = 500
#: (name, event loop, produce one message per message)
CASES = (
    ("faust", "asyncio", False),
    ("faust+uvloop", "uvloop", False),
    ("faust produce", "asyncio", True),
    ("faust+uvloop produce", "uvloop", True),
)


def prefill(bootstrap: str, topic: str, count: int) -> None:
    """Create ``topic`` and write ``count`` messages to it, LZ4-compressed as the SDK writes."""
    from kafka import KafkaProducer
    from kafka.admin import KafkaAdminClient, NewTopic

    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        admin.create_topics([NewTopic(topic, PARTITIONS, 1)])
    finally:
        admin.close()
    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, compression_type="lz4",
                             batch_size=256 * 1024)
    value = os.urandom(VALUE_BYTES // 2) * 2
    for index in range(count):
        producer.send(topic, key=f"participant-{index % 5000}".encode(), value=value)
    producer.flush()
    producer.close()


def raw_consume(bootstrap: str, topic: str, count: int) -> dict[str, Any]:
    """A bare KafkaConsumer reading the ``count`` messages: the ceiling."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None,
                             enable_auto_commit=False)
    partitions = [TopicPartition(topic, p) for p in range(PARTITIONS)]
    consumer.assign(partitions)
    consumer.seek_to_beginning(*partitions)
    seen = 0
    started, cpu = time.perf_counter(), time.process_time()
    while seen < count:
        for records in consumer.poll(timeout_ms=500, max_records=5000).values():
            seen += len(records)
    figures = _figures(seen, time.perf_counter() - started, time.process_time() - cpu)
    consumer.close()
    return figures


def faust_consume(bootstrap: str, topic: str, count: int, loop: str, produce: bool,
                  datadir: str) -> None:
    """Run a faust worker whose agent counts (and maybe forwards) ``count`` messages; exits."""
    if loop == "uvloop":
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    import faust
    import mode

    tag = uuid.uuid4().hex[:8]
    app = faust.App(f"bench-floor-{tag}", broker=f"kafka://{bootstrap}", store="memory://",
                    web_enabled=False, topic_partitions=PARTITIONS,
                    consumer_auto_offset_reset="earliest", producer_acks=-1,
                    producer_compression_type="lz4", broker_commit_every=1000,
                    broker_commit_interval=0.5, agent_supervisor=mode.CrashingSupervisor,
                    datadir=datadir)
    raw: dict[str, Any] = {"key_type": bytes, "value_type": bytes,
                           "key_serializer": "raw", "value_serializer": "raw"}
    source = app.topic(topic, **raw)
    sink_topic = f"{topic}-out"
    seen = 0
    started = cpu = 0.0

    @app.agent(source, name="floor")
    async def floor(stream: Any) -> Any:
        nonlocal seen, started, cpu
        async for batch in stream.take_events(1000, within=0.1):
            if not seen:
                started, cpu = time.perf_counter(), time.process_time()
            if produce:
                futures = [await app.producer.send(sink_topic, e.key, e.value, None, None, None)
                           for e in batch]
                await asyncio.gather(*futures)
            seen += len(batch)
            if seen >= count:
                figures = _figures(seen, time.perf_counter() - started,
                                   time.process_time() - cpu)
                print(json.dumps(figures), flush=True)
                os._exit(0)  # the figures are out; a clean faust shutdown takes seconds
            yield None

    worker = faust.Worker(app, loglevel="ERROR", quiet=True, redirect_stdouts=False)
    worker.spinner = None
    worker.execute_from_commandline()


def _figures(count: int, elapsed: float, cpu: float) -> dict[str, Any]:
    """Rate, CPU per message and peak RSS of this process."""
    return {"messages": count, "elapsed_s": elapsed, "messages_per_s": count / elapsed,
            "cpu_us_per_message": cpu / count * 1e6,
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def run_case(args: argparse.Namespace, topic: str, case: tuple[str, str, bool]
             ) -> dict[str, Any]:
    """Run one case in a fresh process (faust's data in a temporary directory); its figures."""
    name, loop, produce = case
    with tempfile.TemporaryDirectory(prefix="leadhub-bench-floor-") as datadir:
        return _run_child(args, topic, name, [loop, produce, datadir])


def _run_child(args: argparse.Namespace, topic: str, name: str, spec: list[Any]
               ) -> dict[str, Any]:
    command = [sys.executable, __file__, "--child", json.dumps(spec),
               "--topic", topic, "--messages", str(args.messages),
               "--bootstrap", args.bootstrap]
    done = subprocess.run(command, capture_output=True, text=True, timeout=args.timeout,
                          check=False, cwd=ROOT)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if not lines:
        raise SystemExit(f"{name}: no figures (exit {done.returncode}):\n{done.stderr[-2000:]}")
    return dict(json.loads(lines[-1]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=100_000,
                        help="messages to prefill and consume per case (default 100000)")
    parser.add_argument("--bootstrap", default=os.environ.get("LEADHUB_KAFKA_BOOTSTRAP",
                                                              "127.0.0.1:39092"),
                        help="Kafka bootstrap servers (default: $LEADHUB_KAFKA_BOOTSTRAP or "
                             "the local launcher's 127.0.0.1:39092)")
    parser.add_argument("--timeout", type=float, default=300.0,
                        help="seconds each case may take (default 300)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--topic", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        loop, produce, datadir = json.loads(args.child)
        faust_consume(args.bootstrap, args.topic, args.messages, loop, produce, datadir)
        return 1  # faust_consume exits the process once it has its figures

    info = machine_info()
    print(f"machine: {info['nproc']} cores, {info['cpu']}, Python {info['python']}, "
          f"load {info['load_before'][0]:.2f}")
    topic = f"bench-floor-{uuid.uuid4().hex[:8]}"
    print(f"prefilling {topic}: {args.messages:,} messages of {VALUE_BYTES} bytes, "
          f"{PARTITIONS} partitions", flush=True)
    prefill(args.bootstrap, topic, args.messages)
    raw = raw_consume(args.bootstrap, topic, args.messages)
    rows = [("raw kafka-python", raw)]
    for case in CASES:
        print(f"running {case[0]} ...", flush=True)
        rows.append((case[0], run_case(args, topic, case)))
    print(f"\n{'case':<24}{'msg/s':>10}{'CPU us/msg':>12}{'peak RSS MiB':>14}{'x raw':>8}")
    for name, figures in rows:
        print(f"{name:<24}{figures['messages_per_s']:>10,.0f}"
              f"{figures['cpu_us_per_message']:>12.1f}{figures['peak_rss_mib']:>14.0f}"
              f"{figures['messages_per_s'] / raw['messages_per_s']:>8.3f}")
    print(f"load after: {load_average()[0]:.2f}")
    delete_topics(args.bootstrap, [topic, f"{topic}-out"])
    return 0


def delete_topics(bootstrap: str, names: list[str]) -> None:
    """Delete the run's topics (those that exist)."""
    from kafka.admin import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        admin.delete_topics([name for name in names if name in admin.list_topics()])
    finally:
        admin.close()


if __name__ == "__main__":
    sys.exit(main())
