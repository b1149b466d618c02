"""Triton's shared memory extension over REST: `/v2/systemsharedmemory/...` registers, lists and unregisters the
regions (server.shared_memory); `/v2/cudasharedmemory/...` lists none and refuses registration (no GPU memory is
shared with clients)."""

from __future__ import annotations

import orjson

from ortserve.errors import InvalidInput, NotFound, require
from ortserve.server.dataplane import DataPlane
from ortserve.server.http import Request, Response, Router, json_response
from ortserve.server.shared_memory import NO_CUDA, is_local

_SYSTEM = "/v2/systemsharedmemory"
_CUDA = "/v2/cudasharedmemory"
_REGION = r"/region/(?P<region>[^/]+)"


class SharedMemoryRest:
    def __init__(self, plane: DataPlane) -> None:
        self._regions = plane.shared_memory

    def routes(self, router: Router) -> None:
        router.add("GET", _SYSTEM + "/status", self.status)
        router.add("GET", _SYSTEM + _REGION + "/status", self.status)
        router.add("POST", _SYSTEM + _REGION + "/register", self.register)
        router.add("POST", _SYSTEM + "/unregister", self.unregister)
        router.add("POST", _SYSTEM + _REGION + "/unregister", self.unregister)
        router.add("GET", _CUDA + "/status", self.cuda_status)
        router.add("GET", _CUDA + _REGION + "/status", self.cuda_status)
        router.add("POST", _CUDA + _REGION + "/register", self.cuda_register)
        router.add("POST", _CUDA + "/unregister", self.cuda_unregister)
        router.add("POST", _CUDA + _REGION + "/unregister", self.cuda_unregister)

    async def status(self, request: Request, params: dict[str, str]) -> Response:
        return json_response(self._regions.status(params.get("region")))

    async def register(self, request: Request, params: dict[str, str]) -> Response:
        try:
            body = orjson.loads(request.body)
        except orjson.JSONDecodeError as exc:
            raise InvalidInput(f"malformed JSON body: {exc}") from None
        require(isinstance(body, dict), "the body must be a JSON object with 'key', 'offset' and 'byte_size'")
        key, offset, byte_size = body.get("key"), body.get("offset", 0), body.get("byte_size")
        require(isinstance(key, str), "'key' must be the shared memory object's name, like '/input_data'")
        for name, value in (("offset", offset), ("byte_size", byte_size)):
            require(isinstance(value, int) and not isinstance(value, bool), f"'{name}' must be a whole number")
        self._regions.register(params["region"], key, offset, byte_size, local_client=is_local(request.client))
        return json_response({})

    async def unregister(self, request: Request, params: dict[str, str]) -> Response:
        self._regions.unregister(params.get("region"))
        return json_response({})

    async def cuda_status(self, request: Request, params: dict[str, str]) -> Response:
        if "region" in params:
            raise NotFound(f"no CUDA shared memory region {params['region']!r} is registered")
        return json_response([])

    async def cuda_register(self, request: Request, params: dict[str, str]) -> Response:
        raise InvalidInput(NO_CUDA)

    async def cuda_unregister(self, request: Request, params: dict[str, str]) -> Response:
        return json_response({})
