"""``audit replay`` into a new SQLite file, with the partitions split over worker processes.

``lead.events`` is keyed by participant_id and a participant's state depends on nothing but its
own records, in its own partition's order (clock ticks included). So a group of partitions can
be replayed alone, by its own :class:`Replayer`, and gives exactly the rows a replay of the
whole topic gives for those participants. :func:`rebuild_view_file`:

1. splits the partitions into ``workers`` shares of about the same number of records;
2. replays share 0 in this process and every other share in a worker process (forked if this
   process has no other thread, else spawned), each with its own unmanaged Kafka consumer,
   started after the worker, so no Kafka client is ever inherited;
3. each share writes its final rows once, from its participant states, with no indexes: share 0
   into the output file, the others into files of their own next to it;
4. checks that no participant appears in two shares (else: a producer keyed a participant's
   records into two partitions; the shares would not be independent, so it replays the whole
   topic in this process instead, which is what a one-process replay always did);
5. copies the other shares' rows into the output (in SQLite), builds the indexes, commits, and
   renames the file to its target.

Any failure (broker, undecodable event, a worker that dies) removes every temporary file and
raises; the target only ever appears complete. Memory: each process holds its participants'
states, then, while writing, its share's distinct row JSON texts and one chunk of rows: it
follows the participants and their view, never the length of the log.
"""

from __future__ import annotations

import contextlib
import gc
import multiprocessing
import multiprocessing.connection
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

from consumers.audit.errors import ReplayError, SetupError
from consumers.audit.kafka_log import TopicReader
from consumers.audit.replay import LogReplay, Meter, Progress, Replayer
from consumers.audit.view_file import ViewFileWriter, temporary_path
from processors.projector import Projector
from processors.site import load_site
from schemas.catalog import Catalog, load_catalog
from schemas.errors import HubError
from schemas.kafka_connection import KafkaConnection

#: Records a worker counts before it publishes its count to the parent's progress line.
_PUBLISH_EVERY = 2048


@dataclass(frozen=True)
class CoreSpec:
    """How a worker process builds the pure core (the core's objects do not pickle)."""

    site_file: Path
    catalog_dir: Path | None = None

    def build(self) -> tuple[Projector, Catalog]:
        """Load the site policy and the catalog; return (projector, catalog)."""
        catalog = load_catalog(self.catalog_dir)
        return Projector(load_site(self.site_file), catalog), catalog


@dataclass(frozen=True)
class ShareJob:
    """One share of the replay: these partitions, up to these end offsets."""

    kafka: KafkaConnection
    topic: str
    end: dict[int, int]
    core: CoreSpec
    until: datetime | None
    client_id: str
    rows_file: Path


@dataclass(frozen=True)
class ShareResult:
    """What a share did: records read, records skipped, its participants and rows written."""

    records: int
    skipped: int
    participants: frozenset[str]
    rows: int
    seconds: dict[str, float]


@dataclass(frozen=True)
class RebuildResult:
    """The replay's counts (as :class:`LogReplay` and :class:`Replayer` count them)."""

    records: int
    skipped: int
    participants: int
    rows: int
    workers: int
    #: Wall seconds of this process's steps: ``replay`` (its share: Kafka, decode, core),
    #: ``rows`` (its share's rows), ``wait`` (for the workers), ``merge``, ``indexes``.
    seconds: dict[str, float] = field(default_factory=dict)


def split_partitions(end: Mapping[int, int], workers: int) -> list[dict[int, int]]:
    """Split the non-empty partitions into at most ``workers`` shares of similar record counts.

    Largest partitions first, each to the share with the fewest records so far; share 0 is the
    largest. Deterministic.
    """
    shares: list[dict[int, int]] = [{} for _ in range(max(1, workers))]
    sizes = [0] * len(shares)
    for partition, stop in sorted(end.items(), key=lambda item: (-item[1], item[0])):
        if stop <= 0:
            continue
        smallest = sizes.index(min(sizes))
        shares[smallest][partition] = stop
        sizes[smallest] += stop
    found = [share for share in shares if share]
    found.sort(key=lambda share: -sum(share.values()))
    return found or [{}]


def rebuild_view_file(kafka: KafkaConnection, topic: str, end: Mapping[int, int], core: CoreSpec,
                      target: Path, *, until: datetime | None = None, workers: int = 2,
                      progress: bool = False,
                      client_id: str = "leadhub-audit-replay") -> RebuildResult:
    """Replay ``topic`` from offset 0 up to ``end`` into the new SQLite file ``target``.

    ``until`` as in :class:`LogReplay`. ``workers``: processes to use (1: this one only).
    Raises :class:`SetupError` if ``target`` exists, :class:`ReplayError` or
    :class:`AuditError` if the replay fails (then no file is left behind).
    """
    if target.exists():
        raise SetupError(f"{target} exists: the replay writes a fresh view, pick a new file")
    if not target.parent.is_dir():
        raise SetupError(f"{target.parent} is not a directory: create it or pick another file")
    shares = split_partitions(end, workers)
    result = _rebuild(kafka, topic, shares, core, target, until, progress, client_id)
    if result is None:  # participants span shares: the shares are not independent
        result = _rebuild(kafka, topic, split_partitions(end, 1), core, target, until,
                          progress, client_id)
        assert result is not None
    return result


def _rebuild(kafka: KafkaConnection, topic: str, shares: list[dict[int, int]], core: CoreSpec,
             target: Path, until: datetime | None, progress: bool,
             client_id: str) -> RebuildResult | None:
    """One attempt; None if a participant turned up in two shares (nothing is left behind)."""
    output = temporary_path(target)
    jobs = [ShareJob(kafka, topic, share, core, until, f"{client_id}-{index}",
                     output if index == 0 else temporary_path(target, f"share{index}"))
            for index, share in enumerate(shares)]
    writer: ViewFileWriter | None = None
    workers: list[_Worker] = []
    try:
        workers = [_Worker.start(job) for job in jobs[1:]]
        meter = (Progress("replay", sum(sum(share.values()) for share in shares),
                          others=lambda: sum(w.count() for w in workers))
                 if progress else None)
        writer = ViewFileWriter(output)
        results = [_replay_share(jobs[0], meter, writer)]
        seconds = dict(results[0].seconds)
        clock = time.perf_counter()
        results.extend(worker.result(meter) for worker in workers)
        seconds["wait"] = time.perf_counter() - clock
        seen: set[str] = set()
        for share in results:
            if not seen.isdisjoint(share.participants):
                writer.discard()
                return None
            seen.update(share.participants)
        clock = time.perf_counter()
        for job in jobs[1:]:
            writer.append_file(job.rows_file)
            job.rows_file.unlink()
        seconds["merge"] = time.perf_counter() - clock
        clock = time.perf_counter()
        writer.complete(target)
        seconds["indexes"] = time.perf_counter() - clock
        if meter is not None:
            meter.line()
        return RebuildResult(
            records=sum(r.records for r in results), skipped=sum(r.skipped for r in results),
            participants=len(seen), rows=sum(r.rows for r in results), workers=len(shares),
            seconds=seconds)
    finally:
        for worker in workers:
            worker.stop()
        if writer is not None and writer.path != target:
            writer.discard()
        output.unlink(missing_ok=True)  # after complete(): only the temporary name is gone
        for job in jobs[1:]:
            job.rows_file.unlink(missing_ok=True)


def _replay_share(job: ShareJob, meter: Meter | None,
                  writer: ViewFileWriter | None = None) -> ShareResult:
    """Replay one share and write its rows (into ``writer``, or a file of its own, closed)."""
    projector, catalog = job.core.build()
    replayer = Replayer(projector, catalog)
    own = writer is None
    out = ViewFileWriter(job.rows_file) if writer is None else writer
    try:
        with _rare_collections():
            started = time.perf_counter()
            with TopicReader(job.kafka, job.topic, client_id=job.client_id) as reader:
                replay = LogReplay(reader, replayer, None, until=job.until, meter=meter)
                replay.run_to(job.end)
            replayed = time.perf_counter()
            rows = out.insert_states(replayer.states.values())
        if own:
            out.close()
    except BaseException:
        if own:
            out.discard()
        raise
    seconds = {"replay": replayed - started, "rows": time.perf_counter() - replayed}
    return ShareResult(replay.records, replayer.skipped, frozenset(replayer.states), rows,
                       seconds)


@contextlib.contextmanager
def _rare_collections() -> Iterator[None]:
    """Run the cyclic garbage collector rarely meanwhile (restored afterwards).

    The states grow by millions of small acyclic objects; with the default thresholds the
    collector keeps re-scanning them (about 8% of the replay's time). Reference counting still
    frees everything as usual; cycles are collected, only less often.
    """
    old = gc.get_threshold()
    gc.set_threshold(50000, 20, 100)
    try:
        yield
    finally:
        gc.set_threshold(*old)


class _SharedCount:
    """A worker's record count, published to the parent every few thousand records."""

    def __init__(self, value: Any) -> None:
        self.value = value
        self.done = 0
        self.publish_at = _PUBLISH_EVERY

    def advance(self, count: int = 1) -> None:
        """Count ``count`` more records; publish the count every few thousand."""
        self.done += count
        if self.done >= self.publish_at:
            self.value.value = self.done
            self.publish_at = self.done + _PUBLISH_EVERY


def _worker_main(job: ShareJob, value: Any, conn: multiprocessing.connection.Connection) -> None:
    """Entry point of a worker process: replay the share, send the result or the error."""
    try:
        result = _replay_share(job, _SharedCount(value))
        value.value = result.records
        conn.send(("ok", result))
    except HubError as exc:
        conn.send(("error", type(exc).__name__, str(exc)))
    except BaseException as exc:  # report, never hang the parent
        traceback.print_exc()
        conn.send(("error", type(exc).__name__, "see the worker's traceback on stderr"))
    finally:
        conn.close()


@dataclass
class _Worker:
    """A started worker process, its result pipe and its shared record count."""

    job: ShareJob
    process: BaseProcess
    conn: multiprocessing.connection.Connection
    value: Any

    @classmethod
    def start(cls, job: ShareJob) -> _Worker:
        """Start a worker process for ``job``.

        Forked when this process runs no other thread (then no lock or Kafka client state can
        be inherited half-way, and the worker starts at once), else spawned (a fresh
        interpreter: about half a second of imports).
        """
        forkable = (threading.active_count() == 1
                    and "fork" in multiprocessing.get_all_start_methods())
        context = (multiprocessing.get_context("fork") if forkable
                   else multiprocessing.get_context("spawn"))
        value = context.Value("q", 0, lock=False)
        receive, send = context.Pipe(duplex=False)
        process = context.Process(target=_worker_main, args=(job, value, send),
                                  name=f"leadhub-replay-{job.client_id}", daemon=True)
        process.start()
        send.close()
        return cls(job, process, receive, value)

    def count(self) -> int:
        """Records this worker has replayed so far (published every few thousand)."""
        return int(self.value.value)

    def result(self, meter: Progress | None) -> ShareResult:
        """Wait for the worker's result, printing progress meanwhile; raise its error."""
        tick: Callable[[], None] = (lambda: meter.advance(0)) if meter is not None else _nothing
        while not self.conn.poll(0.5):
            tick()
            if not self.process.is_alive() and not self.conn.poll(0):
                raise ReplayError(f"replay worker {self.job.client_id} exited with code "
                                  f"{self.process.exitcode} before reporting")
        try:
            message = self.conn.recv()
        except EOFError as exc:
            raise ReplayError(f"replay worker {self.job.client_id} exited before "
                              "reporting") from exc
        self.process.join()
        if message[0] != "ok":
            raise ReplayError(f"replay worker {self.job.client_id} failed: {message[1]}: "
                              f"{message[2]}")
        result: ShareResult = message[1]
        return result

    def stop(self) -> None:
        """End the process if it still runs (after a failure elsewhere) and reap it."""
        if self.process.is_alive():
            self.process.terminate()
        self.process.join(10)
        self.conn.close()


def _nothing() -> None:
    pass
