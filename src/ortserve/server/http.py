"""A small ASGI layer: requests with their whole body, responses as bytes, routing by regular expression.

Frameworks add per-request work (request objects, middleware stacks, validation) that costs more than a
small model's inference; this keeps the HTTP path to what the protocols need.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from ortserve.digits import is_decimal
from ortserve.errors import (
    Cancelled,
    ConfigError,
    ControlDisabled,
    DeadlineExceeded,
    InvalidInput,
    NotFound,
    OrtServeError,
    Overloaded,
    PermissionDenied,
    ResourceExhausted,
    RunFailed,
    Unauthenticated,
    Unavailable,
)
from ortserve.runtime.image import ImageTooLarge
from ortserve.server.encoding import EncodingError, decoded_body

log = logging.getLogger(__name__)

JSON = b"application/json"


@dataclass(slots=True)
class Request:
    method: str
    path: str
    headers: dict[bytes, bytes]  # names lower-cased, as ASGI gives them
    body: bytes
    query: bytes = b""
    receive: Callable[[], Awaitable[dict[str, Any]]] | None = None  # the ASGI channel, once the body is read
    client: str | None = None  # the client's address (host), when the transport knows it

    @property
    def routing_key(self) -> str | None:
        """X-Routing-Key: requests that carry the same key reach the same version of a traffic split."""
        value = self.headers.get(b"x-routing-key")
        return None if value is None else value.decode("latin-1")

    async def disconnected(self) -> None:
        """Completes when the client disconnects (ASGI's http.disconnect); never where that cannot be told."""
        if self.receive is None:
            await asyncio.Event().wait()
            return
        while (await self.receive())["type"] != "http.disconnect":
            pass


@dataclass(slots=True)
class Response:
    status: int
    body: bytes
    content_type: bytes = JSON
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)


Handler = Callable[[Request, dict[str, str]], Awaitable[Response]]
# 499: the client closed the connection (nginx's code); nobody reads the answer
_STATUS = {ImageTooLarge: 413, InvalidInput: 400, ConfigError: 400, ControlDisabled: 400,
           Unauthenticated: 401, PermissionDenied: 403, NotFound: 404, Unavailable: 503,
           DeadlineExceeded: 504, Cancelled: 499, ResourceExhausted: 507, RunFailed: 500}


def json_response(payload: Any, status: int = 200) -> Response:
    return Response(status, orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY))


def error_response(message: str, status: int) -> Response:
    return Response(status, orjson.dumps({"error": message}))


def core_error_response(error: OrtServeError) -> Response:
    """The answer to a core error: its status, `{"error": message}`, and Retry-After when overloaded."""
    response = error_response(str(error), status_for(error))
    if isinstance(error, Overloaded):
        response.headers.append((b"retry-after", str(max(1, round(error.retry_after_s))).encode()))
    elif isinstance(error, Unauthenticated):
        response.headers.append((b"www-authenticate", b"Bearer"))
    return response


def status_for(error: OrtServeError) -> int:
    return next((_STATUS[kind] for kind in type(error).__mro__ if kind in _STATUS), 500)


class Router:
    def __init__(self) -> None:
        self._routes: list[tuple[str, re.Pattern[str], Handler]] = []

    def add(self, method: str, pattern: str, handler: Handler) -> None:
        self._routes.append((method, re.compile(pattern), handler))

    def match(self, method: str, path: str) -> tuple[Handler, dict[str, str]] | Response:
        allowed = False
        for route_method, pattern, handler in self._routes:
            found = pattern.fullmatch(path)
            if found is None:
                continue
            if route_method == method or (method == "HEAD" and route_method == "GET"):
                return handler, found.groupdict()
            allowed = True
        if allowed:
            return error_response(f"method {method} is not allowed on {path}", 405)
        return error_response(f"no such endpoint: {method} {path}", 404)


class HttpApp:
    """The ASGI application: reads the body (bounded), routes, maps core errors to status codes."""

    def __init__(self, router: Router, max_body_bytes: int) -> None:
        self._router = router
        self._max_body = max_body_bytes

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        try:
            response = await self._respond(scope, receive)
        except _ClientGone:  # it left before its request arrived whole: nobody to answer
            return
        headers = [(b"content-type", response.content_type), (b"content-length", str(len(response.body)).encode())]
        headers.extend(response.headers)
        await send({"type": "http.response.start", "status": response.status, "headers": headers})
        # HEAD: the GET's status and headers, no body
        await send({"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else response.body})

    async def _respond(self, scope: dict[str, Any], receive: Any) -> Response:
        headers = dict(scope["headers"])
        declared = headers.get(b"content-length")
        if declared is not None and is_decimal(declared) and int(declared) > self._max_body:
            return error_response(f"request body of {int(declared)} bytes exceeds the limit of {self._max_body}",
                                  413)
        body = await self._read_body(receive)
        if body is None:
            return error_response(f"request body exceeds the limit of {self._max_body} bytes", 413)
        coding = headers.get(b"content-encoding")
        if coding is not None:
            try:
                body = decoded_body(body, coding, self._max_body)
            except EncodingError as exc:
                return error_response(str(exc), exc.status)
        found = self._router.match(scope["method"], scope["path"])
        if isinstance(found, Response):
            return found
        handler, params = found
        try:
            client = scope.get("client")
            return await handler(Request(scope["method"], scope["path"], headers, body, scope["query_string"],
                                         receive, client[0] if client else None), params)
        except OrtServeError as exc:
            return core_error_response(exc)
        except Exception:
            log.exception("unhandled error on %s %s", scope["method"], scope["path"])
            return error_response("internal server error", 500)

    async def _read_body(self, receive: Any) -> bytes | None:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _ClientGone
        body = message.get("body", b"")
        if len(body) > self._max_body:  # the server may hand over several chunks in one message
            return None
        if not message.get("more_body", False):
            return body
        chunks, size = [body], len(body)
        while message.get("more_body", False):
            message = await receive()
            if message["type"] == "http.disconnect":
                raise _ClientGone
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self._max_body:
                return None
            chunks.append(chunk)
        return b"".join(chunks)


class _ClientGone(Exception):
    """The client disconnected (or was disconnected by a limit) before its body arrived."""


async def _lifespan(receive: Any, send: Any) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
