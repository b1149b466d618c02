"""What the target CPU can do: the facts that decide quantization defaults and that provenance records."""

from __future__ import annotations

import platform
from functools import cache
from pathlib import Path

from ortserve.runtime.instances import usable_cores


@cache
def cpu_flags() -> frozenset[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    line = next((line for line in text.splitlines() if line.startswith("flags")), "")
    return frozenset(line.partition(":")[2].split())


def has_vnni() -> bool:
    """AVX-512 VNNI or AVX-VNNI: U8S8 INT8 kernels run without the saturation that needs reduce_range."""
    return bool(cpu_flags() & {"avx512_vnni", "avx_vnni"})


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
