"""The cores this process may use: its CPU affinity, capped by a cgroup CPU quota (a container's `--cpus`,
Kubernetes' CPU limit).

ONNX Runtime's default intra-op pool counts the machine's physical cores and pins a thread to each, whatever
the process was given: under `taskset -c 0` on 2 cores its worker thread set its own affinity to core 1
(measured here), and in a container limited to 2 CPUs of a 64-core host it would start a thread per host core.
Sessions are therefore given an explicit thread count whenever the process may not use the whole machine
(runtime.instances.threads_per_instance).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

CGROUP_V2_MAX = Path("/sys/fs/cgroup/cpu.max")
CGROUP_V1_QUOTA = Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us")
CGROUP_V1_PERIOD = Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us")


def machine_cores() -> int:
    """Logical CPUs of the machine."""
    return os.cpu_count() or 1


def usable_cores() -> int:
    """The cores this process may run on at once."""
    allowed = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else machine_cores()
    quota = cpu_quota()
    return max(1, min(allowed, math.ceil(quota)) if quota is not None else allowed)


def whole_machine() -> bool:
    """Whether this process may use every core of the machine (ONNX Runtime's default pool assumes it)."""
    return usable_cores() >= machine_cores()


def cpu_quota() -> float | None:
    """CPUs' worth of time per period the cgroup allows; None when unlimited or unknown."""
    try:
        quota, _, period = CGROUP_V2_MAX.read_text().strip().partition(" ")
    except OSError:
        try:
            quota, period = CGROUP_V1_QUOTA.read_text().strip(), CGROUP_V1_PERIOD.read_text().strip()
        except OSError:
            return None
    if quota in ("max", "-1") or not period:
        return None
    try:
        allowed, every = int(quota), int(period)
    except ValueError:
        return None
    return allowed / every if allowed > 0 and every > 0 else None
