"""How long the machine held its tasks while a benchmark phase ran: Linux pressure stall
information (PSI, ``/proc/pressure/io`` and ``/proc/pressure/cpu``).

A latency figure on a shared two-core machine mixes the hub's work with the machine's: a disk
writing back the previous phase's pages, or other work on the cores. :class:`PressureSampler`
reads the kernel's stall counters every ``interval_s`` on a thread of its own and reports, over
the phase, the seconds some task waited on I/O or for a CPU, and the worst second of I/O stall,
so that a long tail can be told apart from the hub's own (decision 0011). Where the kernel has
no PSI the figures are absent.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from pathlib import Path
from typing import Any

PRESSURE = Path("/proc/pressure")


def stall_totals() -> tuple[int, int] | None:
    """Microseconds some task has stalled on I/O and for a CPU since boot; None without PSI."""
    try:
        io = (PRESSURE / "io").read_text().split()
        cpu = (PRESSURE / "cpu").read_text().split()
    except OSError:
        return None
    return int(io[4].removeprefix("total=")), int(cpu[4].removeprefix("total="))


class PressureSampler:
    """Samples :func:`stall_totals` from :meth:`start` until :meth:`stop`."""

    def __init__(self, interval_s: float = 0.05) -> None:
        self.interval_s = interval_s
        self._samples: list[tuple[float, int, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pressure", daemon=True)

    def start(self) -> PressureSampler:
        """Begin sampling; returns self."""
        self._thread.start()
        return self

    def _run(self) -> None:
        while True:
            totals = stall_totals()
            if totals is None:
                return
            self._samples.append((time.monotonic(), *totals))
            if self._stop.wait(self.interval_s):
                return

    def stop(self) -> dict[str, Any]:
        """Stop; return ``io_stall_s`` and ``cpu_stall_s`` over the phase and
        ``io_worst_second_s`` (the most I/O stall within any one second), or {} without PSI."""
        self._stop.set()
        self._thread.join()
        if len(self._samples) < 2:
            return {}
        first, last = self._samples[0], self._samples[-1]
        window: deque[tuple[float, int]] = deque()
        worst = 0
        for at, io, _ in self._samples:
            window.append((at, io))
            while at - window[0][0] > 1.0:
                window.popleft()
            worst = max(worst, io - window[0][1])
        return {"io_stall_s": (last[1] - first[1]) / 1e6, "cpu_stall_s": (last[2] - first[2]) / 1e6,
                "io_worst_second_s": worst / 1e6}
