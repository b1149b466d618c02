"""Triton's system shared memory extension through the real server, with tritonclient's shared memory utilities:
inputs read from and outputs written to POSIX shared memory, over V2 REST and gRPC."""

from __future__ import annotations

import os
from collections.abc import Iterator

import httpx
import numpy as np
import pytest
import tritonclient.grpc as triton_grpc
import tritonclient.http as triton_http
import tritonclient.utils.shared_memory as shm
from tritonclient.utils import InferenceServerException

from ortserve.bench.server import RunningServer
from ortserve.errors import PermissionDenied
from ortserve.server.shared_memory import SharedMemoryRegions, is_local

ROWS = 3
INPUT_BYTES, OUTPUT_BYTES = ROWS * 784 * 4, ROWS * 10 * 4


@pytest.fixture
def regions() -> Iterator[tuple[object, object, str]]:
    """An input and an output region, under keys of this process; destroyed afterwards."""
    tag = f"ortserve_test_{os.getpid()}"
    inputs = shm.create_shared_memory_region(f"{tag}_in", f"/{tag}_in", INPUT_BYTES)
    outputs = shm.create_shared_memory_region(f"{tag}_out", f"/{tag}_out", OUTPUT_BYTES + 16)
    yield inputs, outputs, tag
    shm.destroy_shared_memory_region(inputs)
    shm.destroy_shared_memory_region(outputs)


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_inputs_and_outputs_in_shared_memory(server: RunningServer, reference, regions, protocol: str) -> None:
    inputs, outputs, tag = regions
    module = triton_http if protocol == "http" else triton_grpc
    client = module.InferenceServerClient(server.host_port if protocol == "http" else f"127.0.0.1:{server.grpc_port}")
    rows = np.random.default_rng(20).standard_normal((ROWS, 784)).astype(np.float32)
    shm.set_shared_memory_region(inputs, [rows])
    client.unregister_system_shared_memory()
    client.register_system_shared_memory("in", f"/{tag}_in", INPUT_BYTES)
    client.register_system_shared_memory("out", f"/{tag}_out", OUTPUT_BYTES + 16)
    try:
        status = client.get_system_shared_memory_status(**({} if protocol == "http" else {"as_json": True}))
        names = [entry["name"] for entry in status] if protocol == "http" else sorted(status["regions"])
        assert sorted(names) == ["in", "out"]
        tensor = module.InferInput("input", [ROWS, 784], "FP32")
        tensor.set_shared_memory("in", INPUT_BYTES)
        wanted = module.InferRequestedOutput("logits")
        wanted.set_shared_memory("out", OUTPUT_BYTES + 8, offset=8)
        result = client.infer("mlp", [tensor], outputs=[wanted])
        output = result.get_output("logits")  # named, typed and shaped, its data in the region (as Triton's)
        assert list(output["shape"] if protocol == "http" else output.shape) == [ROWS, 10]
        if protocol == "http":
            assert "data" not in output
        else:
            assert result.get_response().raw_output_contents == [b""]
        (expected,) = reference("mlp").run(None, {"input": rows})
        written = shm.get_contents_as_numpy(outputs, np.float32, [OUTPUT_BYTES // 4 + 2])[2:].reshape(ROWS, 10)
        np.testing.assert_allclose(written, expected, rtol=1e-5, atol=1e-5)
    finally:
        client.unregister_system_shared_memory()
    assert len(client.get_system_shared_memory_status(**({} if protocol == "http" else {"as_json": True}))) == 0


def test_shared_memory_mistakes_are_named(server: RunningServer, regions) -> None:
    _, _, tag = regions
    client = triton_http.InferenceServerClient(server.host_port)
    client.register_system_shared_memory("small_out", f"/{tag}_out", 8)
    try:
        with pytest.raises(InferenceServerException, match="already registered"):
            client.register_system_shared_memory("small_out", f"/{tag}_out", 8)
        with pytest.raises(InferenceServerException, match="does not exist"):
            client.register_system_shared_memory("ghost", f"/{tag}_nowhere", 8)
        with pytest.raises(InferenceServerException, match="exceed"):
            client.register_system_shared_memory("huge", f"/{tag}_in", INPUT_BYTES * 2)
        rows = np.zeros((1, 784), np.float32)
        tensor = triton_http.InferInput("input", [1, 784], "FP32")
        tensor.set_data_from_numpy(rows)
        wanted = triton_http.InferRequestedOutput("logits")
        wanted.set_shared_memory("small_out", 8)
        with pytest.raises(InferenceServerException, match="more than the 8 bytes"):
            client.infer("mlp", [tensor], outputs=[wanted])
        unknown = triton_http.InferInput("input", [1, 784], "FP32")
        unknown.set_shared_memory("never_registered", 784 * 4)
        with pytest.raises(InferenceServerException, match="'never_registered' is not registered"):
            client.infer("mlp", [unknown])
        cuda = httpx.post(f"{server.url}/v2/cudasharedmemory/region/gpu/register",
                          json={"raw_handle": {"b64": ""}, "device_id": 0, "byte_size": 8})
        assert cuda.status_code == 400 and "CUDA shared memory is not supported" in cuda.json()["error"]
    finally:
        client.unregister_system_shared_memory()


def test_only_clients_on_this_machine_register() -> None:
    assert is_local("127.0.0.1") and is_local("::1") and not is_local("10.0.0.7") and not is_local(None)
    with pytest.raises(PermissionDenied, match="loopback"):
        SharedMemoryRegions().register("r", "/anything", 0, 8, local_client=False)
