"""Run the hub's processes: the validator, the projector, or both supervised.

Every process shuts down cleanly on SIGTERM or SIGINT: the validator finishes (or aborts) the
Kafka transaction under way, the projector the database transaction under way. A SIGKILL at any
point loses nothing either: both resume from what their last transaction committed.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import FrameType

from consumers.live_projector import LiveProjector
from consumers.store import ViewStore
from leadhub.kafka_credentials import kafka_connection
from leadhub.metrics import serve_metrics
from leadhub.settings import Settings
from processors.kafka_validator import TransactionalValidator
from processors.projector import Projector
from processors.site import load_site
from schemas.catalog import load_catalog
from schemas.topics import TopicNames

STEPS = ("validator", "projector")
log = logging.getLogger("leadhub.runner")


def configure_logging(level: str) -> None:
    """Log lines to standard error: time, level, logger, message (the hub's own at ``level``;
    the Kafka client's only from WARNING up unless ``level`` is DEBUG)."""
    logging.basicConfig(level=level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if level != "DEBUG":
        logging.getLogger("kafka").setLevel(max(logging.WARNING, logging.getLevelName(level)))


def run_validator(settings: Settings) -> int:
    """Run the ``validate`` step (Kafka transactions) until SIGTERM/SIGINT."""
    stop = stop_on_signals()
    validator = TransactionalValidator(
        kafka_connection(settings, "validator"), TopicNames(settings.topic_prefix),
        load_site(settings.site_file), load_catalog(),
        tick_interval_s=settings.tick_interval_s,
        client_id=_instance(settings, "validator"))
    serve_metrics(settings.metrics_port, "validate", validator.counters)
    log.info("validate: started; group %s, %d inbound topics", validator.group_id,
             len(validator.inbound_topics))
    try:
        validator.run(stop)
    finally:
        validator.close()
    return 0


def _instance(settings: Settings, step: str) -> str | None:
    """This process's stable name in its consumer group (and transactional id), from
    ``LEADHUB_INSTANCE_ID``; None (a dynamic member) when unset."""
    if not settings.instance_id:
        return None
    return f"{socket.gethostname()}-{step}-{settings.instance_id}"


def run_projector(settings: Settings) -> int:
    """Run the ``project`` step (one SQL transaction per batch) until SIGTERM/SIGINT."""
    stop = stop_on_signals()
    catalog = load_catalog()
    store = ViewStore(settings.view_database_url)
    projector = LiveProjector(
        kafka_connection(settings, "projector"), TopicNames(settings.topic_prefix), store,
        Projector(load_site(settings.site_file), catalog), catalog,
        instance_id=_instance(settings, "projector"), cache_weight=settings.projector_cache)
    serve_metrics(settings.metrics_port, "project", projector.counters)
    log.info("project: started; view %s", store.engine.url.render_as_string(hide_password=True))
    try:
        projector.run(stop)
    finally:
        projector.close()
        store.close()
    return 0


def stop_on_signals() -> threading.Event:
    """Return an event that SIGTERM or SIGINT sets (installs the handlers; main thread only)."""
    stop = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    return stop


class Supervisor:
    """``leadhub run STEP`` child processes; dead ones can be restarted, all stopped cleanly."""

    def __init__(self, log_dir: Path | None = None) -> None:
        self.log_dir = log_dir
        self.children: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, step: str) -> None:
        """Start ``leadhub run STEP`` (output to ``log_dir/STEP.log`` when a log dir is set).

        With ``LEADHUB_METRICS_PORT`` set, the n-th step of :data:`STEPS` serves its metrics on
        that port + n (the validator on the port, the projector on the next one).
        """
        command = [sys.executable, "-m", "leadhub.cli", "run", step]
        env = dict(os.environ)
        env.setdefault("LEADHUB_INSTANCE_ID", step)
        if env.get("LEADHUB_METRICS_PORT") and step in STEPS:
            env["LEADHUB_METRICS_PORT"] = str(int(env["LEADHUB_METRICS_PORT"])
                                              + STEPS.index(step))
        if self.log_dir is None:
            self.children[step] = subprocess.Popen(command, env=env)
            return
        self.log_dir.mkdir(parents=True, exist_ok=True)
        with (self.log_dir / f"{step}.log").open("ab") as log:
            self.children[step] = subprocess.Popen(command, stdout=log, env=env,
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
