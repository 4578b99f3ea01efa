"""A SQLite view's write-ahead log: connection settings, and checkpoints off the writer's path.

SQLite appends every page a transaction changes to the write-ahead log; a *checkpoint* copies
the log back into the database file so the log can start over. By default the writer runs it
inside the commit that makes the log pass its limit, and that commit is then the slowest of all:
over a fake consumer (batches of 40 records, 20,000 records), 21 of 501 batches ran a
checkpoint and took 120-210 ms against 27 ms at the median. The live projector writes about
87 KiB of log per record (random inserts into the view's indexes; 4 KiB per page changed), so
it filled the 64 MiB log every 19 batches, and at 500 events/s those batches made the p99.

:class:`WalCheckpointer` runs the checkpoint from a thread of its own instead, on its own
connection, in SQLite's ``PASSIVE`` mode: it never blocks the writer or readers, and the
writer restarts the log at the next transaction that finds it fully copied. The writer's own
checkpoint at :data:`WAL_CHECKPOINT_PAGES` stays as the bound when the thread falls behind
(a long backlog, where the writer never pauses).
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

log = logging.getLogger("leadhub.view")

#: Pages (4 KiB) the write-ahead log may hold before a commit checkpoints it into the database:
#: 64 MiB instead of SQLite's 4 MiB. A projector batch writes several MiB, so at the default
#: nearly every commit copied the log back into the database (measured over a fake consumer:
#: the projector's CPU per record fell by 5-25 % with the larger log, on a noisy machine).
WAL_CHECKPOINT_PAGES = 16384
#: Page cache of the view writer's connections, KiB (SQLite's default is 2,000). The projector's
#: inserts land at random places of the view's indexes; with the default cache most of them read
#: their page back from the file. Measured (200-row upserts into ``view_rows``, 10,000
#: participants, a 100-135 MiB view): 62 -> 36 µs of CPU per row outside the commit. Readers
#: keep the default: a cache is per connection, and the staff API holds several.
WRITER_CACHE_KIB = 65536
#: Seconds between two background checkpoints: at 500 events/s about 40 MiB of log each.
CHECKPOINT_INTERVAL_S = 1.0


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


class WalCheckpointer:
    """Checkpoints a SQLite database's write-ahead log every ``interval_s`` from a daemon thread.

    ``start`` and ``stop`` may be called once each; ``stop`` waits for the checkpoint under way.
    A failed checkpoint is logged (the error's class only) and tried again at the next interval:
    the writer's own checkpoint keeps the log bounded meanwhile.
    """

    def __init__(self, engine: Engine, interval_s: float = CHECKPOINT_INTERVAL_S) -> None:
        self.engine = engine
        self.interval_s = interval_s
        #: Checkpoints run, and frames they found in the log and copied (the last one's).
        self.runs = 0
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

    def checkpoint(self) -> tuple[int, int, int]:
        """Run one ``PASSIVE`` checkpoint: (1 if it could not run, frames in the log, frames
        copied into the database)."""
        with self.engine.connect() as connection:
            busy, frames, copied = connection.exec_driver_sql(
                "PRAGMA wal_checkpoint(PASSIVE)").one()
            connection.commit()
        self.runs += 1
        self.last = (int(busy), int(frames), int(copied))
        return self.last

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.checkpoint()
            except SQLAlchemyError as exc:
                log.warning("view: background WAL checkpoint failed (%s)", type(exc).__name__)
