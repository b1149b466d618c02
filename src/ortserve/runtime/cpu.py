"""The CPU's instruction set extensions, as /proc/cpuinfo lists them (none where it cannot be read)."""

from __future__ import annotations

from functools import cache
from pathlib import Path


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
