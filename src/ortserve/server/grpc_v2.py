"""KServe V2 gRPC front end (GRPCInferenceService, package inference), with Triton's streamed inference,
config and statistics."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np
from google.protobuf import json_format
from google.protobuf.message import Message

from ortserve import __version__
from ortserve.dtypes import from_v2
from ortserve.errors import InvalidInput, NotFound
from ortserve.protos.inference import grpc_service_pb2 as pb
from ortserve.protos.inference.model_config_pb2 import ModelConfig
from ortserve.runtime.model import ServedVersion
from ortserve.server import triton
from ortserve.server.classification import PARAMETER, class_count, classified
from ortserve.server.codec import (
    array_from_bytes,
    array_to_bytes,
    byte_elements,
    element_count,
    exact_numbers,
    text_elements,
)
from ortserve.server.dataplane import DataPlane, earliest, parse_version, timeout_deadline
from ortserve.server.grpc_engine import ROUTING_KEY, Call
from ortserve.server.rest_v2 import EXTENSIONS
from ortserve.server.shared_memory import NO_CUDA, REGION, Placement, SharedMemoryRegions, is_local, placement

# Which InferTensorContents field carries each datatype (FP16 and BF16 travel only as raw bytes).
_CONTENTS_FIELD = {
    "BOOL": "bool_contents", "INT8": "int_contents", "INT16": "int_contents", "INT32": "int_contents",
    "INT64": "int64_contents", "UINT8": "uint_contents", "UINT16": "uint_contents", "UINT32": "uint_contents",
    "UINT64": "uint64_contents", "FP32": "fp32_contents", "FP64": "fp64_contents", "BYTES": "bytes_contents",
}


def _typed_contents(tensor: pb.ModelInferRequest.InferInputTensor, shape: list[int], keep_bytes: bool = False
                    ) -> np.ndarray:
    tensor_type = from_v2(tensor.datatype)
    field = _CONTENTS_FIELD.get(tensor.datatype)
    if field is None:
        raise InvalidInput(f"input {tensor.name!r}: {tensor.datatype} travels only in raw_input_contents")
    values = getattr(tensor.contents, field)
    if tensor_type.is_bytes:
        strings = np.array(list(values), dtype=object)
        array = byte_elements(tensor.name, strings) if keep_bytes else text_elements(tensor.name, strings)
    else:  # int_contents holds INT8 and INT16 as int32: a value past the type's range is refused, not wrapped
        array = exact_numbers(tensor.name, np.array(values), tensor_type)
    if array.size != element_count(shape):
        raise InvalidInput(f"input {tensor.name!r} has {array.size} elements, but shape {shape} needs "
                           f"{element_count(shape)}")
    return array.reshape(shape)


def _value(parameters: Any, name: str, default: object = None) -> object:
    """An InferParameter's value, whichever of its fields holds it."""
    if name not in parameters:
        return default
    parameter = parameters[name]
    choice = parameter.WhichOneof("parameter_choice")
    return getattr(parameter, choice) if choice else None


def _placement(regions: SharedMemoryRegions, what: str, parameters: Any) -> Placement | None:
    """Where a tensor is in shared memory, when its parameters name a region."""
    if REGION not in parameters:
        return None
    return placement(regions, what, _value(parameters, REGION), _value(parameters, "shared_memory_byte_size"),
                     _value(parameters, "shared_memory_offset", 0))


def _decode_inputs(request: pb.ModelInferRequest, regions: SharedMemoryRegions, numbers: frozenset[str]
                   ) -> dict[str, np.ndarray]:
    """The request's tensors; BYTES sent for an input in `numbers` stay bytes (codec.byte_elements)."""
    raw = request.raw_input_contents
    # inputs in shared memory have no raw_input_contents entry: with one entry per input, none is
    placed = {} if raw and len(raw) == len(request.inputs) else {
        tensor.name: _placement(regions, f"input {tensor.name!r}", tensor.parameters)
        for tensor in request.inputs if REGION in tensor.parameters}
    if raw and len(raw) != len(request.inputs) - len(placed):
        raise InvalidInput(f"raw_input_contents has {len(raw)} entries for {len(request.inputs) - len(placed)} "
                           "inputs not in shared memory; it must hold one per such input, in input order, or none")
    inputs: dict[str, np.ndarray] = {}
    contents = iter(raw)
    for tensor in request.inputs:
        if tensor.name in inputs:
            raise InvalidInput(f"input {tensor.name!r} is given twice")
        shape = list(tensor.shape)
        if any(size < 0 for size in shape):
            raise InvalidInput(f"input {tensor.name!r}: shape {shape} has a negative dimension")
        where = placed.get(tensor.name)
        keep_bytes = tensor.name in numbers
        if where is not None:
            inputs[tensor.name] = array_from_bytes(tensor.name, where.view(f"input {tensor.name!r}"),
                                                   from_v2(tensor.datatype), shape, keep_bytes=keep_bytes)
        elif raw:
            inputs[tensor.name] = array_from_bytes(tensor.name, memoryview(next(contents)),
                                                   from_v2(tensor.datatype), shape, keep_bytes=keep_bytes)
        else:
            inputs[tensor.name] = _typed_contents(tensor, shape, keep_bytes)
    return inputs


def _timeout_deadline(request: pb.ModelInferRequest) -> int:
    """The `timeout` request parameter (microseconds, as Triton's) as a deadline; 0 when absent."""
    if "timeout" not in request.parameters:
        return 0
    parameter = request.parameters["timeout"]
    choice = parameter.WhichOneof("parameter_choice")
    if choice not in ("int64_param", "uint64_param"):
        raise InvalidInput(f"parameter 'timeout' must be an int64_param of microseconds, got {choice or 'no value'}")
    return timeout_deadline(getattr(parameter, choice), time.perf_counter_ns())


def _output_options(served: ServedVersion, request: pb.ModelInferRequest, regions: SharedMemoryRegions
                    ) -> tuple[dict[str, int], dict[str, Placement]]:
    """The requested outputs to answer as their best classes (Triton's classification extension), and how many; and
    those to write to shared memory."""
    classes: dict[str, int] = {}
    placements: dict[str, Placement] = {}
    for output in request.outputs:
        parameters = output.parameters
        if not parameters:
            continue
        if PARAMETER in parameters:
            classes[output.name] = class_count(served, output.name, _value(parameters, PARAMETER))
        where = _placement(regions, f"output {output.name!r}", parameters)
        if where is not None:
            placements[output.name] = where
    return classes, placements


def _parse(message: Any, document: dict[str, Any]) -> Any:
    return json_format.ParseDict(document, message, ignore_unknown_fields=True)


def _stream_message(response: Message | None, error: str) -> pb.ModelStreamInferResponse:
    if response is None:
        return pb.ModelStreamInferResponse(error_message=error)
    return pb.ModelStreamInferResponse(infer_response=response)


class InferenceService:
    """GRPCInferenceService's methods, served by grpc_engine."""

    # ModelStreamInfer: each request on the stream answered as ModelInfer answers it (one response each, in the
    # order they are ready; an error is the stream's error_message for that request, and the stream goes on)
    streams: ClassVar[dict[str, tuple[str, Callable[[Message | None, str], Message]]]] = {
        "ModelStreamInfer": ("ModelInfer", _stream_message)}

    def __init__(self, plane: DataPlane) -> None:
        self._plane = plane

    def _served(self, name: str, version: str) -> ServedVersion:
        return self._plane.version(name, parse_version(version))

    # Health answers on the gRPC thread itself: it says whether the gRPC front end is alive.
    def ServerLive(self, request: pb.ServerLiveRequest, call: Call) -> None:
        call.reply(pb.ServerLiveResponse(live=self._plane.live))

    def ServerReady(self, request: pb.ServerReadyRequest, call: Call) -> None:
        call.reply(pb.ServerReadyResponse(ready=self._plane.ready))

    def ServerMetadata(self, request: pb.ServerMetadataRequest, call: Call) -> None:
        call.reply(pb.ServerMetadataResponse(name="ortserve", version=__version__, extensions=EXTENSIONS))

    async def ModelReady(self, request: pb.ModelReadyRequest) -> pb.ModelReadyResponse:
        model = self._plane.model(request.name)
        return pb.ModelReadyResponse(ready=model.is_ready(parse_version(request.version)))

    async def ModelMetadata(self, request: pb.ModelMetadataRequest) -> pb.ModelMetadataResponse:
        served = self._served(request.name, request.version)
        model = self._plane.model(request.name)
        assert served.interface is not None
        tensor = pb.ModelMetadataResponse.TensorMetadata
        return pb.ModelMetadataResponse(
            name=served.model,
            versions=[str(v) for v in model.ready_versions()],
            platform=triton.PLATFORM,
            inputs=[tensor(name=s.name, datatype=s.type.v2, shape=s.shape) for s in served.interface.inputs],
            outputs=[tensor(name=s.name, datatype=s.type.v2, shape=s.shape) for s in served.interface.outputs],
        )

    def ModelInfer(self, request: pb.ModelInferRequest, call: Call) -> None:
        """On the gRPC thread: decode and queue; the batch worker builds and sends the answer."""
        served = self._plane.version(request.model_name, parse_version(request.model_version),
                                     routing_key=call.metadata_value(ROUTING_KEY))
        def answer(results: dict[str, np.ndarray]) -> pb.ModelInferResponse:
            response = pb.ModelInferResponse(model_name=served.model, model_version=str(served.version),
                                             id=request.id)
            for name, array in results.items():
                spec = served.output_spec(name)
                assert spec is not None
                datatype = spec.type.v2
                if name in classes:
                    array, datatype = classified(served, name, array, classes[name]), "BYTES"
                response.outputs.add(name=name, datatype=datatype, shape=array.shape)
                where = placements.get(name)
                if where is None:
                    response.raw_output_contents.append(bytes(array_to_bytes(array)))
                else:  # written there; an empty entry, as the client finds each output's bytes by position
                    where.write(name, array_to_bytes(array))
                    response.raw_output_contents.append(b"")
            return response

        regions = self._plane.shared_memory
        classes, placements = _output_options(served, request, regions)
        wanted = [output.name for output in request.outputs] or None
        deadline = earliest(call.deadline_ns, _timeout_deadline(request))
        assert served.interface is not None
        inputs = _decode_inputs(request, regions, served.interface.number_inputs)
        cancel = served.submit(inputs, wanted, call.answer_with(answer), deadline_ns=deadline,
                               run_later=call.run_later)
        if cancel is not None:
            call.on_cancel(cancel)

    def SystemSharedMemoryStatus(self, request: pb.SystemSharedMemoryStatusRequest, call: Call) -> None:
        status = pb.SystemSharedMemoryStatusResponse.RegionStatus
        regions = self._plane.shared_memory.status(request.name or None)
        call.reply(pb.SystemSharedMemoryStatusResponse(
            regions={str(region["name"]): status(**region) for region in regions}))  # type: ignore[arg-type]

    def SystemSharedMemoryRegister(self, request: pb.SystemSharedMemoryRegisterRequest, call: Call) -> None:
        self._plane.shared_memory.register(request.name, request.key, request.offset, request.byte_size,
                                           local_client=is_local(call.peer_host()))
        call.reply(pb.SystemSharedMemoryRegisterResponse())

    def SystemSharedMemoryUnregister(self, request: pb.SystemSharedMemoryUnregisterRequest, call: Call) -> None:
        self._plane.shared_memory.unregister(request.name or None)
        call.reply(pb.SystemSharedMemoryUnregisterResponse())

    def CudaSharedMemoryStatus(self, request: pb.CudaSharedMemoryStatusRequest, call: Call) -> None:
        if request.name:
            raise NotFound(f"no CUDA shared memory region {request.name!r} is registered")
        call.reply(pb.CudaSharedMemoryStatusResponse())

    def CudaSharedMemoryRegister(self, request: pb.CudaSharedMemoryRegisterRequest, call: Call) -> None:
        raise InvalidInput(NO_CUDA)

    def CudaSharedMemoryUnregister(self, request: pb.CudaSharedMemoryUnregisterRequest, call: Call) -> None:
        call.reply(pb.CudaSharedMemoryUnregisterResponse())

    def LogSettings(self, request: pb.LogSettingsRequest, call: Call) -> None:
        """Triton's logging extension: the settings, after those the request names (none: only read them)."""
        changes = {name: getattr(value, value.WhichOneof("parameter_choice") or "string_param")
                   for name, value in request.settings.items()}
        settings = self._plane.log_settings(changes, call.metadata_value("authorization"))
        value = pb.LogSettingsResponse.SettingValue
        call.reply(pb.LogSettingsResponse(settings={
            name: value(bool_param=setting) if isinstance(setting, bool)
            else value(uint32_param=setting) if isinstance(setting, int) else value(string_param=setting)
            for name, setting in settings.items()}))

    async def ModelConfig(self, request: pb.ModelConfigRequest) -> pb.ModelConfigResponse:
        served = self._served(request.name, request.version)
        return pb.ModelConfigResponse(config=_parse(ModelConfig(), triton.model_config(served)))

    async def ModelStatistics(self, request: pb.ModelStatisticsRequest) -> pb.ModelStatisticsResponse:
        models = [self._plane.model(request.name)] if request.name else list(self._plane.registry.models.values())
        version = parse_version(request.version)
        stats = [entry for model in models for entry in triton.model_stats(model, version)]
        return _parse(pb.ModelStatisticsResponse(), {"model_stats": stats})

    async def RepositoryIndex(self, request: pb.RepositoryIndexRequest, call: Call) -> pb.RepositoryIndexResponse:
        self._plane.authorize(call.metadata_value("authorization"))
        index = triton.repository_index(self._plane.registry)
        if request.ready:
            index = [entry for entry in index if entry["state"] == "READY"]
        return _parse(pb.RepositoryIndexResponse(), {"models": index})

    async def RepositoryModelLoad(self, request: pb.RepositoryModelLoadRequest, call: Call
                                  ) -> pb.RepositoryModelLoadResponse:
        await self._plane.load(request.model_name, call.metadata_value("authorization"))
        return pb.RepositoryModelLoadResponse()

    async def RepositoryModelUnload(self, request: pb.RepositoryModelUnloadRequest, call: Call
                                    ) -> pb.RepositoryModelUnloadResponse:
        await self._plane.unload(request.model_name, call.metadata_value("authorization"))
        return pb.RepositoryModelUnloadResponse()
