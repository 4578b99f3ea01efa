"""Benchmark: staff console pages (caseload, person) over HTTP, 1M view rows in PostgreSQL.

What staff get when they browse: the console (``leadhub serve``, at ``/``) serving caseload
pages and person pages from a large view, each page read accounted on ``lead.audit.access``
on the real broker (acks=all) before it is shown, as in production.

The view is bench/api.py's synthetic one (``bench/api_view.py``: COPY-loaded as shared rows, not
timed), in a database of its own (``--database``, default ``leadhub_bench_console``; ``--reuse``
keeps a loaded one between runs); the console's accounts (staff user, sessions, the staff token
of the baseline) are in a fresh PostgreSQL database beside it (``<database>_accounts``). The
server runs in a subprocess (``leadhub serve``, one uvicorn worker, audit topic prefix
``benchapi.`` as bench/api.py). The bench creates a case manager of ``harbor-cm`` (a role
without TOTP) and signs in as a browser does: GET the sign-in form (its CSRF token and cookie),
POST the password, GET and POST the purpose of use; then every page carries the session cookie.

Two measured phases on the same server, each an open-loop client at ``--rate`` pages/s for
``--seconds`` after a 5 s warm-up, with the same random plan (seeded): alternately a
caseload page (``/?after=<participant>``; one in four with ``status=enrolled``, a filter that
matches most lines) and a person page (``/participants/<id>``; one in four with
``category=HOUSING``) for participants the user has rows for:

1. the console's HTML pages, signed in;
2. the baseline: the staff API's JSON endpoints for the same participants and cursors
   (``GET /v1/participants?limit=25&cursor=...`` and ``.../timeline?limit=50``, with the
   category filter where the person page had it), with a staff token of the same partner.

Latency counts from each request's scheduled time (no coordinated omission). Then, one at a
time and not part of the target, ``--worst-samples`` each of the two heaviest caseload pages:
a filter that matches nobody in the synthetic view (``missed=1``: the most a keyset page may
read, 2,000 participants) and a page sorted by the next intake deadline (``sort=deadline``:
the caseload is read whole, up to 2,000 participants, and sorted in memory).

It prints p50 / p95 / p99 / max per page kind, the pages/s achieved, errors (any answer other
than 200, e.g. a redirect to sign in), the server's CPU per page and peak RSS, the 1-minute
load average at the start, during and at the end, and writes the "Staff console (issue 14)"
section of BENCHMARKS.md (other sections are left alone).

    .venv/bin/python bench/console.py [--rows 1000000] [--rate 20] [--seconds 30]
                                      [--reuse] [--no-write]

Exit codes: 0 figures printed (target met or not), 2 PostgreSQL or Kafka is not there (or
the view database is not PostgreSQL), 1 the run failed.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import re
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from consumers.api.accounts import open_accounts
from consumers.api.auth import CredentialStore
from consumers.api.cursors import encode_cursor
from consumers.console.listing import CHUNK, MAX_CHUNKS, SORT_SCAN
from consumers.console.users import StaffUsers
from leadhub.settings import load_settings
from processors.site import load_site

# isort: split
# Siblings in bench/: run as a file, the script's folder is first on sys.path.
from api import (
    PREFIX,
    LoadSampler,
    cpu_seconds,
    free_port,
    fresh_accounts,
    peak_rss_mib,
    percentile,
    summary,
    wait_until_serving,
)
from api_view import prepare_database
from kafka_setup import bench_connection
from machine import machine_info
from pipeline_harness import BenchError, check_broker

ROOT = Path(__file__).resolve().parents[1]
SECTION = "## Staff console (issue 14)"
DATABASE = "leadhub_bench_console"
PARTNER = "harbor-cm"
PURPOSE = "care_coordination"
USER = "bench-console"
PASSWORD = "bench console password"  # a throwaway user of a bench database
CSRF_FIELD = re.compile(r'name="csrf_token" value="([^"]+)"')
#: The console's page sizes (consumers/console/pages.py), asked of the API alike.
CASELOAD_LIMIT = 25
TIMELINE_LIMIT = 50
TARGET_MS = 100.0
WARM_UP_S = 5.0

CASELOAD = "caseload page"
CASELOAD_FILTERED = "caseload page, status=enrolled"
PERSON = "person page"
PERSON_FILTERED = "person page, category=HOUSING"
API_CASELOAD = "staff API caseload JSON"
API_TIMELINE = "staff API timeline JSON"


@dataclass(frozen=True, slots=True)
class Planned:
    """One page of the plan: its kind, the console's path and the staff API's equivalent."""

    kind: str
    console: str
    api: str

    @property
    def api_kind(self) -> str:
        """The table line of the API request."""
        return API_CASELOAD if self.kind.startswith("caseload") else API_TIMELINE


def plan(participants: list[str], count: int, seed: int) -> list[Planned]:
    """``count`` pages alternating caseload and person, random participants (seeded)."""
    rng = random.Random(seed)
    pages: list[Planned] = []
    for index in range(count):
        who = rng.choice(participants)
        filtered = rng.random() < 0.25
        if index % 2 == 0:
            cursor = encode_cursor("participants", [who])
            api = f"/v1/participants?limit={CASELOAD_LIMIT}&cursor={cursor}"
            if filtered:
                pages.append(Planned(CASELOAD_FILTERED, f"/?status=enrolled&after={who}", api))
            else:
                pages.append(Planned(CASELOAD, f"/?after={who}", api))
        else:
            api = f"/v1/participants/{who}/timeline?limit={TIMELINE_LIMIT}"
            if filtered:
                pages.append(Planned(PERSON_FILTERED, f"/participants/{who}?category=HOUSING",
                                     f"{api}&category=HOUSING"))
            else:
                pages.append(Planned(PERSON, f"/participants/{who}", api))
    return pages


def _cookies(response: http.client.HTTPResponse) -> dict[str, str]:
    jar: SimpleCookie = SimpleCookie()
    for header in response.msg.get_all("Set-Cookie") or []:
        jar.load(header)
    return {name: morsel.value for name, morsel in jar.items()}


def _csrf(body: bytes) -> str:
    found = CSRF_FIELD.search(body.decode("utf-8"))
    if found is None:
        raise BenchError("the console's form has no CSRF token")
    return found.group(1)


def sign_in(port: int, user: str, password: str) -> str:
    """Sign in as a browser does (form, CSRF cookie, password, purpose); the session cookie
    header value (``leadhub_session=...``)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)

    def call(method: str, path: str, cookie: str, form: dict[str, str] | None = None
             ) -> tuple[int, bytes, dict[str, str]]:
        headers = {"Cookie": cookie} if cookie else {}
        body = None
        if form is not None:
            body = urlencode(form)
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        connection.request(method, path, body=body, headers=headers)
        response = connection.getresponse()
        return response.status, response.read(), _cookies(response)

    try:
        _, page, cookies = call("GET", "/sign-in", "")
        form_cookie = f"leadhub_sign_in={cookies['leadhub_sign_in']}"
        status, _, cookies = call("POST", "/sign-in", form_cookie, {
            "csrf_token": _csrf(page), "user": user, "password": password, "code": ""})
        if status != 303 or "leadhub_session" not in cookies:
            raise BenchError(f"sign-in answered {status}, no session")
        session = f"leadhub_session={cookies['leadhub_session']}"
        status, page, _ = call("GET", "/purpose", session)
        status, _, _ = call("POST", "/purpose", session,
                            {"csrf_token": _csrf(page), "purpose": PURPOSE})
        if status != 303:
            raise BenchError(f"choosing the purpose answered {status}")
        status, _, _ = call("GET", "/", session)
        if status != 200:
            raise BenchError(f"the caseload answered {status} after sign-in")
    finally:
        connection.close()
    return session


@dataclass
class Phase:
    """What one open-loop phase measured."""

    name: str
    latencies: dict[str, list[float]] = field(default_factory=dict)
    errors: dict[int, int] = field(default_factory=dict)
    shown: dict[str, list[int]] = field(default_factory=dict)
    wall_s: float = 0.0
    cpu_ms: float = 0.0
    load: str = ""

    @property
    def ok(self) -> int:
        """Pages answered 200."""
        return sum(len(v) for v in self.latencies.values())

    @property
    def sent(self) -> int:
        """Pages asked for."""
        return self.ok + sum(self.errors.values())

    def of(self, prefix: str) -> list[float]:
        """The latencies of every kind starting with ``prefix``."""
        return [v for kind, values in self.latencies.items() if kind.startswith(prefix)
                for v in values]


def count_shown(kind: str, body: bytes) -> int:
    """Caseload lines or timeline rows in a page or JSON body."""
    if kind.startswith("staff API"):
        return len(json.loads(body)["items"])
    if kind.startswith("caseload"):
        return body.count(b'<td><a href="/participants/')
    return body.count(b'<section class="row"')


def drive(port: int, requests: list[tuple[str, str, dict[str, str]]], rate: float,
          threads: int, phase: Phase) -> None:
    """Open loop: request ``i`` is due at ``i / rate`` s; latency counts from when it was due,
    so a stall that delays later requests shows in their latency."""
    lock = threading.Lock()
    local = threading.local()

    def one(kind: str, path: str, headers: dict[str, str], due: float) -> None:
        status, body = 0, b""
        for _ in range(2):  # a kept-alive connection the server closed: reconnect once
            connection = getattr(local, "connection", None)
            if connection is None:
                connection = local.connection = http.client.HTTPConnection(
                    "127.0.0.1", port, timeout=30)
            try:
                connection.request("GET", path, headers=headers)
                response = connection.getresponse()
                body = response.read()
                status = response.status
                break
            except (OSError, http.client.HTTPException):
                connection.close()
                local.connection = None
        elapsed = (time.perf_counter() - due) * 1000
        shown = count_shown(kind, body) if status == 200 else 0
        with lock:
            if status == 200:
                phase.latencies.setdefault(kind, []).append(elapsed)
                phase.shown.setdefault(kind, []).append(shown)
            else:
                phase.errors[status] = phase.errors.get(status, 0) + 1

    with ThreadPoolExecutor(max_workers=threads) as pool:
        started = time.perf_counter()
        for index, (kind, path, headers) in enumerate(requests):
            due = started + index / rate
            delay = due - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            pool.submit(one, kind, path, headers, due)


def measure(name: str, port: int, server_pid: int,
            requests: list[tuple[str, str, dict[str, str]]], rate: float,
            threads: int) -> Phase:
    """Warm up (the first ``WARM_UP_S`` seconds' worth of ``requests``, unmeasured), then
    drive the rest and measure latency, the server's CPU and the load."""
    warm = int(rate * WARM_UP_S)
    drive(port, requests[:warm], rate, threads, Phase("warm-up"))
    phase = Phase(name)
    before = cpu_seconds(server_pid)
    with LoadSampler() as load:
        began = time.monotonic()
        drive(port, requests[warm:], rate, threads, phase)
        phase.wall_s = time.monotonic() - began
    phase.cpu_ms = (cpu_seconds(server_pid) - before) * 1000
    phase.load = load.describe()
    return phase


#: The heaviest caseload pages, measured one at a time (not part of the target).
WORST = {"missed": "caseload page `missed=1` (matches nobody here: reads up to "
                   f"{CHUNK * MAX_CHUNKS:,} participants)",
         "sorted": "caseload page `sort=deadline` (reads the caseload whole, up to "
                   f"{SORT_SCAN:,} participants, sorts in memory)"}


def worst_case(port: int, session: str, participants: list[str], samples: int
               ) -> dict[str, list[float]]:
    """One at a time: ``samples`` caseload pages whose filter matches nobody (``missed=1``
    in the synthetic view, at random cursors) and ``samples`` sorted by deadline (random
    page numbers among the first four). Latencies in ms, by :data:`WORST` key."""
    rng = random.Random(5)
    paths = [("missed", f"/?missed=1&after={rng.choice(participants)}")
             for _ in range(samples)]
    paths += [("sorted", f"/?sort=deadline&page={rng.randrange(4)}") for _ in range(samples)]
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    out: dict[str, list[float]] = {key: [] for key in WORST}
    try:
        for key, path in paths:
            began = time.perf_counter()
            connection.request("GET", path, headers={"Cookie": session})
            response = connection.getresponse()
            response.read()
            if response.status == 200:
                out[key].append((time.perf_counter() - began) * 1000)
    finally:
        connection.close()
    return out


def postgres_server_url() -> str:
    """The PostgreSQL server the bench uses (exit 2 if the view database is not PostgreSQL
    or the server does not answer)."""
    settings = load_settings()
    server_url = settings.database_url or settings.local_database_url
    if make_url(server_url).get_backend_name() != "postgresql":
        raise BenchError("bench/console.py measures the console on PostgreSQL; "
                         "LEADHUB_DATABASE_URL names another database", exit_code=2)
    engine = create_engine(server_url)
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except SQLAlchemyError as exc:
        raise BenchError(f"PostgreSQL does not answer at "
                         f"{make_url(server_url).render_as_string()}: "
                         f"{type(getattr(exc, 'orig', None) or exc).__name__}; start it with "
                         "`.venv/bin/leadhub services start`", exit_code=2) from exc
    finally:
        engine.dispose()
    return server_url


def participants_of(url: str) -> tuple[list[str], int]:
    """The participants ``PARTNER`` has rows for, and how many rows it has."""
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            people = [r[0] for r in connection.execute(text(
                "SELECT participant_id FROM recipient_participants WHERE recipient = :r "
                "ORDER BY participant_id"), {"r": PARTNER})]
            rows = connection.execute(text(
                "SELECT count(*) FROM view_rows WHERE recipient = :r"),
                {"r": PARTNER}).scalar_one()
    finally:
        engine.dispose()
    return people, int(rows)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line (see ``--help``)."""
    parser = argparse.ArgumentParser(
        description=(__doc__ or "").splitlines()[0],
        epilog="Needs the local PostgreSQL and Kafka (`.venv/bin/leadhub services start`); "
               "exit 2 if either is not there. The machine is shared: the run reports its "
               "1-minute load average.")
    parser.add_argument("--rows", type=int, default=1_000_000,
                        help="view rows in the bench database (default 1000000)")
    parser.add_argument("--rate", type=float, default=20.0,
                        help="pages/s sent by the open-loop client, in both phases (default 20)")
    parser.add_argument("--seconds", type=float, default=30.0,
                        help="measured seconds of each phase, after a 5 s warm-up (default 30)")
    parser.add_argument("--threads", type=int, default=8,
                        help="client threads, one kept-alive connection each (default 8)")
    parser.add_argument("--worst-samples", type=int, default=10,
                        help="pages of each of the two heaviest caseload pages (a filter "
                             "that matches nobody; sorted by deadline), measured one at a time "
                             "after the phases (default 10; 0 skips them)")
    parser.add_argument("--database", default=DATABASE,
                        help=f"bench view database on the local PostgreSQL server (default "
                             f"{DATABASE}); its accounts go to <database>_accounts")
    parser.add_argument("--reuse", action="store_true",
                        help="reuse the bench view database if it holds --rows rows "
                             "(else it is dropped and loaded again)")
    parser.add_argument("--no-write", action="store_true",
                        help="print the figures only; do not touch BENCHMARKS.md")
    args = parser.parse_args(argv)
    if args.rows < 100 or args.rate <= 0 or args.seconds <= 0 or args.threads < 1:
        parser.error("--rows >= 100, --rate > 0, --seconds > 0 and --threads >= 1")
    return args


@dataclass
class Run:
    """Everything the report needs."""

    args: argparse.Namespace
    machine: dict[str, Any]
    people: int
    mine: int
    console: Phase
    api: Phase
    worst: dict[str, list[float]]
    rss_mib: float
    load_after: tuple[float, float, float]


def run(args: argparse.Namespace) -> Run:
    """Prepare, serve, sign in, measure; the server is stopped on the way out."""
    machine = machine_info()
    server_url = postgres_server_url()
    settings = load_settings()
    bootstrap = settings.effective_kafka_bootstrap
    check_broker(bench_connection(bootstrap))
    url = prepare_database(server_url, args.rows, args.reuse, database=args.database)
    accounts_url = fresh_accounts(server_url, f"{args.database}_accounts")
    site = load_site(settings.site_file)
    accounts = open_accounts(accounts_url)
    try:
        StaffUsers(accounts, site).create(USER, PARTNER, password=PASSWORD)
        token = CredentialStore(accounts, site).create(PARTNER, "staff", USER).secret
    finally:
        accounts.dispose()
    participants, mine = participants_of(url)
    env = dict(os.environ, LEADHUB_DATABASE_URL=url, LEADHUB_ACCOUNTS_DATABASE_URL=accounts_url,
               LEADHUB_TOPIC_PREFIX=PREFIX, LEADHUB_KAFKA_BOOTSTRAP=bootstrap)
    subprocess.run([sys.executable, "-m", "leadhub.cli", "topics", "create"], env=env,
                   check=True, capture_output=True)
    count = int(args.rate * (WARM_UP_S + args.seconds))
    pages = plan(participants, count, seed=14)
    with tempfile.TemporaryFile() as log:  # the server's stderr (an unread pipe could block)
        console, api, worst, rss = serve_and_measure(args, env, log, pages, token,
                                                     participants)
    return Run(args, machine, len(participants), mine, console, api, worst, rss,
               os.getloadavg())


def serve_and_measure(args: argparse.Namespace, env: dict[str, str], log: Any,
                      pages: list[Planned], token: str, participants: list[str]
                      ) -> tuple[Phase, Phase, dict[str, list[float]], float]:
    """Start ``leadhub serve``, sign in, run both phases and the worst case; stop the server.
    Returns (console phase, API phase, worst-case latencies, server peak RSS MiB)."""
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "leadhub.cli", "serve", "--port",
                               str(port)], env=env, stdout=subprocess.DEVNULL, stderr=log)
    try:
        try:
            wait_until_serving(port, server)
        except SystemExit as exc:
            log.seek(0)
            tail = log.read().decode("utf-8", "replace")[-2000:]
            raise BenchError(f"{exc}; its log ends:\n{tail}") from exc
        session = sign_in(port, USER, PASSWORD)
        cookie = {"Cookie": session}
        bearer = {"Authorization": f"Bearer {token}", "X-Purpose": PURPOSE}
        print(f"signed in; {len(participants):,} participants; console phase", file=sys.stderr)
        console = measure("console", port, server.pid,
                          [(p.kind, p.console, cookie) for p in pages], args.rate, args.threads)
        print("staff API phase", file=sys.stderr)
        api = measure("staff API", port, server.pid,
                      [(p.api_kind, p.api, bearer) for p in pages], args.rate, args.threads)
        worst = worst_case(port, session, participants, args.worst_samples)
        return console, api, worst, peak_rss_mib(server.pid)
    finally:
        server.terminate()
        server.wait(timeout=30)


def mean(values: list[int]) -> str:
    """The mean of ``values`` to one decimal, or ``-``."""
    return f"{sum(values) / len(values):.1f}" if values else "-"


def report(result: Run) -> str:
    """The BENCHMARKS.md section of a run."""
    args, machine = result.args, result.machine
    load = machine["load_before"]
    console, api = result.console, result.api
    caseload_p99 = percentile(console.of("caseload"), 0.99) if console.of("caseload") else 0
    person_p99 = percentile(console.of("person"), 0.99) if console.of("person") else 0
    met = max(caseload_p99, person_p99) <= TARGET_MS and not console.errors
    command = (f".venv/bin/python bench/console.py --rows {args.rows} --rate {args.rate:g} "
               f"--seconds {args.seconds:g}")
    lines = [
        SECTION, "",
        f"Machine: {machine['cpu']}, {machine['nproc']} cores shared with other engineers' "
        f"work, Python {machine['python']}, PostgreSQL and Kafka local (the same cores).",
        f"Command: `{command}`", "",
        f"{args.rows:,} view rows ({result.mine:,} for `{PARTNER}`, {result.people:,} of its "
        f"participants; bench/api.py's synthetic view). One server (`leadhub serve`, one "
        f"worker), signed in once as a case manager of `{PARTNER}` (form, CSRF, password, "
        f"purpose, as a browser). Each phase: an open-loop client sends {args.rate:g} pages/s "
        f"for {args.seconds:g} s after a 5 s warm-up, {args.threads} threads, alternating a "
        f"caseload page ({CASELOAD_LIMIT} lines after a random participant; one in four with "
        f"`status=enrolled`) and a person page (up to {TIMELINE_LIMIT} rows; one in four with "
        f"`category=HOUSING`); latency counts from each page's scheduled time. Every page "
        "reads its session row (and writes its last use when that is a minute old) and writes "
        "its access record to `lead.audit.access` (acks=all) before it is shown; a person page "
        "also reads the consent panel (a case manager may see CONSENT rows), accounted as a "
        "second access record. The baseline phase, after the console's (so it finds the same "
        "rows in PostgreSQL's cache), asks the staff API's JSON endpoints for the same "
        "participants, cursors and filters (the caseload's status filter has no API "
        "equivalent) with a staff token.", "",
        f"Load average (1, 5, 15 min) at the start: {load[0]:.2f}, {load[1]:.2f}, "
        f"{load[2]:.2f}; at the end: {result.load_after[0]:.2f}, {result.load_after[1]:.2f}, "
        f"{result.load_after[2]:.2f}.", "",
        "| page | n | p50 ms | p95 ms | p99 ms | max ms | lines or rows shown (mean) |",
        "| --- | --- | --- | --- | --- | --- | --- |"]
    for phase, kinds in ((console, (CASELOAD, CASELOAD_FILTERED, PERSON, PERSON_FILTERED)),
                         (api, (API_CASELOAD, API_TIMELINE))):
        for kind in kinds:
            lines.append(f"| {kind} | {summary(phase.latencies.get(kind, []))} | "
                         f"{mean(phase.shown.get(kind, []))} |")
        if phase is console:
            lines += [f"| **all caseload pages** | {summary(console.of('caseload'))} | |",
                      f"| **all person pages** | {summary(console.of('person'))} | |"]
    for key, values in result.worst.items():
        if values:
            lines.append(f"| not in the target, one at a time: {WORST[key]} | "
                         f"{summary(values)} | |")
    lines += ["", "| phase | pages/s sent / ok | errors | server CPU ms per page | "
              "load (1 min) min / mean / max |", "| --- | --- | --- | --- | --- |"]
    for phase in (console, api):
        errors = ", ".join(f"{n}x {s or 'no answer'}" for s, n in sorted(phase.errors.items()))
        lines.append(f"| {phase.name} | {phase.sent / phase.wall_s:.1f} / "
                     f"{phase.ok / phase.wall_s:.1f} | {errors or 0} | "
                     f"{phase.cpu_ms / max(1, phase.sent):.1f} | {phase.load} |")
    lines += ["", f"Server peak RSS (VmHWM, whole run): {result.rss_mib:.0f} MiB.", "",
              f"Target (p99 of caseload and person pages <= {TARGET_MS:g} ms at "
              f"{args.rate:g} pages/s, no errors): **{'met' if met else 'not met'}** "
              f"(caseload p99 {caseload_p99:.1f} ms, person p99 {person_p99:.1f} ms)."]
    return "\n".join(lines) + "\n"


def write_section(path: Path, section: str) -> None:
    """Replace (or append) only this benchmark's section of BENCHMARKS.md."""
    content = path.read_text(encoding="utf-8") if path.exists() else "# Benchmarks\n"
    pattern = re.compile(re.escape(SECTION) + r"\n.*?(?=^## |\Z)", re.DOTALL | re.MULTILINE)
    if pattern.search(content):
        content = pattern.sub(lambda _: section + "\n", content)
    else:
        content = content.rstrip("\n") + "\n\n" + section
    path.write_text(content.rstrip("\n") + "\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; print the figures and (unless ``--no-write``) record them."""
    args = parse_args(argv)
    try:
        result = run(args)
    except BenchError as exc:
        print(f"bench/console.py: {exc}", file=sys.stderr)
        return exc.exit_code
    section = report(result)
    print(section)
    if not args.no_write:
        write_section(ROOT / "BENCHMARKS.md", section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
