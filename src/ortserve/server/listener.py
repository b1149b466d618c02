"""The HTTP front end's listening sockets, accepting every waiting connection each time the socket is readable.

uvloop's server (libuv 1.52.1) accepts one connection per loop iteration. Under load an iteration takes
milliseconds, so a burst of new connections was accepted over seconds and their first requests waited as long:
257 connections made over 1.8 s against 87 ms on asyncio, p99 1.19 s (docs/benchmarks.md, event loops). Here the
loop only reports readiness; the accepting is ours, up to the backlog at a time, on either loop.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
from collections.abc import Callable

log = logging.getLogger(__name__)

# out of descriptors or memory: stop accepting a while, as asyncio's own server does, instead of spinning
RESOURCE_ERRORS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
RESUME_AFTER_S = 1.0


def host_port(host: str, port: int) -> str:
    """`host:port`, with an IPv6 address in brackets as gRPC and URLs want it."""
    return f"[{host}]:{port}" if ":" in host and not host.startswith("[") else f"{host}:{port}"


class ListenError(OSError):
    """An address could not be listened on (taken, not local, not allowed); the message names it."""


def bind(host: str | None, port: int, backlog: int) -> list[socket.socket]:
    """Listening sockets for every address `host` names (all interfaces when it is empty), non-blocking."""
    try:
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as error:
        raise ListenError(f"cannot listen for HTTP on {host_port(host or '', port)}: {error.strerror}") from None
    sockets: list[socket.socket] = []
    seen: set[tuple[int, object]] = set()
    try:
        for family, kind, proto, _, address in infos:
            if (family, address) in seen:
                continue
            seen.add((family, address))
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:  # the IPv4 address, if any, has a socket of its own
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                sock.bind(address)
            except OSError as error:
                raise ListenError(f"cannot listen for HTTP on {host_port(address[0], address[1])}: "
                                  f"{error.strerror}") from None
            sock.listen(backlog)
            sock.setblocking(False)
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return sockets


class Listener:
    """Serves connections on bound sockets with a protocol factory, like the loop's own server; `close` stops
    accepting, `wait_closed` waits for the connections being set up."""

    def __init__(self, sockets: list[socket.socket], protocol_factory: Callable[[], asyncio.Protocol],
                 backlog: int) -> None:
        self.sockets = sockets
        self._factory = protocol_factory
        self._backlog = backlog
        self._loop = asyncio.get_running_loop()
        self._connecting: set[asyncio.Task[object]] = set()
        self._resumes: dict[int, asyncio.TimerHandle] = {}
        self._closed = False
        for sock in sockets:
            self._loop.add_reader(sock.fileno(), self._accept_waiting, sock)

    def _accept_waiting(self, sock: socket.socket) -> None:
        for _ in range(self._backlog):
            try:
                connection, _ = sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except ConnectionAbortedError:  # the client gave up while it waited in the backlog
                continue
            except OSError as error:
                if error.errno not in RESOURCE_ERRORS:
                    raise
                log.error("cannot accept connections (%s): pausing %.0f s", error.strerror, RESUME_AFTER_S)
                self._loop.remove_reader(sock.fileno())
                self._resumes[sock.fileno()] = self._loop.call_later(RESUME_AFTER_S, self._resume, sock)
                return
            self._connect(connection)

    def _connect(self, connection: socket.socket) -> None:
        connection.setblocking(False)
        if connection.family in (socket.AF_INET, socket.AF_INET6):
            connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        task = self._loop.create_task(self._loop.connect_accepted_socket(self._factory, connection))
        self._connecting.add(task)
        task.add_done_callback(self._connected)

    def _connected(self, task: asyncio.Task[object]) -> None:
        self._connecting.discard(task)
        error = None if task.cancelled() else task.exception()
        if isinstance(error, OSError):
            log.debug("a connection closed while it was set up: %s", error)
        elif error is not None:
            log.error("setting up a connection failed", exc_info=error)

    def _resume(self, sock: socket.socket) -> None:
        self._resumes.pop(sock.fileno(), None)
        if not self._closed:
            self._loop.add_reader(sock.fileno(), self._accept_waiting, sock)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for handle in self._resumes.values():
            handle.cancel()
        self._resumes.clear()
        for sock in self.sockets:
            self._loop.remove_reader(sock.fileno())
            sock.close()

    async def wait_closed(self) -> None:
        if self._connecting:
            await asyncio.wait(set(self._connecting))
