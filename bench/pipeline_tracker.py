"""The pipeline benchmark's projector side: the in-process projector and what it committed when.

:class:`ProjectorThread` runs the hub's :class:`consumers.live_projector.LiveProjector` (the
same class ``leadhub run projector`` runs) in a thread of the bench process. Its ``on_commit``
hook, called right after each batch's database transaction committed, feeds
:class:`CommitTracker`, which the phases wait on; a thin wrapper around its consumer's ``poll``
records when each ``lead.events`` record reached the projector (:class:`PollClock`), for the
per-stage breakdown.
"""

from __future__ import annotations

import bisect
import contextlib
import cProfile
import os
import resource
import threading
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from consumers.live_projector import LiveProjector
from consumers.store import ViewStore
from processors.projector import Projector
from processors.site import SitePolicy
from processors.view import ViewChange
from schemas.catalog import Catalog
from schemas.kafka_connection import KafkaConnection
from schemas.topics import TopicNames

# isort: split
# Siblings in bench/: run as a file, the script's folder is first on sys.path.
from pipeline_harness import BenchError, progress

#: The in-process projector's Kafka client id; its client threads are named after it.
PROJECTOR_CLIENT_ID = "leadhub-bench-projector"


class CommitTracker:
    """Fed by the projector's ``on_commit``: when each own row and each retraction committed.

    An event's *own row* is the row of its source partner (every partner sees what it
    published). Times are wall-clock (``time.time()``) so they compare with Kafka record
    timestamps.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self.visible: dict[str, float] = {}
        self.retracted: dict[tuple[str, str], float] = {}
        self._missing: set[str] = set()
        self._watched: set[tuple[str, str]] = set()
        self.upserted: dict[tuple[str, str], float] = {}
        self.commits: list[float] = []
        self.batches = 0
        self.changes = 0

    def on_commit(self, changes: Sequence[ViewChange]) -> None:
        """Record the commit time of the batch's own rows and retractions (first one wins)."""
        now = time.time()
        with self._cond:
            self.batches += 1
            self.changes += len(changes)
            self.commits.append(now)
            for change in changes:
                if change.row is None:
                    self.retracted.setdefault((change.recipient, change.event_id), now)
                    continue
                if self._watched and (change.recipient, change.event_id) in self._watched:
                    self.upserted.setdefault((change.recipient, change.event_id), now)
                if (change.row.source_partner == change.recipient
                        and change.event_id not in self.visible):
                    self.visible[change.event_id] = now
                    self._missing.discard(change.event_id)
            self._cond.notify_all()

    def expect(self, event_ids: Iterable[str]) -> None:
        """Start waiting for the own rows of ``event_ids`` (before they are sent)."""
        with self._cond:
            self._missing = {e for e in event_ids if e not in self.visible}

    def watch(self, keys: Iterable[tuple[str, str]]) -> None:
        """Also record upserts of these (recipient, event_id) rows, whoever the source."""
        with self._cond:
            self._watched.update(keys)

    def wait_upserted(self, keys: Sequence[tuple[str, str]], timeout_s: float) -> bool:
        """Wait until every one of ``keys`` has been upserted."""
        with self._cond:
            return self._cond.wait_for(lambda: all(k in self.upserted for k in keys),
                                       timeout=timeout_s)

    def missing(self) -> int:
        with self._cond:
            return len(self._missing)

    def wait_all_visible(self, timeout_s: float, what: str) -> bool:
        """Wait until every expected own row is committed; progress every 5 s."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while self._missing:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                if not self._cond.wait_for(lambda: not self._missing, timeout=min(left, 5.0)):
                    progress(f"{what}: {len(self._missing):,} rows still to commit")
            return True

    def wait_retracted(self, key: tuple[str, str], timeout_s: float) -> float | None:
        """The commit time of the retraction of (recipient, event_id), or None on timeout."""
        with self._cond:
            self._cond.wait_for(lambda: key in self.retracted, timeout=timeout_s)
            return self.retracted.get(key)


class PollClock:
    """Wraps a KafkaConsumer: remembers when each polled offset range came back from ``poll``.

    Every other attribute is the consumer's own. The cost is one ``time.time()`` and a list
    append per partition and poll.
    """

    def __init__(self, consumer: Any) -> None:
        self._consumer = consumer
        self._lock = threading.Lock()
        #: partition -> [(last offset of a polled range, poll time)], in poll order.
        self.ranges: dict[int, list[tuple[int, float]]] = {}
        self._index: dict[int, tuple[list[int], list[float]]] | None = None

    def poll(self, *args: Any, **kwargs: Any) -> Any:
        polled = self._consumer.poll(*args, **kwargs)
        if polled:
            now = time.time()
            with self._lock:
                for tp, records in polled.items():
                    if records:
                        self.ranges.setdefault(tp.partition, []).append(
                            (records[-1].offset, now))
        return polled

    def polled_at(self, partition: int, offset: int) -> float | None:
        """When ``offset`` of ``partition`` first came back from a poll (None if never).

        Meant for after the run: the first call indexes the ranges polled so far.
        """
        with self._lock:
            if self._index is None:
                # Ascending last offsets; a rollback's re-read only repeats earlier offsets,
                # so keeping the running maximum keeps each offset's first poll.
                self._index = {}
                for p, ranges in self.ranges.items():
                    lasts: list[int] = []
                    times: list[float] = []
                    for last, at in ranges:
                        if not lasts or last > lasts[-1]:
                            lasts.append(last)
                            times.append(at)
                    self._index[p] = (lasts, times)
            lasts, times = self._index.get(partition, ([], []))
            index = bisect.bisect_left(lasts, offset)
            return times[index] if index < len(lasts) else None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._consumer, name)


class ProjectorThread:
    """The hub's :class:`LiveProjector` in a thread of this process, optionally under cProfile.

    The SQL writes, the policy core and the Kafka reads are exactly ``leadhub run projector``'s;
    only the process differs (it shares the bench process with the SDK publishers).
    """

    def __init__(self, kafka: KafkaConnection, topics: TopicNames, store: ViewStore,
                 site: SitePolicy, catalog: Catalog, tracker: CommitTracker, *,
                 profile: bool) -> None:
        self.projector = LiveProjector(kafka, topics, store, Projector(site, catalog),
                                       catalog, client_id=PROJECTOR_CLIENT_ID,
                                       on_commit=tracker.on_commit)
        self.clock = PollClock(self.projector.consumer)
        self.projector.consumer = self.clock
        self.stop = threading.Event()
        self.profiler = cProfile.Profile() if profile else None
        self.error: BaseException | None = None
        self.native_id: int | None = None
        self.thread = threading.Thread(target=self._run, name="live-projector", daemon=True)
        self._closed = False

    def _run(self) -> None:
        self.native_id = threading.get_native_id()
        try:
            if self.profiler is not None:
                self.profiler.runcall(self.projector.run, self.stop)
            else:
                self.projector.run(self.stop)
        except BaseException as exc:  # reported by the main thread
            self.error = exc

    def start(self) -> None:
        self.thread.start()

    def check_alive(self) -> None:
        """Raise BenchError (with the projector's own error) if its thread has ended."""
        if self.error is not None:
            raise BenchError(f"the projector failed: {self.error!r}") from self.error
        if not self._closed and self.thread.ident is not None and not self.thread.is_alive():
            raise BenchError("the projector thread ended")

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.stop.set()
        self.thread.join(timeout=30)
        self.projector.close()


def own_cpu() -> dict[str, float]:
    """CPU seconds (user + system) of this process: ``total``, and ``projector`` for the
    projector's thread plus its Kafka clients' I/O threads (named after its client id)."""
    ticks = os.sysconf("SC_CLK_TCK")
    names = {t.native_id: t.name for t in threading.enumerate() if t.native_id is not None}
    projector = 0.0
    with contextlib.suppress(OSError):
        for task in Path("/proc/self/task").iterdir():
            with contextlib.suppress(OSError, IndexError, ValueError):
                name = names.get(int(task.name), "")
                if name == "live-projector" or PROJECTOR_CLIENT_ID in name:
                    fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
                    projector += (int(fields[11]) + int(fields[12])) / ticks
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {"total": usage.ru_utime + usage.ru_stime, "projector": projector}
