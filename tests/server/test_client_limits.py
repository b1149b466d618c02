"""Slow and greedy HTTP clients, on raw sockets against the real server with small limits: half-sent headers and
stalled bodies are closed by their timeouts, oversized headers answered 431, connections past the cap 503, and
the server keeps answering others meanwhile."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from ortserve.bench.server import RunningServer, start_server

pytestmark = pytest.mark.slow

MOST_CONNECTIONS = 40
EXTRA_CONNECTIONS = 30
ROW = json.dumps({"instances": [[0.0] * 784]}).encode()


@pytest.fixture(scope="module")
def limited(repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    with start_server(repository, tmp_path_factory.mktemp("limits-logs") / "server.log", "--header-timeout", "1",
                      "--body-timeout", "1", "--keep-alive-timeout", "1", "--max-header-bytes", "4096",
                      "--max-connections", str(MOST_CONNECTIONS)) as running:
        yield running


def _connect(server: RunningServer) -> socket.socket:
    return socket.create_connection(("127.0.0.1", server.rest_port), timeout=10)


def _read_all(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection."""
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def _status_and_error(answer: bytes) -> tuple[int, str]:
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)["error"]


def _predict_works(server: RunningServer) -> None:
    response = httpx.post(f"{server.url}/v1/models/mlp:predict", content=ROW, timeout=10)
    assert response.status_code == 200, response.text


def test_half_sent_headers_are_closed_by_the_timeout(limited: RunningServer) -> None:
    held = [_connect(limited) for _ in range(20)]
    for sock in held:
        sock.sendall(b"POST /v1/models/mlp:predict HTTP/1.1\r\nHost: x\r\nContent-Le")
    _predict_works(limited)  # others are served meanwhile
    started = time.monotonic()
    for sock in held:
        status, error = _status_and_error(_read_all(sock))
        assert status == 408 and "headers" in error
        sock.close()
    assert time.monotonic() - started < 8  # closed by the 1 s timeout, not left open
    _predict_works(limited)


def test_a_stalled_body_is_closed(limited: RunningServer) -> None:
    with _connect(limited) as sock:
        sock.sendall(b"POST /v1/models/mlp:predict HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"inst")
        status, error = _status_and_error(_read_all(sock))
    assert status == 408 and "body" in error
    _predict_works(limited)


def test_oversized_headers_are_431(limited: RunningServer) -> None:
    with _connect(limited) as sock:  # many headers, complete
        sock.sendall(b"GET /v2/health/ready HTTP/1.1\r\nHost: x\r\n" + b"X-Pad: " + b"a" * 5000 + b"\r\n\r\n")
        status, error = _status_and_error(_read_all(sock))
    assert status == 431 and "4096" in error
    with _connect(limited) as sock:  # one header line that never ends
        sock.sendall(b"GET /v2/health/ready HTTP/1.1\r\nX-Endless: " + b"b" * 8000)
        status, _ = _status_and_error(_read_all(sock))
    assert status == 431
    _predict_works(limited)


def test_connections_past_the_cap_are_refused_at_once(limited: RunningServer) -> None:
    held = [_connect(limited) for _ in range(MOST_CONNECTIONS)]
    lines_before = limited.log().count("since the last such line")
    try:
        time.sleep(0.2)  # the server has taken them all
        started = time.monotonic()
        for _ in range(EXTRA_CONNECTIONS):
            with _connect(limited) as extra:
                status, error = _status_and_error(_read_all(extra))
            assert status == 503 and str(MOST_CONNECTIONS) in error
        elapsed_s = time.monotonic() - started
    finally:
        for sock in held:
            sock.close()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # the held ones are closed: new connections are served again
        try:
            _predict_works(limited)
            break
        except (AssertionError, httpx.HTTPError):
            time.sleep(0.1)
    else:
        pytest.fail("the server did not serve again after the held connections closed")
    # the refusals are reported, but a line a second at most, not one a connection
    lines = limited.log().count("since the last such line") - lines_before
    assert 1 <= lines <= elapsed_s + 1, f"{lines} lines for {EXTRA_CONNECTIONS} refusals in {elapsed_s:.1f} s"


def test_an_idle_keep_alive_connection_is_closed(limited: RunningServer) -> None:
    with _connect(limited) as sock:
        started = time.monotonic()
        sock.sendall(b"GET /v2/health/ready HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = _read_all(sock)  # the answer, then nothing more until the server closes the connection
    assert answer.startswith(b"HTTP/1.1 200") and answer.endswith(b'{"ready":true}')
    assert time.monotonic() - started < 8
