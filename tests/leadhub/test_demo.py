"""The demo, headless for a bounded time: the hub comes up, the printed queries and the
README's examples answer.

One demo runs for the module, with its default site (``make demo``'s data) streamed fast, as
``leadhub demo`` would from a terminal. While it runs, the tests execute the ``curl`` commands
and the ``leadhub view --api`` command it printed, exactly as printed, and check what each
partner sees of the same participant; run the README's staff and auditor examples as written,
with the values of the ``export`` line it prints, and check each answers with rows; and check
that an audit window before the log says so. The last test sends Ctrl-C (SIGINT) and checks the
demo stopped what it started.
"""

from __future__ import annotations

import json
import os
import queue
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from leadhub.demo import READY_MARK
from leadhub.demo_showcase import README_VARIABLES
from processors.timefmt import parse_instant
from schemas.kafka_connection import KafkaConnection
from schemas.topics import TopicNames
from tests.factories import ROOT
from tests.readme_examples import (
    PRINTED,
    README_API,
    answer_problem,
    parse_export,
    printed_values,
    readme_examples,
    stale_skips,
    variables,
)

pytestmark = pytest.mark.integration

README = (ROOT / "README.md").read_text()
CLINICAL = {"SUD_TREATMENT", "MENTAL_HEALTH", "MEDICAL"}
POLICE_MAY_SEE = {"PROGRAM_STATUS", "REFERRAL"}
READY_TIMEOUT_S = 240.0
#: How long a staff example may take to answer after the demo printed its values (the view
#: catches up with the end of the stream within seconds).
STAFF_WAIT_S = 60.0
EXPORT_MARK = "export TOKEN="
PUBLISHED_MARK = " events from "  # the line after the stream: "published N events from ..."


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class RunningDemo:
    """``leadhub demo`` in the background; its stdout collected line by line."""

    def __init__(self, hub: Any, *args: str) -> None:
        self.process = subprocess.Popen(
            [hub.python, "-m", "leadhub.cli", "demo", *args], env=hub.env,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def wait_for(self, mark: str, timeout_s: float) -> str:
        """The first line containing ``mark``, collecting output until it comes; fail on exit
        or timeout."""
        for line in self.lines:
            if mark in line:
                return line
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                line = self._queue.get(timeout=1.0)
            except queue.Empty:
                continue
            if line is None:
                pytest.fail("the demo exited before '" + mark + "':\n" + self.output())
            self.lines.append(line)
            if mark in line:
                return line
        pytest.fail(f"no '{mark}' within {timeout_s:.0f}s:\n" + self.output())

    def output(self) -> str:
        return "\n".join(self.lines[-60:])

    def commands(self, program: str) -> list[tuple[str, list[str]]]:
        """(comment above it, argv) of every printed command line starting with ``program``."""
        found: list[tuple[str, list[str]]] = []
        comment = ""
        for line in self.lines:
            text = line.strip()
            if text.startswith("# "):
                comment = text[2:]
            elif text.split(" ", 1)[0].endswith(program):
                found.append((comment, shlex.split(text)))
        return found

    def interrupt(self, timeout_s: float = 90.0) -> tuple[int, str]:
        """Ctrl-C; return the exit code and the rest of stdout."""
        self.process.send_signal(signal.SIGINT)
        code = self.process.wait(timeout=timeout_s)
        rest: list[str] = []
        while (line := self._queue.get(timeout=10)) is not None:
            rest.append(line)
        return code, "\n".join(rest)


def run_json(argv: list[str]) -> Any:
    """Run a printed command as printed and parse its JSON output."""
    result = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, (argv[0], result.stderr[-500:])
    return json.loads(result.stdout)


class Demo:
    """The module's running demo: its process, the hub's environment and the API's port."""

    def __init__(self, running: RunningDemo, hub: Any, port: int) -> None:
        self.running = running
        self.hub = hub
        self.port = port

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@pytest.fixture(scope="module")
def demo(kafka: KafkaConnection, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    """``leadhub demo`` with its default site, streamed at 2000 events/s, once for the module;
    the view ready. Stopped (Ctrl-C) afterwards unless a test did; its topics deleted."""
    from tests.conftest import IN_CI, HubProcesses, _delete_prefix

    if shutil.which("curl") is None:
        message = "curl is missing: the demo's printed queries and the README's use it"
        if IN_CI:
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    topics = TopicNames(prefix=f"t{uuid.uuid4().hex[:10]}.")
    state = tmp_path_factory.mktemp("demo")
    hub = HubProcesses(kafka, topics, state)
    hub.env["LEADHUB_DATABASE_URL"] = f"sqlite:///{state / 'demo.sqlite'}"
    port = free_port()
    running = RunningDemo(hub, "--rate", "2000", "--port", str(port), "--duration", "600")
    try:
        running.wait_for(READY_MARK, READY_TIMEOUT_S)
        yield Demo(running, hub, port)
    finally:
        if running.process.poll() is None:
            running.interrupt()
        _delete_prefix(kafka, topics.prefix)


def test_demo_runs_headless_and_the_printed_queries_answer(demo: Demo) -> None:
    running = demo.running
    assert f"API: {demo.api}" in "\n".join(running.lines)
    assert "view database: sqlite:///" in "\n".join(running.lines)
    published = running.wait_for(PUBLISHED_MARK, READY_TIMEOUT_S)
    assert " HTTP gateway" in published and " 0 HTTP" not in published, published

    timelines: dict[str, list[dict[str, Any]]] = {}
    queries = running.commands("curl")
    assert len(queries) >= 6, running.output()
    for comment, argv in queries:
        answer = run_json(argv)
        assert "error" not in answer, (comment, answer)
        assert answer["items"], f"no rows for the printed query '{comment}'"
        if "/timeline" in argv[-1]:
            timelines[comment.split("[")[-1].rstrip("]")] = answer["items"]

    police, prosecutor = timelines["evergreen-pd"], timelines["county-pao"]
    manager, treatment = timelines["harbor-cm"], timelines["riverbend-sud"]
    participant = {row["participant_id"] for row in police + manager + treatment}
    assert len(participant) == 1, "the queries show one and the same participant"
    for row in police + prosecutor:
        assert not CLINICAL & set(row["categories"]), row["type"]
    for row in police:
        if row["source_partner"] != "evergreen-pd":
            assert set(row["categories"]) <= POLICE_MAY_SEE, row["type"]
    consents = {row["fields"].get("consent_id") for row in manager
                if row["type"] == "ConsentGranted"}
    clinical = [row for row in manager if CLINICAL & set(row["categories"])
                and row["source_partner"] != "harbor-cm"]  # its own rows need no consent
    assert clinical, "the case manager sees other partners' clinical rows under consent"
    for row in clinical:
        assert row["consent_ids"] and set(row["consent_ids"]) <= consents, row["type"]
    assert len(manager) > len(police)
    part2 = [row for row in treatment + manager if "SUD_TREATMENT" in row["categories"]]
    assert part2 and all("42 CFR part 2" in (row["notice"] or "") for row in part2)

    (_, view_argv), = running.commands("leadhub")
    via_api = run_json([demo.hub.python, "-m", "leadhub.cli", *view_argv[1:], "--json"])
    assert {row["event_id"] for row in via_api} == {row["event_id"] for row in manager}


def _readme_values(demo: Demo) -> dict[str, str]:
    """The values of the demo's ``export`` line, checked against what the README documents."""
    values = parse_export(demo.running.wait_for(EXPORT_MARK, READY_TIMEOUT_S))
    assert tuple(values) == README_VARIABLES
    for name in README_VARIABLES:
        assert f"`{name}`" in README, f"the README does not say what {name} is"
    named = re.search(r"`P`[^`]*`(p-[0-9a-f]{16})`\s+with the default options", README)
    assert named and values["P"] == named.group(1), "the README names another participant"
    return values


def _run_example(line: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run one README line as written, by a shell, against the demo's API."""
    return subprocess.run(["bash", "-c", line], env=env, cwd=cwd, capture_output=True,
                          text=True, timeout=300, check=False)


def test_the_readme_examples_answer_on_the_demos_data(demo: Demo, tmp_path: Path) -> None:
    """Every staff and auditor example of the README, as written (with the documented values),
    answers with rows; a failure or an empty answer fails, naming the example."""
    values = _readme_values(demo)
    examples = readme_examples(README)
    assert len(examples) >= 12 and stale_skips(README) == []
    env = dict(demo.hub.env, **values)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    problems: list[str] = []
    timings: list[str] = []
    for written in examples:
        undocumented = variables(written) - set(values) - set(PRINTED)
        assert not undocumented, f"{written}: {undocumented} are not documented placeholders"
        line = written.replace(README_API, demo.api)
        staff = line.startswith(("curl", "leadhub view"))
        started = time.monotonic()
        deadline = started + (STAFF_WAIT_S if staff else 0)
        while True:
            done = _run_example(line, env, tmp_path)
            problem = answer_problem(written, done.returncode, done.stdout, done.stderr)
            if problem is None or time.monotonic() > deadline:
                break
            time.sleep(1.0)  # a staff example: the view may still be catching up
        timings.append(f"{time.monotonic() - started:5.1f}s  {written[:90]}")
        if problem is not None:
            problems.append(problem)
        else:
            env.update(printed_values(written, done.stdout))
    print("\n".join(["README examples on the demo's data:", *timings]))
    assert problems == [], "\n".join(problems)


def test_an_audit_window_before_the_log_says_so(demo: Demo, tmp_path: Path) -> None:
    """The README's old example window (early 2026, before the demo ran): replay and export say
    plainly that nothing was received then, name when the log's events were, and exit 3."""
    from consumers.audit.checkpoints import key_paths

    values = _readme_values(demo)
    hub = demo.hub
    replay = hub.leadhub("audit", "replay", "--until", "2026-02-01T00:00:00Z")
    assert replay.returncode == 3, replay.stdout + replay.stderr
    assert "(0 rows from 0 records" in replay.stdout
    assert "no event of" in replay.stderr and "received_at" in replay.stderr, replay.stderr
    first_event = _first_event_at(replay.stderr)
    assert parse_instant(values["FROM"]) <= first_event <= parse_instant(values["UNTIL"])

    if not key_paths(Path(hub.env["LEADHUB_STATE_DIR"]))[1].exists():
        assert hub.leadhub("audit", "keygen").returncode == 0
    checkpoint = hub.leadhub("audit", "checkpoint", "--once")
    assert checkpoint.returncode == 0, checkpoint.stderr
    bundle = tmp_path / "bundle"
    export = hub.leadhub("audit", "export", "--from", "2026-01-01T00:00:00Z",
                         "--to", "2026-02-01T00:00:00Z", str(bundle))
    assert export.returncode == 3, export.stdout + export.stderr
    assert "nothing to export" in export.stderr and "received_at" in export.stderr
    assert parse_instant(values["FROM"]) <= _first_event_at(export.stderr)
    assert not bundle.exists(), "an empty window writes no bundle"


def _first_event_at(message: str) -> datetime:
    """When the message says the log's first event was received."""
    match = re.search(r"(?:its events from|its first event at) (\S+Z)", message)
    assert match, message
    return parse_instant(match.group(1))


def _console_users(lines: list[str]) -> dict[str, dict[str, str]]:
    """The printed console users by user name: partner, role, password, TOTP secret and URI,
    display name (those printed)."""
    users: dict[str, dict[str, str]] = {}
    last: dict[str, str] = {}
    for line in lines:
        user = re.match(r"\s+console user\s+(\S+)\s+(\S+)\s+(\S+)\s+password: (\S+)"
                        r"(?:\s+display name: (.+))?$", line)
        totp = re.match(r"\s+TOTP secret: ([A-Z2-7]+)\s+(otpauth://\S+)$", line)
        if user:
            last = {"partner": user.group(2), "role": user.group(3),
                    "password": user.group(4), **({"name": user.group(5)} if user.group(5)
                                                  else {})}
            users[user.group(1)] = last
        elif totp:
            last.update(secret=totp.group(1), uri=totp.group(2))
    return users


def test_the_demo_console_users_sign_in(demo: Demo) -> None:
    """The demo prints the console's URL and a user per role of the site; the case manager
    signs in with the printed password and finds the showcase participant assigned to them;
    the officer needs the printed TOTP secret and sees no consent panel."""
    import httpx2
    import pyotp

    from processors.site import load_site
    from tests.conftest import SITE_FILE
    from tests.console_seed import sign_in

    running = demo.running
    values = _readme_values(demo)
    printed = "\n".join(running.lines)
    assert f"Staff console: {demo.api}/ " in printed
    users = _console_users(running.lines)
    site = load_site(SITE_FILE)
    assert {u["role"] for u in users.values()} == {p.role for p in site.partners}
    with_totp = {name for name, u in users.items() if "secret" in u}
    assert {users[name]["role"] for name in with_totp} == set(site.console.totp_required_roles)
    for name in with_totp:
        assert users[name]["uri"].startswith(f"otpauth://totp/leadhub:{name}?secret=")
    manager = next(name for name, u in users.items() if u["role"] == "case_management")
    assert users[manager].get("name"), "the case manager has the showcase's case manager's name"
    with httpx2.Client(base_url=demo.api, timeout=30) as http:
        home = sign_in(http, manager, users[manager]["password"])
        assert home.status_code == 200 and "<h1>Caseload</h1>" in home.text, home.text[-500:]
        mine = http.get("/", params={"mine": "1"}).text
        assert f'href="/participants/{values["P"]}"' in mine
        person = http.get(f"/participants/{values['P']}").text
        assert 'id="consents-heading"' in person and "Consent " in person
    officer = next(name for name, u in users.items() if u["role"] == "police")
    with httpx2.Client(base_url=demo.api, timeout=30) as http:
        refused = sign_in(http, officer, users[officer]["password"], "", purpose=None)
        assert refused.status_code == 401
        code = pyotp.TOTP(users[officer]["secret"]).now()
        home = sign_in(http, officer, users[officer]["password"], code,
                       purpose="diversion_referral")
        assert home.status_code == 200 and "<h1>Caseload</h1>" in home.text
        person = http.get(f"/participants/{values['P']}")
        assert person.status_code == 200 and 'id="consents-heading"' not in person.text
    code_line, = (line for line in running.lines if "import pyotp" in line)  # as printed
    printed_code = run_text(shlex.split(code_line))
    assert pyotp.TOTP(users[officer]["secret"]).verify(printed_code, valid_window=1)


def run_text(argv: list[str]) -> str:
    """Run a printed command as printed; its stripped output."""
    result = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, (argv[0], result.stderr[-500:])
    return result.stdout.strip()


def test_ctrl_c_stops_what_the_demo_started(demo: Demo) -> None:
    code, rest = demo.running.interrupt()
    assert code == 0, rest
    assert "demo stopped" in rest
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", demo.port)) != 0, "the demo's API still answers"
