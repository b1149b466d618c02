"""What `ortserve bench` sends: one request of the chosen protocol, built once from the server's own metadata and
the chosen data, then sent again and again by the load workers (bench.drive), on ortserve, TF Serving or Triton.
"""

from __future__ import annotations

import http.client
import json
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import grpc
import numpy as np

from ortserve.bench import Protocol
from ortserve.dtypes import BY_TF_ENUM, BY_TF_NAME, BY_V2, TensorType, from_numpy
from ortserve.errors import InvalidInput
from ortserve.protos.inference import grpc_service_pb2 as v2
from ortserve.protos.tensorflow_serving.apis import get_model_metadata_pb2, predict_pb2
from ortserve.server.codec import array_to_bytes
from ortserve.server.tensor_proto import from_numpy_array

V2_INFER = "/inference.GRPCInferenceService/ModelInfer"
TFS_PREDICT = "/tensorflow.serving.PredictionService/Predict"



@dataclass(frozen=True)
class TensorInfo:
    name: str
    datatype: str  # KServe V2 name
    shape: list[int]  # -1 where dynamic


@dataclass(frozen=True)
class Request:
    """One request, ready to send: bytes and where to send them. Picklable, for the worker processes."""

    protocol: Protocol
    host: str
    port: int
    path: str  # HTTP path or gRPC method
    body: bytes
    headers: tuple[tuple[str, str], ...] = ()


def address(url: str, protocol: Protocol) -> tuple[str, int]:
    """host and port from `http://host:port` (REST protocols) or `host:port` (gRPC)."""
    parsed = urlsplit(url if "://" in url else f"//{url}")
    if protocol.endswith("grpc") and parsed.scheme not in ("", "grpc"):
        raise InvalidInput(f"a gRPC target is host:port, not {url!r}")
    if not parsed.hostname or not parsed.port:
        raise InvalidInput(f"{url!r} names no host and port (give http://host:port, or host:port for gRPC)")
    return parsed.hostname, parsed.port


def metadata(url: str, protocol: Protocol, model: str, timeout_s: float = 30.0) -> list[TensorInfo]:
    """The model's inputs, as the server describes them: V2 metadata, or TF Serving's signature_def."""
    host, port = address(url, protocol)
    if protocol == "v2-grpc":
        with grpc.insecure_channel(f"{host}:{port}") as channel:
            call = channel.unary_unary("/inference.GRPCInferenceService/ModelMetadata",
                                       request_serializer=v2.ModelMetadataRequest.SerializeToString,
                                       response_deserializer=v2.ModelMetadataResponse.FromString)
            answer = _grpc(lambda: call(v2.ModelMetadataRequest(name=model), timeout=timeout_s))
        return [TensorInfo(t.name, t.datatype, list(t.shape)) for t in answer.inputs]
    if protocol == "tfs-grpc":
        request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
        request.model_spec.name = model
        with grpc.insecure_channel(f"{host}:{port}") as channel:
            call = channel.unary_unary("/tensorflow.serving.PredictionService/GetModelMetadata",
                                       request_serializer=get_model_metadata_pb2.GetModelMetadataRequest.SerializeToString,
                                       response_deserializer=get_model_metadata_pb2.GetModelMetadataResponse.FromString)
            answer = _grpc(lambda: call(request, timeout=timeout_s))
        signatures = get_model_metadata_pb2.SignatureDefMap()
        answer.metadata["signature_def"].Unpack(signatures)
        signature = signatures.signature_def["serving_default"]
        return [TensorInfo(name, _tf_type(BY_TF_ENUM.get(info.dtype), str(info.dtype)),
                           [d.size for d in info.tensor_shape.dim]) for name, info in signature.inputs.items()]
    if protocol == "tfs-rest":
        path = f"/v1/models/{model}/metadata"
        document = _get_json(host, port, path, timeout_s)
        try:
            inputs = document["metadata"]["signature_def"]["signature_def"]["serving_default"]["inputs"]
            return [TensorInfo(name, _tf_type(BY_TF_NAME.get(info["dtype"]), info["dtype"]),
                               [int(d["size"]) for d in info["tensor_shape"]["dim"]]) for name, info in inputs.items()]
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidInput(f"GET {path} is not TF Serving's model metadata ({type(exc).__name__}: {exc})") from None
    path = f"/v2/models/{model}"
    document = _get_json(host, port, path, timeout_s)
    try:
        return [TensorInfo(t["name"], t["datatype"], [int(d) for d in t["shape"]]) for t in document["inputs"]]
    except (KeyError, TypeError, ValueError) as exc:
        raise InvalidInput(f"GET {path} is not KServe V2 model metadata ({type(exc).__name__}: {exc})") from None


def sample_inputs(inputs: list[TensorInfo], data: str, batch_size: int, shapes: dict[str, list[int]],
                  seed: int = 0) -> dict[str, np.ndarray]:
    """Arrays for each input: `random`, `zeros`, or an .npz file with one array per input. Dynamic dimensions
    take `batch_size` (the first) or the size given in `shapes`."""
    if data not in ("random", "zeros"):
        path = Path(data)
        if not path.is_file():
            raise InvalidInput(f"--data {data!r} is neither 'random', 'zeros' nor an .npz file")
        with np.load(path, allow_pickle=False) as stored:
            missing = [info.name for info in inputs if info.name not in stored.files]
            if missing:
                raise InvalidInput(f"{data} has no array for inputs {missing} (it has {stored.files})")
            return {info.name: stored[info.name] for info in inputs}
    rng = np.random.default_rng(seed)
    arrays = {}
    for info in inputs:
        shape = shapes.get(info.name) or [batch_size if index == 0 and size < 0 else size
                                          for index, size in enumerate(info.shape)]
        if any(size < 0 for size in shape):
            raise InvalidInput(f"input {info.name!r} has dynamic dimensions {info.shape}: give its shape with "
                               f"--shape {info.name}:{','.join('N' if s < 0 else str(s) for s in info.shape)}")
        if info.datatype not in BY_V2:
            raise InvalidInput(f"input {info.name!r} has datatype {info.datatype}, which bench cannot generate")
        dtype = BY_V2[info.datatype].numpy
        if info.datatype == "BYTES":
            arrays[info.name] = np.full(shape, b"ortserve bench", dtype=object)
        elif data == "zeros" or info.datatype == "BOOL":
            arrays[info.name] = np.zeros(shape, dtype)
        elif np.issubdtype(dtype, np.integer):
            arrays[info.name] = rng.integers(0, 100, shape).astype(dtype)
        else:
            arrays[info.name] = rng.standard_normal(shape).astype(dtype)
    return arrays


def build(url: str, protocol: Protocol, model: str, arrays: dict[str, np.ndarray] | None = None,
          image: Path | None = None, deadline_s: float | None = None) -> Request:
    """The request to send, in the protocol's encoding."""
    host, port = address(url, protocol)
    if protocol == "image":
        if image is None:
            raise InvalidInput("--protocol image needs --image photo.jpg")
        boundary = uuid.uuid4().hex
        body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"{image.name}\"\r\n"
                "Content-Type: application/octet-stream\r\n\r\n").encode() + image.read_bytes() + \
            f"\r\n--{boundary}--\r\n".encode()
        return Request(protocol, host, port, f"/v1/models/{model}:predict_image", body,
                       (("Content-Type", f"multipart/form-data; boundary={boundary}"),))
    assert arrays is not None
    if protocol == "v2-grpc":
        message = v2.ModelInferRequest(model_name=model)
        for name, array in arrays.items():
            message.inputs.add(name=name, datatype=_v2_type(array), shape=array.shape)
            message.raw_input_contents.append(bytes(array_to_bytes(array)))
        if deadline_s:
            message.parameters["timeout"].int64_param = int(deadline_s * 1e6)
        return Request(protocol, host, port, V2_INFER, message.SerializeToString())
    if protocol == "tfs-grpc":
        predict = predict_pb2.PredictRequest()
        predict.model_spec.name = model
        for name, array in arrays.items():
            predict.inputs[name].CopyFrom(from_numpy_array(array))
        return Request(protocol, host, port, TFS_PREDICT, predict.SerializeToString())
    if protocol == "tfs-rest":
        body = json.dumps({"inputs": {name: _json_values(array) for name, array in arrays.items()}}).encode()
        return Request(protocol, host, port, f"/v1/models/{model}:predict", body,
                       (("Content-Type", "application/json"),))
    path = f"/v2/models/{model}/infer"
    if protocol == "v2-binary":
        raw = [bytes(array_to_bytes(array)) for array in arrays.values()]
        header = json.dumps({"inputs": [
            {"name": name, "datatype": _v2_type(array), "shape": list(array.shape),
             "parameters": {"binary_data_size": len(data)}}
            for (name, array), data in zip(arrays.items(), raw, strict=True)],
            "parameters": {"binary_data_output": True}}).encode()
        return Request(protocol, host, port, path, header + b"".join(raw),
                       (("Content-Type", "application/octet-stream"),
                        ("Inference-Header-Content-Length", str(len(header)))))
    body = json.dumps({"inputs": [{"name": name, "datatype": _v2_type(array), "shape": list(array.shape),
                                   "data": _json_values(array)} for name, array in arrays.items()]}).encode()
    return Request(protocol, host, port, path, body, (("Content-Type", "application/json"),))


class Sender:
    """Sends one Request again and again over one connection (HTTP keep-alive, or one gRPC channel); returns
    each answer's outcome: `OK`, the HTTP status, the gRPC status code name, `timeout` or `connection`."""

    def __init__(self, request: Request, timeout_s: float) -> None:
        self._request = request
        self._timeout_s = timeout_s
        self._http: http.client.HTTPConnection | None = None
        self._channel: grpc.Channel | None = None
        self._call: Any = None
        if request.protocol.endswith("grpc"):
            self._channel = grpc.insecure_channel(f"{request.host}:{request.port}",
                                                  options=[("grpc.max_send_message_length", -1),
                                                           ("grpc.max_receive_message_length", -1)])
            self._call = self._channel.unary_unary(request.path)  # bytes in, bytes out: nothing parsed

    def send(self) -> str:
        if self._call is not None:
            try:
                self._call(self._request.body, timeout=self._timeout_s)
            except grpc.RpcError as exc:
                return exc.code().name  # type: ignore[no-any-return, attr-defined]
            return "OK"
        try:
            if self._http is None:
                self._http = http.client.HTTPConnection(self._request.host, self._request.port,
                                                        timeout=self._timeout_s)
            self._http.request("POST", self._request.path, self._request.body, dict(self._request.headers))
            response = self._http.getresponse()
            response.read()
            if response.will_close:
                self._close_http()
        except TimeoutError:
            self._close_http()
            return "timeout"
        except (OSError, http.client.HTTPException):
            self._close_http()
            return "connection"
        return "OK" if response.status == 200 else str(response.status)

    def close(self) -> None:
        self._close_http()
        if self._channel is not None:
            self._channel.close()

    def _close_http(self) -> None:
        if self._http is not None:
            self._http.close()
            self._http = None


def _grpc(call: Any) -> Any:
    try:
        return call()
    except grpc.RpcError as exc:
        raise InvalidInput(f"the server answered {exc.code().name}: {exc.details()}") from None  # type: ignore


def _get_json(host: str, port: int, path: str, timeout_s: float) -> Any:
    connection = http.client.HTTPConnection(host, port, timeout=timeout_s)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        body = response.read()
    except OSError as exc:
        raise InvalidInput(f"cannot reach http://{host}:{port}: {exc}") from None
    finally:
        connection.close()
    if response.status != 200:
        raise InvalidInput(f"GET {path} answered {response.status}: {body[:300].decode(errors='replace')}")
    try:
        return json.loads(body)
    except ValueError:
        raise InvalidInput(f"GET {path} did not answer JSON: {body[:300].decode(errors='replace')}") from None


def _tf_type(tensor_type: TensorType | None, given: str) -> str:
    """A TF Serving dtype as its KServe V2 name; an unknown one as given (sample_inputs then names it)."""
    return tensor_type.v2 if tensor_type is not None else given


def _v2_type(array: np.ndarray) -> str:
    return from_numpy(array.dtype).v2


def _json_values(array: np.ndarray) -> Any:
    if array.dtype == object:  # BYTES: text in JSON
        return np.vectorize(lambda item: item.decode(), otypes=[object])(array).tolist()
    return array.tolist()
