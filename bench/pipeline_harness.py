"""The pipeline benchmark's harness: errors, progress, budget, child processes, publishers, topics.

Everything here is plumbing around the hub under test: ``leadhub run validator|projector`` as
child processes (:class:`Children`), one SDK publisher per partner (:class:`Publishers`), the
broker check, a fresh view database, and the bench's own topic prefix (sizes, deletion).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

from kafka import KafkaAdminClient
from kafka.errors import KafkaError

from leadhub.services import ServiceError
from leadhub.topics_admin import delete_prefix
from processors.site import SitePolicy
from producers.sdk import PartnerPublisher
from schemas.catalog import Catalog
from schemas.event import Event
from schemas.topics import TopicNames

ROOT = Path(__file__).resolve().parents[1]
SITE_FILE = ROOT / "config" / "site.example.yaml"


class BenchError(Exception):
    """The benchmark cannot go on; ``exit_code`` 2 for setup problems, 1 otherwise."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def progress(message: str) -> None:
    """One progress line on stderr, prefixed with the wall-clock time."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


class Budget:
    """The run's total time budget; every wait asks it how long it may still take."""

    def __init__(self, seconds: float) -> None:
        self.deadline = time.monotonic() + seconds

    def cap(self, seconds: float) -> float:
        """``seconds``, or less if the budget ends sooner (never negative)."""
        return max(0.0, min(seconds, self.deadline - time.monotonic()))


# --------------------------------------------------------------------------------------------
# The hub's child processes


class Children:
    """``leadhub run validator|projector`` under the bench's prefix, logs in the state dir."""

    def __init__(self, env: dict[str, str], state_dir: Path, *, profile: bool) -> None:
        self.env = env
        self.logs = state_dir / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.profile_dir = state_dir if profile else None
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        #: Processes not started here whose CPU is counted too (the local broker).
        self.watched: dict[str, int] = {}

    def start(self, step: str) -> None:
        command = [sys.executable]
        if self.profile_dir is not None:
            command += ["-m", "cProfile", "-o", str(self.profile_dir / f"{step}.prof")]
        command += ["-m", "leadhub.cli", "run", step]
        with (self.logs / f"{step}.log").open("ab") as log:
            self.procs[step] = subprocess.Popen(command, env=self.env, cwd=ROOT, stdout=log,
                                                stderr=subprocess.STDOUT)

    def check_alive(self) -> None:
        """Raise BenchError (with the log tail) if a child has exited."""
        for step, proc in self.procs.items():
            if proc.poll() is not None:
                raise BenchError(f"leadhub run {step} exited with {proc.returncode}:\n"
                                 + self.log_tail(step))

    def vm_hwm_mib(self) -> dict[str, float]:
        """Peak resident set (VmHWM) of each running child, in MiB."""
        peaks: dict[str, float] = {}
        for step, proc in self.procs.items():
            with contextlib.suppress(OSError):
                for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines():
                    if line.startswith("VmHWM:"):
                        peaks[step] = int(line.split()[1]) / 1024
        return peaks

    def cpu_seconds(self) -> dict[str, float]:
        """User + system CPU seconds used so far by each running child."""
        ticks = os.sysconf("SC_CLK_TCK")
        used: dict[str, float] = {}
        pids = {step: proc.pid for step, proc in self.procs.items()} | self.watched
        for name, pid in pids.items():
            with contextlib.suppress(OSError, IndexError, ValueError):
                stat = Path(f"/proc/{pid}/stat").read_text()
                fields = stat.rsplit(")", 1)[1].split()
                used[name] = (int(fields[11]) + int(fields[12])) / ticks
        return used

    def thread_cpu_seconds(self) -> dict[str, list[float]]:
        """CPU seconds of each thread of each child, main thread first, busiest next."""
        ticks = os.sysconf("SC_CLK_TCK")
        out: dict[str, list[float]] = {}
        for step, proc in self.procs.items():
            main, others = 0.0, []
            with contextlib.suppress(OSError):
                for task in Path(f"/proc/{proc.pid}/task").iterdir():
                    with contextlib.suppress(OSError, IndexError, ValueError):
                        fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
                        used = (int(fields[11]) + int(fields[12])) / ticks
                        if task.name == str(proc.pid):
                            main = used
                        else:
                            others.append(used)
            out[step] = [main, *sorted(others, reverse=True)[:3]]
        return out

    def stop_all(self, timeout_s: float = 30.0) -> dict[str, int | None]:
        """SIGTERM every child, wait, SIGKILL stragglers; return each exit code."""
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        codes: dict[str, int | None] = {}
        for step, proc in self.procs.items():
            try:
                codes[step] = proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                progress(f"{step} ignored SIGTERM for {timeout_s:.0f}s; killing it")
                proc.kill()
                codes[step] = proc.wait(timeout=10)
        return codes

    def log_tail(self, step: str, lines: int = 30) -> str:
        path = self.logs / f"{step}.log"
        if not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


# --------------------------------------------------------------------------------------------
# Publishing


class Publishers:
    """One SDK publisher per partner, created up front (connections warm before timing)."""

    def __init__(self, bootstrap: str, topics: TopicNames, site: SitePolicy,
                 catalog: Catalog) -> None:
        self.by_partner: dict[str, PartnerPublisher] = {}
        for partner_id in site.partner_ids():
            self.by_partner[partner_id] = PartnerPublisher(partner_id, bootstrap,
                                                           catalog=catalog, topics=topics)
        self.sent = 0

    def send(self, event: Event) -> None:
        assert event.source_partner is not None
        self.by_partner[event.source_partner].send(event)
        self.sent += 1

    def flush(self) -> None:
        for publisher in self.by_partner.values():
            publisher.flush()

    def close(self) -> None:
        for publisher in self.by_partner.values():
            publisher.close()


def make_event(type_: str, participant: str, at: datetime, source: str,
               **payload: Any) -> Event:
    """A new event (fresh uuid4 id) of ``type_`` for ``participant``, sent by ``source``."""
    return Event(event_id=str(uuid.uuid4()), type=type_, participant_id=participant,
                 occurred_at=at, payload=payload, source_partner=source)


# --------------------------------------------------------------------------------------------
# The broker, the view database and the bench's topics


def local_broker_pid() -> int | None:
    """The pid of a Kafka broker running on this machine (``kafka.Kafka`` main class), if any.

    The broker's CPU belongs in the run's budget; an external broker is simply not counted.
    """
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            if b"kafka.Kafka\0" in (entry / "cmdline").read_bytes():
                return int(entry.name)
    return None


def check_broker(bootstrap: str) -> None:
    """Raise BenchError(exit 2) unless something accepts TCP connections at ``bootstrap``."""
    host, _, port = bootstrap.split(",")[0].rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=3):
            pass
    except (OSError, ValueError) as exc:
        raise BenchError(
            f"no Kafka broker at {bootstrap} ({exc}); start it with "
            "`.venv/bin/leadhub services start`", exit_code=2) from exc


@contextlib.contextmanager
def view_database(database_url: str | None, state_dir: Path) -> Iterator[str]:
    """A fresh SQLite file, or a fresh database on the given PostgreSQL server (dropped after)."""
    if not database_url:
        yield f"sqlite:///{state_dir / 'view.sqlite'}"
        return
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    url = make_url(database_url)
    if url.get_backend_name() != "postgresql":
        yield database_url
        return
    name = f"leadhub_bench_{uuid.uuid4().hex[:12]}"
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:
        raise BenchError(f"cannot create a database on {url.render_as_string()}: {exc}",
                         exit_code=2) from exc
    try:
        yield url.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def topic_sizes_mib(bootstrap: str, prefix: str) -> dict[str, float]:
    """On-disk size of each topic of the bench's prefix (MiB), largest first, prefix removed.

    Shows the write amplification: inbound bytes vs lead.events, lead.view.changes and the
    faust changelogs (the tables' full values, written on every change).
    """
    sizes: dict[str, float] = {}
    with contextlib.suppress(KafkaError, OSError):
        admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="leadhub-bench-sizes")
        try:
            mine = [t for t in admin.list_topics() if t.startswith(prefix)]
            for broker in admin.describe_log_dirs(mine):
                for log_dir in broker["log_dirs"]:
                    for topic in log_dir["topics"]:
                        name = topic["name"][len(prefix):]
                        total = sum(p["partition_size"] for p in topic["partitions"])
                        sizes[name] = sizes.get(name, 0.0) + total / 2**20
        finally:
            admin.close()
    return dict(sorted(sizes.items(), key=lambda item: -item[1]))


def delete_prefix_topics(bootstrap: str, prefix: str) -> None:
    """Delete every topic and group of the bench's own prefix (inbound, hub, faust changelogs)."""
    try:
        delete_prefix(bootstrap, prefix)
    except ServiceError as exc:
        progress(f"could not delete the bench topics: {exc}")
