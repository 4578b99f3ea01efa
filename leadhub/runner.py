"""Run the hub's processes: the faust steps, the SQL sink, or all of them supervised.

Every process shuts down cleanly on SIGTERM or SIGINT: faust finishes and commits the message
under way, the sink finishes the batch under way (rows and offsets in one transaction).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import FrameType
from typing import Any

from consumers.sink import ViewSink
from consumers.store import ViewStore
from leadhub.settings import Settings
from processors.site import load_site
from schemas.catalog import load_catalog
from schemas.topics import TopicNames

STEPS = ("validator", "projector", "sink")
log = logging.getLogger("leadhub.runner")
#: How often the faust workers run one full garbage collection (see _keep_full_collections_small).
FULL_COLLECTION_EVERY_S = 600


def run_faust_step(settings: Settings, step: str) -> int:
    """Run the ``validator`` or ``projector`` faust worker until a signal stops it."""
    _use_uvloop()
    import faust

    from processors.faust_app import app_id, create_app

    topics = TopicNames(settings.topic_prefix)
    step_app_id = app_id(settings.topic_prefix, step)
    faust_dir = settings.state_dir / "faust"
    faust_dir.mkdir(parents=True, exist_ok=True)
    app = create_app(
        app_id=step_app_id,
        bootstrap=settings.effective_kafka_bootstrap,
        topics=topics,
        site=load_site(settings.site_file),
        catalog=load_catalog(),
        partitions=settings.partitions,
        steps=frozenset({"validate" if step == "validator" else "project"}),
        tick_interval_s=settings.tick_interval_s,
        datadir=str(faust_dir / step_app_id),
    )
    _keep_full_collections_small(app)
    worker = faust.Worker(app, loglevel="WARNING", quiet=True, redirect_stdouts=False)
    # faust's progress spinner sets the root logger to DEBUG, so every library debug call
    # builds a record (about a tenth of a busy worker's time); no terminal needs it here.
    worker.spinner = None
    worker.execute_from_commandline()
    return 0


def _use_uvloop() -> None:
    """Run the worker's event loops (faust's and its consumer thread's) on uvloop if installed.

    faust spends most of a message's CPU in event-loop machinery (futures, tasks, callbacks);
    uvloop does that work in C: 19-24 % less CPU per message (``bench/faust_floor.py``).
    """
    try:
        import uvloop
    except ImportError:  # a platform without uvloop: asyncio's loop works, only slower
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def _keep_full_collections_small(app: Any) -> None:
    """Keep the cyclic GC from scanning the participant states, which pauses the worker.

    The projector's states (and the validator's accepted ids) stay in memory for the
    process's life; a full collection scans all of them, and at tens of thousands of
    participants that is a pause of a second or more in the middle of the stream. States are
    acyclic and freed by reference counting, so every second the young generations are
    collected (cyclic garbage still goes) and what survived is moved out of the collector's
    reach (``gc.freeze``): automatic full collections then scan only what is new since. A
    cycle that becomes garbage after it was frozen would never be reclaimed, so once every
    :data:`FULL_COLLECTION_EVERY_S` everything is unfrozen and collected in full: one pause
    every ten minutes instead of several a minute.
    """
    seconds = 0

    @app.timer(interval=1.0)  # type: ignore[untyped-decorator]
    async def freeze_survivors() -> None:
        nonlocal seconds
        seconds += 1
        if seconds % FULL_COLLECTION_EVERY_S == 0:
            gc.unfreeze()
            gc.collect()
        else:
            gc.collect(1)
        gc.freeze()


def stop_on_signals() -> threading.Event:
    """Return an event that SIGTERM or SIGINT sets (installs the handlers; main thread only)."""
    stop = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    return stop


def run_sink(settings: Settings) -> int:
    """Run the SQL sink until SIGTERM/SIGINT; the batch under way completes first."""
    stop = stop_on_signals()
    store = ViewStore(settings.view_database_url)
    sink = ViewSink(settings.effective_kafka_bootstrap,
                    TopicNames(settings.topic_prefix).view_changes, store)
    try:
        sink.run(stop)
    finally:
        sink.close()
        store.close()
    return 0


class Supervisor:
    """``leadhub run STEP`` child processes; dead ones can be restarted, all stopped cleanly."""

    def __init__(self, log_dir: Path | None = None) -> None:
        self.log_dir = log_dir
        self.children: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, step: str) -> None:
        """Start ``leadhub run STEP`` (output to ``log_dir/STEP.log`` when a log dir is set)."""
        command = [sys.executable, "-m", "leadhub.cli", "run", step]
        if self.log_dir is None:
            self.children[step] = subprocess.Popen(command)
            return
        self.log_dir.mkdir(parents=True, exist_ok=True)
        with (self.log_dir / f"{step}.log").open("ab") as log:
            self.children[step] = subprocess.Popen(command, stdout=log,
                                                   stderr=subprocess.STDOUT)

    def restart_dead(self) -> None:
        """Restart every child that has exited; it resumes from its committed offsets."""
        for step, child in list(self.children.items()):
            if child.poll() is not None:
                print(f"leadhub: {step} exited with {child.returncode}; restarting",
                      file=sys.stderr, flush=True)
                time.sleep(1.0)
                self.start(step)

    def stop_all(self, timeout_s: float = 30.0) -> None:
        """SIGTERM every child, wait for each, SIGKILL any still running after ``timeout_s``."""
        for child in self.children.values():
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        for child in self.children.values():
            try:
                child.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                child.kill()
        self.children.clear()


def run_all(settings: Settings) -> int:
    """Start every step as a child process and supervise them until a signal arrives."""
    stop = stop_on_signals()
    supervisor = Supervisor()
    for step in STEPS:
        supervisor.start(step)
    try:
        while not stop.wait(1.0):
            supervisor.restart_dead()
    finally:
        supervisor.stop_all()
    return 0
