"""Run the hub's processes: the faust steps, the SQL sink, or all of them supervised.

Every process shuts down cleanly on SIGTERM or SIGINT: faust finishes and commits the message
under way, the sink finishes the batch under way (rows and offsets in one transaction).
"""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
import threading
import time
from types import FrameType

from consumers.sink import ViewSink
from consumers.store import ViewStore
from leadhub.settings import Settings
from processors.site import load_site
from schemas.catalog import load_catalog
from schemas.topics import TopicNames

STEPS = ("validator", "projector", "sink")
log = logging.getLogger("leadhub.runner")


def run_faust_step(settings: Settings, step: str) -> int:
    """Run the ``validator`` or ``projector`` faust worker until a signal stops it."""
    import faust

    from processors.faust_app import create_app

    topics = TopicNames(settings.topic_prefix)
    app = create_app(
        app_id=f"{settings.topic_prefix}leadhub-{step}",
        bootstrap=settings.effective_kafka_bootstrap,
        topics=topics,
        site=load_site(settings.site_file),
        catalog=load_catalog(),
        partitions=settings.partitions,
        steps=frozenset({"validate" if step == "validator" else "project"}),
        tick_interval_s=settings.tick_interval_s,
    )
    worker = faust.Worker(app, loglevel="WARNING", quiet=True, redirect_stdouts=False)
    worker.execute_from_commandline()
    return 0


def run_sink(settings: Settings) -> int:
    """Run the SQL sink until SIGTERM/SIGINT; the batch under way completes first."""
    stop = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    store = ViewStore(settings.view_database_url)
    sink = ViewSink(settings.effective_kafka_bootstrap,
                    TopicNames(settings.topic_prefix).view_changes, store)
    try:
        sink.run(stop)
    finally:
        sink.close()
        store.close()
    return 0


def run_all(settings: Settings) -> int:
    """Start every step as a child process and supervise them until a signal arrives.

    A child that dies is restarted after a short pause (it resumes from its committed offsets).
    """
    stop = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    children: dict[str, subprocess.Popen[bytes]] = {}

    def spawn(step: str) -> None:
        children[step] = subprocess.Popen([sys.executable, "-m", "leadhub.cli", "run", step])

    for step in STEPS:
        spawn(step)
    try:
        while not stop.wait(1.0):
            for step, child in list(children.items()):
                if child.poll() is not None:
                    print(f"leadhub: {step} exited with {child.returncode}; restarting",
                          file=sys.stderr, flush=True)
                    time.sleep(1.0)
                    spawn(step)
    finally:
        for child in children.values():
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        for child in children.values():
            try:
                child.wait(timeout=30)
            except subprocess.TimeoutExpired:
                child.kill()
    return 0
