"""Limits on HTTP clients, so that slow or greedy ones cannot exhaust the process: uvicorn's httptools protocol
with a bound on request header size (431), on the time a request's headers may take and the time between two
body chunks (408, then the connection is closed), and on open connections (a new one past the cap is answered
503 and closed at once, before it holds a descriptor for long). Idle keep-alive connections are closed by
uvicorn's own timeout.

Without them, 3,000 connections that sent half a header and then nothing were all still open after 30 s, and a
200 KB header line was accepted: each costs a descriptor and memory (issue 17).
"""

from __future__ import annotations

import logging
import resource
from asyncio import AbstractEventLoop, Transport
from dataclasses import dataclass
from typing import Any

import orjson
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

log = logging.getLogger(__name__)

DESCRIPTORS_KEPT = 256  # for model files, gRPC, logs and the rest of the process
REFUSAL_REPORT_INTERVAL_S = 1.0


def default_max_connections() -> int:
    """What the process's open-file limit leaves for HTTP connections."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return 10_000
    return max(64, soft - DESCRIPTORS_KEPT)


@dataclass(frozen=True)
class ClientLimits:
    max_header_bytes: int = 64 * 1024  # the request line and every header together
    header_timeout_s: float = 10.0  # from a connection or a request's first byte to its last header
    body_timeout_s: float = 30.0  # between two chunks of a request's body
    max_connections: int = 0  # 0: default_max_connections()


def _error(status: int, reason: str, message: str) -> bytes:
    body = orjson.dumps({"error": message})
    return (f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n"
            "connection: close\r\n\r\n").encode() + body


class GuardedHttpProtocol(HttpToolsProtocol):
    """One connection, with the limits of `ClientLimits` (set on the subclass `guarded()` makes). A deadline is
    a number on the connection, checked by one sweep of all connections a few times a second: a request costs
    two assignments, not a timer of its own."""

    limits: ClientLimits = ClientLimits()
    max_connections: int = 0
    sweep_s: float = 0.25
    _sweeping: bool = False
    _refused_unreported: int = 0
    _refusal_reported_at: float = float("-inf")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._deadline: float | None = None
        self._why = ""
        self._awaiting_headers = True
        self._header_bytes = 0

    def connection_made(self, transport: Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.max_connections:
            self._report_refusal()
            self._refuse(503, "Service Unavailable",
                         f"the server holds its most connections ({self.max_connections}); retry later")
            return
        self._arm(self.limits.header_timeout_s, "the request's headers did not arrive in time")
        cls = type(self)
        if not cls._sweeping:
            cls._sweeping = True
            self.loop.call_later(cls.sweep_s, cls._sweep, self.loop, self.connections)

    @classmethod
    def _sweep(cls, loop: AbstractEventLoop, connections: set[Any]) -> None:
        now = loop.time()
        for connection in list(connections):
            if isinstance(connection, GuardedHttpProtocol) and connection._deadline is not None \
                    and connection._deadline <= now:
                connection._timed_out()
        if connections:
            loop.call_later(cls.sweep_s, cls._sweep, loop, connections)
        else:
            cls._sweeping = False

    def _report_refusal(self) -> None:
        """One line a second at most: a flood of connections must not become a flood of log lines."""
        cls = type(self)
        cls._refused_unreported += 1
        now = self.loop.time()
        if now - cls._refusal_reported_at >= REFUSAL_REPORT_INTERVAL_S:
            log.warning("refused %d connection(s) since the last such line: %d are open, the most is %d "
                        "(--max-connections)", cls._refused_unreported, len(self.connections), self.max_connections)
            cls._refused_unreported, cls._refusal_reported_at = 0, now

    def connection_lost(self, exc: Exception | None) -> None:
        self._deadline = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._awaiting_headers:
            self._header_bytes += len(data)
        super().data_received(data)
        if self._awaiting_headers and self._header_bytes > self.limits.max_header_bytes:
            self._too_large()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._awaiting_headers = True  # its bytes so far were counted as they came (data_received)
        if self._deadline is None:  # a request after an idle keep-alive pause: its headers get the whole time
            self._arm(self.limits.header_timeout_s, "the request's headers did not arrive in time")

    def on_headers_complete(self) -> None:
        self._awaiting_headers = False
        # the bytes counted include the chunk the headers ended in (and any body in it): only over the limit
        # are the headers themselves measured
        if self._header_bytes > self.limits.max_header_bytes and self._headers_size() > self.limits.max_header_bytes:
            self._too_large()
            return
        self._header_bytes = 0
        super().on_headers_complete()
        self._arm(self.limits.body_timeout_s, "the request's body stopped arriving")

    def on_body(self, body: bytes) -> None:
        super().on_body(body)
        if self._deadline is not None:
            self._arm(self.limits.body_timeout_s, "the request's body stopped arriving")

    def on_message_complete(self) -> None:
        self._deadline = None
        self._awaiting_headers = True  # what comes next on this connection is the next request's headers
        super().on_message_complete()

    def _headers_size(self) -> int:
        return len(self.url) + sum(len(name) + len(value) + 4 for name, value in self.headers)

    def _too_large(self) -> None:
        self._refuse(431, "Request Header Fields Too Large",
                     f"the request's headers are over {self.limits.max_header_bytes} bytes (--max-header-bytes)")

    def _arm(self, seconds: float, why: str) -> None:
        self._deadline = self.loop.time() + seconds
        self._why = why

    def _timed_out(self) -> None:
        self._deadline = None
        if self.transport.is_closing():
            return
        if self.cycle is not None and self.cycle.response_started:
            self.transport.close()
            return
        log.info("closing a connection from %s: %s", self.client, self._why)
        self._refuse(408, "Request Timeout", self._why)

    def _refuse(self, status: int, reason: str, message: str) -> None:
        self._deadline = None
        if self.cycle is not None and not self.cycle.response_complete:
            self.cycle.disconnected = True  # the application stops waiting for the rest of this request
        self.transport.write(_error(status, reason, message))
        self.transport.close()


def guarded(limits: ClientLimits) -> type[GuardedHttpProtocol]:
    """The protocol class uvicorn builds a connection with, holding these limits."""
    most = limits.max_connections or default_max_connections()
    sweep = min(max(min(limits.header_timeout_s, limits.body_timeout_s) / 4, 0.05), 1.0)
    return type("GuardedHttpProtocol", (GuardedHttpProtocol,),
                {"limits": limits, "max_connections": most, "sweep_s": sweep, "_sweeping": False})
