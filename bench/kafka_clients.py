"""Benchmark: per-message CPU of two Python Kafka clients doing the validator's work (issue 13).

kafka-python (the hub's first client, pure Python) against confluent-kafka (librdkafka), on the
local broker as its admin principal (SASL/SCRAM-SHA-512, ``kafka_setup``), on fresh 4-partition
topics under a prefix of the run's own (deleted at the end). The same ``--messages`` random
values of 200-400 bytes (the size of the hub's inbound Avro events), keyed by 1,000 participant
ids. Per client, in a **child process of its own** (this script with ``--child``) so that the
CPU (``getrusage(RUSAGE_SELF)``: every thread, the clients' I/O threads too) and the memory (RSS
once the library is imported and the messages made, and the peak: ``ru_maxrss``) are the
client's alone:

1. **produce** them with keys (acks=all, idempotent as the hub's producers, lz4 as the
   validator, linger 5 ms), then flush;
2. **consume** them with a fresh group (``read_committed``, no auto-commit);
3. **transact**, the validator's loop: a fresh group reads them (read_committed, at most 500
   per poll) and per polled batch ONE transaction: every record, value unchanged, to a second
   topic; the batch's offsets with the consumer's group metadata; commit.

Per phase: msg/s (consume and transact from the first poll that returned records, so the group
join does not count; their CPU covers the join too), CPU µs per message of the process and of
the broker (``/proc/<pid>/stat`` of the ``kafka.Kafka`` java process: shared, other work on it
counts too). Progress on stderr, a table (``--json``: JSON) on stdout. Exit codes: 0 figures
printed, 1 the run failed, 2 setup error (e.g. no broker).

    .venv/bin/python bench/kafka_clients.py [--messages 30000] [--clients kafka-python ...]

confluent-kafka is a dependency of the project (the partner SDK, the validator and the
projector: decisions 0002 and 0003).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import random
import resource
import subprocess
import sys
import time
import traceback
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from schemas.kafka_connection import KafkaConnection

# isort: split
# Siblings in bench/: run as a file, the script's folder is first on sys.path.
from kafka_setup import add_bootstrap_argument, bench_connection
from machine import machine_info
from pipeline_harness import BenchError, progress

CLIENTS = ("kafka-python", "confluent-kafka")
#: The validator's MAX_POLL_RECORDS: records per poll, hence per transaction.
BATCH = 500
POLL_S = 0.5
LINGER_MS = 5
#: Not the validator's 5 s: a busy shared machine must not abort a benchmark's transaction.
TRANSACTION_TIMEOUT_MS = 30_000
PARTICIPANTS = 1_000
PHASES = ("produce", "consume", "transact")

Messages = list[tuple[bytes, bytes]]


# --------------------------------------------------------------------------------------------
# Measuring


def broker_pid() -> int | None:
    """The pid of the Kafka broker on this machine (the java process running ``kafka.Kafka``)."""
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if b"kafka.Kafka\0" in (entry / "cmdline").read_bytes():
                    return int(entry.name)
    return None


def broker_cpu_s(pid: int | None) -> float | None:
    """User + system CPU seconds of process ``pid`` so far (None without a readable broker)."""
    if pid is None:
        return None
    with contextlib.suppress(OSError):
        # The process name in parentheses may hold spaces: the fields follow the last ")".
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return None


def peak_rss_mib() -> float:
    """This process's peak resident memory so far (``ru_maxrss``), in MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def process_cpu_s() -> float:
    """User + system CPU seconds of this process, every thread included."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


@dataclass
class Meter:
    """One phase's wall clock, this process's CPU and the broker's CPU from its start."""

    broker: int | None
    wall: float = 0.0
    cpu: float = 0.0
    broker_cpu: float | None = None
    first_records: float | None = None

    def start(self) -> Meter:
        """Start (or restart) the phase now; return self."""
        self.wall, self.cpu = time.monotonic(), process_cpu_s()
        self.broker_cpu = broker_cpu_s(self.broker)
        return self

    def figures(self, count: int, **extra: Any) -> dict[str, Any]:
        """The phase's figures for ``count`` messages, ending now."""
        wall, cpu, broker = time.monotonic(), process_cpu_s(), broker_cpu_s(self.broker)
        rate_from = self.first_records if self.first_records is not None else self.wall
        out: dict[str, Any] = {
            "messages": count, "wall_s": wall - self.wall,
            "msg_per_s": count / max(wall - rate_from, 1e-9),
            "cpu_s": cpu - self.cpu, "cpu_us_per_msg": (cpu - self.cpu) / count * 1e6,
            "broker_cpu_us_per_msg": None, **extra}
        if broker is not None and self.broker_cpu is not None:
            out["broker_cpu_us_per_msg"] = (broker - self.broker_cpu) / count * 1e6
        if self.first_records is not None:
            out["join_s"] = self.first_records - self.wall
        return out


def make_messages(count: int, seed: int) -> Messages:
    """``count`` (key, value) pairs: random values of 200-400 bytes, participant-like keys."""
    rng = random.Random(seed)
    keys = [f"p-{rng.getrandbits(64):016x}".encode() for _ in range(PARTICIPANTS)]
    return [(rng.choice(keys), rng.randbytes(rng.randint(200, 400))) for _ in range(count)]


# --------------------------------------------------------------------------------------------
# The two clients behind one surface (the phases below use only that)


class KafkaPython:
    """kafka-python 3, the hub's first client (the validator's loop before decision 0003)."""

    def __init__(self, conn: KafkaConnection) -> None:
        import kafka

        self.kafka, self.options, self.version = kafka, conn.client_options(), kafka.__version__

    def producer(self, topic: str, transactional_id: str | None = None) -> Any:
        """A producer as the hub's (acks=all, idempotent, lz4) with ``topic``'s metadata, its
        transactions initialized if ``transactional_id``."""
        txn = ({"transactional_id": transactional_id,
                "transaction_timeout_ms": TRANSACTION_TIMEOUT_MS} if transactional_id else {})
        producer = self.kafka.KafkaProducer(**self.options, acks="all", enable_idempotence=True,
                                            compression_type="lz4", linger_ms=LINGER_MS, **txn)
        producer.partitions_for(topic)
        if transactional_id:
            producer.init_transactions()
        return producer

    def send_all(self, producer: Any, topic: str, messages: Messages, timeout: float) -> int:
        """Send every (key, value) to ``topic``, flush; the number not delivered."""
        futures = [producer.send(topic, key=key, value=value) for key, value in messages]
        producer.flush(timeout=timeout)
        return sum(1 for future in futures if not future.succeeded())

    def consumer(self, group: str, topic: str) -> Any:
        """A read_committed consumer of a fresh group, no auto-commit, subscribed to ``topic``."""
        consumer = self.kafka.KafkaConsumer(
            **self.options, group_id=group, isolation_level="read_committed",
            enable_auto_commit=False, auto_offset_reset="earliest", max_poll_records=BATCH)
        consumer.subscribe(topics=[topic])
        return consumer

    def poll(self, consumer: Any) -> list[Any]:
        """One poll's records (at most BATCH), partition by partition as the validator's."""
        polled = consumer.poll(timeout_ms=int(POLL_S * 1000), max_records=BATCH)
        return [record for tp in sorted(polled) for record in polled[tp]]

    def size(self, records: list[Any]) -> int:
        """Bytes of the records' values (reading each, as a consumer would)."""
        return sum(len(record.value) for record in records)

    def transaction(self, producer: Any, consumer: Any, records: list[Any], topic: str) -> None:
        """The validator's transaction: every record to ``topic``, the offsets, commit."""
        group = consumer.group_metadata()
        producer.begin_transaction()
        futures = [producer.send(topic, key=r.key, value=r.value) for r in records]
        producer.flush(timeout=60)
        for future in futures:
            future.get(timeout=60)
        offsets = {self.kafka.TopicPartition(r.topic, r.partition):
                   self.kafka.OffsetAndMetadata(r.offset + 1, "", -1) for r in records}
        producer.send_offsets_to_transaction(offsets, group)
        producer.commit_transaction()


class Confluent:
    """confluent-kafka (librdkafka) doing the same with the same settings and principal."""

    def __init__(self, conn: KafkaConnection) -> None:
        import confluent_kafka

        self.ck = confluent_kafka
        self.version = f"{self.ck.__version__} (librdkafka {self.ck.libversion()[0]})"
        self.config: dict[str, Any] = conn.librdkafka_config()
        #: The hub's producer settings (acks=all, idempotence, murmur2 partitioner).
        self.producer_config: dict[str, Any] = conn.librdkafka_producer_config()

    def producer(self, topic: str, transactional_id: str | None = None) -> Any:
        """A producer as the hub's (acks=all, idempotent, lz4) with ``topic``'s metadata, its
        transactions initialized if ``transactional_id``."""
        txn = ({"transactional.id": transactional_id,
                "transaction.timeout.ms": TRANSACTION_TIMEOUT_MS} if transactional_id else {})
        producer = self.ck.Producer({**self.producer_config, "compression.type": "lz4",
                                     "linger.ms": LINGER_MS, **txn})
        producer.list_topics(topic, timeout=10)
        if transactional_id:
            producer.init_transactions(30)
        return producer

    @staticmethod
    def send(producer: Any, topic: str, key: bytes | None, value: bytes | None,
             on_delivery: Callable[[Any, Any], None] | None = None) -> None:
        """Produce one message; serve delivery reports, waiting while the local queue is full."""
        while True:
            try:
                producer.produce(topic, value=value, key=key, on_delivery=on_delivery)
                break
            except BufferError:
                producer.poll(0.05)
        producer.poll(0)

    def send_all(self, producer: Any, topic: str, messages: Messages, timeout: float) -> int:
        """Send every (key, value) to ``topic``, flush; the number not delivered."""
        failed = [0]

        def delivered(error: Any, _message: Any) -> None:
            failed[0] += error is not None

        for key, value in messages:
            self.send(producer, topic, key, value, delivered)
        return failed[0] + int(producer.flush(timeout))

    def consumer(self, group: str, topic: str) -> Any:
        """A read_committed consumer of a fresh group, no auto-commit, subscribed to ``topic``."""
        consumer = self.ck.Consumer({**self.config, "group.id": group,
                                     "isolation.level": "read_committed",
                                     "enable.auto.commit": False, "auto.offset.reset": "earliest"})
        consumer.subscribe([topic])
        return consumer

    def poll(self, consumer: Any) -> list[Any]:
        """One ``consume`` of at most BATCH messages; BenchError on an error message."""
        messages = list(consumer.consume(num_messages=BATCH, timeout=POLL_S))
        for message in messages:
            if message.error() is not None:
                raise BenchError(f"confluent-kafka consume: {message.error()}")
        return messages

    def size(self, messages: list[Any]) -> int:
        """Bytes of the messages' values (reading each, as a consumer would)."""
        return sum(len(message.value() or b"") for message in messages)

    def transaction(self, producer: Any, consumer: Any, messages: list[Any], topic: str) -> None:
        """The validator's transaction: every message to ``topic``, the positions, commit."""
        producer.begin_transaction()
        for message in messages:
            self.send(producer, topic, message.key(), message.value())
        producer.send_offsets_to_transaction(consumer.position(consumer.assignment()),
                                             consumer.consumer_group_metadata(), 30)
        producer.commit_transaction(60)


Client = KafkaPython | Confluent


# --------------------------------------------------------------------------------------------
# The phases, in a child process per client


def produce(client: Client, topic: str, messages: Messages, meter: Meter,
            timeout: float) -> dict[str, Any]:
    """Send every message with its key, then flush; the phase's figures."""
    producer = client.producer(topic)
    meter.start()
    failed = client.send_all(producer, topic, messages, timeout)
    result = meter.figures(len(messages), failed=failed)
    producer.close()
    return result


def drain(client: Client, consumer: Any, total: int, meter: Meter, timeout: float,
          handle: Callable[[list[Any]], None]) -> tuple[int, int]:
    """Poll until ``total`` records came, ``handle`` each non-empty batch; (records, batches).

    Marks the meter's first poll that returned records; BenchError after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    count = batches = 0
    while count < total:
        if time.monotonic() > deadline:
            raise BenchError(f"only {count:,} of {total:,} messages before the timeout")
        polled_at = time.monotonic()
        batch = client.poll(consumer)
        if batch:
            if meter.first_records is None:
                meter.first_records = polled_at
            handle(batch)
            count, batches = count + len(batch), batches + 1
    return count, batches


def consume(client: Client, topic: str, group: str, total: int, meter: Meter,
            timeout: float) -> dict[str, Any]:
    """Read ``total`` records with a fresh group; the phase's figures."""
    meter.start()
    consumer = client.consumer(group, topic)
    sizes: list[int] = []
    count, _ = drain(client, consumer, total, meter, timeout,
                     lambda batch: sizes.append(client.size(batch)))
    result = meter.figures(count, mib=sum(sizes) / 2**20)
    consumer.close()
    return result


def transact(client: Client, source: str, target: str, group: str, total: int, meter: Meter,
             timeout: float) -> dict[str, Any]:
    """The validator's loop over ``total`` records: one transaction per polled batch."""
    producer = client.producer(target, transactional_id=f"{group}-txn")
    meter.start()
    consumer = client.consumer(group, source)
    count, transactions = drain(
        client, consumer, total, meter, timeout,
        lambda batch: client.transaction(producer, consumer, batch, target))
    result = meter.figures(count, transactions=transactions)
    consumer.close()
    producer.close()
    return result


def topic_names(prefix: str, client: str) -> tuple[str, str]:
    """The client's input topic (produced, consumed, transacted from) and transact output."""
    return f"{prefix}{client}.in", f"{prefix}{client}.out"


def run_child(args: argparse.Namespace) -> dict[str, Any]:
    """The three phases with client ``args.child``; its figures, version and memory."""
    conn = bench_connection(args.bootstrap)
    messages = make_messages(args.messages, args.seed)
    source, target = topic_names(args.prefix, args.child)
    group, broker = f"{args.prefix}{args.child}", broker_pid()
    client: Client = KafkaPython(conn) if args.child == "kafka-python" else Confluent(conn)
    out: dict[str, Any] = {"version": client.version, "rss_imported_mib": peak_rss_mib()}
    progress(f"{args.child}: produce {len(messages):,} messages")
    out["produce"] = produce(client, source, messages, Meter(broker), args.timeout)
    progress(f"{args.child}: consume")
    out["consume"] = consume(client, source, f"{group}.consume", len(messages), Meter(broker),
                             args.timeout)
    progress(f"{args.child}: transact (consume -> produce, one transaction per batch)")
    out["transact"] = transact(client, source, target, f"{group}.transact", len(messages),
                               Meter(broker), args.timeout)
    out["peak_rss_mib"] = peak_rss_mib()
    return out


def run_parent(args: argparse.Namespace) -> dict[str, Any]:
    """Create the topics, run each client's child, delete the topics; every figure."""
    from kafka.errors import KafkaError

    from leadhub.kafka_admin import admin_client
    from leadhub.services import ServiceError
    from leadhub.topics_admin import delete_prefix

    admin = bench_connection(args.bootstrap)
    prefix = f"bench{uuid.uuid4().hex[:10]}."
    results: dict[str, Any] = {"machine": machine_info(), "clients": {}, "config": {
        "messages": args.messages, "partitions": args.partitions, "value_bytes": "200-400",
        "batch": BATCH, "compression": "lz4", "linger_ms": LINGER_MS,
        "broker_pid": broker_pid()}}
    if "confluent-kafka" in args.clients and importlib.util.find_spec("confluent_kafka") is None:
        raise BenchError("confluent-kafka is not installed: run `make setup`", exit_code=2)
    try:
        client = admin_client(admin, "leadhub-bench-clients")
    except ServiceError as exc:
        raise BenchError(f"{exc}; is the broker running? (`.venv/bin/leadhub services start`)",
                         exit_code=2) from exc
    try:
        try:
            client.create_topics({name: {"num_partitions": args.partitions,
                                         "replication_factor": 1}
                                  for c in args.clients for name in topic_names(prefix, c)},
                                 wait_for_metadata=True)
        except KafkaError as exc:
            raise BenchError(f"creating the topics failed: {type(exc).__name__}: {exc}") from exc
        finally:
            client.close()
        progress(f"topic prefix {prefix}; {args.messages:,} messages per client")
        for name in args.clients:
            averages = os.getloadavg()
            progress(f"{name}: child process; load average {load(averages)}")
            command = [sys.executable, __file__, "--child", name, "--prefix", prefix,
                       "--bootstrap", args.bootstrap, "--messages", str(args.messages),
                       "--seed", str(args.seed), "--timeout", str(args.timeout)]
            try:
                done = subprocess.run(command, stdout=subprocess.PIPE, text=True, check=False,
                                      timeout=4 * args.timeout)
            except subprocess.TimeoutExpired as exc:
                raise BenchError(f"{name}: the child did not finish in time") from exc
            if done.returncode != 0:
                raise BenchError(f"{name}: the child failed (exit code {done.returncode})")
            results["clients"][name] = {"load_before": averages, **json.loads(done.stdout)}
    finally:
        if not args.keep_topics:
            try:
                delete_prefix(admin, prefix)
            except ServiceError as exc:
                progress(f"could not delete the bench topics: {exc}")
    results["machine"]["load_after"] = os.getloadavg()
    return results


def load(averages: Sequence[float]) -> str:
    """Load averages (1, 5, 15 min) as ``0.52/0.61/0.58``."""
    return "/".join(f"{a:.2f}" for a in averages)


def render(results: dict[str, Any]) -> str:
    """The figures as a table: a column per client, and the first's figure over the last's."""
    clients, machine, config = results["clients"], results["machine"], results["config"]
    names = list(clients)
    ratio_head = f"{names[0]} / {names[-1]}" if len(names) > 1 else ""
    lines = [f"Kafka clients: {config['messages']:,} messages of {config['value_bytes']} bytes, "
             f"{config['partitions']} partitions, acks=all, idempotent, lz4, linger "
             f"{config['linger_ms']} ms; transactions of up to {config['batch']} records",
             f"machine: {machine['nproc']} cores (shared), {machine['cpu']}, Python "
             f"{machine['python']}; load average before each client: "
             + ", ".join(f"{n} {load(clients[n]['load_before'])}" for n in names), "",
             f"{'phase':<10} {'figure':<22}" + "".join(f"{n:>18}" for n in names)
             + f"   {ratio_head}"]

    def row(phase: str, label: str, values: list[Any], fmt: str, ratio: bool = True) -> None:
        cells = "".join(f"{'-' if v is None else format(v, fmt):>18}" for v in values)
        text = ""
        if ratio and len(values) > 1 and values[0] is not None and values[-1]:
            text = f"{values[0] / values[-1]:.2f}x"
        lines.append(f"{phase:<10} {label:<22}{cells}   {text:>{len(ratio_head)}}".rstrip())

    for phase in PHASES:
        figures = [clients[n][phase] for n in names]
        row(phase, "msg/s", [f["msg_per_s"] for f in figures], ",.0f")
        row("", "CPU µs/msg (client)", [f["cpu_us_per_msg"] for f in figures], ".1f")
        row("", "broker CPU µs/msg", [f["broker_cpu_us_per_msg"] for f in figures], ".1f")
        if phase == "transact":
            row("", "transactions", [f["transactions"] for f in figures], ",", ratio=False)
    row("memory", "RSS imported MiB", [clients[n]["rss_imported_mib"] for n in names], ".0f")
    row("", "peak RSS MiB", [clients[n]["peak_rss_mib"] for n in names], ".0f")
    lines += ["", "versions: " + "; ".join(f"{n} {clients[n]['version']}" for n in names)]
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Benchmark kafka-python against confluent-kafka on the local broker doing "
                    "the hub validator's work: produce (acks=all, idempotent, lz4), consume "
                    "(read_committed) and the transactional consume-transform-produce loop "
                    "(one transaction per polled batch of up to 500). Per phase: msg/s, CPU µs "
                    "per message of the client's process (each client in a child process) "
                    "and of the broker; peak RSS per client.")
    add_bootstrap_argument(parser)
    parser.add_argument("--messages", type=int, default=30_000,
                        help="messages per client and phase (%(default)s)")
    parser.add_argument("--partitions", type=int, default=4,
                        help="partitions of the bench's topics (%(default)s)")
    parser.add_argument("--clients", nargs="+", choices=CLIENTS, default=list(CLIENTS),
                        help="clients to run, in this order (default: both)")
    parser.add_argument("--seed", type=int, default=13, help="messages' seed (%(default)s)")
    parser.add_argument("--timeout", type=float, default=300.0,
                        help="seconds each phase may take (%(default)s)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument("--keep-topics", action="store_true",
                        help="do not delete the bench's topics at the end")
    parser.add_argument("--child", choices=CLIENTS, help=argparse.SUPPRESS)
    parser.add_argument("--prefix", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.messages < 1:
        print("bench/kafka_clients.py: --messages must be at least 1", file=sys.stderr)
        return 2
    try:
        if args.child:
            print(json.dumps(run_child(args)))
            return 0
        results = run_parent(args)
    except BenchError as exc:
        print(f"bench/kafka_clients.py: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("bench/kafka_clients.py: interrupted", file=sys.stderr)
        return 1
    except Exception:  # any other failure of the run: say what, exit 1
        traceback.print_exc()
        print("bench/kafka_clients.py: the run failed", file=sys.stderr)
        return 1
    print(json.dumps(results, indent=2) if args.json else render(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
