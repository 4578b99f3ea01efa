"""The benchmarks' harness: errors, progress, budget, child processes, publishers, topics.

Plumbing around the hub under test, shared by ``pipeline.py``, ``history.py`` and ``scale.py``:
``leadhub run validator|projector`` and the benches' own child scripts as child processes
(:class:`Children`), one SDK publisher per partner (:class:`Publishers`), the broker check, a
fresh view database, the bench's own topic prefix (sizes, deletion), and what /proc says about
a process (CPU, peak memory).
Every Kafka client here takes a :class:`KafkaConnection` (``kafka_setup.bench_connection``).
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

from kafka.errors import KafkaError

from leadhub.kafka_admin import admin_client
from leadhub.services import ServiceError
from leadhub.topics_admin import delete_prefix
from processors.site import SitePolicy
from producers.sdk import PartnerPublisher
from schemas.catalog import Catalog
from schemas.event import Event
from schemas.kafka_connection import KafkaConnection
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
    """``leadhub run validator|projector`` (or a bench's own script) under the bench's prefix,
    logs in the state dir.

    Each child has a name (``validator-1``, ``projector-1``, ...); ``watched`` adds processes not
    started here whose CPU and memory are reported too (the local broker, PostgreSQL backends).
    """

    def __init__(self, env: dict[str, str], state_dir: Path, *, profile: bool) -> None:
        self.env = env
        self.logs = state_dir / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.profile_dir = state_dir if profile else None
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        #: Processes not started here whose CPU is counted too (the local broker).
        self.watched: dict[str, int] = {}

    def start(self, step: str, name: str | None = None,
              extra_env: dict[str, str] | None = None,
              argv: list[str] | None = None, *, pipes: bool = False) -> None:
        """Start ``leadhub run STEP`` as child ``name`` (default: the step's name); ``argv``
        replaces ``-m leadhub.cli run STEP`` (a bench's own child process). With ``pipes``
        the child's stdin and stdout are pipes (``procs[name].stdin``/``.stdout``) and only
        its stderr goes to the log."""
        name = name or step
        command = [sys.executable]
        if self.profile_dir is not None:
            command += ["-m", "cProfile", "-o", str(self.profile_dir / f"{name}.prof")]
        command += argv if argv is not None else ["-m", "leadhub.cli", "run", step]
        with (self.logs / f"{name}.log").open("ab") as log:
            self.procs[name] = subprocess.Popen(
                command, env=self.env | (extra_env or {}), cwd=ROOT,
                stdin=subprocess.PIPE if pipes else None,
                stdout=subprocess.PIPE if pipes else log, stderr=log if pipes
                else subprocess.STDOUT)

    def check_alive(self) -> None:
        """Raise BenchError (with the log tail) if a child has exited."""
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                raise BenchError(f"child {name} exited with {proc.returncode}:\n"
                                 + self.log_tail(name))

    def pids(self) -> dict[str, int]:
        """Every child's and watched process's pid, by name."""
        return {name: proc.pid for name, proc in self.procs.items()} | self.watched

    def vm_hwm_mib(self) -> dict[str, float]:
        """Peak resident set (VmHWM) of each running child and watched process, in MiB."""
        peaks: dict[str, float] = {}
        for name, pid in self.pids().items():
            peak = vm_hwm_mib(pid)
            if peak is not None:
                peaks[name] = peak
        return peaks

    def cpu_seconds(self) -> dict[str, float]:
        """User + system CPU seconds used so far by each running child and watched process."""
        used: dict[str, float] = {}
        for name, pid in self.pids().items():
            seconds = cpu_seconds_of(pid)
            if seconds is not None:
                used[name] = seconds
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

    def stop(self, name: str, sig: int | None = signal.SIGTERM,
             timeout_s: float = 30.0) -> int | None:
        """Send ``sig`` to child ``name`` (None: it was sent already), wait for it (SIGKILL
        after ``timeout_s``), forget it; return its exit code."""
        proc = self.procs.pop(name)
        if sig is not None and proc.poll() is None:
            proc.send_signal(sig)
        try:
            return proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            progress(f"{name} ignored its stop signal for {timeout_s:.0f}s; killing it")
            proc.kill()
            return proc.wait(timeout=10)

    def stop_all(self, timeout_s: float = 30.0) -> dict[str, int | None]:
        """SIGTERM every child once, wait, SIGKILL stragglers; return each exit code.

        Once: a second SIGTERM could reach a child while its interpreter shuts down (the
        handlers reset to the default), which would end a clean stop with -15.
        """
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        return {name: self.stop(name, None, timeout_s) for name in list(self.procs)}

    def log_tail(self, name: str, lines: int = 30) -> str:
        path = self.logs / f"{name}.log"
        if not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


# --------------------------------------------------------------------------------------------
# Publishing


class Publishers:
    """One SDK publisher per partner, created up front (connections warm before timing).

    Every publisher connects as ``kafka``'s principal (the bench's admin), not as its partner:
    the benchmark measures throughput, not isolation, and a SCRAM login per partner would only
    need credentials created and deleted per run (tests/leadhub/test_kafka_isolation.py checks that
    partners stay inside their own topics).
    """

    def __init__(self, kafka: KafkaConnection, topics: TopicNames, site: SitePolicy,
                 catalog: Catalog) -> None:
        self.by_partner: dict[str, PartnerPublisher] = {}
        for partner_id in site.partner_ids():
            self.by_partner[partner_id] = PartnerPublisher(partner_id, kafka,
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


def postgres_backend_pids(database: str) -> list[int]:
    """Pids of the local PostgreSQL server's backends connected to ``database``.

    PostgreSQL titles each backend ``postgres: USER DATABASE HOST(PORT) STATE``.
    """
    found: list[int] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            title = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            parts = title.split()
            if len(parts) >= 3 and parts[0] == "postgres:" and parts[2] == database:
                found.append(int(entry.name))
    return found


def cpu_seconds_of(pid: int) -> float | None:
    """User + system CPU seconds a process has used so far (None if it is gone)."""
    with contextlib.suppress(OSError, IndexError, ValueError):
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return None


def vm_hwm_mib(pid: int) -> float | None:
    """Peak resident set size (VmHWM) of a process in MiB (None if it is gone)."""
    with contextlib.suppress(OSError, IndexError, ValueError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return None


def check_broker(kafka: KafkaConnection) -> None:
    """Raise BenchError(exit 2) unless something accepts TCP connections at the bootstrap
    address and the broker lets ``kafka``'s principal in."""
    host, _, port = kafka.bootstrap.split(",")[0].rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=3):
            pass
    except (OSError, ValueError) as exc:
        raise BenchError(
            f"no Kafka broker at {kafka.bootstrap} ({exc}); start it with "
            "`.venv/bin/leadhub services start`", exit_code=2) from exc
    try:
        admin_client(kafka, "leadhub-bench-check").close()
    except ServiceError as exc:
        hint = ("is the password stored in LEADHUB_KAFKA_CREDENTIALS_DIR current?"
                if kafka.secured else
                "no admin password found: the local broker stores it in "
                "LEADHUB_KAFKA_CREDENTIALS_DIR (default <LEADHUB_STATE_DIR>/kafka/credentials) "
                "at `.venv/bin/leadhub services start`; an external broker needs "
                "LEADHUB_KAFKA_USERNAME and LEADHUB_KAFKA_PASSWORD")
        raise BenchError(f"{exc}; {hint}", exit_code=2) from exc


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
        _drop_database(admin, name)
        admin.dispose()


def _drop_database(admin: Any, name: str, attempts: int = 10) -> None:
    """Drop the bench's database. An autovacuum worker busy in it (the superuser's process, which
    the bench's role may not terminate) makes ``WITH (FORCE)`` fail until it is done: try again
    for a while, then say which database is left rather than fail a finished run."""
    from sqlalchemy import text
    from sqlalchemy.exc import SQLAlchemyError

    for attempt in range(attempts):
        try:
            with admin.connect() as connection:
                connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            return
        except SQLAlchemyError as exc:
            if attempt == attempts - 1:
                print(f"bench: could not drop the database {name} ({type(exc).__name__}); "
                      "drop it by hand", file=sys.stderr)
            else:
                time.sleep(1.0)


def topic_sizes_mib(kafka: KafkaConnection, prefix: str) -> dict[str, float]:
    """On-disk size of each topic of the bench's prefix (MiB), largest first, prefix removed.

    Shows the write amplification: inbound bytes vs lead.events (and lead.dlq).
    """
    sizes: dict[str, float] = {}
    with contextlib.suppress(KafkaError, OSError, ServiceError):
        admin = admin_client(kafka, "leadhub-bench-sizes")
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


def delete_prefix_topics(kafka: KafkaConnection, prefix: str) -> None:
    """Delete every topic, consumer group and ACL of the bench's own prefix."""
    try:
        delete_prefix(kafka, prefix)
    except ServiceError as exc:
        progress(f"could not delete the bench topics: {exc}")
