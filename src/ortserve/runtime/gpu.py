"""GPU utilization and memory from NVIDIA's NVML (`nvidia-ml-py`, the `gpu` extra), where it is present.

Every NVML call is in this module: on a machine without NVML (no package, no driver, no GPU) `GpuMonitor.open()`
returns a monitor with no devices after one info log line, and nothing else in ortserve changes. Readings are
taken when asked for (a metrics scrape, a statistics call), never on the request path.
"""

from __future__ import annotations

import importlib
import logging
from dataclasses import dataclass
from types import ModuleType
from typing import Any

log = logging.getLogger(__name__)

GPU_PROVIDERS = ("CUDAExecutionProvider", "TensorrtExecutionProvider")


@dataclass(frozen=True)
class GpuReading:
    index: int
    name: str
    utilization: float  # share of the last sample period a kernel was running, 0-1
    memory_used_bytes: int
    memory_total_bytes: int


class GpuMonitor:
    def __init__(self, nvml: ModuleType | None, handles: list[Any]) -> None:
        self._nvml = nvml
        self._handles = handles

    @classmethod
    def open(cls) -> GpuMonitor:
        """NVML's devices, or none (logged once at info level) when NVML cannot be had."""
        try:
            nvml = importlib.import_module("pynvml")
        except ImportError:
            log.info("GPU metrics off: NVML's Python binding (nvidia-ml-py, the `gpu` extra) is not installed")
            return cls(None, [])
        try:
            nvml.nvmlInit()
            handles = [nvml.nvmlDeviceGetHandleByIndex(index) for index in range(nvml.nvmlDeviceGetCount())]
        except nvml.NVMLError as exc:
            log.info("GPU metrics off: NVML is not usable here (%s)", exc)
            return cls(None, [])
        log.info("GPU metrics on: %d device(s) through NVML", len(handles))
        return cls(nvml, handles)

    @property
    def available(self) -> bool:
        return bool(self._handles)

    def read(self) -> list[GpuReading]:
        nvml = self._nvml
        if nvml is None:
            return []
        readings = []
        for index, handle in enumerate(self._handles):
            try:
                name = nvml.nvmlDeviceGetName(handle)
                rates = nvml.nvmlDeviceGetUtilizationRates(handle)
                memory = nvml.nvmlDeviceGetMemoryInfo(handle)
            except nvml.NVMLError as exc:  # a device can fall off the bus; the others still report
                log.warning("NVML could not read GPU %d: %s", index, exc)
                continue
            readings.append(GpuReading(index, name.decode() if isinstance(name, bytes) else str(name),
                                       rates.gpu / 100.0, int(memory.used), int(memory.total)))
        return readings

    def close(self) -> None:
        if self._nvml is not None:
            self._nvml.nvmlShutdown()
            self._nvml, self._handles = None, []


def device_of(providers: list[str], options: dict[str, dict[str, str]]) -> int | None:
    """The GPU a session runs on (its first provider's `device_id`, as `get_provider_options()` reports it) when
    that provider is a GPU one, else None."""
    if not providers or providers[0] not in GPU_PROVIDERS:
        return None
    return int(options.get(providers[0], {}).get("device_id", 0))
