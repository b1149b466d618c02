"""A bare asyncio protocol answering every read with a fixed HTTP response after a fixed busy time: the event loop
alone, without uvicorn or ortserve, to see which loop keeps the latency tail of many connections short.

    python benchmarks/loop_fairness.py --loop uvloop --busy-us 40 --port 18601   # then wrk -c256 against it

See benchmarks/loop_fairness.sh for the matrix recorded in docs/benchmarks.md.
"""

import argparse
import asyncio
import time
from typing import cast

import uvloop

RESPONSE = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-type: text/plain\r\n\r\nok"


class BusyResponder(asyncio.Protocol):
    """Answers each read (wrk sends one request and waits) after spinning for a fixed time."""

    def __init__(self, busy_s: float) -> None:
        self.busy_s = busy_s
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports are not its subclasses

    def data_received(self, data: bytes) -> None:
        until = time.perf_counter() + self.busy_s
        while time.perf_counter() < until:
            pass
        assert self.transport is not None
        self.transport.write(RESPONSE)


async def serve(port: int, busy_s: float) -> None:
    loop = asyncio.get_running_loop()
    await loop.create_server(lambda: BusyResponder(busy_s), "127.0.0.1", port, backlog=2048)
    await asyncio.Event().wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--loop", choices=("uvloop", "asyncio"), required=True)
    parser.add_argument("--busy-us", type=float, default=40.0, help="time spent on each request (uvicorn's is 40-60)")
    parser.add_argument("--port", type=int, default=18601)
    args = parser.parse_args()
    runner = uvloop.run if args.loop == "uvloop" else asyncio.run
    runner(serve(args.port, args.busy_us / 1e6))


if __name__ == "__main__":
    main()
