"""gRPC server reflection (grpc.reflection.v1 and v1alpha): how grpcurl, Postman, Kreya and other clients without
generated code list this server's services and fetch the descriptors of their messages, so that
`grpcurl -plaintext HOST:PORT list` and `grpcurl ... describe inference.GRPCInferenceService` work.

Each request on the stream gets one response, at once, on the gRPC thread: the descriptors come from ortserve's own
descriptor pool (protos/_pool.py), which holds every service served here. A file is sent with every file it imports,
directly or not, so a client can build its types from one answer. What the pool does not know is answered with an
error response (NOT_FOUND) in the stream, which goes on, as the protocol asks; proto3 has no extensions, so a known
message type has none.
"""

from __future__ import annotations

from collections.abc import Iterable
from types import ModuleType

import grpc
from google.protobuf.descriptor import FileDescriptor, ServiceDescriptor
from google.protobuf.message import Message

from ortserve.protos._pool import POOL
from ortserve.protos.reflection.v1 import reflection_pb2 as v1
from ortserve.protos.reflection.v1alpha import reflection_pb2 as v1alpha
from ortserve.server.grpc_engine import Call

PACKAGES = (v1, v1alpha)


def reflection_servicers(served: Iterable[str]) -> dict[ServiceDescriptor, ReflectionService]:
    """Both packages' ServerReflection, listing the `served` services and themselves."""
    names = [*served, *(messages.DESCRIPTOR.services_by_name["ServerReflection"].full_name for messages in PACKAGES)]
    return {messages.DESCRIPTOR.services_by_name["ServerReflection"]: ReflectionService(messages, names)
            for messages in PACKAGES}


class ReflectionService:
    """The servicer of one package's ServerReflection (v1 or v1alpha, the same messages in two packages)."""

    def __init__(self, messages: ModuleType, services: Iterable[str]) -> None:
        self._messages = messages
        self._services = sorted(set(services))
        self.streams = {"ServerReflectionInfo": ("Reflect", self._as_message)}

    def _as_message(self, response: Message | None, error: str) -> Message:
        """The stream's message for an answer; a handler's failure (none expected) as an error response."""
        if response is not None:
            return response
        return self._messages.ServerReflectionResponse(error_response=self._messages.ErrorResponse(
            error_code=grpc.StatusCode.INTERNAL.value[0], error_message=error))

    def Reflect(self, request: v1.ServerReflectionRequest | v1alpha.ServerReflectionRequest, call: Call) -> None:
        messages = self._messages
        response = messages.ServerReflectionResponse(valid_host=request.host, original_request=request)
        kind = request.WhichOneof("message_request")
        try:
            if kind == "list_services":
                response.list_services_response.service.extend(
                    messages.ServiceResponse(name=name) for name in self._services)
            elif kind == "file_by_filename":
                self._files(response, POOL.FindFileByName(request.file_by_filename))
            elif kind == "file_containing_symbol":
                self._files(response, _file_of_symbol(request.file_containing_symbol))
            elif kind == "all_extension_numbers_of_type":
                POOL.FindMessageTypeByName(request.all_extension_numbers_of_type)
                response.all_extension_numbers_response.base_type_name = request.all_extension_numbers_of_type
            elif kind == "file_containing_extension":
                extension = request.file_containing_extension
                raise KeyError(f"{extension.containing_type} has no extension {extension.extension_number}")
            else:
                response.error_response.error_code = grpc.StatusCode.INVALID_ARGUMENT.value[0]
                response.error_response.error_message = "the request names nothing to reflect on"
        except KeyError as missing:
            response.ClearField("message_response")
            response.error_response.error_code = grpc.StatusCode.NOT_FOUND.value[0]
            response.error_response.error_message = f"not found here: {missing.args[0]}"
        call.reply(response)

    @staticmethod
    def _files(response: Message, file: FileDescriptor) -> None:
        listed: list[FileDescriptor] = []
        waiting = [file]
        while waiting:  # the file first, then what it imports, each once
            current = waiting.pop()
            if current in listed:
                continue
            listed.append(current)
            waiting.extend(current.dependencies)
        response.file_descriptor_response.file_descriptor_proto.extend(  # type: ignore[attr-defined]
            listed_file.serialized_pb for listed_file in listed)


def _file_of_symbol(symbol: str) -> FileDescriptor:
    """The file defining a service, message, enum, field or enum value, or a method (`package.Service.Method`),
    which the pool does not look up by itself."""
    try:
        return POOL.FindFileContainingSymbol(symbol)
    except KeyError:
        service_name, _, method = symbol.rpartition(".")
        try:
            service = POOL.FindServiceByName(service_name)
        except KeyError:
            raise KeyError(f"no symbol {symbol!r}") from None
        if method not in service.methods_by_name:
            raise KeyError(f"no symbol {symbol!r}") from None
        return service.file
