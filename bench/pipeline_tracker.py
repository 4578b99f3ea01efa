"""The pipeline benchmark's projector side: the projector processes and what they committed when.

:class:`ProjectorChildren` starts ``--projectors`` child processes of
``pipeline_projector_child.py``, each the hub's :class:`consumers.live_projector.LiveProjector`
(the class ``leadhub run projector`` runs) in a process of its own, all in one consumer group,
and reads each child's standard output in a thread of this process (one JSON line per committed
batch, see the child's docstring). The commit lines feed :class:`CommitTracker`, which the
phases wait on; the poll lines feed :class:`PollIndex`, when each ``lead.events`` record
reached a projector, for the per-stage breakdown. Every time is the child's ``time.time()``,
taken where the old in-process hook took it: right after ``poll`` returned, right after the
batch's database transaction committed.
"""

from __future__ import annotations

import bisect
import contextlib
import fcntl
import json
import os
import resource
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import IO, Any, TypeVar

# isort: split
# Siblings in bench/: run as a file, the script's folder is first on sys.path.
from pipeline_harness import BenchError, Children, progress
from pipeline_projector_child import COMMIT, END, POLL, WATCH, WATCHING

#: The projector children's script and the prefix of their Kafka client ids (``-1``, ``-2``...).
CHILD_SCRIPT = Path(__file__).resolve().with_name("pipeline_projector_child.py")
PROJECTOR_CLIENT_ID = "leadhub-bench-projector"
#: The names of this process's threads that read the children's output.
READER_THREAD = "projector-reader"
#: The CPU line of those threads: measurement, not the pipeline; not in the run's total.
READERS_CPU = "bench process: reading the projectors' output (measurement, not in the total)"
#: The capacity asked for each child's stdout pipe: a batch's line (up to about 40 bytes an
#: event) fits without the child waiting for this process to read.
PIPE_BYTES = 1 << 20

#: (recipient, event_id) of a view row.
RowKey = tuple[str, str]
_Key = TypeVar("_Key")


class CommitTracker:
    """Fed by the projectors' commit lines: when each own row and each retraction committed.

    An event's *own row* is the row of its source partner (every partner sees what it
    published). Times are wall-clock (``time.time()``) so they compare with Kafka record
    timestamps; with several projectors the earliest commit of a row wins.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self.visible: dict[str, float] = {}
        self.retracted: dict[RowKey, float] = {}
        self._missing: set[str] = set()
        self.upserted: dict[RowKey, float] = {}
        self.commits: list[float] = []
        self.batches = 0
        self.changes = 0
        #: Passes watch requests on to the projectors (set by :class:`ProjectorChildren`).
        self.forward_watch: Callable[[list[RowKey]], None] | None = None

    def record(self, at: float, changes: int, own: Sequence[str],
               retracted: Sequence[Sequence[str]], upserted: Sequence[Sequence[str]]) -> None:
        """One committed batch: its commit time, its number of view changes, its own rows'
        event ids, its retracted and its watched upserted rows."""
        with self._cond:
            self.batches += 1
            self.changes += changes
            self.commits.append(at)
            for recipient, event_id in retracted:
                _earliest(self.retracted, (recipient, event_id), at)
            for recipient, event_id in upserted:
                _earliest(self.upserted, (recipient, event_id), at)
            for event_id in own:
                _earliest(self.visible, event_id, at)
                self._missing.discard(event_id)
            self._cond.notify_all()

    def expect(self, event_ids: Iterable[str]) -> None:
        """Start waiting for the own rows of ``event_ids`` (before they are sent)."""
        with self._cond:
            self._missing = {e for e in event_ids if e not in self.visible}

    def watch(self, keys: Iterable[RowKey]) -> None:
        """Also record upserts of these (recipient, event_id) rows, whoever the source; once
        this returns, every projector reports them."""
        if self.forward_watch is not None:
            self.forward_watch(list(keys))

    def wait_upserted(self, keys: Sequence[RowKey], timeout_s: float) -> bool:
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

    def wait_retracted(self, key: RowKey, timeout_s: float) -> float | None:
        """The commit time of the retraction of (recipient, event_id), or None on timeout."""
        with self._cond:
            self._cond.wait_for(lambda: key in self.retracted, timeout=timeout_s)
            return self.retracted.get(key)


def _earliest(times: dict[_Key, float], key: _Key, at: float) -> None:
    """Keep the earlier of ``times[key]`` and ``at``."""
    found = times.get(key)
    if found is None or at < found:
        times[key] = at


class PollIndex:
    """When each polled offset range came back from a projector's ``poll``, all projectors."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        #: partition -> [(poll time, last offset of a polled range)].
        self.ranges: dict[int, list[tuple[float, int]]] = {}
        self._index: dict[int, tuple[list[int], list[float]]] | None = None

    def add(self, partition: int, last_offset: int, at: float) -> None:
        """A poll at ``at`` returned ``partition``'s records up to ``last_offset``."""
        with self._lock:
            self.ranges.setdefault(partition, []).append((at, last_offset))
            self._index = None

    def polled_at(self, partition: int, offset: int) -> float | None:
        """When ``offset`` of ``partition`` first came back from a poll (None if never).

        Meant for after the run: the first call indexes the ranges polled so far.
        """
        with self._lock:
            if self._index is None:
                # In time order, ascending last offsets; a rollback's re-read (or a new owner's
                # after a rebalance) only repeats earlier offsets, so keeping the running
                # maximum keeps each offset's first poll.
                self._index = {}
                for p, ranges in self.ranges.items():
                    lasts: list[int] = []
                    times: list[float] = []
                    for at, last in sorted(ranges):
                        if not lasts or last > lasts[-1]:
                            lasts.append(last)
                            times.append(at)
                    self._index[p] = (lasts, times)
            lasts, times = self._index.get(partition, ([], []))
            index = bisect.bisect_left(lasts, offset)
            return times[index] if index < len(lasts) else None


class ProjectorChildren:
    """``count`` projector child processes (``projector-1``...), started through ``children``
    (whose CPU, memory, profiles, liveness and SIGTERM cover them), and their output readers."""

    def __init__(self, children: Children, count: int, tracker: CommitTracker) -> None:
        self.children = children
        self.tracker = tracker
        self.names = [f"projector-{n + 1}" for n in range(count)]
        self.clock = PollIndex()
        #: Each child's counters, from its last line (after it stopped).
        self.counters: dict[str, dict[str, Any]] = {}
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self._readers: list[threading.Thread] = []
        self._cond = threading.Condition()
        self._acks: dict[str, int] = dict.fromkeys(self.names, 0)
        #: Batches each child has committed so far.
        self.batches: dict[str, int] = dict.fromkeys(self.names, 0)
        self._error: str | None = None
        tracker.forward_watch = self.watch

    def start(self) -> None:
        """Start every child and a reader thread for each."""
        for n, name in enumerate(self.names):
            self.children.start("projector", name, argv=[
                str(CHILD_SCRIPT), "--client-id", f"{PROJECTOR_CLIENT_ID}-{n + 1}"], pipes=True)
            proc = self.children.procs[name]
            assert proc.stdout is not None
            with contextlib.suppress(OSError):
                fcntl.fcntl(proc.stdout.fileno(), fcntl.F_SETPIPE_SZ, PIPE_BYTES)
            self.procs[name] = proc
            reader = threading.Thread(target=self._read, args=(name, proc.stdout),
                                      name=f"{READER_THREAD}-{n + 1}", daemon=True)
            reader.start()
            self._readers.append(reader)

    def _read(self, name: str, stream: IO[bytes]) -> None:
        try:
            for line in stream:
                message = json.loads(line)
                tag = message[0]
                if tag == COMMIT:
                    self.tracker.record(*message[1:])
                    self.batches[name] += 1
                elif tag == POLL:
                    for partition, last_offset, at in message[1]:
                        self.clock.add(partition, last_offset, at)
                elif tag == WATCHING:
                    with self._cond:
                        self._acks[name] += 1
                        self._cond.notify_all()
                elif tag == END:
                    self.counters[name] = message[1]
        except (ValueError, TypeError, IndexError, OSError) as exc:
            self._error = f"{name}: unreadable output ({exc!r})"
        finally:
            stream.close()

    def all_projecting(self) -> bool:
        """Whether every child has committed a batch (it holds partitions)."""
        return all(self.batches.values())

    def watch(self, keys: list[RowKey]) -> None:
        """Have every child report upserts of ``keys``; return once each has confirmed."""
        request = json.dumps([WATCH, [list(k) for k in keys]]).encode() + b"\n"
        with self._cond:
            before = dict(self._acks)
        for name, proc in self.procs.items():
            assert proc.stdin is not None
            try:
                proc.stdin.write(request)
                proc.stdin.flush()
            except OSError as exc:
                raise BenchError(f"{name} does not take watch requests: {exc}") from exc
        with self._cond:
            if not self._cond.wait_for(lambda: all(self._acks[n] > before[n]
                                                   for n in self.procs), timeout=30.0):
                raise BenchError("a projector did not confirm a watch request within 30 s")

    def check_alive(self) -> None:
        """Raise BenchError if a child has exited or its output could not be read."""
        self.children.check_alive()
        if self._error is not None:
            raise BenchError(self._error)

    def close(self) -> None:
        """After the children stopped: read their last lines, close their pipes."""
        for reader in self._readers:
            reader.join(timeout=10)
        for proc in self.procs.values():
            if proc.stdin is not None:
                with contextlib.suppress(OSError):
                    proc.stdin.close()

    def totals(self, exit_codes: dict[str, int | None]) -> dict[str, Any]:
        """The children's counters added up, and each child's exit code."""
        total: dict[str, Any] = {"batches": 0, "records": 0, "changes": 0, "rollbacks": 0,
                                 "fenced": 0, "dead_letters": {}}
        for counters in self.counters.values():
            for key in ("batches", "records", "changes", "rollbacks", "fenced"):
                total[key] += counters[key]
            for reason, n in counters["dead_letters"].items():
                total["dead_letters"][reason] = total["dead_letters"].get(reason, 0) + n
        total["reported"] = sorted(self.counters)
        total["exit_codes"] = {name: exit_codes.get(name) for name in self.names}
        return total


def own_cpu() -> dict[str, float]:
    """CPU seconds (user + system) of this process: ``total``, and ``readers`` for the threads
    that read the projector children's output."""
    ticks = os.sysconf("SC_CLK_TCK")
    names = {t.native_id: t.name for t in threading.enumerate() if t.native_id is not None}
    readers = 0.0
    with contextlib.suppress(OSError):
        for task in Path("/proc/self/task").iterdir():
            with contextlib.suppress(OSError, IndexError, ValueError):
                if names.get(int(task.name), "").startswith(READER_THREAD):
                    fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
                    readers += (int(fields[11]) + int(fields[12])) / ticks
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {"total": usage.ru_utime + usage.ru_stime, "readers": readers}

