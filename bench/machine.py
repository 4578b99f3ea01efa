"""What machine a benchmark ran on: CPU model, core count, Python version, load average.

Shared by the scripts in ``bench/`` so that every figure they print or write to BENCHMARKS.md
names its machine the same way. Run as files (``python bench/x.py``), they import this module
as ``machine`` (the script's own folder is first on ``sys.path``).
"""

from __future__ import annotations

import contextlib
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

UNKNOWN_CPU = "unknown CPU"


def cpu_model() -> str:
    """The CPU model name: ``lscpu``'s "Model name", else /proc/cpuinfo's, else the platform's."""
    with contextlib.suppress(OSError):
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or UNKNOWN_CPU


def python_version() -> str:
    """The running interpreter's version, e.g. ``3.11.9``."""
    return platform.python_version()


def load_average() -> tuple[float, float, float]:
    """The 1, 5 and 15 minute load averages (the machine is shared: say how busy it was)."""
    return os.getloadavg()


def machine_info() -> dict[str, Any]:
    """CPU model, core count, Python version and the load average now (as ``load_before``)."""
    return {"nproc": os.cpu_count(), "cpu": cpu_model(), "python": python_version(),
            "load_before": load_average()}
