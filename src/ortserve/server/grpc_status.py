"""Core errors as gRPC status codes, the way TF Serving and Triton use them."""

from __future__ import annotations

import grpc

from ortserve.errors import (
    Cancelled,
    ConfigError,
    ControlDisabled,
    DeadlineExceeded,
    InvalidInput,
    NotFound,
    OrtServeError,
    PermissionDenied,
    ResourceExhausted,
    RunFailed,
    Unauthenticated,
    Unavailable,
)

# Overloaded and ShuttingDown are Unavailable: UNAVAILABLE, as TF Serving answers when its batch queue is full
_CODES = {
    InvalidInput: grpc.StatusCode.INVALID_ARGUMENT,
    ConfigError: grpc.StatusCode.FAILED_PRECONDITION,
    ControlDisabled: grpc.StatusCode.FAILED_PRECONDITION,
    Unauthenticated: grpc.StatusCode.UNAUTHENTICATED,
    PermissionDenied: grpc.StatusCode.PERMISSION_DENIED,
    NotFound: grpc.StatusCode.NOT_FOUND,
    Unavailable: grpc.StatusCode.UNAVAILABLE,
    DeadlineExceeded: grpc.StatusCode.DEADLINE_EXCEEDED,
    Cancelled: grpc.StatusCode.CANCELLED,
    ResourceExhausted: grpc.StatusCode.RESOURCE_EXHAUSTED,
    RunFailed: grpc.StatusCode.INTERNAL,
}


def status_of(error: BaseException) -> tuple[grpc.StatusCode, str]:
    """The status code and message a call fails with: a core error's own, anything else INTERNAL."""
    if isinstance(error, OrtServeError):
        code = next((_CODES[kind] for kind in type(error).__mro__ if kind in _CODES), grpc.StatusCode.INTERNAL)
        return code, str(error)
    return grpc.StatusCode.INTERNAL, "internal server error"
