"""What the target CPU can do: the facts that decide quantization defaults and that provenance records."""

from __future__ import annotations

import platform
from pathlib import Path

from ortserve.runtime.cores import usable_cores
from ortserve.runtime.cpu import cpu_flags, has_vnni


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def describe() -> dict[str, object]:
    flags = cpu_flags()
    return {"cpu": cpu_name(), "cores": usable_cores(), "machine": platform.machine(),
            "isa": sorted(flag for flag in flags if flag.startswith(("avx", "amx", "sse4", "fma", "f16c"))),
            "vnni": has_vnni()}
