"""What a benchmark ran on, and how busy the machine was."""

from __future__ import annotations

import platform
from pathlib import Path

from ortserve.optimize.machine import cpu_name
from ortserve.runtime.cores import usable_cores


def machine() -> str:
    return f"{cpu_name()}, {usable_cores()} cores, Python {platform.python_version()}"


def load_average() -> list[float]:
    """1, 5 and 15 minute load averages: a busy neighbour shows here."""
    return [float(value) for value in Path("/proc/loadavg").read_text().split()[:3]]


def rss_bytes(pid: int) -> int:
    """A process's resident memory now."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for process {pid}")
