"""What a benchmark ran on, and how busy the machine was."""

from __future__ import annotations

import os
import platform
from pathlib import Path


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    return f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}"


def load_average() -> list[float]:
    """1, 5 and 15 minute load averages: a busy neighbour shows here."""
    return [float(value) for value in Path("/proc/loadavg").read_text().split()[:3]]


def rss_bytes(pid: int) -> int:
    """A process's resident memory now."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for process {pid}")
