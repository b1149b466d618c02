"""KServe V2 (Open Inference Protocol) REST front end, with Triton's binary tensor, config and stats extensions."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ortserve import __version__
from ortserve.digits import is_decimal
from ortserve.dtypes import from_v2
from ortserve.errors import require
from ortserve.runtime.model import ServedModel, ServedVersion
from ortserve.runtime.signature import TensorSpec
from ortserve.server import triton
from ortserve.server.classification import PARAMETER, class_count, classified
from ortserve.server.codec import (
    array_from_bytes,
    array_from_json,
    array_to_bytes,
    dumps,
    element_count,
    json_tensor,
    loads,
)
from ortserve.server.dataplane import DataPlane, parse_version, timeout_deadline
from ortserve.server.http import Request, Response, Router, json_response
from ortserve.server.shared_memory import REGION, Placement, SharedMemoryRegions, placement

HEADER_LENGTH = b"inference-header-content-length"
EXTENSIONS = ["binary_tensor_data", "classification", "model_configuration", "statistics", "model_repository",
              "system_shared_memory", "logging"]
_MODEL = r"/v2/models/(?P<model>[^/]+)(?:/versions/(?P<version>[^/]+))?"


def _tensor_metadata(spec: TensorSpec) -> dict[str, Any]:
    return {"name": spec.name, "datatype": spec.type.v2, "shape": list(spec.shape)}


def _shape(name: str, value: Any) -> list[int]:
    require(isinstance(value, list) and all(isinstance(d, int) and d >= 0 for d in value),
             f"input {name!r}: 'shape' must be a list of non-negative integers")
    return value


@dataclass(frozen=True)
class _OutputChoice:
    binary: dict[str, bool]  # requested outputs (none: all of them), each with whether it goes back as binary
    default_binary: bool  # for outputs not named: the request-level binary_data_output
    parameters: dict[str, Any]  # the request-level parameters
    classes: dict[str, int] = field(default_factory=dict)  # outputs answered as their best classes, and how many
    placements: dict[str, Placement] = field(default_factory=dict)  # outputs written to shared memory


def _authorization(request: Request) -> str | None:
    value = request.headers.get(b"authorization")
    return None if value is None else value.decode("latin-1")


class V2Rest:
    def __init__(self, plane: DataPlane) -> None:
        self._plane = plane

    def routes(self, router: Router) -> None:
        router.add("POST", _MODEL + "/infer", self.infer)
        router.add("GET", "/v2/health/live", self.live)
        router.add("GET", "/v2/health/ready", self.ready)
        router.add("GET", "/v2", self.server_metadata)
        router.add("GET", "/v2/models/stats", self.all_stats)
        router.add("GET", _MODEL, self.model_metadata)
        router.add("GET", _MODEL + "/ready", self.model_ready)
        router.add("GET", _MODEL + "/config", self.model_config)
        router.add("GET", _MODEL + "/stats", self.model_stats)
        router.add("POST", "/v2/repository/index", self.repository_index)
        router.add("POST", r"/v2/repository/models/(?P<model>[^/]+)/load", self.load)
        router.add("POST", r"/v2/repository/models/(?P<model>[^/]+)/unload", self.unload)
        router.add("GET", "/v2/logging", self.log_settings)
        router.add("POST", "/v2/logging", self.log_settings)

    async def live(self, request: Request, params: dict[str, str]) -> Response:
        return json_response({"live": self._plane.live})

    async def ready(self, request: Request, params: dict[str, str]) -> Response:
        ready = self._plane.ready
        return json_response({"ready": ready}, 200 if ready else 503)

    async def server_metadata(self, request: Request, params: dict[str, str]) -> Response:
        return json_response({"name": "ortserve", "version": __version__, "extensions": EXTENSIONS})

    def _served(self, params: dict[str, str]) -> ServedVersion:
        return self._plane.version(params["model"], parse_version(params.get("version")))

    async def model_metadata(self, request: Request, params: dict[str, str]) -> Response:
        served = self._served(params)
        model = self._plane.model(params["model"])
        assert served.interface is not None
        return json_response({
            "name": served.model,
            "versions": [str(v) for v in model.ready_versions()],
            "platform": triton.PLATFORM,
            "inputs": [_tensor_metadata(spec) for spec in served.interface.inputs],
            "outputs": [_tensor_metadata(spec) for spec in served.interface.outputs],
            "execution_providers": served.providers,
        })

    async def model_ready(self, request: Request, params: dict[str, str]) -> Response:
        model = self._plane.model(params["model"])
        ready = model.is_ready(parse_version(params.get("version")))
        return json_response({"name": model.name, "ready": ready}, 200 if ready else 503)

    async def model_config(self, request: Request, params: dict[str, str]) -> Response:
        return json_response(triton.model_config(self._served(params)))

    async def model_stats(self, request: Request, params: dict[str, str]) -> Response:
        model = self._plane.model(params["model"])
        return json_response({"model_stats": self._stats(model, parse_version(params.get("version")))})

    async def all_stats(self, request: Request, params: dict[str, str]) -> Response:
        models: list[ServedModel] = list(self._plane.registry.models.values())
        return json_response({"model_stats": [entry for model in models for entry in self._stats(model, None)]})

    def _stats(self, model: ServedModel, version: int | None) -> list[dict[str, Any]]:
        """Triton's entries, each with ortserve's own figures beside them."""
        entries = triton.model_stats(model, version)
        if model.group is not None:  # its members' figures are their own; here: where requests went
            group = {"policy": model.group.config.policy, "members": model.group.summary()}
            return [{**entry, "ortserve": {"group": group}} for entry in entries]
        versions = [model.versions[int(entry["version"])] for entry in entries]
        return [{**entry, "ortserve": triton.scheduling_stats(served, self._plane.gpus)}
                for entry, served in zip(entries, versions, strict=True)]

    async def repository_index(self, request: Request, params: dict[str, str]) -> Response:
        self._plane.authorize(_authorization(request))
        return json_response(triton.repository_index(self._plane.registry))

    async def load(self, request: Request, params: dict[str, str]) -> Response:
        await self._plane.load(params["model"], _authorization(request))
        return json_response({})

    async def unload(self, request: Request, params: dict[str, str]) -> Response:
        await self._plane.unload(params["model"], _authorization(request))
        return json_response({})

    async def log_settings(self, request: Request, params: dict[str, str]) -> Response:
        """Triton's logging extension: GET reads the settings, POST changes those its JSON object names."""
        changes: dict[str, object] = {}
        if request.method == "POST" and request.body.strip():
            document = loads(request.body)
            require(isinstance(document, dict), "the body must be a JSON object of log settings by name, like "
                                                '{"log_verbose_level": 1}')
            changes = document
        return json_response(self._plane.log_settings(changes, _authorization(request)))

    async def infer(self, request: Request, params: dict[str, str]) -> Response:
        arrived = time.perf_counter_ns()
        served = self._plane.version(params["model"], parse_version(params.get("version")),
                                     routing_key=request.routing_key)
        assert served.interface is not None
        body = memoryview(request.body)
        header_length = request.headers.get(HEADER_LENGTH)
        if header_length is None:
            json_part, binary = request.body, body[:0]
        else:
            require(is_decimal(header_length) and int(header_length) <= len(body),
                     f"Inference-Header-Content-Length {header_length.decode(errors='replace')!r} is not a length "
                     f"within the {len(body)}-byte body")
            json_part, binary = body[: int(header_length)], body[int(header_length) :]
        document = loads(json_part, frozenset({"data"}))
        require(isinstance(document, dict), "the request body must be a JSON object")
        choice = self._requested_outputs(served, document, self._plane.shared_memory)
        deadline = timeout_deadline(choice.parameters.get("timeout"), arrived)
        served.precheck(deadline)
        inputs = self._decode_inputs(document.get("inputs"), binary, self._plane.shared_memory,
                                     served.interface.number_inputs)
        results = await served.infer(inputs, list(choice.binary) or None, deadline_ns=deadline,
                                     gone=request.disconnected)
        return self._encode(served, document.get("id"), results, choice)

    @staticmethod
    def _decode_inputs(items: Any, binary: memoryview, regions: SharedMemoryRegions, numbers: frozenset[str]
                       ) -> dict[str, np.ndarray]:
        """The request's tensors; binary BYTES sent for an input in `numbers` stay bytes (codec.byte_elements)."""
        require(isinstance(items, list), "'inputs' must be a list")  # empty for a model with no inputs
        inputs: dict[str, np.ndarray] = {}
        offset = 0
        for item in items:
            require(isinstance(item, dict) and isinstance(item.get("name"), str),
                     "each input must be an object with a 'name'")
            name = item["name"]
            require(name not in inputs, f"input {name!r} is given twice")
            require(isinstance(item.get("datatype"), str), f"input {name!r}: 'datatype' is missing")
            tensor_type = from_v2(item["datatype"])
            shape = _shape(name, item.get("shape"))
            parameters = item.get("parameters") or {}
            require(isinstance(parameters, dict), f"input {name!r}: 'parameters' must be an object")
            size = parameters.get("binary_data_size")
            if REGION in parameters:
                where = placement(regions, f"input {name!r}", parameters[REGION],
                                  parameters.get("shared_memory_byte_size"), parameters.get("shared_memory_offset", 0))
                inputs[name] = array_from_bytes(name, where.view(f"input {name!r}"), tensor_type, shape,
                                                keep_bytes=name in numbers)
            elif size is not None:
                require(isinstance(size, int) and size >= 0,
                         f"input {name!r}: binary_data_size must be a non-negative integer")
                require(offset + size <= len(binary),
                         f"binary payload is truncated: input {name!r} needs {size} bytes at offset {offset}, "
                         f"but only {len(binary) - offset} remain")
                inputs[name] = array_from_bytes(name, binary[offset : offset + size], tensor_type, shape,
                                                keep_bytes=name in numbers)
                offset += size
            else:
                require("data" in item, f"input {name!r} has neither 'data' nor a binary_data_size parameter")
                array = array_from_json(name, item["data"], tensor_type)
                require(array.size == element_count(shape),
                         f"input {name!r} has {array.size} elements, but shape {shape} needs {element_count(shape)}")
                inputs[name] = array.reshape(shape)
        require(offset == len(binary),
                 f"{len(binary) - offset} bytes of binary data follow the inputs, but no input claims them")
        return inputs

    @staticmethod
    def _requested_outputs(served: ServedVersion, document: dict[str, Any], regions: SharedMemoryRegions
                           ) -> _OutputChoice:
        parameters = document.get("parameters") or {}
        require(isinstance(parameters, dict), "'parameters' must be an object")
        default_binary = bool(parameters.get("binary_data_output", False))
        items = document.get("outputs")
        wanted: dict[str, bool] = {}
        classes: dict[str, int] = {}
        placements: dict[str, Placement] = {}
        if items is None:
            return _OutputChoice(wanted, default_binary, parameters)
        require(isinstance(items, list), "'outputs' must be a list")
        for item in items:
            require(isinstance(item, dict) and isinstance(item.get("name"), str),
                     "each requested output must be an object with a 'name'")
            output_parameters = item.get("parameters") or {}
            require(isinstance(output_parameters, dict), f"output {item['name']!r}: 'parameters' must be an object")
            wanted[item["name"]] = bool(output_parameters.get("binary_data", default_binary))
            if PARAMETER in output_parameters:
                classes[item["name"]] = class_count(served, item["name"], output_parameters[PARAMETER])
            if REGION in output_parameters:
                placements[item["name"]] = placement(
                    regions, f"output {item['name']!r}", output_parameters[REGION],
                    output_parameters.get("shared_memory_byte_size"), output_parameters.get("shared_memory_offset", 0))
        return _OutputChoice(wanted, default_binary, parameters, classes, placements)

    @staticmethod
    def _encode(served: ServedVersion, request_id: Any, results: dict[str, np.ndarray],
                choice: _OutputChoice) -> Response:
        entries, buffers, json_arrays = [], [], []
        for name, array in results.items():
            spec = served.output_spec(name)
            assert spec is not None
            datatype = spec.type.v2
            if name in choice.classes:
                array, datatype = classified(served, name, array, choice.classes[name]), "BYTES"
            entry: dict[str, Any] = {"name": name, "datatype": datatype, "shape": list(array.shape)}
            where = choice.placements.get(name)
            if where is not None:
                where.write(name, array_to_bytes(array))
            elif choice.binary.get(name, choice.default_binary):
                data = array_to_bytes(array)
                entry["parameters"] = {"binary_data_size": len(data)}
                buffers.append(data)
            else:
                flat = array.reshape(-1)
                entry["data"] = json_tensor(flat)
                json_arrays.append(flat)
            entries.append(entry)
        payload: dict[str, Any] = {"model_name": served.model, "model_version": str(served.version)}
        if request_id is not None:
            payload["id"] = request_id
        payload["outputs"] = entries
        header = dumps(payload, json_arrays)
        if not buffers:
            return Response(200, header)
        return Response(200, b"".join([header, *buffers]), b"application/octet-stream",
                        [(b"inference-header-content-length", str(len(header)).encode())])


