"""The pipeline benchmark's sink side: the in-process sink thread and what it committed when.

:class:`SinkThread` runs :class:`consumers.sink.ViewSink` in a thread of the bench process; its
``on_commit`` hook feeds :class:`CommitTracker`, which the phases wait on.
"""

from __future__ import annotations

import cProfile
import threading
import time
from collections.abc import Iterable, Sequence

from consumers.sink import ViewSink
from consumers.store import RowChange, ViewStore

# isort: split
# Siblings in bench/: run as a file, the script's folder is first on sys.path.
from pipeline_harness import progress


class CommitTracker:
    """Fed by the sink's ``on_commit``: when each own row and each retraction was committed.

    Times are wall-clock (``time.time()``) so they compare with Kafka record timestamps.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self.visible: dict[str, float] = {}
        self.retracted: dict[tuple[str, str], float] = {}
        self._missing: set[str] = set()
        self._watched: set[tuple[str, str]] = set()
        self.upserted: dict[tuple[str, str], float] = {}
        self.batches = 0
        self.changes = 0

    def on_commit(self, changes: Sequence[RowChange]) -> None:
        """Record the commit time of the batch's own rows and retractions (first one wins)."""
        now = time.time()
        with self._cond:
            self.batches += 1
            self.changes += len(changes)
            for change in changes:
                key = (change.recipient, change.event_id)
                if change.row is None:
                    self.retracted.setdefault(key, now)
                    continue
                if key in self._watched:
                    self.upserted.setdefault(key, now)
                if (change.row.get("source_partner") == change.recipient
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


class SinkThread:
    """The in-process :class:`ViewSink`, in a thread, optionally under cProfile."""

    def __init__(self, bootstrap: str, topic: str, store: ViewStore, tracker: CommitTracker,
                 *, profile: bool) -> None:
        self.sink = ViewSink(bootstrap, topic, store, on_commit=tracker.on_commit)
        self.stop = threading.Event()
        self.profiler = cProfile.Profile() if profile else None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="view-sink", daemon=True)

    def _run(self) -> None:
        try:
            if self.profiler is not None:
                self.profiler.runcall(self.sink.run, self.stop)
            else:
                self.sink.run(self.stop)
        except BaseException as exc:  # reported by the main thread
            self.error = exc

    def start(self) -> None:
        self.thread.start()

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=30)
        self.sink.close()
