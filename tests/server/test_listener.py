"""The HTTP front end's listener: a burst of connections waiting in the backlog is accepted at once, on uvloop as
on asyncio, however busy the loop; closing stops accepting; a taken port is a clear error."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
import uvloop
from tritonclient.grpc import service_pb2, service_pb2_grpc

from ortserve.examples.models import mlp, save
from ortserve.server.listener import Listener, ListenError, bind

BURST = 200
LOOPS: dict[str, Callable[[Coroutine[Any, Any, Any]], Any]] = {"uvloop": uvloop.run, "asyncio": asyncio.run}


class Counted(asyncio.Protocol):
    def __init__(self, made: list[int], iteration: list[int]) -> None:
        self.made = made
        self.iteration = iteration

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.made.append(self.iteration[0])


def _connect_burst(port: int, connected: threading.Event, sockets: list[socket.socket]) -> None:
    for _ in range(BURST):  # the kernel completes each handshake into the backlog: nobody accepts yet
        sockets.append(socket.create_connection(("127.0.0.1", port)))
    connected.set()


async def _iterations_to_make_a_burst() -> list[int]:
    """Blocks the loop while BURST connections are made, then keeps every loop iteration busy (1 ms, like a loop
    under load) and returns the iteration at which each connection was made."""
    loop = asyncio.get_running_loop()
    iteration = [0]
    made: list[int] = []
    listener = Listener(bind("127.0.0.1", 0, 2048), lambda: Counted(made, iteration), 2048)
    port = listener.sockets[0].getsockname()[1]
    clients: list[socket.socket] = []
    connected = threading.Event()
    threading.Thread(target=_connect_burst, args=(port, connected, clients), daemon=True).start()
    assert connected.wait(30), "the client could not connect"

    def busy() -> None:
        iteration[0] += 1
        until = time.perf_counter() + 0.001
        while time.perf_counter() < until:
            pass
        if len(made) < BURST and iteration[0] < 10 * BURST:
            loop.call_soon(busy)

    loop.call_soon(busy)
    while len(made) < BURST and iteration[0] < 10 * BURST:
        await asyncio.sleep(0.01)
    listener.close()
    await listener.wait_closed()
    for client in clients:
        client.close()
    return made


@pytest.mark.parametrize("loop_name", sorted(LOOPS))
def test_a_burst_of_waiting_connections_is_accepted_within_a_few_loop_iterations(loop_name: str) -> None:
    made = LOOPS[loop_name](_iterations_to_make_a_burst())
    assert len(made) == BURST
    # uvloop's own server takes one iteration a connection: BURST iterations, 200 ms of a busy loop here
    assert max(made) - min(made) <= 5, f"connections made over {max(made) - min(made)} loop iterations"


async def _close_then_connect() -> tuple[int, bool]:
    listener = Listener(bind("127.0.0.1", 0, 16), asyncio.Protocol, 16)
    port = listener.sockets[0].getsockname()[1]
    listener.close()
    await listener.wait_closed()
    try:
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
    except ConnectionRefusedError:
        return port, True
    return port, False


@pytest.mark.parametrize("loop_name", sorted(LOOPS))
def test_a_closed_listener_refuses_connections(loop_name: str) -> None:
    _, refused = LOOPS[loop_name](_close_then_connect())
    assert refused


def test_binding_a_taken_port_names_the_address() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ListenError, match=f"cannot listen for HTTP on 127.0.0.1:{port}: Address already in use"):
            bind("127.0.0.1", port, 16)


@pytest.mark.parametrize("front_end", ["HTTP", "gRPC"])
def test_the_server_on_a_taken_port_exits_1_naming_it(front_end: str, tmp_path: Path) -> None:
    save(mlp(), tmp_path / "repository", "mlp")
    with socket.socket() as taken, socket.socket() as free:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        free.bind(("127.0.0.1", 0))
        ports = {front_end: taken.getsockname()[1], "other": free.getsockname()[1]}
        free.close()
        rest, grpc_port = (ports["HTTP"], ports["other"]) if front_end == "HTTP" else (ports["other"], ports["gRPC"])
        done = subprocess.run([sys.executable, "-m", "ortserve.cli", "serve", str(tmp_path / "repository"),
                               "--rest-port", str(rest), "--grpc-port", str(grpc_port)],
                              capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stderr
    assert f"ortserve serve: cannot listen for {front_end} on 127.0.0.1:{ports[front_end]}" in done.stderr
    assert "Traceback" not in done.stderr


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.skipif(not _ipv6_loopback(), reason="no IPv6 loopback here")
def test_the_server_on_an_ipv6_host_serves_rest_and_grpc_there(tmp_path: Path) -> None:
    save(mlp(), tmp_path / "repository", "mlp")
    ports = []
    for _ in range(2):
        with socket.socket(socket.AF_INET6) as free:
            free.bind(("::1", 0))
            ports.append(free.getsockname()[1])
    process = subprocess.Popen([sys.executable, "-m", "ortserve.cli", "serve", str(tmp_path / "repository"),
                                "--host", "::1", "--rest-port", str(ports[0]), "--grpc-port", str(ports[1])],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, process.stderr.read().decode() if process.stderr else ""
            try:
                if httpx.get(f"http://[::1]:{ports[0]}/v2/health/ready").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the server never became ready on [::1]"
            time.sleep(0.2)
        with grpc.insecure_channel(f"[::1]:{ports[1]}") as channel:
            stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
            assert stub.ModelReady(service_pb2.ModelReadyRequest(name="mlp"), timeout=10).ready
    finally:
        process.terminate()
        process.wait(timeout=30)
