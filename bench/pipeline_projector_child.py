"""One live projector of the pipeline benchmark, in a process of its own (as deployed).

``bench/pipeline.py`` starts ``--projectors`` of these as child processes, in one consumer
group (they split ``lead.events``' partitions between them, as several ``leadhub run
projector`` processes do). Each runs :class:`consumers.live_projector.LiveProjector`, the class
``leadhub run projector`` runs, with the same settings (``LEADHUB_*`` from the environment:
bootstrap, topic prefix, site file, view database), connected as the ``projector`` role, until
SIGTERM or SIGINT; the batch under way completes first.

What the bench measures comes out on **standard output**, one compact JSON array a line (the
log goes to standard error):

* ``["poll", [[partition, last offset, time], ...]]``: what each ``poll`` returned and when
  (``time.time()``); held back and written with the next commit line, so a batch costs one
  write;
* ``["commit", time, changes, own, retracted, upserted]``, right after a batch's database
  transaction committed: ``time.time()``, the number of view changes, the event ids of the
  batch's *own rows* (the row of an event's source partner), the ``[recipient, event_id]`` of
  every retraction and of the upserts of the rows the parent asked to watch;
* ``["watching", n]``: the answer to a watch request (the parent waits for it, so no commit
  after it can miss a watched row);
* ``["end", counters]``: the projector's counters, once it stopped.

Standard input takes watch requests, ``["watch", [[recipient, event_id], ...]]`` a line.

    python bench/pipeline_projector_child.py --client-id leadhub-bench-projector-1
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from collections.abc import Sequence
from typing import IO, Any

from consumers.live_projector import LiveProjector, ProjectorCounters
from consumers.store import ViewStore
from leadhub.runner import configure_logging, stop_on_signals
from leadhub.settings import load_settings
from processors.projector import Projector
from processors.site import load_site
from processors.view import ViewChange
from schemas.catalog import load_catalog
from schemas.topics import TopicNames

# isort: split
# Siblings in bench/: run as a file, the script's folder is first on sys.path.
from kafka_setup import bench_connection

#: The tags of the lines on standard output (the first element of each array).
POLL, COMMIT, WATCHING, END = "poll", "commit", "watching", "end"
#: The tag of a watch request on standard input.
WATCH = "watch"


class Reporter:
    """Writes the child's lines to ``out``; one write and flush per committed batch."""

    def __init__(self, out: IO[bytes]) -> None:
        self._out = out
        self._lock = threading.Lock()
        self._polls: list[list[Any]] = []
        #: (recipient, event_id) rows whose upserts are reported; replaced, never mutated.
        self.watched: frozenset[tuple[str, str]] = frozenset()

    def _write(self, *lines: list[Any]) -> None:
        data = b"".join(json.dumps(line, separators=(",", ":")).encode() + b"\n"
                        for line in lines)
        with self._lock:
            self._out.write(data)
            self._out.flush()

    def polled(self, partition: int, last_offset: int, at: float) -> None:
        """Note what a poll returned for one partition (written with the next commit)."""
        self._polls.append([partition, last_offset, at])

    def on_commit(self, changes: Sequence[ViewChange]) -> None:
        """The projector's hook: the batch's own rows, retractions and watched upserts."""
        now = time.time()
        watched = self.watched
        own: list[str] = []
        retracted: list[list[str]] = []
        upserted: list[list[str]] = []
        for change in changes:
            if change.row is None:
                retracted.append([change.recipient, change.event_id])
                continue
            if change.row.source_partner == change.recipient:
                own.append(change.event_id)
            if watched and (change.recipient, change.event_id) in watched:
                upserted.append([change.recipient, change.event_id])
        polls, self._polls = self._polls, []
        lines: list[list[Any]] = [[POLL, polls]] if polls else []
        lines.append([COMMIT, now, len(changes), own, retracted, upserted])
        self._write(*lines)

    def watch(self, keys: list[list[str]]) -> None:
        """Report upserts of these rows too; answer with the number now watched."""
        self.watched = self.watched | {(r, e) for r, e in keys}
        self._write([WATCHING, len(self.watched)])

    def end(self, counters: ProjectorCounters) -> None:
        """The polls not yet written, and the projector's counters."""
        polls, self._polls = self._polls, []
        lines: list[list[Any]] = [[POLL, polls]] if polls else []
        lines.append([END, {"batches": counters.batches, "records": counters.records,
                            "changes": counters.rows_changed,
                            "rollbacks": counters.rollbacks, "fenced": counters.fenced,
                            "dead_letters": dict(counters.dead_letters_by_reason)}])
        self._write(*lines)


class PollStamps:
    """Wraps the projector's GroupConsumer: tells the reporter what each ``poll`` returned.

    Every other attribute is the consumer's own. The cost is one ``time.time()`` per poll and
    a dict update per record.
    """

    def __init__(self, consumer: Any, reporter: Reporter) -> None:
        self._consumer = consumer
        self._reporter = reporter

    def poll(self, *args: Any, **kwargs: Any) -> Any:
        polled = self._consumer.poll(*args, **kwargs)
        if polled:
            now = time.time()
            last = {record.partition: record.offset for record in polled}
            for partition, offset in last.items():
                self._reporter.polled(partition, offset, now)
        return polled

    def __getattr__(self, name: str) -> Any:
        return getattr(self._consumer, name)


def read_watch_requests(fd: int, reporter: Reporter) -> None:
    """Apply the watch requests read from file descriptor ``fd`` until it ends.

    Plain ``os.read``, not ``sys.stdin``: this daemon thread waits in it until the process
    ends, and a buffered reader's lock held then aborts the interpreter's shutdown.
    """
    pending = b""
    while chunk := os.read(fd, 1 << 16):
        *lines, pending = (pending + chunk).split(b"\n")
        for line in lines:
            message = json.loads(line)
            if message[0] == WATCH:
                reporter.watch(message[1])


def main(argv: Sequence[str] | None = None) -> int:
    """Run one projector until SIGTERM/SIGINT; 0 once it stopped cleanly."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--client-id", required=True, help="the projector's Kafka client id")
    args = parser.parse_args(argv)
    settings = load_settings()
    configure_logging(settings.log_level)
    stop = stop_on_signals()
    catalog = load_catalog()
    reporter = Reporter(sys.stdout.buffer)
    store = ViewStore(settings.view_database_url)
    projector = LiveProjector(
        bench_connection(settings.effective_kafka_bootstrap, "projector"),
        TopicNames(settings.topic_prefix), store, Projector(load_site(settings.site_file),
                                                            catalog),
        catalog, client_id=args.client_id, on_commit=reporter.on_commit)
    projector.consumer = PollStamps(projector.consumer, reporter)
    threading.Thread(target=read_watch_requests, args=(sys.stdin.fileno(), reporter),
                     name="watch-requests", daemon=True).start()
    try:
        projector.run(stop)
    finally:
        try:
            projector.close()
        finally:
            store.close()
            reporter.end(projector.counters)
    return 0


if __name__ == "__main__":
    sys.exit(main())
