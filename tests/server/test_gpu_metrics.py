"""GPU gauges from NVML where it is present (a stand-in module here), none and one log line where it is absent."""

from __future__ import annotations

import logging
import sys
import types

import httpx
import pytest
from prometheus_client import CollectorRegistry, generate_latest

from ortserve.bench.server import RunningServer
from ortserve.runtime.gpu import GpuMonitor, device_of
from ortserve.server.metrics import _GpuCollector


class _NvmlError(Exception):
    pass


def _fake_nvml(devices: int, failing: set[int] = frozenset()) -> types.ModuleType:  # type: ignore[assignment]
    """The slice of pynvml that ortserve calls, answering as a machine with `devices` GPUs would."""
    nvml = types.ModuleType("pynvml")
    nvml.NVMLError = _NvmlError
    nvml.nvmlInit = lambda: None
    nvml.nvmlShutdown = lambda: None
    nvml.nvmlDeviceGetCount = lambda: devices
    nvml.nvmlDeviceGetHandleByIndex = lambda index: index

    def name(handle: int) -> bytes:
        if handle in failing:
            raise _NvmlError("GPU is lost")
        return f"NVIDIA H200 #{handle}".encode()

    nvml.nvmlDeviceGetName = name
    nvml.nvmlDeviceGetUtilizationRates = lambda handle: types.SimpleNamespace(gpu=40 + handle, memory=5)
    nvml.nvmlDeviceGetMemoryInfo = lambda handle: types.SimpleNamespace(used=(handle + 1) * 2**30, total=141 * 2**30)
    return nvml


def test_without_nvml_there_are_no_gpu_gauges_and_one_log_line(server: RunningServer) -> None:
    assert "ortserve_gpu_" not in httpx.get(f"{server.url}/metrics").text
    assert server.log().count("GPU metrics off") == 1


def test_nvml_readings_become_gauges(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", _fake_nvml(2, failing={1}))
    with caplog.at_level(logging.INFO):
        monitor = GpuMonitor.open()
    assert monitor.available and "2 device(s)" in caplog.text
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_GpuCollector(monitor))
    text = generate_latest(registry).decode()
    assert 'ortserve_gpu_utilization_ratio{gpu="0",name="NVIDIA H200 #0"} 0.4' in text
    assert 'ortserve_gpu_memory_used_bytes{gpu="0",name="NVIDIA H200 #0"} 1.073741824e+09' in text
    assert 'ortserve_gpu_memory_total_bytes{gpu="0"' in text
    assert 'gpu="1"' not in text  # the device that fails to answer is left out, the other still reports
    monitor.close()
    assert monitor.read() == []


def test_nvml_that_cannot_start_turns_gpu_metrics_off(monkeypatch: pytest.MonkeyPatch) -> None:
    nvml = _fake_nvml(1)

    def no_driver() -> None:
        raise _NvmlError("Driver Not Loaded")

    nvml.nvmlInit = no_driver
    monkeypatch.setitem(sys.modules, "pynvml", nvml)
    assert not GpuMonitor.open().available


def test_the_device_of_a_session_is_its_first_gpu_providers() -> None:
    on_second = {"CUDAExecutionProvider": {"device_id": "1"}}
    assert device_of(["CUDAExecutionProvider", "CPUExecutionProvider"], on_second) == 1
    assert device_of(["TensorrtExecutionProvider", "CUDAExecutionProvider"], {}) == 0
    assert device_of(["CPUExecutionProvider"], {"CPUExecutionProvider": {}}) is None
