"""The parts of ``bench/scale.py``: the log writer, the projector instances and what watches
them, and a run kept in a folder to be resumed."""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import math
import pickle
import signal
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError

from consumers.projection_store import participant_events, participant_heads
from consumers.store import ViewStore, indexed_rows, shared_rows
from schemas.canonical import CanonicalRecord, encode_canonical
from schemas.catalog import Catalog
from schemas.codec import encode
from schemas.errors import HubError
from schemas.event import Event
from schemas.kafka_connection import KafkaConnection
from schemas.topics import TopicNames

# isort: split
from pipeline_harness import BenchError, Budget, Children, cpu_seconds_of, progress, vm_hwm_mib

START = datetime(2025, 1, 1, tzinfo=UTC)

class LogWriter:
    """Streams the simulated year into ``lead.events``, CLOCK ticks between the events (as
    ``kafka``'s principal, the bench's admin: the validator is not part of this bench)."""

    def __init__(self, kafka: KafkaConnection, topics: TopicNames, catalog: Catalog,
                 partitions: int, tick: timedelta) -> None:
        self.topics = topics
        self.catalog = catalog
        self.partitions = partitions
        self.tick = tick
        self.next_tick = START + tick
        self.producer = KafkaProducer(**kafka.client_options(), acks="all", linger_ms=20,
                                      batch_size=512 * 1024, compression_type="lz4",
                                      client_id="leadhub-bench-scale-writer")
        self.events = 0
        self.ticks = 0
        self.seconds = 0.0

    def write(self, events: Iterator[Event], what: str) -> None:
        """Produce ``events`` (in time order) and the ticks due before each; then flush."""
        started = time.perf_counter()
        last_report = time.monotonic()
        for event in events:
            while self.next_tick <= event.occurred_at:
                clock = encode_canonical(CanonicalRecord("CLOCK", self.next_tick, "hub", "", -1,
                                                         -1, b""))
                for partition in range(self.partitions):
                    self.producer.send(self.topics.events, value=clock, partition=partition)
                self.ticks += self.partitions
                self.next_tick += self.tick
            source = event.source_partner or ""
            record = CanonicalRecord("EVENT", event.occurred_at, source,
                                     self.topics.inbound(source), 0, self.events,
                                     encode(event, self.catalog))
            self.producer.send(self.topics.events, key=event.participant_id.encode(),
                               value=encode_canonical(record))
            self.events += 1
            if time.monotonic() - last_report >= 15:
                last_report = time.monotonic()
                progress(f"{what}: {self.events:,} events written (simulated "
                         f"{event.occurred_at:%Y-%m-%d})")
        self.producer.flush(timeout=300)
        self.seconds += time.perf_counter() - started

    def close(self) -> None:
        self.producer.close(timeout=10)


def until(events: Iterator[Event], moment: datetime,
          holder: list[Event]) -> Iterator[Event]:
    """The events before ``moment``; the first one at or after it is left in ``holder``."""
    for event in events:
        if event.occurred_at >= moment:
            holder.append(event)
            return
        yield event


def take(events: Iterator[Event], count: int) -> Iterator[Event]:
    for _, event in zip(range(count), events, strict=False):
        yield event


def all_but_last(events: Iterator[Event], count: int,
                 tail: collections.deque[Event]) -> Iterator[Event]:
    """Every event but the last ``count``, which are left in ``tail`` (maxlen ``count``)."""
    for event in events:
        if len(tail) == count:
            yield tail.popleft()
        tail.append(event)


@dataclass
class Instance:
    """One projector process's life."""

    name: str
    pid: int
    started: float
    first_commit_s: float = math.nan
    first_batch_records: int = 0
    caught_up_s: float = math.nan
    records_at_start: int = 0
    vm_hwm_mib: float = math.nan
    rss_samples_mib: list[float] = field(default_factory=list)
    cpu_s: float = math.nan
    records_at_stop: int = 0


class Watcher:
    """Reads the projector's tracking rows and the process's memory, from the bench process."""

    def __init__(self, database_url: str, topic: str) -> None:
        self.store = ViewStore(database_url)
        self.topic = topic

    def tracked(self) -> dict[int, int]:
        """Next offset per partition in the view's tracking rows ({} before the first batch)."""
        with contextlib.suppress(HubError, SQLAlchemyError):
            return self.store.committed_offsets(self.topic)
        return {}

    def counts(self) -> dict[str, int]:
        """Rows of the view's tables (each distinct row of an event once, ``shared_rows``; the
        indexed types' entries per recipient, ``indexed_rows``), participant heads and stored
        events. Not the rows per recipient: the ``view_rows`` SQL view would join every shared
        row with every recipient to count them."""
        out: dict[str, int] = {}
        with self.store.engine.connect() as connection:
            for name, table in (("shared_rows", shared_rows), ("indexed_rows", indexed_rows),
                                ("participants", participant_heads),
                                ("stored_events", participant_events)):
                out[name] = int(connection.execute(
                    select(func.count()).select_from(table)).scalar_one())
        return out

    def close(self) -> None:
        self.store.close()


def end_offsets(kafka: KafkaConnection, topic: str, partitions: int) -> dict[int, int]:
    consumer = KafkaConsumer(**kafka.client_options(), group_id=None,
                             client_id="leadhub-bench-scale-ends")
    try:
        ends = consumer.end_offsets([TopicPartition(topic, p) for p in range(partitions)])
        return {tp.partition: int(offset) for tp, offset in ends.items()}
    finally:
        consumer.close()


def rss_mib(pid: int) -> float:
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return math.nan


class Scale:
    """The run: the child projector instances, the writer and the watcher."""

    def __init__(self, args: argparse.Namespace, kafka: KafkaConnection, children: Children,
                 writer: LogWriter, watcher: Watcher, budget: Budget) -> None:
        self.args = args
        self.kafka = kafka
        self.children = children
        self.writer = writer
        self.watcher = watcher
        self.budget = budget
        self.instances: list[Instance] = []
        self.current: Instance | None = None

    def start(self) -> Instance:
        name = f"projector-{len(self.instances) + 1}"
        before = sum(self.watcher.tracked().values())
        cache = ({"LEADHUB_PROJECTOR_CACHE": str(self.args.cache_weight)}
                 if self.args.cache_weight is not None else None)
        started = time.monotonic()
        self.children.start("projector", name, extra_env=cache)
        instance = Instance(name, self.children.procs[name].pid, started,
                            records_at_start=before)
        self.instances.append(instance)
        self.current = instance
        return instance

    def sample(self) -> None:
        if self.current is not None:
            self.current.rss_samples_mib.append(rss_mib(self.current.pid))

    def wait_first_commit(self, timeout_s: float) -> float:
        """Seconds from the current instance's start to its first committed batch."""
        instance = self.current
        assert instance is not None
        deadline = time.monotonic() + self.budget.cap(timeout_s)
        next_sample = time.monotonic()
        while time.monotonic() < deadline:
            tracked = sum(self.watcher.tracked().values())
            if tracked > instance.records_at_start:
                instance.first_commit_s = time.monotonic() - instance.started
                instance.first_batch_records = tracked - instance.records_at_start
                return instance.first_commit_s
            if time.monotonic() >= next_sample:
                self.children.check_alive()
                self.sample()
                next_sample += 1.0
            time.sleep(0.01)
        raise BenchError(f"{instance.name} committed nothing within {timeout_s:.0f} s:\n"
                         + self.children.log_tail(instance.name))

    def wait_caught_up(self, what: str) -> float:
        """Wait until the tracking rows reach the end of the log; seconds since the instance
        started."""
        instance = self.current
        assert instance is not None
        ends = end_offsets(self.kafka, self.writer.topics.events, self.args.partitions)
        total = sum(ends.values())
        deadline = time.monotonic() + self.budget.cap(86400.0)
        last_report = time.monotonic()
        while True:
            tracked = self.watcher.tracked()
            if all(tracked.get(p, 0) >= end for p, end in ends.items()):
                instance.caught_up_s = time.monotonic() - instance.started
                return instance.caught_up_s
            if time.monotonic() > deadline:
                raise BenchError(f"{what}: the projector did not catch up within the budget")
            self.children.check_alive()
            self.sample()
            if time.monotonic() - last_report >= 15:
                last_report = time.monotonic()
                progress(f"{what}: {sum(tracked.values()):,} of {total:,} records projected, "
                         f"projector RSS {instance.rss_samples_mib[-1]:,.0f} MiB")
            time.sleep(1.0)

    def stop(self) -> None:
        instance = self.current
        assert instance is not None
        instance.vm_hwm_mib = vm_hwm_mib(instance.pid) or math.nan
        instance.cpu_s = cpu_seconds_of(instance.pid) or math.nan
        sig = signal.SIGKILL if self.args.restart_signal == "kill" else signal.SIGTERM
        code = self.children.stop(instance.name, sig)
        instance.records_at_stop = sum(self.watcher.tracked().values())  # its last batch too
        progress(f"{instance.name} stopped ({code}); peak RSS {instance.vm_hwm_mib:,.0f} MiB, "
                 f"CPU {instance.cpu_s:,.1f} s")
        self.current = None


class RunDir:
    """A run kept in a folder (``--run-dir``) to be resumed once its log is written: ``run.json``
    (the arguments, the topic prefix, the writer's position, the projectors and restarts so far),
    ``tail.pickle`` (the last ``--probe`` events, not yet written), the view, the logs."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.state_file = path / "run.json"
        self.tail_file = path / "tail.pickle"

    def load(self) -> dict[str, Any]:
        try:
            return dict(json.loads(self.state_file.read_text()))
        except (OSError, ValueError) as exc:
            raise BenchError(f"{self.state_file} cannot be resumed: {exc}", exit_code=2) from exc

    def save(self, state: dict[str, Any], tail: Sequence[Event]) -> None:
        """Write the tail, then the state (renamed into place: a run.json is always whole)."""
        self.tail_file.write_bytes(pickle.dumps(list(tail)))
        scratch = self.state_file.with_suffix(".tmp")
        scratch.write_text(json.dumps(state, default=str))
        scratch.replace(self.state_file)

    def tail(self) -> list[Event]:
        return list(pickle.loads(self.tail_file.read_bytes()))


class Interrupted(BenchError):
    """The bench was stopped; with ``resumable`` the run goes on with ``--resume``."""

    resumable = False
