"""A SQLite view's write-ahead log: connection settings, and checkpoints off the writer's path.

SQLite appends every page a transaction changes to the write-ahead log; a *checkpoint* copies
the log back into the database file, and the log starts over once it has been copied whole. By
default the writer runs the checkpoint inside the commit that makes the log pass its limit, and
that commit is then the slowest of all: over a fake consumer (batches of 40 records, 20,000
records), 21 of 501 batches ran a checkpoint and took 120-210 ms against 27 ms at the median.
The live projector writes about 87 KiB of log per record (random inserts into the view's
indexes; 4 KiB per page changed), so it filled the 64 MiB log every 19 batches, and at
500 events/s those batches made the p99.

:class:`WalCheckpointer` checkpoints from a thread of its own instead, on a connection of its
own, every :data:`CHECKPOINT_INTERVAL_S`: a ``PASSIVE`` checkpoint, which never blocks the writer
or readers, and once the log holds :data:`RESTART_PAGES` pages a ``RESTART`` one, which starts
the log over. The passive one alone is not enough: a writer that commits every few tens of
milliseconds nearly always appends while it runs, so the log is seldom found copied whole and
the writer's own checkpoint still ran. The restart makes the writer wait while it copies the
little the passive one left (measured in the pipeline bench at 500 events/s: about 80 ms every
second or two, where without the thread commits that checkpointed took 116-218 ms as often).
While a checkpointer runs, the writer's own checkpoint is only the bound for when the thread
falls behind, at :data:`FALLBACK_PAGES`.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError

log = logging.getLogger("leadhub.view")

#: Pages (4 KiB) the write-ahead log may hold before a commit checkpoints it into the database:
#: 64 MiB instead of SQLite's 4 MiB. A projector batch writes several MiB, so at the default
#: nearly every commit copied the log back into the database (measured over a fake consumer:
#: the projector's CPU per record fell by 5-25 % with the larger log, on a noisy machine).
WAL_CHECKPOINT_PAGES = 16384
#: Page cache of the view writer's connections, KiB (SQLite's default is 2,000). The projector's
#: inserts land at random places of the view's indexes; with the default cache most of them read
#: their page back from the file. ``bench/projector_writes.py`` (batches of 2,000): 20.9 -> 1.7
#: read calls per record; a trial of 200-row upserts into a 100-135 MiB view: 62 -> 36 µs of
#: CPU per row outside the commit. Readers
#: keep the default: a cache is per connection, and the staff API holds several.
WRITER_CACHE_KIB = 65536
#: Seconds between two background checkpoints: at 500 events/s about 10 MiB of log each.
CHECKPOINT_INTERVAL_S = 0.25
#: Pages in the log after which the background checkpointer restarts it (64 MiB).
RESTART_PAGES = WAL_CHECKPOINT_PAGES
#: How long a restart may wait for the writer's transaction and for readers in the log, ms.
RESTART_WAIT_MS = 1000
#: The writer's own checkpoint while a :class:`WalCheckpointer` runs (256 MiB of log).
FALLBACK_PAGES = 4 * WAL_CHECKPOINT_PAGES


def configure_wal(dbapi_connection: Any, connection_record: Any) -> None:
    """Write-ahead log, synced at checkpoints: readers never block the projector, and a commit
    does not wait for the disk. A power loss may drop the last commits, but rows and offsets go in
    the same transaction, so the projector simply re-reads what was lost. The writer checkpoints
    the log itself past :data:`WAL_CHECKPOINT_PAGES` pages and truncates it back to that size."""
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute(f"PRAGMA wal_autocheckpoint={WAL_CHECKPOINT_PAGES}")
    cursor.execute(f"PRAGMA journal_size_limit={WAL_CHECKPOINT_PAGES * 4096}")
    cursor.close()


def configure_writer_cache(dbapi_connection: Any, connection_record: Any) -> None:
    """The view writer's page cache (:data:`WRITER_CACHE_KIB`)."""
    cursor = dbapi_connection.cursor()
    cursor.execute(f"PRAGMA cache_size=-{WRITER_CACHE_KIB}")
    cursor.close()


def configure_fallback_checkpoint(dbapi_connection: Any, connection_record: Any) -> None:
    """A connection that leaves checkpoints to a :class:`WalCheckpointer` but past
    :data:`FALLBACK_PAGES`."""
    cursor = dbapi_connection.cursor()
    cursor.execute(f"PRAGMA wal_autocheckpoint={FALLBACK_PAGES}")
    cursor.close()


class WalCheckpointer:
    """Checkpoints a SQLite database's write-ahead log every ``interval_s`` from a daemon thread
    (see the module docstring).

    ``start`` and ``stop`` may be called once each; ``stop`` waits for the checkpoint under way.
    A failed checkpoint is logged (the error's class only) and tried again at the next interval:
    the writer's own checkpoint keeps the log bounded meanwhile.
    """

    def __init__(self, engine: Engine, interval_s: float = CHECKPOINT_INTERVAL_S) -> None:
        self.engine = engine
        self.interval_s = interval_s
        #: Checkpoints run, restarts of the log among them, and frames the last one found in
        #: the log and copied.
        self.runs = 0
        self.restarts = 0
        self.last: tuple[int, int, int] | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="leadhub-wal-checkpoint",
                                        daemon=True)

    def start(self) -> None:
        """Start the thread."""
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread after the checkpoint under way, if any."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def checkpoint(self, connection: Connection | None = None) -> tuple[int, int, int]:
        """Run one ``PASSIVE`` checkpoint (on ``connection``, else on one from the pool), and a
        ``RESTART`` one after it if the log holds :data:`RESTART_PAGES` pages or more: (1 if the
        last could not complete, frames it found in the log, frames copied into the database)."""
        if connection is None:
            with self.engine.connect() as own:
                return self.checkpoint(own)
        busy, frames, copied = connection.exec_driver_sql("PRAGMA wal_checkpoint(PASSIVE)").one()
        if not busy and frames >= RESTART_PAGES:
            busy, frames, copied = connection.exec_driver_sql(
                "PRAGMA wal_checkpoint(RESTART)").one()
            self.restarts += 0 if busy else 1
        connection.commit()
        self.runs += 1
        self.last = (int(busy), int(frames), int(copied))
        return self.last

    def _loop(self) -> None:
        """Checkpoint on one connection held for the thread's life. A pooled connection handed
        back after each checkpoint would be handed to the writer next (the pool is first in,
        first out), and a SQLite connection drops its whole page cache when it finds that
        another connection wrote since it last ran, so the writer would start cold every time."""
        try:
            connection = self.engine.connect()
        except SQLAlchemyError as exc:
            log.warning("view: no background WAL checkpoints (%s)", type(exc).__name__)
            return
        with connection:
            # A restart waits for the writer's transaction and for readers still in the log,
            # holding off new writers meanwhile: give up after a second, try again later.
            connection.exec_driver_sql(f"PRAGMA busy_timeout={RESTART_WAIT_MS}")
            while not self._stop.wait(self.interval_s):
                try:
                    self.checkpoint(connection)
                except Exception as exc:  # the thread must not end silently
                    log.warning("view: background WAL checkpoint failed (%s)",
                                type(exc).__name__)
