"""Benchmark: staff API latency (caseload and timeline) over HTTP, 1M view rows in PostgreSQL.

Creates (or reuses) a dedicated database ``leadhub_bench_api`` in the local PostgreSQL, bulk
loads synthetic view rows with COPY (not timed), adds the API's indexes, then serves the API
with uvicorn in a subprocess (``leadhub serve``; audit records go to the real broker with
acks=all, as in production) and drives it with an open-loop client at a fixed request rate,
half caseload pages (random starting cursor) and half participant timelines. Prints p50 / p95 /
p99 / max latency per query, the server's peak RSS, and writes the "Staff API (issue 6)"
section of BENCHMARKS.md (other sections are left alone).

    .venv/bin/python bench/api.py [--rows 1000000] [--rate 50] [--seconds 60] [--reuse]
"""

from __future__ import annotations

import argparse
import json
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
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from consumers.api.app import open_schema
from consumers.api.auth import CredentialStore
from consumers.api.cursors import encode_cursor
from consumers.store import ViewStore
from leadhub.settings import load_settings
from processors.site import load_site

ROOT = Path(__file__).resolve().parents[1]
SECTION = "## Staff API (issue 6)"
DATABASE = "leadhub_bench_api"
PREFIX = "benchapi."
T0 = datetime(2024, 1, 1, tzinfo=UTC)

#: (type, categories, recipients besides the case manager, fields)
STORY: list[tuple[str, list[str], tuple[str, ...], dict[str, Any]]] = [
    ("ReferralMade", ["REFERRAL", "LEGAL_CASE"], ("evergreen-pd", "county-pao",
                                                  "lead-coordinator"),
     {"door": "ARREST_DIVERSION", "charges_held": True}),
    ("IntakeCompleted", ["PROGRAM_STATUS"], ("county-pao", "lead-coordinator"), {}),
    ("CaseManagerAssigned", ["PROGRAM_STATUS"], ("lead-coordinator",),
     {"case_manager": "R. Ortiz", "agency": "Harbor"}),
    ("ContactLogged", ["PROGRAM_STATUS"], ("evergreen-pd",),
     {"contact_method": "OUTREACH", "successful": True}),
    ("HousingStatusChanged", ["HOUSING"], ("cedar-housing",), {"status": "TRANSITIONAL"}),
    ("ServiceEncounter", ["PROGRAM_STATUS"], ("lead-coordinator",),
     {"service_type": "CASE_MANAGEMENT", "duration_minutes": 30}),
]


def participants_for(rows: int) -> int:
    """About 40 rows per participant (20 events, about 2 recipients each)."""
    return max(10, rows // 40)


def generate(rows: int, seed: int) -> Any:
    """Yield COPY tuples of synthetic view rows until ``rows`` have been produced."""
    rng = random.Random(seed)
    produced = 0
    people = participants_for(rows)
    while True:
        for index in range(people):
            participant = f"P-{index:07d}"
            start = T0 + timedelta(minutes=rng.randrange(0, 60 * 24 * 600))
            for step in range(20):
                kind, categories, extra, fields = STORY[0] if step == 0 else (
                    STORY[1] if step == 1 else STORY[2 + rng.randrange(len(STORY) - 2)])
                at = start + timedelta(hours=step * rng.randrange(1, 72))
                event_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
                for recipient in ("harbor-cm", *extra[: rng.randrange(0, len(extra) + 1)]):
                    row = {"event_id": event_id, "type": kind, "participant_id": participant,
                           "occurred_at": at.isoformat().replace("+00:00", "Z"),
                           "source_partner": "harbor-cm", "fields": fields,
                           "categories": categories, "consent_ids": [], "notice": None}
                    yield (recipient, event_id, participant, kind, at, "harbor-cm",
                           json.dumps(row, sort_keys=True, separators=(",", ":")))
                    produced += 1
                    if produced >= rows:
                        return


def prepare_database(server_url: str, rows: int, reuse: bool) -> str:
    """Create and load the bench database (unless ``reuse`` and it is loaded); return its URL."""
    url = make_url(server_url).set(database=DATABASE).render_as_string(hide_password=False)
    admin = create_engine(server_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        exists = connection.execute(text("SELECT 1 FROM pg_database WHERE datname = :d"),
                                    {"d": DATABASE}).scalar()
        if exists and reuse:
            engine = create_engine(url)
            with engine.connect() as check:
                count = check.execute(text("SELECT count(*) FROM view_rows")).scalar_one()
            engine.dispose()
            if count == rows:
                admin.dispose()
                print(f"reusing {DATABASE} with {count} rows", file=sys.stderr)
                return url
        connection.execute(text(f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)'))
        connection.execute(text(f'CREATE DATABASE "{DATABASE}"'))
    admin.dispose()
    store = ViewStore(url)
    store.create_schema()
    started = time.monotonic()
    raw = store.engine.raw_connection()
    try:
        cursor = raw.cursor()
        copy_sql = ("COPY view_rows (recipient, event_id, participant_id, type, occurred_at, "
                    "source_partner, row_json) FROM STDIN")
        with cursor.copy(copy_sql) as copy:  # type: ignore[attr-defined]
            for values in generate(rows, seed=6):
                copy.write_row(values)
        raw.commit()
    finally:
        raw.close()
    open_schema(store.engine)
    with store.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.execute(text("VACUUM ANALYZE view_rows"))
    store.close()
    print(f"loaded {rows} rows in {time.monotonic() - started:.0f}s", file=sys.stderr)
    return url


def free_port() -> int:
    """An unused TCP port on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def peak_rss_mib(pid: int) -> float:
    """Peak resident set size of a process (VmHWM), MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def percentile(values: list[float], q: float) -> float:
    """The q-quantile (0..1) of ``values`` (nearest rank)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


def drive(base: str, token: str, people: int, rate: float, seconds: float,
          seed: int) -> dict[str, list[float]]:
    """Open-loop load: one request every 1/rate s, alternating caseload and timeline."""
    rng = random.Random(seed)
    headers = {"Authorization": f"Bearer {token}", "X-Purpose": "care_coordination"}
    client = httpx.Client(base_url=base, headers=headers, timeout=30.0,
                          limits=httpx.Limits(max_connections=32))
    latencies: dict[str, list[float]] = {"caseload": [], "timeline": [], "errors": []}
    lock = threading.Lock()

    def one(kind: str, participant: str) -> None:
        if kind == "caseload":
            cursor = encode_cursor("participants", [participant])
            path, params = "/v1/participants", {"limit": 50, "cursor": cursor}
        else:
            path, params = f"/v1/participants/{participant}/timeline", {"limit": 50}
        began = time.perf_counter()
        response = client.get(path, params=params)
        elapsed = (time.perf_counter() - began) * 1000
        with lock:
            latencies[kind if response.status_code == 200 else "errors"].append(elapsed)

    total = int(rate * seconds)
    with ThreadPoolExecutor(max_workers=32) as pool:
        started = time.perf_counter()
        for index in range(total):
            due = started + index / rate
            delay = due - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            kind = "caseload" if index % 2 == 0 else "timeline"
            pool.submit(one, kind, f"P-{rng.randrange(people):07d}")
    client.close()
    return latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--rate", type=float, default=50.0, help="requests/s (default 50)")
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--reuse", action="store_true", help="reuse a loaded bench database")
    parser.add_argument("--no-write", action="store_true", help="do not touch BENCHMARKS.md")
    args = parser.parse_args()

    settings = load_settings()
    url = prepare_database(settings.database_url or settings.local_database_url, args.rows,
                           args.reuse)
    site = load_site(settings.site_file)
    engine = create_engine(url)
    token = CredentialStore(engine, site).create("harbor-cm", "staff", "bench").secret
    with engine.connect() as connection:
        mine = connection.execute(text(
            "SELECT count(*) FROM view_rows WHERE recipient = 'harbor-cm'")).scalar_one()
    engine.dispose()
    port = free_port()
    env = dict(os.environ, LEADHUB_DATABASE_URL=url, LEADHUB_TOPIC_PREFIX=PREFIX,
               LEADHUB_KAFKA_BOOTSTRAP=settings.effective_kafka_bootstrap)
    subprocess.run([sys.executable, "-m", "leadhub.cli", "topics", "create"], env=env,
                   check=True, capture_output=True)
    server = subprocess.Popen([sys.executable, "-m", "leadhub.cli", "serve", "--port",
                               str(port)], env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            try:
                httpx.get(f"{base}/openapi.json", timeout=1)
                break
            except httpx.HTTPError:
                time.sleep(0.2)
        drive(base, token, participants_for(args.rows), args.rate, 5, seed=1)  # warm up
        load_before = os.getloadavg()[0]
        began = time.monotonic()
        latencies = drive(base, token, participants_for(args.rows), args.rate, args.seconds,
                          seed=2)
        wall = time.monotonic() - began
        load_after = os.getloadavg()[0]
        server_rss = peak_rss_mib(server.pid)
    finally:
        server.terminate()
        server.wait(timeout=30)
    import resource

    client_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    done = len(latencies["caseload"]) + len(latencies["timeline"])
    lines = [SECTION, "",
             f"Machine: {cpu_model()}, {os.cpu_count()} cores (shared), Python "
             f"{platform.python_version()}, PostgreSQL local cluster, Kafka local broker.",
             f"Command: `.venv/bin/python bench/api.py --rows {args.rows} --rate "
             f"{args.rate:g} --seconds {args.seconds:g}`", "",
             f"{args.rows:,} view rows ({mine:,} for the caller, "
             f"{participants_for(args.rows):,} participants); one uvicorn worker; "
             f"open-loop client at {args.rate:g} requests/s for {args.seconds:g}s "
             f"({done} ok, {len(latencies['errors'])} errors, "
             f"{done / wall:.1f} req/s achieved). Each request also writes its access record "
             "to Kafka (acks=all) before answering. Load average (1 min) before / after the "
             f"run: {load_before:.1f} / {load_after:.1f} — the server, the client, PostgreSQL "
             "and Kafka share the 2 cores with other work, and an open-loop client queues "
             "behind every stall, so p99 tracks the machine's load.", "",
             "| query | n | p50 ms | p95 ms | p99 ms | max ms |",
             "| --- | --- | --- | --- | --- | --- |"]
    for kind, label in (("caseload", "caseload page (50 participants, random cursor)"),
                        ("timeline", "participant timeline (up to 50 rows)")):
        values = latencies[kind] or [float("nan")]
        lines.append(f"| {label} | {len(latencies[kind])} | {statistics.median(values):.1f} | "
                     f"{percentile(values, 0.95):.1f} | {percentile(values, 0.99):.1f} | "
                     f"{max(values):.1f} |")
    lines += ["", f"Peak memory: API server {server_rss:.0f} MiB RSS, bench client "
              f"{client_rss:.0f} MiB. Target p99 <= 50 ms.", "",
              "Indexes added to `view_rows` for these reads: (recipient, participant_id, "
              "occurred_at, event_id) and (recipient, type, occurred_at, event_id)."]
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
