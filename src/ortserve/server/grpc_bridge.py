"""ortserve's gRPC servicers (TF Serving's and KServe V2's) called with a request message and awaited for the
response message, for a host that runs its own gRPC server and hands each call's request over (Ray Serve's gRPC
proxy: ortserve.ray). The servicers answer through a Call; here that Call settles a future on the event loop."""

from __future__ import annotations

import asyncio
import inspect
import threading
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import grpc
from google.protobuf.message import Message

from ortserve.server.dataplane import DataPlane
from ortserve.server.grpc_engine import answer_with, metadata_value
from ortserve.server.grpc_status import status_of
from ortserve.server.grpc_tfserving import ModelService, PredictionService
from ortserve.server.grpc_v2 import InferenceService

Result = TypeVar("Result")
# the add_*Servicer_to_server functions of the services, for a host that registers them on its gRPC server
SERVICER_FUNCTIONS = (
    "ortserve.protos.tensorflow_serving.apis.prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server",
    "ortserve.protos.tensorflow_serving.apis.model_service_pb2_grpc.add_ModelServiceServicer_to_server",
    "ortserve.protos.inference.grpc_service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server",
)


class CallFailed(Exception):
    """A call answered with a status other than OK: its code and details."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(code, details)  # both in args: the error pickles (Ray sends it from replica to proxy)
        self.code = code
        self.details = details

    def __str__(self) -> str:
        return self.details


class FutureCall:
    """The Call a servicer answers (server.grpc_engine's interface), settling an asyncio future from any thread."""

    deadline_ns = 0  # the host enforces the client's deadline
    run_later = None  # batches run on the versions' worker threads, never on the host's event loop

    def __init__(self, loop: asyncio.AbstractEventLoop, metadata: Sequence[tuple[str, str | bytes]]) -> None:
        self._loop = loop
        self._loop_thread = threading.get_ident()
        self.future: asyncio.Future[Message] = loop.create_future()
        self.metadata = metadata
        self.name = "call"

    def metadata_value(self, key: str) -> str | None:
        return metadata_value(self.metadata, key)

    def on_cancel(self, callback: Callable[[], None]) -> None:
        """The host cancels the awaiting coroutine; a queued request then finds nobody to answer."""

    def reply(self, response: Message) -> None:
        self._settle(response)

    def abort(self, code: grpc.StatusCode, details: str) -> None:
        self._settle(CallFailed(code, details))

    def fail(self, error: BaseException) -> None:
        self.abort(*status_of(error))

    def answer_with(self, build: Callable[[Result], Message]) -> Callable[[Result | BaseException], None]:
        return answer_with(self, build)

    def _settle(self, outcome: Message | CallFailed) -> None:
        if threading.get_ident() == self._loop_thread:
            _set(self.future, outcome)
        else:
            self._loop.call_soon_threadsafe(_set, self.future, outcome)


def _set(future: asyncio.Future[Message], outcome: Message | CallFailed) -> None:
    if future.done():
        return
    if isinstance(outcome, CallFailed):
        future.set_exception(outcome)
    else:
        future.set_result(outcome)


class GrpcBridge:
    """Every RPC of the three services by method name, as `await bridge.call(name, request, metadata)`."""

    def __init__(self, plane: DataPlane) -> None:
        self._methods: dict[str, Callable[..., Any]] = {}
        for servicer in (PredictionService(plane), ModelService(plane), InferenceService(plane)):
            for name, method in inspect.getmembers(servicer, inspect.ismethod):
                if name[:1].isupper():
                    self._methods[name] = method

    @property
    def methods(self) -> list[str]:
        return sorted(self._methods)

    async def call(self, name: str, request: Message, metadata: Sequence[tuple[str, str | bytes]] = ()) -> Message:
        """The response message, or CallFailed with the status the standalone server would answer."""
        method = self._methods[name]
        call = FutureCall(asyncio.get_running_loop(), metadata)
        try:
            if inspect.iscoroutinefunction(method):
                with_call = len(inspect.signature(method).parameters) == 2
                running: Awaitable[Message] = method(request, call) if with_call else method(request)
                return await running
            method(request, call)
        except CallFailed:
            raise
        except Exception as exc:  # what the standalone engine maps to a status, mapped the same way
            raise CallFailed(*status_of(exc)) from None
        return await call.future
