"""Small helpers to run and supervise background processes by pid file."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from leadhub.services import PrerequisiteMissing, ServiceError


def read_pid(pid_file: Path) -> int | None:
    """Return the pid in ``pid_file`` if that process is alive, else None."""
    try:
        pid = int(pid_file.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None
    return pid if pid_alive(pid) else None


def pid_alive(pid: int) -> bool:
    """True if a process with ``pid`` exists and is not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def spawn(command: Sequence[str], log_file: Path, pid_file: Path, cwd: Path) -> int:
    """Start ``command`` detached in its own session, output to ``log_file``; record its pid."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with log_file.open("ab") as log:
        process = subprocess.Popen(
            list(command),
            cwd=cwd,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    pid_file.write_text(str(process.pid))
    return process.pid


def terminate(pid: int, timeout_s: float = 30.0) -> None:
    """Send SIGTERM to ``pid``; SIGKILL it if it has not exited after ``timeout_s``."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            _reap(pid)
            return
        time.sleep(0.2)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    _reap(pid)


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def wait_until(
    probe: Callable[[], bool], timeout_s: float, what: str, alive: Callable[[], bool]
) -> None:
    """Poll ``probe`` until it returns True; raise ServiceError after ``timeout_s``.

    ``alive`` is checked between polls so a crashed process fails fast instead of timing out.
    """
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if probe():
            return
        if not alive():
            raise ServiceError(f"{what} exited during start-up; see its log for the reason")
        time.sleep(0.5)
    raise ServiceError(f"{what} did not answer within {timeout_s:.0f}s; see its log")


def run_checked(command: Sequence[str], what: str, cwd: Path | None = None) -> str:
    """Run ``command`` to completion; return stdout or raise ServiceError naming ``what``."""
    try:
        result = subprocess.run(
            list(command), cwd=cwd, capture_output=True, text=True, check=False
        )
    except FileNotFoundError as exc:
        raise PrerequisiteMissing(f"{what}: {command[0]} not found") from exc
    if result.returncode != 0:
        tail = (result.stderr or result.stdout).strip().splitlines()[-15:]
        raise ServiceError(f"{what} failed (exit {result.returncode}):\n" + "\n".join(tail))
    return result.stdout
