"""Core errors as gRPC status codes, the way TF Serving and Triton use them."""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc

from ortserve.errors import ConfigError, InvalidInput, NotFound, OrtServeError, Unavailable

log = logging.getLogger(__name__)

_CODES = {
    InvalidInput: grpc.StatusCode.INVALID_ARGUMENT,
    ConfigError: grpc.StatusCode.FAILED_PRECONDITION,
    NotFound: grpc.StatusCode.NOT_FOUND,
    Unavailable: grpc.StatusCode.UNAVAILABLE,
}

Reply = TypeVar("Reply")


def mapped_errors(method: Callable[[Any, Any, grpc.aio.ServicerContext], Awaitable[Reply]]
                  ) -> Callable[[Any, Any, grpc.aio.ServicerContext], Awaitable[Reply]]:
    """Abort the call with the status code matching a core error; log anything unexpected as INTERNAL."""

    @functools.wraps(method)
    async def wrapper(self: Any, request: Any, context: grpc.aio.ServicerContext) -> Reply:
        try:
            return await method(self, request, context)
        except OrtServeError as exc:
            code = next((_CODES[kind] for kind in type(exc).__mro__ if kind in _CODES), grpc.StatusCode.INTERNAL)
            await context.abort(code, str(exc))
        except Exception:
            log.exception("unhandled error in %s", method.__name__)
            await context.abort(grpc.StatusCode.INTERNAL, "internal server error")
        raise AssertionError("context.abort returns only by raising")

    return wrapper
