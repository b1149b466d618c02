"""A bare asyncio protocol answering every read with a fixed HTTP response after a fixed busy time: the event loop
alone, without uvicorn or ortserve, to see which loop keeps the latency tail of many connections short.

    python benchmarks/loop_fairness.py --loop uvloop --busy-us 40 --port 18601   # then wrk -c256 against it

`--accept all-waiting` accepts on the loop's reader callback every connection waiting in the backlog, instead of
the loop's own server, which on uvloop (libuv) accepts one connection per loop iteration. On SIGTERM it prints
over how long the connections were made (their spread after the first). See benchmarks/loop_fairness.sh for the
matrix recorded in docs/benchmarks.md.
"""

import argparse
import asyncio
import signal
import socket
import time
from collections.abc import Callable
from typing import cast

import uvloop

RESPONSE = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-type: text/plain\r\n\r\nok"
BACKLOG = 2048


class BusyResponder(asyncio.Protocol):
    """Answers each read (wrk sends one request and waits) after spinning for a fixed time."""

    def __init__(self, busy_s: float, made_at: list[float]) -> None:
        self.busy_s = busy_s
        self.made_at = made_at
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.made_at.append(time.perf_counter())
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports are not its subclasses

    def data_received(self, data: bytes) -> None:
        until = time.perf_counter() + self.busy_s
        while time.perf_counter() < until:
            pass
        assert self.transport is not None
        self.transport.write(RESPONSE)


def accept_all_waiting(loop: asyncio.AbstractEventLoop, port: int, factory: Callable[[], asyncio.Protocol]) -> None:
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", port))
    listener.listen(BACKLOG)
    listener.setblocking(False)
    pending: set[asyncio.Task[object]] = set()

    def on_readable() -> None:
        for _ in range(BACKLOG):
            try:
                connection, _ = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            connection.setblocking(False)
            task = loop.create_task(loop.connect_accepted_socket(factory, connection))
            pending.add(task)
            task.add_done_callback(pending.discard)

    loop.add_reader(listener.fileno(), on_readable)


async def serve(port: int, busy_s: float, accept: str) -> None:
    loop = asyncio.get_running_loop()
    made_at: list[float] = []

    def factory() -> BusyResponder:
        return BusyResponder(busy_s, made_at)

    if accept == "all-waiting":
        accept_all_waiting(loop, port, factory)
    else:
        await loop.create_server(factory, "127.0.0.1", port, backlog=BACKLOG)
    stopped = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stopped.set)
    await stopped.wait()
    if made_at:
        print(f"{len(made_at)} connections made over {(max(made_at) - min(made_at)) * 1e3:.0f} ms", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--loop", choices=("uvloop", "asyncio"), required=True)
    parser.add_argument("--accept", choices=("loop", "all-waiting"), default="loop")
    parser.add_argument("--busy-us", type=float, default=40.0, help="time spent on each request (uvicorn's is 40-60)")
    parser.add_argument("--port", type=int, default=18601)
    args = parser.parse_args()
    runner = uvloop.run if args.loop == "uvloop" else asyncio.run
    runner(serve(args.port, args.busy_us / 1e6, args.accept))


if __name__ == "__main__":
    main()
