"""Models no one here wrote: every model of ONNX's own backend test data (shipped in the onnx package, with
reference inputs) that bare ONNX Runtime runs, served from one repository with no config.yaml and called over
each protocol with those inputs; each answer must match bare ONNX Runtime's. Scalars, shape inputs, integer,
boolean, half and string tensors, several outputs: what a hand-written model set misses. Models older than the
kernels ONNX Runtime keeps (opset < 7, which bare ONNX Runtime refuses and ortserve converts up) are called too,
against the reference outputs the test data ships (computed by the framework that exported them)."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import httpx
import numpy as np
import onnx
import onnxruntime as ort
import pytest
import tritonclient.grpc as triton_grpc
import tritonclient.http as triton_http
from onnx import numpy_helper
from tritonclient.utils import InferenceServerException, np_to_triton_dtype

from ortserve.bench.server import RunningServer, start_server
from ortserve.protos.tensorflow.core.framework.tensor_pb2 import TensorProto
from ortserve.protos.tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc
from ortserve.runtime import onnx_versions

pytestmark = pytest.mark.slow

BACKEND_DATA = Path(onnx.__file__).parent / "backend" / "test" / "data"
DT_STRING = 7
TF_TYPES = {np.dtype(np.float32): 1, np.dtype(np.float64): 2, np.dtype(np.int32): 3, np.dtype(np.uint8): 4,
            np.dtype(np.int16): 5, np.dtype(np.int8): 6, np.dtype(np.int64): 9, np.dtype(np.bool_): 10,
            np.dtype(np.uint16): 17, np.dtype(np.float16): 19, np.dtype(np.uint32): 22, np.dtype(np.uint64): 23}
NUMPY_TYPES = {code: dtype for dtype, code in TF_TYPES.items()}
_ORT = ort.capi.onnxruntime_pybind11_state
ORT_ERRORS = (_ORT.Fail, _ORT.NotImplemented, _ORT.InvalidGraph, _ORT.InvalidArgument, _ORT.InvalidProtobuf,
              _ORT.RuntimeException)

Tensors = dict[str, np.ndarray]


@dataclass(frozen=True)
class Case:
    inputs: Tensors
    expected: Tensors  # bare ONNX Runtime's answer to `inputs`, or the test data's own for an old model
    rtol: float = 1e-5
    atol: float = 1e-6


def _tensor(path: Path) -> np.ndarray:
    proto = onnx.TensorProto()
    proto.ParseFromString(path.read_bytes())
    return numpy_helper.to_array(proto)


def _numbered(data: Path, kind: str) -> list[np.ndarray]:
    return [_tensor(path) for path in sorted(data.glob(f"{kind}_*.pb"), key=lambda path: int(path.stem.split("_")[1]))]


def _case(model_path: Path) -> Case | None:
    """The model's first reference inputs and bare ONNX Runtime's outputs for them (the test data's own outputs
    for a model older than the kernels ONNX Runtime keeps); None when ONNX Runtime cannot run it otherwise (an
    operator it lacks, a locale the machine lacks) or answers with something other than tensors."""
    data = model_path.parent / "test_data_set_0"
    try:
        session = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
        inputs = dict(zip([spec.name for spec in session.get_inputs()], _numbered(data, "input"), strict=True))
        outputs = session.run(None, inputs)
    except ORT_ERRORS:
        return _old_case(model_path)
    if not all(isinstance(output, np.ndarray) for output in outputs):
        return None
    return Case(inputs, dict(zip([spec.name for spec in session.get_outputs()], outputs, strict=True)))


def _old_case(model_path: Path) -> Case | None:
    model = onnx.load(model_path)
    opset = next(entry.version for entry in model.opset_import if entry.domain in ("", "ai.onnx"))
    if opset >= onnx_versions.oldest_runtime_opset():
        return None
    data, weights = model_path.parent / "test_data_set_0", {each.name for each in model.graph.initializer}
    names = [value.name for value in model.graph.input if value.name not in weights]
    return Case(dict(zip(names, _numbered(data, "input"), strict=True)),
                dict(zip([value.name for value in model.graph.output], _numbered(data, "output"), strict=True)),
                rtol=1e-3, atol=1e-4)


@dataclass(frozen=True)
class Backend:
    repository: Path
    cases: dict[str, Case]


@pytest.fixture(scope="module")
def backend(tmp_path_factory: pytest.TempPathFactory) -> Backend:
    repository = tmp_path_factory.mktemp("onnx_backend")
    cases = {}
    for model_path in sorted(BACKEND_DATA.glob("*/*/model.onnx")):
        case = _case(model_path) if (model_path.parent / "test_data_set_0").exists() else None
        if case is not None:
            name = model_path.parent.name.removeprefix("test_")
            (repository / name / "1").mkdir(parents=True)
            shutil.copy(model_path, repository / name / "1" / "model.onnx")
            cases[name] = case
    assert len(cases) >= 120, f"only {len(cases)} of ONNX's backend test models ran in bare ONNX Runtime or are old"
    return Backend(repository, cases)


@pytest.fixture(scope="module")
def backend_server(backend: Backend, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    with start_server(backend.repository, tmp_path_factory.mktemp("logs") / "server.log", timeout_s=600) as server:
        yield server


def _mismatch(name: str, got: np.ndarray | None, expected: np.ndarray, case: Case) -> str | None:
    if got is None:
        return f"output {name!r} missing"
    if got.shape != expected.shape:
        return f"output {name!r} of shape {got.shape}, expected {expected.shape}"
    if expected.dtype == object:
        text = [item.decode() if isinstance(item, bytes) else str(item) for item in got.reshape(-1)]
        return None if text == [str(item) for item in expected.reshape(-1)] else f"output {name!r}: other strings"
    if got.dtype != expected.dtype:
        return f"output {name!r} of type {got.dtype}, expected {expected.dtype}"
    close = np.allclose(got, expected, rtol=case.rtol, atol=case.atol, equal_nan=True)
    return None if close else f"output {name!r}: other values"


def _check_all(cases: dict[str, Case], call: Callable[[str, Case], Tensors]) -> None:
    failures = []
    for name, case in cases.items():
        try:
            answer = call(name, case)
        except (InferenceServerException, grpc.RpcError, httpx.HTTPStatusError) as exc:
            failures.append(f"{name}: {exc}")
            continue
        failures += [f"{name}: {problem}" for output, expected in case.expected.items()
                     if (problem := _mismatch(output, answer.get(output), expected, case)) is not None]
    assert not failures, "\n".join(failures)


def _triton_type(array: np.ndarray) -> str:
    return "BYTES" if array.dtype == object else np_to_triton_dtype(array.dtype)


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_v2_rest(backend: Backend, backend_server: RunningServer, binary: bool) -> None:
    client = triton_http.InferenceServerClient(backend_server.host_port)

    def call(name: str, case: Case) -> Tensors:
        inputs = []
        for input_name, array in case.inputs.items():
            tensor = triton_http.InferInput(input_name, list(array.shape), _triton_type(array))
            tensor.set_data_from_numpy(array, binary_data=binary)
            inputs.append(tensor)
        outputs = [triton_http.InferRequestedOutput(output, binary_data=binary) for output in case.expected]
        result = client.infer(name, inputs, outputs=outputs)
        return {output: result.as_numpy(output) for output in case.expected}

    _check_all(backend.cases, call)


def test_v2_grpc(backend: Backend, backend_server: RunningServer) -> None:
    client = triton_grpc.InferenceServerClient(f"127.0.0.1:{backend_server.grpc_port}")

    def call(name: str, case: Case) -> Tensors:
        inputs = []
        for input_name, array in case.inputs.items():
            tensor = triton_grpc.InferInput(input_name, list(array.shape), _triton_type(array))
            tensor.set_data_from_numpy(array)
            inputs.append(tensor)
        result = client.infer(name, inputs, outputs=[triton_grpc.InferRequestedOutput(o) for o in case.expected])
        return {output: result.as_numpy(output) for output in case.expected}

    _check_all(backend.cases, call)


def _json_value(array: np.ndarray) -> object:
    return array.astype(str).tolist() if array.dtype == object else array.tolist()


def test_tf_serving_rest_columns(backend: Backend, backend_server: RunningServer) -> None:
    client = httpx.Client(base_url=backend_server.url, timeout=60)

    def call(name: str, case: Case) -> Tensors:
        body = {"inputs": {input_name: _json_value(array) for input_name, array in case.inputs.items()}}
        response = client.post(f"/v1/models/{name}:predict", json=body)
        response.raise_for_status()
        outputs = response.json()["outputs"]
        if len(case.expected) == 1:  # a single output's name is left out
            outputs = {next(iter(case.expected)): outputs}
        return {output: np.array(value, dtype=case.expected[output].dtype) for output, value in outputs.items()}

    _check_all(backend.cases, call)


def _tf_tensor(array: np.ndarray) -> TensorProto:
    proto = TensorProto()
    for size in array.shape:
        proto.tensor_shape.dim.add(size=size)
    if array.dtype == object:
        proto.dtype = DT_STRING
        proto.string_val.extend(item if isinstance(item, bytes) else str(item).encode() for item in array.reshape(-1))
    else:
        proto.dtype = TF_TYPES[array.dtype]
        proto.tensor_content = np.ascontiguousarray(array).tobytes()
    return proto


def _from_tf_tensor(proto: TensorProto) -> np.ndarray:
    shape = [dim.size for dim in proto.tensor_shape.dim]
    if proto.dtype == DT_STRING:
        return np.array(list(proto.string_val), dtype=object).reshape(shape)
    return np.frombuffer(proto.tensor_content, NUMPY_TYPES[proto.dtype]).reshape(shape)


def test_tf_serving_grpc(backend: Backend, backend_server: RunningServer) -> None:
    channel = grpc.insecure_channel(f"127.0.0.1:{backend_server.grpc_port}")
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)

    def call(name: str, case: Case) -> Tensors:
        request = predict_pb2.PredictRequest()
        request.model_spec.name = name
        for input_name, array in case.inputs.items():
            request.inputs[input_name].CopyFrom(_tf_tensor(array))
        response = stub.Predict(request, timeout=60)
        return {output: _from_tf_tensor(tensor) for output, tensor in response.outputs.items()}

    _check_all(backend.cases, call)
    channel.close()
