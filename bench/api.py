"""Benchmark: staff API latency (caseload and timeline) over HTTP, 1M view rows in PostgreSQL.

Creates (or reuses) a dedicated database ``leadhub_bench_api`` in the local PostgreSQL, bulk
loads a synthetic view (``bench/api_view.py``) with COPY (not timed: each event's equal rows
stored once as a shared row naming its recipients, as the projector stores them; ``--rows``
counts the rows per recipient that the ``view_rows`` SQL view shows), lists the recipients'
participants and the indexed types' entries from it, then serves the API with uvicorn in a
subprocess (``leadhub serve``; audit records go to the real broker with acks=all, as in
production) and drives it with an open-loop client at a fixed request rate, half caseload pages
(random starting cursor) and half participant timelines, once per server configuration
(``--workers``: uvicorn worker counts, 1 and 2 by default).

In the same run, before the HTTP load, it measures baselines without HTTP: the same SQL
queries through :class:`consumers.api.queries.ViewQueries` (rows fetched and parsed) and one
access record written and acknowledged on Kafka. It prints p50 / p95 / p99 / max latency per
query, the requests/s achieved, the server's CPU time per request and peak RSS, the machine's
load during the run, and writes the "Staff API (issue 6)" section of BENCHMARKS.md (other
sections are left alone).

    .venv/bin/python bench/api.py [--rows 1000000] [--rate 50] [--seconds 60]
                                  [--workers 1 2] [--reuse] [--no-write]

On the secured broker (SASL/SCRAM, ACLs) the server and the baseline's access log connect as
``leadhub-api``, as deployed (``kafka_setup``); ``leadhub topics create`` makes its ACLs.

The client is deliberately light (one keep-alive ``http.client`` connection per thread): it
shares the machine's cores with the server, PostgreSQL and Kafka, and a heavier client would
add its own CPU time to what it measures.
"""

from __future__ import annotations

import argparse
import http.client
import os
import platform
import random
import re
import socket
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from consumers.api.access_log import AccessRecord, KafkaAccessLog, disclosures_of
from consumers.api.accounts import open_accounts
from consumers.api.auth import CredentialStore
from consumers.api.caseload import CASELOAD_TYPES
from consumers.api.cursors import encode_cursor
from consumers.api.queries import ViewQueries
from leadhub.cli_api import tune_gc
from leadhub.settings import load_settings
from processors.site import load_site
from schemas.kafka_connection import KafkaConnection

# isort: split
# Siblings in bench/: run as a file, the script's folder is first on sys.path.
from api_view import DATABASE, participants_for, person, prepare_database
from kafka_setup import bench_connection

ROOT = Path(__file__).resolve().parents[1]
SECTION = "## Staff API (issue 6)"
PREFIX = "benchapi."


def fresh_accounts(server_url: str, database: str) -> str:
    """Drop and create the accounts database ``database`` on the server; its URL."""
    admin = create_engine(server_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'))
            connection.execute(text(f'CREATE DATABASE "{database}"'))
    finally:
        admin.dispose()
    return make_url(server_url).set(database=database).render_as_string(hide_password=False)


def free_port() -> int:
    """An unused TCP port on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def server_pids(pid: int) -> list[int]:
    """The server process and its worker processes (uvicorn --workers), recursively."""
    pids = [pid]
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return pids
    for child in children:
        pids.extend(server_pids(int(child)))
    return pids


def peak_rss_mib(pid: int) -> float:
    """Peak resident set size (VmHWM) of the server and its workers, summed, MiB."""
    total = 0
    for each in server_pids(pid):
        try:
            for line in Path(f"/proc/{each}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total / 1024


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of the server and its workers so far, seconds."""
    ticks = 0
    for each in server_pids(pid):
        try:
            fields = Path(f"/proc/{each}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        ticks += int(fields[11]) + int(fields[12])  # utime, stime
    return ticks / os.sysconf("SC_CLK_TCK")


def percentile(values: list[float], q: float) -> float:
    """The q-quantile (0..1) of ``values`` (nearest rank)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


def summary(values: list[float]) -> str:
    """``n | p50 | p95 | p99 | max`` table cells (ms) for ``values``."""
    if not values:
        return "0 | - | - | - | -"
    return (f"{len(values)} | {statistics.median(values):.1f} | {percentile(values, 0.95):.1f} "
            f"| {percentile(values, 0.99):.1f} | {max(values):.1f}")


class LoadSampler:
    """Samples the 1-minute load average once a second while a run is in progress."""

    def __init__(self) -> None:
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(1.0):
            self.samples.append(os.getloadavg()[0])

    def __enter__(self) -> LoadSampler:
        self.samples.append(os.getloadavg()[0])
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()
        self.samples.append(os.getloadavg()[0])

    def describe(self) -> str:
        """min / mean / max of the samples."""
        values = self.samples
        return f"{min(values):.1f} / {statistics.fmean(values):.1f} / {max(values):.1f}"


def _request_path(kind: str, participant: str) -> str:
    if kind == "caseload":
        cursor = encode_cursor("participants", [participant])
        return f"/v1/participants?limit=50&cursor={cursor}"
    return f"/v1/participants/{participant}/timeline?limit=50"


def drive(port: int, token: str, people: int, rate: float, seconds: float,
          seed: int) -> dict[str, list[float]]:
    """Open-loop load: one request every 1/rate s, alternating caseload and timeline.

    Latency is measured from the request's scheduled time, so a client or server stall that
    delays later requests shows up in their latency (no coordinated omission).
    """
    rng = random.Random(seed)
    headers = {"Authorization": f"Bearer {token}", "X-Purpose": "care_coordination"}
    latencies: dict[str, list[float]] = {"caseload": [], "timeline": [], "errors": []}
    lock = threading.Lock()
    local = threading.local()

    def one(kind: str, path: str, due: float) -> None:
        status = 0
        for _ in range(2):  # a kept-alive connection the server closed: reconnect once
            connection = getattr(local, "connection", None)
            if connection is None:
                connection = local.connection = http.client.HTTPConnection(
                    "127.0.0.1", port, timeout=30)
            try:
                connection.request("GET", path, headers=headers)
                response = connection.getresponse()
                response.read()
                status = response.status
                break
            except (OSError, http.client.HTTPException):
                connection.close()
                local.connection = None
        elapsed = (time.perf_counter() - due) * 1000
        with lock:
            latencies[kind if status == 200 else "errors"].append(elapsed)

    total = int(rate * seconds)
    with ThreadPoolExecutor(max_workers=32) as pool:
        started = time.perf_counter()
        for index in range(total):
            due = started + index / rate
            delay = due - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            kind = "caseload" if index % 2 == 0 else "timeline"
            pool.submit(one, kind, _request_path(kind, person(rng.randrange(people))), due)
    return latencies


def baselines(url: str, kafka: KafkaConnection, topic: str, people: int,
              samples: int) -> dict[str, list[float]]:
    """The same reads without HTTP, and one access record acknowledged by Kafka, timed.

    SQL: :class:`ViewQueries` on an autocommit engine, as the API uses it (query, fetch and
    parse of the rows). Kafka: a caseload-sized access record, produced and acknowledged
    (acks=all) by the API's own :class:`KafkaAccessLog`.
    """
    rng = random.Random(3)
    engine = create_engine(url).execution_options(isolation_level="AUTOCOMMIT")
    views = ViewQueries(engine)
    audit = KafkaAccessLog(kafka, topic)
    out: dict[str, list[float]] = {"sql caseload": [], "sql timeline": [], "kafka ack": []}
    try:
        for index in range(samples + 20):
            participant = person(rng.randrange(people))
            began = time.perf_counter()
            page = views.caseload_rows("harbor-cm", participant, 51, CASELOAD_TYPES)
            caseload_ms = (time.perf_counter() - began) * 1000
            began = time.perf_counter()
            views.timeline("harbor-cm", participant, types=None, since=None, until=None,
                           after=None, limit=51)
            timeline_ms = (time.perf_counter() - began) * 1000
            ids = list(page)[:50]
            record = AccessRecord(
                user="bench", partner="harbor-cm", purpose="care_coordination",
                at=datetime.now(UTC), endpoint="GET /v1/participants",
                participant_ids=tuple(ids),
                disclosures=tuple(disclosures_of(r for p in ids for r in page[p])),
                key_id="bench")
            began = time.perf_counter()
            audit.record(record)
            kafka_ms = (time.perf_counter() - began) * 1000
            if index >= 20:  # warm-up: pool, prepared statements, producer connection
                out["sql caseload"].append(caseload_ms)
                out["sql timeline"].append(timeline_ms)
                out["kafka ack"].append(kafka_ms)
    finally:
        audit.close()
        engine.dispose()
    return out


def wait_until_serving(port: int, server: subprocess.Popen[bytes]) -> None:
    """Poll ``/openapi.json`` until the server answers (or fail if it exits)."""
    for _ in range(150):
        if server.poll() is not None:
            raise SystemExit(f"the API server exited with {server.returncode}")
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
            connection.request("GET", "/openapi.json")
            connection.getresponse().read()
            connection.close()
            return
        except (OSError, http.client.HTTPException):
            time.sleep(0.2)
    raise SystemExit("the API server did not start")


@dataclass
class HttpRun:
    """The measurements of one server configuration under the open-loop client."""

    workers: int
    latencies: dict[str, list[float]]
    wall_s: float
    cpu_ms: float
    rss_mib: float
    load: str

    @property
    def ok(self) -> int:
        """Requests answered 200."""
        return len(self.latencies["caseload"]) + len(self.latencies["timeline"])

    @property
    def sent(self) -> int:
        """Requests sent."""
        return self.ok + len(self.latencies["errors"])

    @property
    def label(self) -> str:
        """``1 worker`` / ``2 workers``."""
        return f"{self.workers} worker{'s' if self.workers > 1 else ''}"

    def worst_p99(self) -> float:
        """The larger p99 of the two queries."""
        return max(percentile(self.latencies[k], 0.99) for k in ("caseload", "timeline")
                   if self.latencies[k])


def run_http(env: dict[str, str], token: str, people: int, workers: int, rate: float,
             seconds: float) -> HttpRun:
    """Serve with ``workers`` uvicorn workers, warm up 5 s, then drive and measure."""
    port = free_port()
    command = [sys.executable, "-m", "leadhub.cli", "serve", "--port", str(port)]
    if workers != 1:
        command += ["--workers", str(workers)]
    server = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE)
    try:
        wait_until_serving(port, server)
        drive(port, token, people, rate, 5, seed=1)  # warm up
        cpu_before = cpu_seconds(server.pid)
        with LoadSampler() as load:
            began = time.monotonic()
            latencies = drive(port, token, people, rate, seconds, seed=2)
            wall = time.monotonic() - began
        cpu_ms = (cpu_seconds(server.pid) - cpu_before) * 1000
        rss = peak_rss_mib(server.pid)
    finally:
        server.terminate()
        server.wait(timeout=30)
    return HttpRun(workers, latencies, wall, cpu_ms, rss, load.describe())


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--rate", type=float, default=50.0, help="requests/s (default 50)")
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2],
                        help="uvicorn worker counts to measure, one run each (default 1 2)")
    parser.add_argument("--baseline-samples", type=int, default=300,
                        help="samples of each no-HTTP baseline (default 300)")
    parser.add_argument("--reuse", action="store_true", help="reuse a loaded bench database")
    parser.add_argument("--no-write", action="store_true", help="do not touch BENCHMARKS.md")
    args = parser.parse_args()

    settings = load_settings()
    server_url = settings.database_url or settings.local_database_url
    url = prepare_database(server_url, args.rows, args.reuse)
    site = load_site(settings.site_file)
    accounts_url = fresh_accounts(server_url, f"{DATABASE}_accounts")
    accounts = open_accounts(accounts_url)
    token = CredentialStore(accounts, site).create("harbor-cm", "staff", "bench").secret
    accounts.dispose()
    engine = create_engine(url)
    with engine.connect() as connection:
        mine = connection.execute(text(
            "SELECT count(*) FROM view_rows WHERE recipient = 'harbor-cm'")).scalar_one()
    engine.dispose()
    people = participants_for(args.rows)
    bootstrap = settings.effective_kafka_bootstrap
    env = dict(os.environ, LEADHUB_DATABASE_URL=url, LEADHUB_ACCOUNTS_DATABASE_URL=accounts_url,
               LEADHUB_TOPIC_PREFIX=PREFIX,
               LEADHUB_KAFKA_BOOTSTRAP=bootstrap)
    subprocess.run([sys.executable, "-m", "leadhub.cli", "topics", "create"], env=env,
                   check=True, capture_output=True)
    uptime = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    tune_gc()  # as the server does: no full collection inside the timed baselines
    base = baselines(url, bench_connection(bootstrap, "api"), f"{PREFIX}lead.audit.access", people,
                     args.baseline_samples)
    runs = [run_http(env, token, people, workers, args.rate, args.seconds)
            for workers in args.workers]
    import resource

    client_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    counts = " ".join(str(w) for w in args.workers)
    lines = [SECTION, "",
             f"Machine: {cpu_model()}, {os.cpu_count()} cores shared with other engineers' "
             f"work, Python {platform.python_version()}, PostgreSQL and Kafka local "
             "(the same cores).",
             f"Command: `.venv/bin/python bench/api.py --rows {args.rows} --rate "
             f"{args.rate:g} --seconds {args.seconds:g} --workers {counts}`", "",
             f"{args.rows:,} view rows ({mine:,} for the caller, {people:,} participants). "
             f"For each server configuration (`leadhub serve --workers N`), an open-loop "
             f"client sends {args.rate:g} requests/s for {args.seconds:g}s after a 5 s "
             "warm-up, alternating caseload pages and timelines; latency counts from each "
             "request's scheduled time. Each request writes its access record to Kafka "
             "(acks=all) and waits for the ack before answering. The no-HTTP baselines ran "
             "just before, sequentially, in the bench process.", "",
             f"Load before the run: `{uptime}`.", "",
             "| query | n | p50 ms | p95 ms | p99 ms | max ms |",
             "| --- | --- | --- | --- | --- | --- |"]
    for run in runs:
        lines += [f"| caseload page over HTTP, {run.label} (50 participants, random cursor) "
                  f"| {summary(run.latencies['caseload'])} |",
                  f"| participant timeline over HTTP, {run.label} (up to 50 rows) | "
                  f"{summary(run.latencies['timeline'])} |"]
    lines += [f"| baseline: caseload SQL, no HTTP (query + fetch + parse) | "
              f"{summary(base['sql caseload'])} |",
              f"| baseline: timeline SQL, no HTTP | {summary(base['sql timeline'])} |",
              f"| baseline: one caseload access record acked by Kafka | "
              f"{summary(base['kafka ack'])} |", "",
              "| server | requests/s sent / ok | errors | CPU ms per request | peak RSS MiB "
              "| load (1 min) min / mean / max | worst p99 ms | p99 <= 50 ms |",
              "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for run in runs:
        worst = run.worst_p99()
        lines.append(f"| {run.label} | {run.sent / run.wall_s:.1f} / {run.ok / run.wall_s:.1f} "
                     f"| {len(run.latencies['errors'])} | {run.cpu_ms / max(1, run.sent):.1f} "
                     f"| {run.rss_mib:.0f} | {run.load} | {worst:.1f} | "
                     f"{'yes' if worst <= 50 else 'no'} |")
    lines += ["", f"CPU is user + system time of the server and all its workers; RSS is the "
              f"sum of their peaks. Bench client peak RSS {client_rss:.0f} MiB."]
    report = "\n".join(lines) + "\n"
    print(report)
    if not args.no_write:
        write_section(ROOT / "BENCHMARKS.md", report)


def cpu_model() -> str:
    """The CPU model name, from /proc/cpuinfo."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def write_section(path: Path, report: str) -> None:
    """Replace (or append) only this benchmark's section of BENCHMARKS.md."""
    content = path.read_text(encoding="utf-8") if path.exists() else "# Benchmarks\n"
    pattern = re.compile(re.escape(SECTION) + r"\n.*?(?=^## |\Z)", re.DOTALL | re.MULTILINE)
    if pattern.search(content):
        content = pattern.sub(lambda _: report + "\n", content)
    else:
        content = content.rstrip("\n") + "\n\n" + report
    path.write_text(content.rstrip("\n") + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
