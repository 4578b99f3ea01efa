"""The demo, headless for a bounded time: the hub comes up and the printed queries answer.

The demo runs as ``leadhub demo`` would from a terminal. While it runs, this test executes the
``curl`` commands and the ``leadhub view --api`` command it printed, exactly as printed, and
checks what each partner sees of the same participant; then it sends Ctrl-C (SIGINT) and checks
the demo stopped what it started.
"""

from __future__ import annotations

import json
import queue
import shlex
import shutil
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from leadhub.demo import READY_MARK

pytestmark = pytest.mark.integration

CLINICAL = {"SUD_TREATMENT", "MENTAL_HEALTH", "MEDICAL"}
POLICE_MAY_SEE = {"PROGRAM_STATUS", "REFERRAL"}
READY_TIMEOUT_S = 240.0


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
        """Collect output until a line containing ``mark``; fail on exit or timeout."""
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


@pytest.mark.skipif(shutil.which("curl") is None, reason="the printed queries use curl")
def test_demo_runs_headless_and_the_printed_queries_answer(hub: Any, tmp_path: Path) -> None:
    hub.env["LEADHUB_DATABASE_URL"] = f"sqlite:///{tmp_path / 'demo.sqlite'}"
    port = free_port()
    demo = RunningDemo(hub, "--participants", "80", "--days", "90", "--rate", "2000",
                       "--port", str(port), "--duration", "600")
    try:
        demo.wait_for(READY_MARK, READY_TIMEOUT_S)
        assert f"API: http://127.0.0.1:{port}" in "\n".join(demo.lines)
        published = next(line for line in demo.lines if line.startswith("published "))
        assert " HTTP gateway" in published and " 0 HTTP" not in published, published

        timelines: dict[str, list[dict[str, Any]]] = {}
        queries = demo.commands("curl")
        assert len(queries) >= 6, demo.output()
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

        (_, view_argv), = demo.commands("leadhub")
        via_api = run_json([hub.python, "-m", "leadhub.cli", *view_argv[1:], "--json"])
        assert {row["event_id"] for row in via_api} == {row["event_id"] for row in manager}
    finally:
        code, rest = demo.interrupt()
    assert code == 0, rest
    assert "demo stopped" in rest
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", port)) != 0, "the demo's API still answers"
